"""PS3.15 Basic Application Level Confidentiality Profile on synthetic, invented patients."""

from __future__ import annotations

import copy
import re
from datetime import datetime
from io import BytesIO
from typing import Any

import pydicom
import pytest
from pydicom.datadict import dictionary_description, dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage

from voxa.deid import (
    EDITION,
    TABLE_E_1_1,
    Action,
    basic_action,
    deidentified_uid,
    deidentify_dataset,
    deidentify_json,
    has_burned_in_annotation,
    make_pseudonym,
)
from voxa.deid.basic import DUMMY_DATE, DUMMY_DATETIME, DUMMY_PATIENT_NAME, DUMMY_TEXT
from voxa.dicom.json import instance_json
from voxa.dicom.uids import is_valid_uid
from voxa.testing.synthetic import make_instance

STUDY = "1.2.826.0.1.3680043.10.543.1"
SERIES = f"{STUDY}.1"
FRAME_OF_REFERENCE = f"{STUDY}.9"
NOW = datetime(2025, 3, 4, 5, 6, 7)
SALT = "a secret salt for tests"


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _private(ds: Dataset, group: int, value: str) -> None:
    block = ds.private_block(group, "ACME PRIVATE", create=True)
    block.add_new(0x01, "LO", value)


def _identified(n: int = 1, *, patient_id: str = "SYN-P1", referenced: str | None = None) -> Dataset:
    """A CT image carrying as many kinds of identifying information as the tests check."""
    ds = make_instance(
        patient_id=patient_id, patient_name="DOE^JANE^Q", study_instance_uid=STUDY, series_instance_uid=SERIES,
        sop_instance_uid=f"{SERIES}.{n}", instance_number=n, accession_number="ACC123456",
        study_description="CT CHEST JANE DOE", series_description="AXIAL 5MM", study_id="S42",
        patient_birth_date="19610203", patient_sex="F", referring_physician_name="WHO^REFERRING",
        rows=8, study_date="20240105", study_time="101112",
    )
    ds.InstanceCreationDate, ds.InstanceCreationTime = "20240105", "101500"
    ds.AcquisitionDate, ds.AcquisitionTime = "20240105", "101200"
    ds.AcquisitionDateTime = "20240105101200"
    ds.PatientAge, ds.PatientWeight, ds.PatientSize = "062Y", "71.5", "1.68"
    ds.PatientAddress = "1 INVENTED STREET, NOWHERE"
    ds.PatientTelephoneNumbers = "555-0100"
    ds.PatientMotherBirthName = "ROE^MARY"
    ds.OtherPatientIDs = "OLD-4711"
    ds.OtherPatientNames = "DOE^J"
    ds.IssuerOfPatientID = "INVENTED HOSPITAL"
    ds.MilitaryRank = "CAPTAIN"
    ds.EthnicGroup = "INVENTED"
    ds.PatientComments = "Jane Doe, allergic to penicillin"
    ds.AdditionalPatientHistory = "Lives alone at 1 Invented Street"
    ds.MedicalRecordLocator = "MRL-99"
    ds.InstitutionName = "INVENTED GENERAL HOSPITAL"
    ds.InstitutionAddress = "2 HOSPITAL ROAD"
    ds.InstitutionalDepartmentName = "RADIOLOGY EAST"
    ds.StationName = "CT-EAST-1"
    ds.DeviceSerialNumber = "SN-0042"
    ds.OperatorsName = "TECH^TOM"
    ds.PerformingPhysicianName = "PERF^PAUL"
    ds.NameOfPhysiciansReadingStudy = "READ^RITA"
    ds.PhysiciansOfRecord = "RECORD^ROB"
    ds.RequestingPhysician = "REQ^RAY"
    ds.ReferringPhysicianAddress = "3 CLINIC LANE"
    ds.ProtocolName = "CHEST JANE"
    ds.RequestedProcedureDescription = "CT CHEST FOR JANE"
    ds.PerformedProcedureStepID = "PPS-1"
    ds.PerformedProcedureStepStartDate = "20240105"
    ds.ImageComments = "Patient Jane Doe moved"
    ds.FrameOfReferenceUID = FRAME_OF_REFERENCE
    ds.PixelSpacing = ["0.7", "0.7"]
    ds.WindowCenter, ds.WindowWidth = "40", "400"

    request = Dataset()
    request.RequestedProcedureID = "RP-1"
    request.ScheduledProcedureStepID = "SPS-1"
    request.AccessionNumber = "ACC123456"
    ds.RequestAttributesSequence = Sequence([request])
    patient_ref = Dataset()
    patient_ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.1.1"
    patient_ref.ReferencedSOPInstanceUID = f"{STUDY}.77"
    ds.ReferencedPatientSequence = Sequence([patient_ref])
    other_id = Dataset()
    other_id.PatientID = "OLD-4711"
    other_id.IssuerOfPatientID = "OTHER HOSPITAL"
    ds.OtherPatientIDsSequence = Sequence([other_id])
    if referenced is not None:
        image_ref = Dataset()
        image_ref.ReferencedSOPClassUID = CTImageStorage
        image_ref.ReferencedSOPInstanceUID = referenced
        _private(image_ref, 0x0011, "JANE IN A REFERENCE")
        ds.ReferencedImageSequence = Sequence([image_ref])

    # A sequence the table does not list: kept, but what is inside is still de-identified.
    region = _code("51185008", "SCT", "Thorax")
    region.OperatorsName = "TECH^TOM"
    _private(region, 0x0019, "JANE IN A KEPT SEQUENCE")
    ds.AnatomicRegionSequence = Sequence([region])

    _private(ds, 0x0009, "DOE^JANE")
    _private(ds, 0x0029, "DATE OF BIRTH 19610203")

    ds.add_new(0x60000010, "US", 8)
    ds.add_new(0x60000011, "US", 8)
    ds.add_new(0x60000022, "LO", "Jane's lesion")
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60003000, "OW", bytes(8))
    ds.add_new(0x60004000, "LT", "Annotated by Dr Who for Jane Doe")
    ds.add_new(0x50000005, "US", 1)
    ds.add_new(0x50003000, "OB", b"CURVEDAT")
    ds.add_new(0x00080000, "UL", 1234)
    return ds


def _values(ds: Dataset) -> list[str]:
    """Every value in ``ds`` and its sequences, as text, for leak checks."""
    found: list[str] = []
    for elem in ds.iterall():
        if elem.VR != "SQ" and elem.value is not None:
            found.append(str(elem.value))
    return found


# ------------------------------------------------------------------------------------------
# The table


def test_table_covers_the_whole_of_table_e_1_1() -> None:
    assert EDITION == "2024e"
    assert len(TABLE_E_1_1) >= 600
    assert {rule.basic for rule in TABLE_E_1_1.values()} <= set(Action)
    assert TABLE_E_1_1[0x00080050].basic is Action.Z
    assert TABLE_E_1_1[0x00100020].basic is Action.Z_D
    assert TABLE_E_1_1[0x00081140].basic is Action.X_Z_U
    assert TABLE_E_1_1[0x0020000D].basic is Action.U and TABLE_E_1_1[0x0020000D].retain_uids is Action.K
    assert TABLE_E_1_1[0x00401101].basic is Action.D


def test_table_tags_match_the_names_of_the_standard() -> None:
    """A mistyped tag would put the action on a different attribute: names must agree."""

    def norm(text: str) -> str:
        return re.sub(r"[^a-z0-9]", "", text.lower())

    known = [rule for rule in TABLE_E_1_1.values() if _in_dictionary(rule.tag)]
    assert len(known) >= 600
    mismatched = [rule for rule in known if norm(rule.name) != norm(dictionary_description(rule.tag))]
    assert mismatched == []


def test_pattern_rows() -> None:
    assert basic_action(0x00091001) is Action.X
    assert basic_action(0x50003000) is Action.X
    assert basic_action(0x60023000) is Action.X
    assert basic_action(0x601E4000) is Action.X
    assert basic_action(0x00280010) is None
    assert basic_action(0x00080018) is Action.U
    assert basic_action(0x00080018, retain_uids=True) is Action.K


def _in_dictionary(tag: int) -> bool:
    try:
        dictionary_VR(tag)
    except KeyError:
        return False
    return True


# ------------------------------------------------------------------------------------------
# One instance


def test_identifying_attributes_are_removed_emptied_or_replaced() -> None:
    ds = _identified()
    out = deidentify_dataset(ds, now=NOW)

    removed = [
        "PatientAge", "PatientWeight", "PatientSize", "PatientAddress", "PatientTelephoneNumbers",
        "PatientMotherBirthName", "OtherPatientIDs", "OtherPatientNames", "OtherPatientIDsSequence",
        "IssuerOfPatientID", "MilitaryRank", "EthnicGroup", "PatientComments", "AdditionalPatientHistory",
        "MedicalRecordLocator", "InstitutionAddress", "InstitutionalDepartmentName", "PerformingPhysicianName",
        "NameOfPhysiciansReadingStudy", "PhysiciansOfRecord", "RequestingPhysician", "ReferringPhysicianAddress",
        "StudyDescription", "SeriesDescription", "ImageComments", "PerformedProcedureStepID",
        "PerformedProcedureStepStartDate", "RequestAttributesSequence",
    ]
    assert [kw for kw in removed if kw in out] == []

    emptied = [
        "AccessionNumber", "StudyDate", "StudyTime", "StudyID", "PatientBirthDate", "PatientSex",
        "ReferringPhysicianName", "AcquisitionDate", "AcquisitionTime", "RequestedProcedureDescription",
    ]
    assert {kw: out[kw].value for kw in emptied if not out[kw].is_empty} == {}

    assert out.PatientName == DUMMY_PATIENT_NAME
    assert out.PatientID == "ANONYMOUS"
    for kw in ("InstitutionName", "StationName", "DeviceSerialNumber", "ProtocolName"):
        assert out[kw].value == DUMMY_TEXT, kw
    assert out.OperatorsName == DUMMY_TEXT
    assert out.ContentDate == out.SeriesDate == DUMMY_DATE
    assert out.AcquisitionDateTime == DUMMY_DATETIME
    assert (out.InstanceCreationDate, out.InstanceCreationTime) == ("20250304", "050607")

    assert out.PatientIdentityRemoved == "YES"
    assert EDITION in out.DeidentificationMethod and "Retain UIDs" in out.DeidentificationMethod
    codes = [(item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning)
             for item in out.DeidentificationMethodCodeSequence]
    assert codes == [
        ("113100", "DCM", "Basic Application Confidentiality Profile"),
        ("113110", "DCM", "Retain UIDs Option"),
    ]


def test_private_tags_curves_overlays_and_group_lengths_go_at_every_level() -> None:
    ds = _identified(2, referenced=f"{SERIES}.1")
    out = deidentify_dataset(ds)
    tags = [int(elem.tag) for elem in out.iterall()]
    assert [f"{t:08X}" for t in tags if (t >> 16) % 2 == 1] == []
    assert [f"{t:08X}" for t in tags if t >> 24 in (0x50, 0x60)] == []
    assert 0x00080000 not in tags
    leaked = [value for value in _values(out) if "JANE" in value.upper() or "DOE" in value.upper()]
    assert leaked == []


def test_sequences_are_recursed() -> None:
    ds = _identified(2, referenced=f"{SERIES}.1")
    out = deidentify_dataset(ds)
    # Not in the table: kept, with its code, but its contents de-identified.
    region = out.AnatomicRegionSequence[0]
    assert (region.CodeValue, region.CodingSchemeDesignator) == ("51185008", "SCT")
    assert region.OperatorsName == DUMMY_TEXT
    # X/Z/U*, kept with its UIDs under the Retain UIDs Option.
    assert out.ReferencedImageSequence[0].ReferencedSOPInstanceUID == f"{SERIES}.1"
    # The Retain UIDs Option keeps Referenced Patient Sequence (PS3.15 2024e), and only its UIDs.
    assert out.ReferencedPatientSequence[0].ReferencedSOPInstanceUID == f"{STUDY}.77"
    assert "ReferencedPatientSequence" not in deidentify_dataset(ds, retain_uids=False, uid_salt=SALT)


def test_d_on_a_sequence_replaces_the_free_text_and_the_codes_it_identifies_by() -> None:
    ds = _identified()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    text_item = Dataset()
    text_item.RelationshipType, text_item.ValueType = "CONTAINS", "TEXT"
    text_item.ConceptNameCodeSequence = Sequence([_code("121071", "DCM", "Finding")])
    text_item.TextValue = "Jane Doe, seen by Dr Who on 5 January"
    person = Dataset()
    person.RelationshipType, person.ValueType = "HAS OBS CONTEXT", "PNAME"
    person.ConceptNameCodeSequence = Sequence([_code("121008", "DCM", "Person Observer Name")])
    person.PersonName = "WHO^DOCTOR"
    person.PersonIdentificationCodeSequence = Sequence([_code("EMP-4711", "99INVENTED", "Dr Who")])
    ds.ContentSequence = Sequence([text_item, person])

    out = deidentify_dataset(ds)
    text_out, person_out = out.ContentSequence
    assert text_out.ConceptNameCodeSequence[0].CodeValue == "121071"
    assert text_out.TextValue == DUMMY_TEXT
    assert person_out.PersonName == DUMMY_TEXT
    code = person_out.PersonIdentificationCodeSequence[0]
    assert DUMMY_TEXT == code.CodeValue == code.CodingSchemeDesignator == code.CodeMeaning


def test_the_input_is_not_changed() -> None:
    ds = _identified(2, referenced=f"{SERIES}.1")
    before = copy.deepcopy(ds)
    out = deidentify_dataset(ds, retain_uids=False, uid_salt=SALT, pseudonym=make_pseudonym(b"k"))
    assert ds == before
    assert ds.file_meta == before.file_meta
    assert ds.to_json_dict() == before.to_json_dict()
    # Nor does the result share anything with it that a caller could change.
    out.PixelSpacing[0] = "9.9"
    out.ImageType.append("DERIVED")
    out.AnatomicRegionSequence[0].CodeMeaning = "Changed"
    out.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2"
    assert ds == before
    assert ds.file_meta == before.file_meta


def test_what_a_viewer_needs_is_kept() -> None:
    ds = _identified()
    out = deidentify_dataset(ds, retain_uids=False, uid_salt=SALT)
    for kw in (
        "Rows", "Columns", "PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient", "RescaleSlope",
        "RescaleIntercept", "WindowCenter", "WindowWidth", "Modality", "SOPClassUID", "BitsAllocated",
        "BitsStored", "PixelRepresentation", "PhotometricInterpretation", "SliceThickness", "InstanceNumber",
    ):
        assert out[kw].value == ds[kw].value, kw
    assert out.PixelData == ds.PixelData
    assert out.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
    assert out.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID


def test_pydicom_writes_and_reads_back_the_result() -> None:
    out = deidentify_dataset(_identified(2, referenced=f"{SERIES}.1"), pseudonym=make_pseudonym(b"k"))
    buffer = BytesIO()
    pydicom.dcmwrite(buffer, out, enforce_file_format=True)
    back = pydicom.dcmread(BytesIO(buffer.getvalue()))
    assert back.PatientID == out.PatientID
    assert back.PatientName == DUMMY_PATIENT_NAME
    assert back.file_meta.MediaStorageSOPInstanceUID == back.SOPInstanceUID
    assert back.file_meta.ImplementationVersionName.startswith("VOXA")
    assert back.pixel_array.shape == (8, 8)


def test_a_previous_deidentification_is_kept_on_record() -> None:
    first = deidentify_dataset(_identified(), retain_uids=False, uid_salt=SALT)
    second = deidentify_dataset(first)
    assert len(second.DeidentificationMethod) == 2
    assert [item.CodeValue for item in second.DeidentificationMethodCodeSequence] == ["113100", "113110"]


# ------------------------------------------------------------------------------------------
# UIDs


def test_replaced_uids_are_consistent_across_the_instances_of_a_series() -> None:
    first, second = _identified(1), _identified(2, referenced=f"{SERIES}.1")
    out1 = deidentify_dataset(first, retain_uids=False, uid_salt=SALT)
    out2 = deidentify_dataset(second, retain_uids=False, uid_salt=SALT)

    assert out1.StudyInstanceUID == out2.StudyInstanceUID != STUDY
    assert out1.SeriesInstanceUID == out2.SeriesInstanceUID != SERIES
    assert out1.FrameOfReferenceUID == out2.FrameOfReferenceUID != FRAME_OF_REFERENCE
    assert out1.SOPInstanceUID != out2.SOPInstanceUID
    assert out2.ReferencedImageSequence[0].ReferencedSOPInstanceUID == out1.SOPInstanceUID
    assert out2.ReferencedImageSequence[0].ReferencedSOPClassUID == CTImageStorage
    assert out1.SOPClassUID == first.SOPClassUID
    assert out1.file_meta.MediaStorageSOPInstanceUID == out1.SOPInstanceUID
    assert out1.file_meta.TransferSyntaxUID == first.file_meta.TransferSyntaxUID
    assert out1.StudyInstanceUID == deidentified_uid(STUDY, uid_salt=SALT)
    for uid in (out1.StudyInstanceUID, out1.SeriesInstanceUID, out1.SOPInstanceUID, out1.FrameOfReferenceUID):
        assert is_valid_uid(uid) and uid.startswith("2.25."), uid
    assert [item.CodeValue for item in out1.DeidentificationMethodCodeSequence] == ["113100"]
    assert "Retain UIDs" not in out1.DeidentificationMethod

    other = deidentify_dataset(first, retain_uids=False, uid_salt="another salt")
    assert other.StudyInstanceUID != out1.StudyInstanceUID


def test_replacing_uids_needs_a_salt() -> None:
    with pytest.raises(ValueError, match="uid_salt"):
        deidentify_dataset(_identified(), retain_uids=False)
    with pytest.raises(ValueError, match="uid_salt"):
        deidentify_json(_identified().to_json_dict(), retain_uids=False)


# ------------------------------------------------------------------------------------------
# Every attribute of the table


def _value_for(vr: str, n: int) -> Any:
    texts: dict[str, Any] = {
        "AE": f"LEAKAE{n}", "AS": "042Y", "CS": f"LEAK{n}", "DA": "20230405", "DT": "20230405060708",
        "TM": "060708", "DS": "1.5", "IS": "7", "PN": f"LEAK^PERSON{n}", "UR": f"http://leak.invalid/{n}",
        "UI": f"1.2.826.0.1.3680043.10.543.5.{n}", "AT": 0x00100010,
    }
    if vr in texts:
        return texts[vr]
    if vr in ("LO", "LT", "SH", "ST", "UT", "UC"):
        return f"LEAK TEXT {n}"
    if vr in ("US", "SS", "UL", "SL", "FL", "FD", "SV", "UV"):
        return 7
    if vr in ("OB", "OD", "OF", "OL", "OV", "OW", "UN"):
        return b"LEAKLEAK"
    if vr == "SQ":
        item = _code(f"LEAK{n}", "99LEAK", "Leak")
        item.PatientComments = f"LEAK TEXT {n}"
        return Sequence([item])
    raise LookupError(vr)


def _every_table_attribute() -> tuple[Dataset, dict[int, Any]]:
    ds = make_instance(
        patient_id="SYN-P9", patient_name="LEAK^PATIENT", study_instance_uid=STUDY, series_instance_uid=SERIES,
        sop_instance_uid=f"{SERIES}.9", rows=4,
    )
    originals: dict[int, Any] = {}
    for n, rule in enumerate(TABLE_E_1_1.values()):
        # Command and File Meta groups cannot be written in a data set.
        if rule.tag >> 16 in (0x0000, 0x0002) or not _in_dictionary(rule.tag):
            continue
        vr = dictionary_VR(rule.tag)
        try:
            value = _value_for(vr, n)
        except LookupError:
            continue
        ds.add(DataElement(rule.tag, vr, value))
        originals[rule.tag] = value
    return ds, originals


@pytest.mark.parametrize("retain_uids", [True, False])
def test_every_attribute_of_the_table_follows_its_action(retain_uids: bool) -> None:
    ds, originals = _every_table_attribute()
    assert len(originals) >= 550
    out = deidentify_dataset(ds, retain_uids=retain_uids, uid_salt=SALT, now=NOW)
    wrong: list[str] = []
    for tag, original in originals.items():
        rule = TABLE_E_1_1[tag]
        action = rule.retain_uids if retain_uids and rule.retain_uids else rule.basic
        elem = out.get(tag)
        name = f"{keyword_for_tag(tag)} {action}"
        if action is Action.K:
            if elem is None or (elem.VR != "SQ" and elem.value != original):
                wrong.append(f"{name}: not kept")
        elif action is Action.X:
            if elem is not None:
                wrong.append(f"{name}: not removed")
        elif elem is None:
            if not action.startswith("X"):
                wrong.append(f"{name}: removed")
        elif elem.VR == "SQ":
            leaked = [v for v in _values(Dataset({tag: elem})) if "LEAK TEXT" in v]
            if action is Action.Z and len(elem.value):
                wrong.append(f"{name}: not emptied")
            if leaked:
                wrong.append(f"{name}: leaks {leaked}")
        else:
            if action is Action.Z and tag != 0x00100010 and not elem.is_empty:
                wrong.append(f"{name}: not emptied")
            if action in (Action.D, Action.U) and elem.is_empty:
                wrong.append(f"{name}: emptied where a value is required")
            if elem.value == original or "LEAK" in str(elem.value):
                wrong.append(f"{name}: value kept")
    assert wrong == []

    buffer = BytesIO()
    pydicom.dcmwrite(buffer, out, enforce_file_format=True)
    back = pydicom.dcmread(BytesIO(buffer.getvalue()))
    assert len(back) == len(out)


# ------------------------------------------------------------------------------------------
# DICOM JSON


@pytest.mark.parametrize("retain_uids", [True, False])
def test_the_json_variant_agrees_with_the_dataset_variant(retain_uids: bool) -> None:
    pseudonym = make_pseudonym(b"teaching secret")
    options: dict[str, Any] = {"retain_uids": retain_uids, "uid_salt": SALT, "pseudonym": pseudonym, "now": NOW}
    for ds in (_identified(2, referenced=f"{SERIES}.1"), _every_table_attribute()[0]):
        expected = deidentify_dataset(ds, **options).to_json_dict()
        actual = deidentify_json(ds.to_json_dict(), **options)
        assert actual == expected


def test_json_results_are_deidentified() -> None:
    attrs = _identified().to_json_dict()
    attrs["00091001"] = {"vr": "LO", "Value": ["DOE^JANE"]}
    out = deidentify_json(attrs, pseudonym=make_pseudonym(b"k"))
    assert "00091001" not in out and "00091010" not in out
    assert out["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": DUMMY_PATIENT_NAME}]}
    assert out["00100020"]["Value"][0].startswith("TEACH-")
    assert out["00080050"] == {"vr": "SH"}
    assert "00081030" not in out
    assert out["00120062"] == {"vr": "CS", "Value": ["YES"]}
    assert EDITION in out["00120063"]["Value"][0]
    assert out["0020000D"] == {"vr": "UI", "Value": [STUDY]}
    with pytest.raises(ValueError, match="8 hexadecimal"):
        deidentify_json({"PatientName": {"vr": "PN"}})


def test_bulk_data_uris_of_wado_metadata_do_not_reveal_replaced_uids() -> None:
    ds = _identified()
    metadata = instance_json(ds, STUDY, SERIES, ds.SOPInstanceUID)
    kept = deidentify_json(metadata)
    assert kept["7FE00010"]["BulkDataURI"] == metadata["7FE00010"]["BulkDataURI"]

    out = deidentify_json(metadata, retain_uids=False, uid_salt=SALT)
    uri = out["7FE00010"]["BulkDataURI"]
    assert STUDY not in uri and ds.SOPInstanceUID not in uri
    assert f"/series/{deidentified_uid(SERIES, uid_salt=SALT)}/" in uri
    assert out["0020000E"]["Value"] == [deidentified_uid(SERIES, uid_salt=SALT)]


# ------------------------------------------------------------------------------------------
# Pseudonyms and burned-in annotation


def test_a_pseudonym_is_stable_and_differs_per_patient() -> None:
    pseudonym = make_pseudonym(b"teaching secret")
    first = pseudonym("SYN-P1")
    assert first == pseudonym("SYN-P1") == make_pseudonym(b"teaching secret")("SYN-P1 ")
    assert first != pseudonym("SYN-P2")
    assert first != make_pseudonym(b"another secret")("SYN-P1")
    assert re.fullmatch(r"TEACH-[A-Z2-7]{16}", first)
    assert len(first) <= 64

    one = deidentify_dataset(_identified(1, patient_id="SYN-P1"), pseudonym=pseudonym)
    two = deidentify_dataset(_identified(2, patient_id="SYN-P1"), pseudonym=pseudonym)
    other = deidentify_dataset(_identified(1, patient_id="SYN-P2"), pseudonym=pseudonym)
    assert one.PatientID == two.PatientID == first != other.PatientID
    with pytest.raises(ValueError):
        make_pseudonym(b"")


def test_burned_in_annotation_is_flagged() -> None:
    ds = _identified()
    assert not has_burned_in_annotation(ds)
    ds.BurnedInAnnotation = "YES"
    assert has_burned_in_annotation(ds)
    assert has_burned_in_annotation(ds.to_json_dict())
    assert has_burned_in_annotation(deidentify_dataset(ds))
    ds.BurnedInAnnotation = "NO"
    assert not has_burned_in_annotation(ds)
    assert not has_burned_in_annotation(ds.to_json_dict())
    assert not has_burned_in_annotation({})
