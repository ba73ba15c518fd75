"""De-identification of DICOM data: PS3.15 Annex E, Basic Application Level Confidentiality Profile.

Teaching access always goes through here; see docs/deidentification.md for what the profile
does, the options supported and what it does not handle (burned-in pixel annotations).
"""

from voxa.deid.basic import (
    deidentified_uid,
    deidentify_dataset,
    deidentify_json,
    has_burned_in_annotation,
    make_pseudonym,
)
from voxa.deid.profile import EDITION, TABLE_E_1_1, Action, Rule, basic_action

__all__ = [
    "EDITION",
    "TABLE_E_1_1",
    "Action",
    "Rule",
    "basic_action",
    "deidentified_uid",
    "deidentify_dataset",
    "deidentify_json",
    "has_burned_in_annotation",
    "make_pseudonym",
]
