"""Evidence for the DICOM objects Voxa creates (SR, SEG) from stored images."""

from __future__ import annotations

import copy
from collections.abc import Sequence

from pydicom.dataset import Dataset

#: The Type 2 patient and study attributes highdicom copies from the first evidence dataset.
PATIENT_STUDY_ATTRIBUTES = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber",
                            "StudyID", "StudyDate", "StudyTime", "ReferringPhysicianName")


def with_patient_attributes(evidence: Sequence[Dataset]) -> list[Dataset]:
    """The evidence, its first dataset given every attribute highdicom copies from it (empty when
    the source lacks them: Type 2), so that a sparse source image still makes a valid object."""
    first = evidence[0]
    missing = [kw for kw in PATIENT_STUDY_ATTRIBUTES if kw not in first]
    if not missing:
        return list(evidence)
    first = copy.deepcopy(first)
    for kw in missing:
        setattr(first, kw, "")
    return [first, *evidence[1:]]
