"""The TID 1500 Measurement Report (voxa.measurements.sr): highdicom write-read round trip, and
dicom3tools' ``dciodvfy`` finds no error in the written file."""

from __future__ import annotations

import datetime as dt
import io
import math
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from support.dicom3tools import assert_valid_and_checkable

from voxa.measurements import MeasurementKind
from voxa.measurements.geometry import (
    frame_image,
    measure_image,
    measure_patient,
    segment_volume_ml,
    volume_quantity,
)
from voxa.measurements.sr import ReportError, build_measurement_report, observer_name, sr_to_bytes
from voxa.measurements.store import StoredMeasurement
from voxa.testing.synthetic import dataset_to_bytes, tiny_study

K = MeasurementKind


@pytest.fixture(scope="module")
def ct_slices() -> list[Dataset]:
    study = tiny_study(3, series=1, instances_per_series=3, rows=32)
    # through bytes, as the archive would hand them back
    return [dcmread(io.BytesIO(dataset_to_bytes(ds))) for ds in study.datasets()]


@pytest.fixture(scope="module")
def seg(ct_slices: list[Dataset]) -> Dataset:
    mask = np.zeros((3, 32, 32), dtype=bool)
    mask[0, 4:8, 4:9] = True  # 20 pixels
    mask[1, 4:10, 4:9] = True  # 30 pixels
    description = hd.seg.SegmentDescription(
        segment_number=1, segment_label="lesion", segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lesion, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
    seg = hd.seg.Segmentation(
        source_images=ct_slices, pixel_array=mask, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description], series_instance_uid=hd.UID(), series_number=50,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="Voxa tests", manufacturer_model_name="test",
        software_versions="1", device_serial_number="1")
    return dcmread(io.BytesIO(sr_to_bytes(seg)))


def _stored(i: int, kind: K, graphic: dict[str, Any], ct: Dataset, *, label: str = "",
            values: dict[str, Any] | None = None) -> StoredMeasurement:
    if values is None:
        if "points" in graphic:
            values = measure_image(kind, graphic["points"], frame_image(ct, None, with_pixels=True))
        else:
            values = measure_patient(kind, graphic["points_mm"])
    now = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    return StoredMeasurement(
        id=i, study_instance_uid=str(ct.StudyInstanceUID), series_instance_uid=str(ct.SeriesInstanceUID),
        sop_instance_uid=str(ct.SOPInstanceUID), frame_number=None, username="reader", kind=kind.value,
        label=label, tracking_uid=f"2.25.{1000 + i}", graphic=graphic,
        values={k: v.as_json() for k, v in values.items()}, created_at=now, updated_at=now)


@pytest.fixture(scope="module")
def measurements(ct_slices: list[Dataset], seg: Dataset) -> list[StoredMeasurement]:
    ct = ct_slices[0]
    ms = [
        _stored(1, K.DISTANCE, {"points": [[2, 2], [5, 6]]}, ct, label="aorta"),
        _stored(2, K.ANGLE, {"points": [[10, 2], [2, 2], [2, 10]]}, ct),
        _stored(3, K.COBB_ANGLE, {"points": [[1, 1], [11, 1], [1, 20], [11, 30]]}, ct),
        _stored(4, K.POLYGON, {"points": [[2, 2], [12, 2], [12, 12]]}, ct),
        _stored(5, K.RECTANGLE_ROI, {"points": [[4, 4], [12, 10]]}, ct, label="liver"),
        _stored(6, K.ELLIPSE_ROI, {"points": [[4, 4], [20, 12]]}, ct),
        _stored(7, K.FREEHAND_ROI, {"points": [[3, 3], [20, 4], [16, 18], [4, 14]]}, ct),
        _stored(8, K.PROBE, {"points": [[7.5, 6.5]]}, ct),
        _stored(9, K.ARROW, {"points": [[8, 8], [14, 14]]}, ct, label="nodule"),
        _stored(10, K.TEXT, {"points": [[20, 20]]}, ct, label="see prior"),
        _stored(11, K.DISTANCE, {"points_mm": [[0, 0, 0], [3, 4, 0]]}, ct, label="3-D"),
        _stored(12, K.VOLUME, {"contours": [
            {"sop_instance_uid": str(s.SOPInstanceUID), "frame_number": None, "points": [[2, 2], [12, 2], [12, 12]]}
            for s in ct_slices]}, ct, values=volume_quantity(0.75)),
    ]
    volume = segment_volume_ml(seg, 1)
    seg_m = _stored(13, K.VOLUME, {"segment": {"sop_instance_uid": str(seg.SOPInstanceUID), "segment_number": 1}},
                    ct, values=volume_quantity(volume), label="lesion volume")
    return [*ms, seg_m]


def test_segment_volume(seg: Dataset) -> None:
    # 50 voxels of 1 x 1 mm x 5 mm slices
    assert segment_volume_ml(seg, 1) == pytest.approx(50 * 5 / 1000)


def _sr(measurements: list[StoredMeasurement], ct_slices: list[Dataset], seg: Dataset) -> bytes:
    report = build_measurement_report(measurements, evidence=[*ct_slices, seg], username="reader",
                                      display_name="Ada Lovelace", series_instance_uid="2.25.77",
                                      sop_instance_uid="2.25.78")
    return sr_to_bytes(report)


def test_round_trip(measurements: list[StoredMeasurement], ct_slices: list[Dataset], seg: Dataset) -> None:
    data = _sr(measurements, ct_slices, seg)
    sr = hd.sr.srread(io.BytesIO(data))
    assert isinstance(sr, hd.sr.Comprehensive3DSR)
    assert (sr.SOPInstanceUID, sr.SeriesInstanceUID, sr.Modality) == ("2.25.78", "2.25.77", "SR")
    assert sr.StudyInstanceUID == ct_slices[0].StudyInstanceUID and sr.PatientID == ct_slices[0].PatientID
    report = sr.content
    assert isinstance(report, hd.sr.MeasurementReport)
    assert report[0].ConceptNameCodeSequence[0].CodeValue == "126000"

    observer = [item for item in report[0].ContentSequence if item.ConceptNameCodeSequence[0].CodeValue == "121008"]
    assert observer and observer[0].PersonName == "Lovelace^Ada"

    ct = ct_slices[0]
    linear = {str(g.tracking_uid): g for g in report.get_image_measurement_groups()}
    assert set(linear) == {"2.25.1001", "2.25.1002", "2.25.1003", "2.25.1008", "2.25.1011"}
    (length,) = linear["2.25.1001"].get_measurements()
    assert (length.name.value, length.unit.value) == ("410668003", "mm")
    assert length.value == pytest.approx(5.0)  # 3-4-5 at 1 mm pixels
    assert linear["2.25.1001"].tracking_identifier == "aorta"
    (coords,) = length.referenced_coordinates
    assert coords.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
    np.testing.assert_allclose(coords.value, [[2, 2], [5, 6]])
    ref = coords.ContentSequence[0].ReferencedSOPSequence[0]
    assert (ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID) == (ct.SOPClassUID, ct.SOPInstanceUID)
    (angle,) = linear["2.25.1002"].get_measurements()
    assert (angle.name.value, angle.value, angle.unit.value) == ("1483009", pytest.approx(90.0), "deg")
    (cobb,) = linear["2.25.1003"].get_measurements()
    assert cobb.name.value == "285285000" and len(cobb.referenced_coordinates) == 2
    assert cobb.value == pytest.approx(math.degrees(math.atan2(10, 10)))
    (probe,) = linear["2.25.1008"].get_measurements()
    assert (probe.name.value, probe.unit.value) == ("112031", "[hnsf'U]")
    assert probe.value == pytest.approx(float(ct.pixel_array[6, 7]) - 1024)
    (in_3d,) = linear["2.25.1011"].get_measurements()
    assert in_3d.referenced_coordinates[0].ReferencedFrameOfReferenceUID == ct.FrameOfReferenceUID

    planar = {str(g.tracking_uid): g for g in report.get_planar_roi_measurement_groups()}
    assert set(planar) == {"2.25.1004", "2.25.1005", "2.25.1006", "2.25.1007", "2.25.1009", "2.25.1010"}
    rect = planar["2.25.1005"]
    assert rect.tracking_identifier == "liver"
    got = {m.name.meaning: (m.value, m.unit.value) for m in rect.get_measurements()}
    stored = measurements[4].values
    assert set(got) == {"Area", "Perimeter", "Mean", "Standard Deviation", "Minimum", "Maximum"}
    assert got["Area"] == (pytest.approx(48.0), "mm2")
    assert got["Mean"] == (pytest.approx(stored["mean"]["value"]), "[hnsf'U]")
    assert got["Standard Deviation"][0] == pytest.approx(stored["sd"]["value"])
    region = rect.roi
    assert region is not None and region.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
    np.testing.assert_allclose(region.value, [[4, 4], [12, 4], [12, 10], [4, 10], [4, 4]])
    assert region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == ct.SOPInstanceUID
    ellipse = planar["2.25.1006"].roi
    assert ellipse is not None and ellipse.graphic_type == hd.sr.GraphicTypeValues.ELLIPSE
    arrow, text = planar["2.25.1009"].roi, planar["2.25.1010"].roi
    assert arrow is not None and arrow.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
    assert text is not None and text.graphic_type == hd.sr.GraphicTypeValues.POINT
    assert planar["2.25.1010"].tracking_identifier == "see prior"
    assert planar["2.25.1010"].get_measurements() == []

    volumes = {str(g.tracking_uid): g for g in report.get_volumetric_roi_measurement_groups()}
    assert set(volumes) == {"2.25.1012", "2.25.1013"}
    (contour_volume,) = volumes["2.25.1012"].get_measurements()
    assert (contour_volume.name.value, contour_volume.value, contour_volume.unit.value) == (
        "118565006", pytest.approx(0.75), "ml")
    outlines = volumes["2.25.1012"].roi
    assert isinstance(outlines, list) and len(outlines) == 3
    segment_group = volumes["2.25.1013"]
    (segment_volume,) = segment_group.get_measurements()
    assert segment_volume.value == pytest.approx(0.25)
    referenced = segment_group.referenced_segment
    assert referenced is not None and referenced.referenced_sop_instance_uid == seg.SOPInstanceUID

    evidence = {item.ReferencedSOPInstanceUID for series in sr.CurrentRequestedProcedureEvidenceSequence[0]
                .ReferencedSeriesSequence for item in series.ReferencedSOPSequence}
    assert evidence == {str(s.SOPInstanceUID) for s in ct_slices} | {str(seg.SOPInstanceUID)}


def test_dciodvfy_finds_no_error(measurements: list[StoredMeasurement], ct_slices: list[Dataset], seg: Dataset,
                                 tmp_path: Path) -> None:
    path = tmp_path / "sr.dcm"
    path.write_bytes(_sr(measurements, ct_slices, seg))
    # the check can fail: a copy without a Type 1 attribute of the SR Document General module
    assert_valid_and_checkable(path, "Comprehensive3DSR", "CompletionFlag")


def test_refusals(measurements: list[StoredMeasurement], ct_slices: list[Dataset]) -> None:
    with pytest.raises(ReportError, match="no measurements"):
        build_measurement_report([], evidence=ct_slices, username="reader")
    with pytest.raises(ReportError, match="not in the evidence"):
        build_measurement_report(measurements[:1], evidence=ct_slices[1:], username="reader")
    other = tiny_study(4, series=1, instances_per_series=1)
    with pytest.raises(ReportError, match="studies"):
        build_measurement_report(measurements[:1], evidence=[*ct_slices, *other.datasets()], username="reader")


def test_observer_name() -> None:
    assert observer_name("jdoe", "Jane Doe") == "Doe^Jane"
    assert observer_name("jdoe", "Doe^Jane") == "Doe^Jane"
    assert observer_name("jdoe", "Cher") == "Cher^"
    assert observer_name("jdoe") == "jdoe^"
