"""Public resource identifiers compatible with Orthanc's.

Orthanc names every patient, study, series and instance by the SHA-1 of its DICOM
identifiers joined with ``|``, printed as five dash-separated groups of eight hex digits.
Using the same scheme means the same study has the same ID in Voxa and in Orthanc, so
scripts written against one keep working against the other.
"""

from __future__ import annotations

import hashlib


def _hash(*parts: str) -> str:
    h = hashlib.sha1("|".join(parts).encode("utf-8")).hexdigest()
    return "-".join(h[i : i + 8] for i in range(0, 40, 8))


def patient_public_id(patient_id: str) -> str:
    return _hash(patient_id)


def study_public_id(patient_id: str, study_uid: str) -> str:
    return _hash(patient_id, study_uid)


def series_public_id(patient_id: str, study_uid: str, series_uid: str) -> str:
    return _hash(patient_id, study_uid, series_uid)


def instance_public_id(patient_id: str, study_uid: str, series_uid: str, sop_uid: str) -> str:
    return _hash(patient_id, study_uid, series_uid, sop_uid)
