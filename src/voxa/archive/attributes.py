"""Which DICOM attributes the index keeps, at which level, in which column.

One table drives extraction at ingest, matching in C-FIND and QIDO-RS, and the values
returned, so the three cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pydicom.datadict import keyword_for_tag, tag_for_keyword


class Level(StrEnum):
    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"

    @property
    def depth(self) -> int:
        return _DEPTH[self]


_DEPTH = {Level.PATIENT: 0, Level.STUDY: 1, Level.SERIES: 2, Level.IMAGE: 3}


class Kind(StrEnum):
    TEXT = "text"  # LO, SH, CS, AS ...: single value, wildcard matching
    PN = "pn"  # person name: case-insensitive wildcard on the *_key column
    DATE = "date"  # DA: ranges
    TIME = "time"  # TM: ranges
    UID = "uid"  # UI: single value or list
    INT = "int"  # IS / US: exact
    MULTI = "multi"  # backslash-joined values: matches when any value matches
    COUNT = "count"  # derived (NumberOf...Related...): returned, never matched


@dataclass(frozen=True)
class Attribute:
    keyword: str
    vr: str
    level: Level
    column: str
    kind: Kind

    @property
    def tag(self) -> int:
        t = tag_for_keyword(self.keyword)
        assert t is not None, self.keyword
        return t


_P, _ST, _SE, _I = Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE

# Patient attributes are listed at STUDY level too: Study Root queries carry them, and
# each study keeps them as received (see docs/architecture.md, "Patient identity").
ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute("PatientName", "PN", _P, "patient_name", Kind.PN),
    Attribute("PatientID", "LO", _P, "patient_id", Kind.TEXT),
    Attribute("IssuerOfPatientID", "LO", _P, "issuer_of_patient_id", Kind.TEXT),
    Attribute("PatientBirthDate", "DA", _P, "patient_birth_date", Kind.DATE),
    Attribute("PatientSex", "CS", _P, "patient_sex", Kind.TEXT),
    Attribute("NumberOfPatientRelatedStudies", "IS", _P, "num_studies", Kind.COUNT),
    Attribute("NumberOfPatientRelatedSeries", "IS", _P, "num_series", Kind.COUNT),
    Attribute("NumberOfPatientRelatedInstances", "IS", _P, "num_instances", Kind.COUNT),
    Attribute("StudyInstanceUID", "UI", _ST, "study_instance_uid", Kind.UID),
    Attribute("StudyDate", "DA", _ST, "study_date", Kind.DATE),
    Attribute("StudyTime", "TM", _ST, "study_time", Kind.TIME),
    Attribute("AccessionNumber", "SH", _ST, "accession_number", Kind.TEXT),
    Attribute("StudyID", "SH", _ST, "study_id", Kind.TEXT),
    Attribute("ReferringPhysicianName", "PN", _ST, "referring_physician_name", Kind.PN),
    Attribute("StudyDescription", "LO", _ST, "study_description", Kind.TEXT),
    Attribute("InstitutionName", "LO", _ST, "institution_name", Kind.TEXT),
    Attribute("PatientAge", "AS", _ST, "patient_age", Kind.TEXT),
    Attribute("ModalitiesInStudy", "CS", _ST, "modalities_in_study", Kind.MULTI),
    Attribute("SOPClassesInStudy", "UI", _ST, "sop_classes_in_study", Kind.MULTI),
    Attribute("NumberOfStudyRelatedSeries", "IS", _ST, "num_series", Kind.COUNT),
    Attribute("NumberOfStudyRelatedInstances", "IS", _ST, "num_instances", Kind.COUNT),
    Attribute("SeriesInstanceUID", "UI", _SE, "series_instance_uid", Kind.UID),
    Attribute("Modality", "CS", _SE, "modality", Kind.TEXT),
    Attribute("SeriesNumber", "IS", _SE, "series_number", Kind.INT),
    Attribute("SeriesDescription", "LO", _SE, "series_description", Kind.TEXT),
    Attribute("BodyPartExamined", "CS", _SE, "body_part_examined", Kind.TEXT),
    Attribute("SeriesDate", "DA", _SE, "series_date", Kind.DATE),
    Attribute("SeriesTime", "TM", _SE, "series_time", Kind.TIME),
    Attribute("ProtocolName", "LO", _SE, "protocol_name", Kind.TEXT),
    Attribute("Laterality", "CS", _SE, "laterality", Kind.TEXT),
    Attribute("Manufacturer", "LO", _SE, "manufacturer", Kind.TEXT),
    Attribute("StationName", "SH", _SE, "station_name", Kind.TEXT),
    Attribute("PerformedProcedureStepStartDate", "DA", _SE, "performed_procedure_step_start_date", Kind.DATE),
    Attribute("PerformedProcedureStepStartTime", "TM", _SE, "performed_procedure_step_start_time", Kind.TIME),
    Attribute("FrameOfReferenceUID", "UI", _SE, "frame_of_reference_uid", Kind.UID),
    Attribute("NumberOfSeriesRelatedInstances", "IS", _SE, "num_instances", Kind.COUNT),
    Attribute("SOPInstanceUID", "UI", _I, "sop_instance_uid", Kind.UID),
    Attribute("SOPClassUID", "UI", _I, "sop_class_uid", Kind.UID),
    Attribute("InstanceNumber", "IS", _I, "instance_number", Kind.INT),
    Attribute("Rows", "US", _I, "rows", Kind.INT),
    Attribute("Columns", "US", _I, "columns", Kind.INT),
    Attribute("NumberOfFrames", "IS", _I, "number_of_frames", Kind.INT),
    Attribute("ContentDate", "DA", _I, "content_date", Kind.DATE),
    Attribute("ContentTime", "TM", _I, "content_time", Kind.TIME),
    Attribute("AvailableTransferSyntaxUID", "UI", _I, "transfer_syntax_uid", Kind.UID),
)

BY_KEYWORD: dict[str, Attribute] = {a.keyword: a for a in ATTRIBUTES}
BY_TAG: dict[int, Attribute] = {a.tag: a for a in ATTRIBUTES}

# Patient attributes also answered at STUDY level from the study row's own copy.
PATIENT_KEYWORDS_ON_STUDY = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex")

UNIQUE_KEY = {
    Level.PATIENT: "PatientID",
    Level.STUDY: "StudyInstanceUID",
    Level.SERIES: "SeriesInstanceUID",
    Level.IMAGE: "SOPInstanceUID",
}


def attribute_for(keyword_or_tag: str | int) -> Attribute | None:
    if isinstance(keyword_or_tag, int):
        return BY_TAG.get(keyword_or_tag)
    return BY_KEYWORD.get(keyword_or_tag)


def keyword_of(tag: int) -> str:
    return keyword_for_tag(tag) or f"{tag:08X}"
