"""Cardiac function and vessel analysis results written back as DICOM (voxa.analysis.outputs_cardiac,
voxa.analysis.outputs_vessels): phantom CT series are assembled and analysed as the tools do, each
SEG and TID 1500 SR is written to a file, read back with highdicom, and checked with dicom3tools'
``dciodvfy`` (which must find no error in it, and must find one in a broken copy)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from analysis.phantom_series import volume_series
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from skimage.measure import points_in_poly
from support.dicom3tools import assert_valid_and_checkable, dciodvfy, errors_in

from voxa.analysis.cardiac import CardiacFunctionResult, analyse_cardiac_function
from voxa.analysis.dicom_outputs import OutputError, to_bytes
from voxa.analysis.outputs_cardiac import (
    AHA_SEGMENT_CODES,
    CARDIAC_STRUCTURES,
    LV_BLOOD_POOL,
    LV_MYOCARDIUM,
    VOXA_CODES,
    aha_segment_masks,
    build_cardiac_seg,
    build_cardiac_sr,
    cardiac_label_masks,
    images_in_volume_order,
)
from voxa.analysis.outputs_vessels import (
    VESSEL_CODES,
    build_vessel_seg,
    build_vessel_sr,
    stenosis_outline,
)
from voxa.analysis.vessels import PatientPoint, VesselAnalysis, analyse_vessel
from voxa.imaging.assemble import volume_from_datasets
from voxa.imaging.volume import Volume
from voxa.testing.heart_phantom import beating_heart_phantom
from voxa.testing.vessel_phantom import StenosisSpec, StraightTube, vessel_phantom

STUDY = "1.2.826.0.1.3680043.8.498.7301"
HEART_SERIES = "1.2.826.0.1.3680043.8.498.7302"
VESSEL_SERIES = "1.2.826.0.1.3680043.8.498.7303"
SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"


def _write(ds: Dataset, path: Path) -> Path:
    path.write_bytes(to_bytes(ds))
    return path


def _report(path: Path) -> hd.sr.MeasurementReport:
    report = hd.sr.srread(path).content
    assert isinstance(report, hd.sr.MeasurementReport)
    return report


# ---------------------------------------------------------------- cardiac


@dataclass
class CardiacRun:
    volumes: dict[float, Volume]
    datasets: dict[float, list[Dataset]]
    result: CardiacFunctionResult
    masks: dict[str, np.ndarray]
    ed_images: list[Dataset]


@pytest.fixture(scope="module")
def cardiac() -> CardiacRun:
    """Two phases (ED 0 %, ES 40 %) of the heart phantom at 2.5 mm, stored as CT images of one
    series (phases told apart by NominalPercentageOfCardiacPhase) and assembled per phase."""
    phantom = beating_heart_phantom(phases_percent=(0, 40), spacing_mm=(2.5, 2.5, 2.5))
    datasets: dict[float, list[Dataset]] = {}
    volumes: dict[float, Volume] = {}
    for phase, volume in phantom.phases.items():
        dss = volume_series(volume, study_uid=STUDY, series_uid=HEART_SERIES,
                            uid_prefix=f"{HEART_SERIES}.{int(phase) + 1}", patient_id="HEART-PHANTOM",
                            NominalPercentageOfCardiacPhase=float(phase))
        datasets[phase] = dss[::-1]  # storage order must not matter
        volumes[phase] = volume_from_datasets(dss)
    result = analyse_cardiac_function(volumes, heart_rate_bpm=60.0, sex="F", body_surface_area_m2=1.8)
    masks = cardiac_label_masks(volumes, result)
    ed = result.ed_phase_percent
    return CardiacRun(volumes, datasets, result, masks, images_in_volume_order(datasets[ed], volumes[ed]))


def test_cardiac_masks_reproduce_the_analysis(cardiac: CardiacRun) -> None:
    result, masks = cardiac.result, cardiac.masks
    assert result.ed_phase_percent == 0.0
    assert list(masks) == list(CARDIAC_STRUCTURES)
    voxel_ml = cardiac.volumes[0.0].voxel_volume_ml
    assert masks[LV_BLOOD_POOL].sum() * voxel_ml == pytest.approx(result.lv.edv_ml)
    assert result.rv is not None and masks["RV blood pool"].sum() * voxel_ml == pytest.approx(result.rv.edv_ml)
    ed_row = result.phases[0]
    assert masks["LA"].sum() * voxel_ml == pytest.approx(ed_row.la_ml)
    assert masks["RA"].sum() * voxel_ml == pytest.approx(ed_row.ra_ml)
    # at 2.5 mm the myocardium is on the volume's own grid: its volume is the reported one
    assert masks[LV_MYOCARDIUM].sum() * voxel_ml * 1.05 == pytest.approx(result.lv_mass_g)
    stacked = np.stack(list(masks.values())).sum(axis=0)
    assert stacked.max() == 1  # no voxel in two structures
    with pytest.raises(OutputError, match="does not reproduce"):
        cardiac_label_masks(cardiac.volumes, result, wall_search_mm=4.0)


def test_cardiac_seg_round_trip(cardiac: CardiacRun, tmp_path: Path) -> None:
    seg_ds = build_cardiac_seg(cardiac.ed_images, cardiac.masks)
    path = _write(seg_ds, tmp_path / "cardiac-seg.dcm")
    seg = hd.seg.segread(path)
    assert seg.SOPClassUID == SEG_CLASS and seg.StudyInstanceUID == STUDY and seg.PatientID == "HEART-PHANTOM"
    assert seg.SegmentationType == "BINARY"
    labels = [str(item.SegmentLabel) for item in seg.SegmentSequence]
    assert labels == ["LV blood pool", "RV blood pool", "LA", "RA", "LV myocardium"]
    want_types = ["87878005", "53085002", "82471001", "73829009", "49848007"]
    for item, code in zip(seg.SegmentSequence, want_types, strict=True):
        assert item.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"  # Anatomical Structure
        assert item.SegmentedPropertyTypeCodeSequence[0].CodeValue == code
        assert item.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == "SCT"
        assert item.SegmentAlgorithmType == "AUTOMATIC"
        assert item.SegmentAlgorithmName == "Voxa cardiac function"
        algorithm = item.SegmentationAlgorithmIdentificationSequence[0]
        assert algorithm.AlgorithmVersion == cardiac.result.algorithm_version
    uids = [str(ds.SOPInstanceUID) for ds in cardiac.ed_images]
    pixels = seg.get_pixels_by_source_instance(uids)
    for n, label in enumerate(labels):
        assert np.array_equal(pixels[..., n].astype(bool), cardiac.masks[label]), label
    assert_valid_and_checkable(path, "Segmentation", "SegmentationType")


def test_cardiac_sr_round_trip(cardiac: CardiacRun, tmp_path: Path) -> None:
    result = cardiac.result
    seg_ds = build_cardiac_seg(cardiac.ed_images, cardiac.masks)
    sr_ds = build_cardiac_sr(result, cardiac.ed_images, seg_ds)
    path = _write(sr_ds, tmp_path / "cardiac-sr.dcm")
    sr = hd.sr.srread(path)
    assert sr.SOPClassUID == COMPREHENSIVE_3D_SR and sr.StudyInstanceUID == STUDY
    assert sr.CompletionFlag == "COMPLETE" and sr.PreliminaryFlag == "PRELIMINARY"
    assert sr.VerificationFlag == "UNVERIFIED"
    assert [str(i.CodingSchemeDesignator) for i in sr.CodingSchemeIdentificationSequence] == ["99VOXA"]
    report = _report(path)
    groups = report.get_volumetric_roi_measurement_groups()
    by_id = {str(g.tracking_identifier): g for g in groups}
    measured = [s for s in result.wall_thickness if s.ed_mm is not None or s.es_mm is not None]
    assert len(groups) == 5 + len(measured) and len(measured) >= 15
    segment_of = {"Left ventricle": 1, "Right ventricle": 2, "Left atrium": 3, "Right atrium": 4, "LV myocardium": 5}
    for name, number in segment_of.items():
        reference = by_id[name].referenced_segment
        assert reference is not None and reference.referenced_segment_numbers == [number]
        assert reference.referenced_sop_instance_uid == seg_ds.SOPInstanceUID

    def value(group_id: str, name: Code, unit: str, derivation: Code | None = None) -> float:
        (m,) = [m for m in by_id[group_id].get_measurements(name=name) if m.derivation == derivation]
        assert m.unit.value == unit and m.unit.scheme_designator == "UCUM"
        return float(m.value)

    lv = result.lv
    assert value("Left ventricle", codes.LN.LeftVentricularEDVolume, "ml") == pytest.approx(lv.edv_ml)
    assert value("Left ventricle", codes.LN.LeftVentricularESVolume, "ml") == pytest.approx(lv.esv_ml)
    assert value("Left ventricle", codes.SCT.StrokeVolume, "ml") == pytest.approx(lv.sv_ml)
    assert value("Left ventricle", codes.LN.LeftVentricularEjectionFractionByCT, "%") == pytest.approx(lv.ef_percent)
    assert value("Left ventricle", codes.SCT.CardiacOutput, "l/min") == pytest.approx(lv.cardiac_output_l_min)
    assert value("Left ventricle", codes.SCT.CardiacIndex, "l/min/m2") == pytest.approx(
        (lv.cardiac_output_l_min or 0.0) / 1.8)
    assert value("Left ventricle", VOXA_CODES["es_phase"], "%") == 40.0
    assert value("LV myocardium", codes.LN.LeftVentricleMass, "g") == pytest.approx(result.lv_mass_g)
    assert value("LV myocardium", codes.DCM.WallThickness, "mm", codes.SCT.Maximum) == pytest.approx(
        result.max_wall_thickness_mm)
    rv = result.rv
    assert rv is not None
    assert value("Right ventricle", codes.LN.RightVentricularEDVolume, "ml") == pytest.approx(rv.edv_ml)
    assert value("Right ventricle", codes.LN.RightVentricularESVolume, "ml") == pytest.approx(rv.esv_ml)
    assert value("Right ventricle", codes.SCT.RightVentricularStrokeVolume, "ml") == pytest.approx(rv.sv_ml)
    assert value("Right ventricle", codes.LN.RightVentricularEjectionFractionByCT, "%") == pytest.approx(
        rv.ef_percent)
    assert value("Left atrium", codes.SCT.Volume, "ml", codes.SCT.Maximum) == pytest.approx(result.la_max_ml)
    assert value("Right atrium", codes.SCT.Volume, "ml", codes.SCT.Minimum) == pytest.approx(result.ra_min_ml)
    for s in measured:
        group = by_id[f"AHA {s.segment} {s.name}"]
        assert group.finding_sites[0].value == AHA_SEGMENT_CODES[s.segment]
        assert group.referenced_segment is not None and group.referenced_segment.referenced_segment_numbers == [5]
        if s.ed_mm is not None:
            ed_mm = value(str(group.tracking_identifier), codes.DCM.WallThickness, "mm", codes.SCT.Median)
            assert ed_mm == pytest.approx(s.ed_mm)
    assert_valid_and_checkable(path, "Comprehensive3DSR", "CompletionFlag")


def test_cardiac_sr_outlines_every_group_on_the_images(cardiac: CardiacRun, tmp_path: Path) -> None:
    """With the masks, every group is a volume outlined on the end-diastolic images (viewers such
    as OHIF draw the first outline: the structure where it is largest), the AHA segments included."""
    result = cardiac.result
    ed_volume = cardiac.volumes[result.ed_phase_percent]
    aha = aha_segment_masks(cardiac.masks[LV_MYOCARDIUM], ed_volume, result.geometry)
    stacked = np.stack(list(aha.values()))
    assert (stacked.sum(axis=0) == cardiac.masks[LV_MYOCARDIUM]).all()  # a partition of the myocardium
    assert len(aha) >= 15
    seg_ds = build_cardiac_seg(cardiac.ed_images, cardiac.masks)
    sr_ds = build_cardiac_sr(result, cardiac.ed_images, seg_ds, masks=cardiac.masks, ed_volume=ed_volume)
    path = _write(sr_ds, tmp_path / "cardiac-sr-outlined.dcm")
    report = _report(path)
    groups = {str(g.tracking_identifier): g for g in report.get_volumetric_roi_measurement_groups()}
    assert report.get_image_measurement_groups() == []
    assert all(g.referenced_segment is None and isinstance(g.roi, list) and g.roi for g in groups.values())
    uid_index = {str(ds.SOPInstanceUID): k for k, ds in enumerate(cardiac.ed_images)}
    lv = cardiac.masks[LV_BLOOD_POOL]
    first = uid_index[str(groups["Left ventricle"].roi[0].ContentSequence[0].ReferencedSOPSequence[0]
                          .ReferencedSOPInstanceUID)]
    assert lv[first].sum() == lv.sum(axis=(1, 2)).max()
    (edv,) = groups["Left ventricle"].get_measurements(name=codes.LN.LeftVentricularEDVolume)
    assert edv.value == pytest.approx(result.lv.edv_ml)
    assert sum(name.startswith("AHA ") for name in groups) >= 15
    assert_valid_and_checkable(path, "Comprehensive3DSR", "CompletionFlag")


def test_cardiac_sr_without_a_seg_has_coordinate_free_groups(cardiac: CardiacRun, tmp_path: Path) -> None:
    sr_ds = build_cardiac_sr(cardiac.result, cardiac.ed_images)
    path = _write(sr_ds, tmp_path / "cardiac-sr-noseg.dcm")
    report = _report(path)
    assert report.get_volumetric_roi_measurement_groups() == []
    (lv,) = report.get_image_measurement_groups(finding_site=codes.SCT.LeftVentricle)
    (edv,) = lv.get_measurements(name=codes.LN.LeftVentricularEDVolume)
    assert edv.value == pytest.approx(cardiac.result.lv.edv_ml)
    errors = errors_in(dciodvfy(path))
    assert errors == []


def test_cardiac_outputs_refuse_bad_input(cardiac: CardiacRun) -> None:
    with pytest.raises(OutputError, match="unknown structures"):
        build_cardiac_seg(cardiac.ed_images, {"Aorta": cardiac.masks[LV_BLOOD_POOL]})
    with pytest.raises(OutputError, match="empty"):
        build_cardiac_seg(cardiac.ed_images, {LV_BLOOD_POOL: np.zeros_like(cardiac.masks[LV_BLOOD_POOL])})
    shuffled = list(cardiac.ed_images)
    shuffled[0], shuffled[5] = shuffled[5], shuffled[0]
    with pytest.raises(OutputError, match="slice order"):
        build_cardiac_seg(shuffled, cardiac.masks)
    with pytest.raises(OutputError, match="not among the datasets"):
        images_in_volume_order(cardiac.ed_images[1:], cardiac.volumes[0.0])


# ---------------------------------------------------------------- vessels


def _tube(direction: tuple[float, float, float]) -> StraightTube:
    d = np.asarray(direction) / np.linalg.norm(direction)
    return StraightTube((4.0, 14.0, 14.0), (float(d[0]), float(d[1]), float(d[2])), 30.0, 2.0,
                        (StenosisSpec(centre_mm=15.0, length_mm=8.0, percent=50.0),))


@dataclass
class VesselRun:
    analysis: VesselAnalysis
    images: list[Dataset]


@pytest.fixture(scope="module")
def vessel() -> VesselRun:
    """A 4 mm tube with a 50 % stenosis, running about 10° off the slice normal."""
    tube = _tube((1.0, 0.15, 0.1))  # frame (z, y, x)
    phantom = vessel_phantom([tube], shape=(44, 64, 64), spacing_mm=(0.8, 0.5, 0.5), origin_mm=(-80.0, -120.0, 35.0))
    dss = volume_series(phantom.volume, study_uid=STUDY, series_uid=VESSEL_SERIES, patient_id="VESSEL-PHANTOM")
    volume = volume_from_datasets(dss[::-1])

    def at(s: float) -> PatientPoint:
        x, y, z = phantom.frame_to_patient(tube.point_at(s))
        return PatientPoint(float(x), float(y), float(z))

    analysis = analyse_vessel(volume, at(1.0), at(tube.length_mm - 1.0))
    assert analysis.stenosis is not None
    return VesselRun(analysis, images_in_volume_order(dss, volume))


def test_vessel_seg_round_trip(vessel: VesselRun, tmp_path: Path) -> None:
    seg_ds = build_vessel_seg(vessel.images, vessel.analysis.segmentation.mask)
    path = _write(seg_ds, tmp_path / "vessel-seg.dcm")
    seg = hd.seg.segread(path)
    assert seg.SOPClassUID == SEG_CLASS and seg.PatientID == "VESSEL-PHANTOM"
    (item,) = seg.SegmentSequence
    assert item.SegmentLabel == "Vessel lumen"
    assert item.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"
    assert item.SegmentedPropertyTypeCodeSequence[0].CodeValue == "91747007"  # Lumen of blood vessel
    assert item.SegmentAlgorithmName == "Voxa vessel analysis"
    pixels = seg.get_pixels_by_source_instance([str(ds.SOPInstanceUID) for ds in vessel.images])
    assert np.array_equal(pixels[..., 0].astype(bool), vessel.analysis.segmentation.mask)
    assert_valid_and_checkable(path, "Segmentation", "SegmentationType")


def test_vessel_sr_round_trip_with_the_stenosis_outline(vessel: VesselRun, tmp_path: Path) -> None:
    analysis = vessel.analysis
    stenosis = analysis.stenosis
    assert stenosis is not None and 40.0 < stenosis.stenosis_percent < 60.0
    seg_ds = build_vessel_seg(vessel.images, analysis.segmentation.mask)
    sr_ds = build_vessel_sr(analysis, vessel.images, seg_ds)
    path = _write(sr_ds, tmp_path / "vessel-sr.dcm")
    sr = hd.sr.srread(path)
    assert sr.PreliminaryFlag == "PRELIMINARY" and sr.VerificationFlag == "UNVERIFIED"
    report = _report(path)
    (whole,) = report.get_volumetric_roi_measurement_groups()
    # the lumen's volume outlined on the images (a viewer can draw it), largest slice first
    assert whole.referenced_segment is None and isinstance(whole.roi, list)
    mask = np.asarray(analysis.segmentation.mask)
    on = {str(r.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID) for r in whole.roi}
    assert on == {str(vessel.images[k].SOPInstanceUID) for k in np.flatnonzero(mask.any(axis=(1, 2)))}
    largest = int(np.argmax(mask.sum(axis=(1, 2))))
    assert whole.roi[0].ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == \
        vessel.images[largest].SOPInstanceUID
    (length,) = whole.get_measurements(name=codes.SCT.LengthOfVesselSegment)
    assert length.value == pytest.approx(analysis.centerline.length_mm) and length.unit.value == "mm"
    (lumen,) = whole.get_measurements(name=codes.DCM.LumenVolume)
    assert lumen.value == pytest.approx(analysis.segmentation.volume_mm3) and lumen.unit.value == "mm3"

    (group,) = report.get_planar_roi_measurement_groups()
    assert group.finding_type == codes.SCT.Stenosis

    def value(name: Code, unit: str) -> float:
        (m,) = group.get_measurements(name=name)
        assert m.unit.value == unit
        return float(m.value)

    assert value(codes.SCT.LumenDiameterStenosis, "%") == pytest.approx(stenosis.stenosis_percent)
    assert value(codes.SCT.LumenAreaStenosis, "%") == pytest.approx(stenosis.area_stenosis_percent)
    assert value(codes.SCT.VesselLumenDiameter, "mm") == pytest.approx(stenosis.min_diameter_mm)
    assert value(codes.SCT.VesselLumenCrossSectionalArea, "mm2") == pytest.approx(stenosis.min_area_mm2)
    assert value(VESSEL_CODES["reference_diameter"], "mm") == pytest.approx(stenosis.reference_diameter_mm)
    lesion_mm = stenosis.lesion_end_mm - stenosis.lesion_start_mm
    assert value(codes.SCT.StenoticLesionLength, "mm") == pytest.approx(lesion_mm)
    # the outline: a closed polyline on the image through the narrowest point, around it
    region = group.roi
    assert region is not None and region.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
    k, j, i = stenosis.point_voxel
    image = vessel.images[int(round(k))]
    assert region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == image.SOPInstanceUID
    points = np.asarray(region.value, dtype=np.float64)
    assert np.array_equal(points[0], points[-1])
    assert points_in_poly([[i + 0.5, j + 0.5]], points)[0]
    x, y = points[:, 0] * 0.5, points[:, 1] * 0.5  # mm
    area = 0.5 * abs(float(x[:-1] @ y[1:] - x[1:] @ y[:-1]))
    assert 0.7 * stenosis.min_area_mm2 < area < 1.5 * stenosis.min_area_mm2
    assert_valid_and_checkable(path, "Comprehensive3DSR", "CompletionFlag")


def test_vessel_sr_outlines_the_lumen_where_no_image_cuts_the_stenosis(vessel: VesselRun, tmp_path: Path) -> None:
    analysis = vessel.analysis
    assert stenosis_outline(analysis, vessel.images, max_obliquity_deg=5.0) is None  # the tube runs ~10° off
    seg_ds = build_vessel_seg(vessel.images, analysis.segmentation.mask)
    sr_ds = build_vessel_sr(analysis, vessel.images, seg_ds, max_obliquity_deg=5.0,
                            finding_site=codes.SCT.RightCoronaryArtery,
                            procedure_reported=codes.SCT.CTAngiographyOfCoronaryArteries)
    path = _write(sr_ds, tmp_path / "vessel-sr-oblique.dcm")
    report = _report(path)
    assert report.get_planar_roi_measurement_groups() == []
    groups = {str(g.tracking_identifier): g for g in report.get_volumetric_roi_measurement_groups()}
    assert set(groups) == {"Vessel", "Stenosis"}
    stenosis_group = groups["Stenosis"]
    assert stenosis_group.referenced_segment is None
    assert isinstance(stenosis_group.roi, list) and len(stenosis_group.roi) == len(groups["Vessel"].roi)
    assert stenosis_group.finding_sites[0].value == codes.SCT.RightCoronaryArtery
    errors = errors_in(dciodvfy(path))
    assert errors == []
