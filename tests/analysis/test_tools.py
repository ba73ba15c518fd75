"""The analysis tools as jobs (voxa.analysis.tools): run on series stored in a real archive, the
results match the analysis engines run directly on the same voxels; the calcium SEG and SR
round-trip through highdicom and dicom3tools' ``dciodvfy`` finds no error in them."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
from analysis.phantom_series import (
    EXPECTED_ARTERIES,
    ingest_series,
    phantom_series,
    quadrant_phantom,
    volume_series,
)
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from skimage import measure as skimage_measure
from support.dicom3tools import assert_valid_and_checkable

from voxa.analysis import results as store
from voxa.analysis import tools
from voxa.analysis.calcium import Artery, score_calcium
from voxa.analysis.cardiac import analyse_cardiac_function
from voxa.analysis.dicom_outputs import ARTERY_CODES, OutputError, build_calcium_lesion_sr, build_calcium_seg
from voxa.analysis.vessels import PatientPoint, analyse_vessel
from voxa.imaging.volume import Volume
from voxa.testing.heart_phantom import beating_heart_phantom
from voxa.testing.synthetic import ct_chest, dataset_to_bytes
from voxa.testing.vessel_phantom import StenosisSpec, StraightTube, vessel_phantom

STUDY = "1.2.826.0.1.3680043.10.511.77.1"
SERIES = STUDY + ".3"
CALIBRATION = 0.8  # mg/mL/HU


def _run(rt: Any, tool: str, series: str, params: dict[str, Any] | None = None,
         study: str = STUDY) -> store.StoredResult:
    submitted = tools.submit_analysis(rt, tool=tool, study_instance_uid=study, series=series, params=params,
                                      created_by="tester")
    assert submitted.status in (store.ResultStatus.QUEUED, store.ResultStatus.RUNNING)
    assert submitted.requires_review and not submitted.verified
    rt.jobs.wait(submitted.job_id, timeout=120)
    done = store.get_result(rt.archive.index, submitted.id)
    assert done is not None
    return done


def _approx_equal(got: Any, want: Any, path: str = "") -> None:
    """JSON values equal, floats to 1e-9 relative."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), f"{path}: keys {set(got)} != {set(want)}"
        for k in want:
            _approx_equal(got[k], want[k], f"{path}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{path}: {got} != {want}"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _approx_equal(g, w, f"{path}[{i}]")
    elif isinstance(want, float) and not isinstance(want, bool):
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12), f"{path}: {got} != {want}"
    else:
        assert got == want, f"{path}: {got!r} != {want!r}"


@pytest.fixture
def calcium_run(voxa_factory: Any) -> tuple[Any, store.StoredResult]:
    v = voxa_factory()
    ingest_series(v.archive, phantom_series(quadrant_phantom(mass_calibration=CALIBRATION), study_uid=STUDY,
                                            series_uid=SERIES))
    return v.runtime, _run(v.runtime, "calcium", SERIES, {"mass_calibration": CALIBRATION})


def _stored(rt: Any, sop_instance_uid: str) -> Dataset:
    loc = rt.archive.index.locate(sop_uid=sop_instance_uid)
    assert len(loc) == 1
    return pydicom.dcmread(io.BytesIO(rt.archive.read_instance(loc[0].blob_key)))


def _sr_numbers(ds: Dataset) -> dict[str, float]:
    """Every NUM content item of an SR, by its concept name's meaning (the first of each name)."""
    found: dict[str, float] = {}

    def walk(items: Any) -> None:
        for item in items:
            if item.ValueType == "NUM":
                found.setdefault(str(item.ConceptNameCodeSequence[0].CodeMeaning),
                                 float(item.MeasuredValueSequence[0].NumericValue))
            if "ContentSequence" in item:
                walk(item.ContentSequence)

    walk(ds.ContentSequence)
    return found


# --------------------------------------------------------------------------- calcium


def test_calcium_tool_matches_score_calcium_on_the_same_voxels(calcium_run: tuple[Any, store.StoredResult]) -> None:
    rt, result = calcium_run
    assert result.status is store.ResultStatus.DONE, result.error
    assert result.stage == "done" and result.progress == 100.0
    assert result.tool == "calcium" and result.series_instance_uids == (SERIES,)
    assert result.requires_review and result.verified_by is None
    phantom = quadrant_phantom(mass_calibration=CALIBRATION)
    expected = score_calcium(phantom.hu, pixel_spacing_mm=phantom.pixel_spacing_mm, slice_thickness_mm=3.0,
                             slice_increment_mm=3.0, kvp=120.0, mass_calibration_mg_per_ml_per_hu=CALIBRATION,
                             max_lesion_volume_mm3=3000.0, min_area_mm2=1.0)
    want = tools.calcium_json(expected)
    got = dict(result.result)
    for lesion in got["lesions"]:
        centroid = lesion.pop("centroid_patient_mm")
        # voxel (z, row, col) -> patient: origin (-40, -30, 0), axial, 0.5 mm pixels, 3 mm slices
        z, r, c = lesion["centroid_voxel"]
        assert centroid == pytest.approx([-40.0 + 0.5 * c, -30.0 + 0.5 * r, 3.0 * z])
    assert got.pop("series_instance_uid") == SERIES
    parameters = got.pop("parameters")
    assert {k: parameters[k] for k in ("kvp", "mass_calibration", "max_lesion_volume_mm3", "min_area_mm2", "region")} \
        == {"kvp": None, "mass_calibration": CALIBRATION, "max_lesion_volume_mm3": 3000.0, "min_area_mm2": 1.0,
            "region": "auto"}
    # no risk factors given: no risk; no percentile table configured: no percentile
    assert got.pop("mesa_risk") is None and got.pop("percentile") is None
    assert set(got.pop("patient")) == {"age_years", "sex", "race"}
    # the phantom is no chest: no heart region, the whole series is scored, and the notes say so
    assert got.pop("region") == {"mode": "auto", "applied": False, "volume_ml": None, "heart_centre_mm": None}
    region_notes = [n for n in got["notes"] if "region" in n]
    assert any("no lungs found" in n for n in region_notes) and any("whole series" in n for n in region_notes)
    got["notes"] = [n for n in got["notes"] if n not in region_notes]
    _approx_equal(got, want)
    # and the phantom's analytic truth, per artery (position rule: RCA right, LAD left-anterior, LCX)
    assert [lesion["artery"] for lesion in got["lesions"]] == [a.value for a in EXPECTED_ARTERIES]
    assert got["per_artery"]["LM"]["lesion_count"] == 0
    for truth, artery in zip(phantom.lesions, EXPECTED_ARTERIES, strict=True):
        assert got["per_artery"][artery.value]["agatston"] == pytest.approx(truth.agatston, rel=0.08)
        assert got["per_artery"][artery.value]["volume_mm3"] == pytest.approx(truth.volume_mm3, rel=0.08)
    assert got["kvp"] == 120.0 and got["threshold_hu"] == 130.0  # KVP read from the series
    assert got["cac_drs"] == "A3/N3"
    assert result.algorithm_version == expected.algorithm_version
    # outputs: a SEG and two SRs, stored in the study through the ingest path
    assert [(o["kind"], o["series_description"]) for o in result.outputs] == [
        ("SEG", "Coronary calcium (Voxa)"), ("SR", "Coronary calcium report (Voxa)"),
        ("SR", "Coronary calcium lesions (Voxa)")]
    for output in result.outputs:
        loc = rt.archive.index.locate(sop_uid=output["sop_instance_uid"])
        assert loc and loc[0].study_instance_uid == STUDY
        assert loc[0].series_instance_uid == output["series_instance_uid"]


def test_calcium_seg_round_trip(calcium_run: tuple[Any, store.StoredResult], tmp_path: Path) -> None:
    rt, result = calcium_run
    seg_out = next(o for o in result.outputs if o["kind"] == "SEG")
    ds = _stored(rt, seg_out["sop_instance_uid"])
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and ds.Modality == "SEG"
    assert ds.StudyInstanceUID == STUDY and ds.PatientID == "CAC-PHANTOM"
    seg = hd.seg.Segmentation.from_dataset(ds)
    labels = [d.SegmentLabel for d in seg.SegmentSequence]
    assert labels == ["LM calcium", "LAD calcium", "LCX calcium", "RCA calcium"]
    for item, artery in zip(seg.SegmentSequence, (Artery.LM, Artery.LAD, Artery.LCX, Artery.RCA), strict=True):
        assert item.AnatomicRegionSequence[0].CodeValue == ARTERY_CODES[artery].value
        assert item.AnatomicRegionSequence[0].CodingSchemeDesignator == "SCT"
        assert item.SegmentedPropertyTypeCodeSequence[0].CodeValue == "18115005"
        assert item.SegmentAlgorithmType == "AUTOMATIC"
        assert len(item.RecommendedDisplayCIELabValue) == 3  # viewers draw it in the same colour
    # the segments hold exactly the scored voxels of each artery
    sources = [f"{SERIES}.{k + 1}" for k in range(8)]
    masks = seg.get_pixels_by_source_instance(sources)
    voxel_mm3 = 0.5 * 0.5 * 3.0
    for n, name in enumerate(("LM", "LAD", "LCX", "RCA")):
        assert masks[..., n].sum() * voxel_mm3 == pytest.approx(result.result["per_artery"][name]["volume_mm3"])
    for lesion in result.result["lesions"]:
        n = ("LM", "LAD", "LCX", "RCA").index(lesion["artery"])
        k, r, c = (round(x) for x in lesion["centroid_voxel"])
        assert masks[k, r, c, n]
    path = tmp_path / "seg.dcm"
    ds.save_as(path)
    assert_valid_and_checkable(path, "Segmentation", "SegmentationType")


def test_calcium_sr_round_trip(calcium_run: tuple[Any, store.StoredResult], tmp_path: Path) -> None:
    rt, result = calcium_run
    sr_out = _output(result, "Coronary calcium report (Voxa)")
    seg_out = _output(result, "Coronary calcium (Voxa)")
    ds = _stored(rt, sr_out["sop_instance_uid"])
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert ds.VerificationFlag == "UNVERIFIED" and ds.PreliminaryFlag == "PRELIMINARY"
    assert ds.StudyInstanceUID == STUDY and ds.SeriesNumber == 911
    sr = hd.sr.srread(io.BytesIO(ds_bytes(ds)))
    report = sr.content
    assert isinstance(report, hd.sr.MeasurementReport)
    # every group's volume is outlined on the CT images (so that a viewer can draw it); the SEG
    # is in the evidence
    evidence = {str(i.ReferencedSOPInstanceUID) for s in ds.CurrentRequestedProcedureEvidenceSequence
                for r in s.ReferencedSeriesSequence for i in r.ReferencedSOPSequence}
    assert seg_out["sop_instance_uid"] in evidence
    groups = report.get_volumetric_roi_measurement_groups()
    calcified = [name for name, v in result.result["per_artery"].items() if v["lesion_count"]]
    assert calcified == ["LAD", "LCX", "RCA"]  # the phantom has no LM lesion
    assert len(groups) == len(calcified) + 1 and all(g.referenced_segment is None for g in groups)
    images = {f"{SERIES}.{k + 1}": k for k in range(8)}
    for group in groups:
        regions = group.roi
        assert isinstance(regions, list) and regions
        for region in regions:
            assert region.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
            points = region.value
            assert np.array_equal(points[0], points[-1]) and len(points) >= 4  # closed
            assert region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID in images
    (total,) = [g for g in groups if g.finding_sites[0].value == codes.SCT.CoronaryArtery]
    lesion_slices = {k for lesion in result.result["lesions"] for k in lesion["area_mm2_by_slice"]}
    assert {images[r.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID] for r in total.roi} == \
        {int(k) for k in lesion_slices}
    for group in groups:
        if group is total:
            continue
        artery = next(a for a, code in ARTERY_CODES.items() if group.finding_sites[0].value == code)
        want = result.result["per_artery"][artery.value]
        (agatston,) = group.get_measurements(name=codes.DCM.CalciumScore)
        (volume,) = group.get_measurements(name=codes.DCM.CalciumVolume)
        (mass,) = group.get_measurements(name=codes.DCM.CalciumMass)
        assert agatston.value == pytest.approx(want["agatston"])
        assert agatston.method == codes.DCM.AgatstonScoringMethod
        assert volume.value == pytest.approx(want["volume_mm3"]) and volume.unit.value == "mm3"
        assert mass.value == pytest.approx(want["mass_mg"]) and mass.unit.value == "mg"
    # the total, and the arteries without calcium as zero scores with their finding site
    scores = {(m.finding_sites[0].value.value if m.finding_sites else "total"): m.value
              for m in total.get_measurements(name=codes.DCM.CalciumScore)}
    assert scores == {"total": pytest.approx(result.result["agatston_total"]), ARTERY_CODES[Artery.LM].value: 0.0}
    (threshold,) = total.get_measurements(name=codes.DCM.AgatstonScoreThreshold)
    assert threshold.value == 130.0
    path = tmp_path / "sr.dcm"
    ds.save_as(path)
    assert_valid_and_checkable(path, "Comprehensive3DSR", "CompletionFlag")


def test_calcium_lesion_sr_round_trip(calcium_run: tuple[Any, store.StoredResult], tmp_path: Path) -> None:
    """One TID 1410 group per lesion, each with an outline on the image where the lesion is
    largest: a closed polyline around every pixel of the lesion there, and no group without
    image coordinates (what OHIF needs to show a report)."""
    rt, result = calcium_run
    ds = _stored(rt, _output(result, "Coronary calcium lesions (Voxa)")["sop_instance_uid"])
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34" and ds.SeriesNumber == 913
    assert ds.VerificationFlag == "UNVERIFIED" and ds.PreliminaryFlag == "PRELIMINARY"
    assert ds.StudyInstanceUID == STUDY
    report = hd.sr.srread(io.BytesIO(ds_bytes(ds))).content
    assert isinstance(report, hd.sr.MeasurementReport)
    assert report.get_image_measurement_groups() == [] and report.get_volumetric_roi_measurement_groups() == []
    groups = report.get_planar_roi_measurement_groups()
    lesions = sorted(result.result["lesions"], key=lambda lesion: -lesion["agatston"])  # largest first
    assert len(groups) == len(lesions) == 3
    phantom = quadrant_phantom(mass_calibration=CALIBRATION)
    for group, lesion in zip(groups, lesions, strict=True):
        assert group.tracking_identifier == f"{lesion['artery']} lesion {lesion['label']}"
        assert group.finding_sites[0].value == ARTERY_CODES[Artery(lesion["artery"])]
        assert group.finding_type == codes.SCT.PathologicCalcification
        (agatston,) = group.get_measurements(name=codes.DCM.CalciumScore)
        (volume,) = group.get_measurements(name=codes.DCM.CalciumVolume)
        (mass,) = group.get_measurements(name=codes.DCM.CalciumMass)
        (peak,) = group.get_measurements(name=codes.DCM.AttenuationCoefficient)
        assert agatston.value == pytest.approx(lesion["agatston"]) and volume.value == pytest.approx(lesion["volume_mm3"])
        assert mass.value == pytest.approx(lesion["mass_mg"]) and mass.unit.value == "mg"
        assert peak.value == pytest.approx(lesion["peak_hu"]) and peak.unit.value == "[hnsf'U]"
        assert peak.derivation == codes.SCT.Maximum
        # the outline: on the source image where the lesion is largest, around all its pixels there
        region = group.roi
        assert region is not None and region.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
        points = region.value
        assert np.array_equal(points[0], points[-1]) and len(points) >= 4
        areas = {int(k): v for k, v in lesion["area_mm2_by_slice"].items()}
        z = max(areas, key=lambda k: (areas[k], -k))
        assert region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == f"{SERIES}.{z + 1}"
        pixels = np.argwhere(phantom.hu[z] >= 130.0)  # (row, column); one lesion per quadrant
        mine = pixels[np.abs(pixels[:, 0] + 0.5 - points[:-1, 1].mean()) < 12]
        mine = mine[np.abs(mine[:, 1] + 0.5 - points[:-1, 0].mean()) < 12]
        assert len(mine) * 0.25 == pytest.approx(areas[z])  # 0.5 mm pixels
        assert skimage_measure.points_in_poly(mine[:, ::-1] + 0.5, points).all()
    path = tmp_path / "lesions.dcm"
    ds.save_as(path)
    assert_valid_and_checkable(path, "Comprehensive3DSR", "CompletionFlag")


def _output(result: store.StoredResult, series_description: str) -> dict[str, str]:
    (found,) = [o for o in result.outputs if o["series_description"] == series_description]
    return found


def ds_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_calcium_without_lesions_writes_an_sr_only(voxa_factory: Any) -> None:
    v = voxa_factory()
    hu = np.full((4, 32, 32), 40.0)
    ingest_series(v.archive, phantom_series(hu, study_uid=STUDY, series_uid=SERIES))
    result = _run(v.runtime, "calcium", SERIES)
    assert result.status is store.ResultStatus.DONE, result.error
    assert result.result["agatston_total"] == 0 and result.result["cac_drs"] == "A0"
    assert [o["kind"] for o in result.outputs] == ["SR"]
    assert "no calcified lesion: no SEG and no lesion SR are written" in result.result["notes"]
    with pytest.raises(OutputError, match="empty"):
        build_calcium_seg([_stored(v.runtime, f"{SERIES}.{k + 1}") for k in range(4)],
                          score_calcium(hu, pixel_spacing_mm=(0.5, 0.5), slice_thickness_mm=3,
                                        slice_increment_mm=3, kvp=120), np.zeros(hu.shape, dtype=np.int32))
    with pytest.raises(OutputError, match="no lesion"):
        build_calcium_lesion_sr(score_calcium(hu, pixel_spacing_mm=(0.5, 0.5), slice_thickness_mm=3,
                                              slice_increment_mm=3, kvp=120),
                                source_images=[_stored(v.runtime, f"{SERIES}.{k + 1}") for k in range(4)],
                                lesion_labels=np.zeros(hu.shape, dtype=np.int32))


def test_calcium_tool_on_a_chest_ct_scores_the_heart_not_the_table(voxa_factory: Any) -> None:
    """The synthetic calcium-scoring chest CT (voxa.testing.synthetic.ct_chest): by default the
    lesions are the painted coronary calcifications, each with the artery the truth gives; with
    region=none the table and bone are scored too (what the heart region is for)."""
    v = voxa_factory()
    ct = ct_chest(0, slices=40, rows=256, slice_thickness_mm=3.0, contrast=False)
    datasets = list(ct.datasets())
    for ds in datasets:
        assert v.archive.ingest(dataset_to_bytes(ds), source="test").ok
    study, series = ct.study_instance_uid, str(datasets[0].SeriesInstanceUID)
    result = _run(v.runtime, "calcium", series, study=study)
    assert result.status is store.ResultStatus.DONE, result.error
    got = result.result
    assert got["parameters"]["region"] == "auto"
    assert got["region"]["mode"] == "auto" and got["region"]["applied"] is True
    assert 500.0 < got["region"]["volume_ml"] < 3000.0
    assert got["notes"][0].startswith("heart region: the mediastinum between the lungs"), got["notes"]
    truths = ct.calcifications
    arteries = []
    for lesion in got["lesions"]:
        point = np.asarray(lesion["centroid_patient_mm"])
        truth = min(truths, key=lambda t: float(np.linalg.norm(point - np.asarray(t.centre_mm))))
        assert np.linalg.norm(point - np.asarray(truth.centre_mm)) < truth.radius_mm + 2.0, (lesion, truth)
        assert lesion["artery"] == truth.artery and lesion["artery_source"] == "heart-position", (lesion, truth)
        arteries.append(lesion["artery"])
    # every calcification but the LM one (centred between two 3 mm slices: no voxel reaches 130 HU)
    assert sorted(arteries) == ["LAD", "LAD", "LCX", "RCA", "RCA"]
    assert got["per_artery"]["LCX"]["lesion_count"] == 1 and got["cac_drs"].endswith("/N3")
    assert [o["kind"] for o in result.outputs] == ["SEG", "SR", "SR"]

    everything = _run(v.runtime, "calcium", series, {"region": "none"}, study=study)
    assert everything.status is store.ResultStatus.DONE, everything.error
    assert everything.result["region"] == {"mode": "none", "applied": False, "volume_ml": None,
                                           "heart_centre_mm": None}
    on_table = [lesion for lesion in everything.result["lesions"] if lesion["centroid_patient_mm"][1] > 140.0]
    assert on_table, "region=none should score the table (below the body)"
    assert everything.result["agatston_total"] > 10 * got["agatston_total"]


def test_kvp_comes_from_the_series_or_the_parameter(voxa_factory: Any) -> None:
    v = voxa_factory()
    phantom = quadrant_phantom()
    ingest_series(v.archive, phantom_series(phantom, study_uid=STUDY, series_uid=SERIES, kvp=None))
    failed = _run(v.runtime, "calcium", SERIES)
    assert failed.status is store.ResultStatus.FAILED
    assert "'kvp'" in failed.error and "KVP" in failed.error
    unknown = _run(v.runtime, "calcium", SERIES, {"kvp": 90})
    assert unknown.status is store.ResultStatus.FAILED and "90" in unknown.error and "kvp" in unknown.error
    low = _run(v.runtime, "calcium", SERIES, {"kvp": "100"})
    assert low.status is store.ResultStatus.DONE, low.error
    assert low.result["kvp"] == 100.0 and low.result["threshold_hu"] == 145.0


def test_requests_are_checked_before_anything_runs(voxa_factory: Any) -> None:
    v = voxa_factory()
    rt = v.runtime
    ingest_series(v.archive, phantom_series(np.full((2, 16, 16), 40.0), study_uid=STUDY, series_uid=SERIES))

    def submit(tool: str = "calcium", series: Any = SERIES, params: dict[str, Any] | None = None,
               study: str = STUDY) -> None:
        tools.submit_analysis(rt, tool=tool, study_instance_uid=study, series=series, params=params, created_by="t")

    with pytest.raises(tools.UnknownTool, match="calcium, cardiac, vessels, measure"):
        submit("agatston")
    with pytest.raises(tools.ParameterError, match="'kvp'.*number") as e:
        submit(params={"kvp": "high"})
    assert e.value.name == "kvp"
    with pytest.raises(tools.ParameterError, match="'max_lesion_volume_mm3'.*greater than 0"):
        submit(params={"max_lesion_volume_mm3": -5})
    with pytest.raises(tools.ParameterError, match="'kv'.*unknown parameter"):
        submit(params={"kv": 120})
    with pytest.raises(tools.ParameterError, match="'start'.*required"):
        submit("vessels")
    with pytest.raises(tools.ParameterError, match="'start'.*3 numbers"):
        submit("vessels", params={"start": "1,2"})
    with pytest.raises(tools.ParameterError, match="'sex'.*one of M, F"):
        submit("cardiac", params={"sex": "X"})
    with pytest.raises(tools.SeriesError, match="no series 1.2.3 in study"):
        submit(series="1.2.3")
    with pytest.raises(tools.SeriesError, match="no series"):
        submit(study="1.2.3.999")
    with pytest.raises(tools.SeriesError, match="one series"):
        submit(series=[SERIES, SERIES + ".9"])
    assert store.list_results(rt.archive.index) == []  # nothing was recorded


def test_results_store_functions(voxa_factory: Any) -> None:
    v = voxa_factory()
    index = v.runtime.archive.index
    ingest_series(v.archive, phantom_series(np.full((2, 16, 16), 40.0), study_uid=STUDY, series_uid=SERIES))
    with pytest.raises(store.UnknownStudy):
        store.create_result(index, tool="measure", study_instance_uid="1.2.3", series_instance_uids=[SERIES],
                            parameters={}, algorithm_version="x", created_by="u")
    a = store.create_result(index, tool="measure", study_instance_uid=STUDY, series_instance_uids=[SERIES],
                            parameters={"threshold": 1.0}, algorithm_version="v1", created_by="u")
    assert a.status is store.ResultStatus.QUEUED and a.requires_review and a.job_id == ""
    with pytest.raises(store.NotFinished, match="queued"):
        store.verify_result(index, a.id, verified_by="rad")
    assert store.update_result(index, a.id, status="done", result={"x": 1},
                               outputs=[{"kind": "SR", "sop_instance_uid": "1.2", "sop_class_uid": "1.2.3",
                                         "series_instance_uid": "1.2.4"}])
    assert not store.update_result(index, a.id, status="failed", only_if_unfinished=True)
    verified = store.verify_result(index, a.id, verified_by="rad")
    assert verified is not None and verified.verified and verified.verified_by == "rad"
    assert verified.requires_review and verified.output_sop_instance_uids == ("1.2",)
    assert store.get_result(index, a.id, study_instance_uid="9.9") is None
    assert store.verify_result(index, 999, verified_by="rad") is None
    b = store.create_result(index, tool="calcium", study_instance_uid=STUDY, series_instance_uids=[SERIES],
                            parameters={}, algorithm_version="v1", created_by="u")
    assert [r.id for r in store.list_results(index, study_instance_uid=STUDY)] == [b.id, a.id]
    assert [r.id for r in store.list_results(index, tool="measure")] == [a.id]


# --------------------------------------------------------------------------- measure


def test_measure_tool_box_statistics_and_threshold_volume(voxa_factory: Any) -> None:
    v = voxa_factory()
    phantom = quadrant_phantom()
    ingest_series(v.archive, phantom_series(phantom, study_uid=STUDY, series_uid=SERIES))
    # a box in patient mm: x -40 + 0.5 c, y -30 + 0.5 r, z 3 k; voxels c 10..39, r 20..59, k 1..4
    box = "-35,-20,3,-20.5,-0.5,12"
    result = _run(v.runtime, "measure", SERIES, {"roi_mm": box, "threshold": 130})
    assert result.status is store.ResultStatus.DONE, result.error
    region = phantom.hu[1:5, 20:60, 10:40]
    roi = result.result["roi"]
    assert roi["voxel_box"] == [[1, 5], [20, 60], [10, 40]]
    assert roi["voxel_count"] == region.size
    assert roi["mean"] == pytest.approx(region.mean()) and roi["sd"] == pytest.approx(region.std())
    assert roi["min"] == region.min() and roi["max"] == region.max() == 450.0
    assert roi["volume_ml"] == pytest.approx(region.size * 0.75 / 1000)
    threshold = result.result["threshold"]
    assert threshold["voxel_count"] == int((region >= 130).sum()) > 0
    assert threshold["volume_mm3"] == pytest.approx(threshold["voxel_count"] * 0.75)
    assert threshold["components"] == 1 and threshold["within"] == "roi_mm"
    whole = _run(v.runtime, "measure", SERIES, {"threshold": 300, "threshold_max": 400})
    assert whole.result["threshold"]["voxel_count"] == int(((phantom.hu >= 300) & (phantom.hu <= 400)).sum())
    assert "roi" not in whole.result and whole.outputs == ()
    nothing = _run(v.runtime, "measure", SERIES, {"roi_mm": "500,500,500,600,600,600"})
    assert nothing.status is store.ResultStatus.FAILED and "roi_mm" in nothing.error
    with pytest.raises(tools.ParameterError):
        tools.get_tool("measure").validate({"roi_mm": [[1, 2, 3], [4, 5]]})


# --------------------------------------------------------------------------- vessels


def test_vessels_tool_on_a_stenosed_tube(voxa_factory: Any) -> None:
    v = voxa_factory()
    tube = StraightTube(start_mm=(4.0, 16.0, 16.0), direction=(1.0, 0.0, 0.0), length_mm=24.0, radius_mm=2.5,
                        hu=400.0, stenoses=(StenosisSpec(centre_mm=12.0, length_mm=6.0, percent=50.0),))
    phantom = vessel_phantom([tube], shape=(40, 64, 64), spacing_mm=(0.8, 0.5, 0.5), origin_mm=(-16.0, -16.0, 0.0))
    ingest_series(v.archive, volume_series(phantom.volume, study_uid=STUDY, series_uid=SERIES))
    start = phantom.frame_to_patient(tube.point_at(1.0))
    end = phantom.frame_to_patient(tube.point_at(23.0))
    params = {"start": ",".join(f"{x:.4f}" for x in start), "end": [float(x) for x in end]}
    result = _run(v.runtime, "vessels", SERIES, params)
    assert result.status is store.ResultStatus.DONE, result.error
    stored = Volume(voxels=np.rint(phantom.volume.voxels).astype(np.float32), spacing_mm=phantom.volume.spacing_mm,
                    origin_mm=phantom.volume.origin_mm, direction=phantom.volume.direction, units="HU")
    direct = analyse_vessel(stored, PatientPoint(*[round(x, 4) for x in start]), PatientPoint(*end))
    assert direct.stenosis is not None and result.result["stenosis"] is not None
    assert result.result["stenosis"]["stenosis_percent"] == pytest.approx(direct.stenosis.stenosis_percent, rel=1e-6)
    assert result.result["stenosis"]["stenosis_percent"] == pytest.approx(50.0, abs=12.0)
    assert result.result["segmentation"]["voxel_count"] == direct.segmentation.voxel_count
    assert result.result["centerline"]["length_mm"] == pytest.approx(direct.centerline.length_mm, rel=1e-6)
    assert [o["kind"] for o in result.outputs] == ["SEG", "SR"]
    seg = hd.seg.Segmentation.from_dataset(_stored(v.runtime, result.outputs[0]["sop_instance_uid"]))
    mask = seg.get_pixels_by_source_instance([f"{SERIES}.{k + 1}" for k in range(40)])
    assert int(mask.sum()) == direct.segmentation.voxel_count
    # the SR: the lumen's length and volume over the SEG's segment, the stenosis outlined on its image
    values = _sr_numbers(_stored(v.runtime, result.outputs[1]["sop_instance_uid"]))
    assert values["Lumen Diameter Stenosis"] == pytest.approx(direct.stenosis.stenosis_percent, abs=1e-3)
    assert values["Length of vessel segment (observable entity)"] == pytest.approx(direct.centerline.length_mm, abs=1e-3)


# --------------------------------------------------------------------------- cardiac


def test_cardiac_tool_on_a_two_phase_heart(voxa_factory: Any) -> None:
    v = voxa_factory()
    heart = beating_heart_phantom(phases_percent=(0, 40), spacing_mm=(2.0, 2.0, 2.0))
    datasets = []
    for pct, volume in heart.phases.items():
        datasets += volume_series(volume, study_uid=STUDY, series_uid=SERIES, uid_prefix=f"{SERIES}.{int(pct) + 1}",
                                  NominalPercentageOfCardiacPhase=float(pct), PatientSex="M")
    ingest_series(v.archive, datasets)
    result = _run(v.runtime, "cardiac", SERIES, {"heart_rate_bpm": 60})
    assert result.status is store.ResultStatus.DONE, result.error
    rounded = {p: Volume(voxels=np.rint(vol.voxels).astype(np.float32), spacing_mm=vol.spacing_mm,
                         origin_mm=vol.origin_mm, direction=vol.direction, units="HU", modality="CT")
               for p, vol in heart.phases.items()}
    direct = analyse_cardiac_function(rounded, heart_rate_bpm=60, sex="M")
    got = result.result
    assert got["sex"] == "M" and got["phase_percentages"] == [0.0, 40.0]  # sex from PatientSex
    assert got["lv"]["ef_percent"] == pytest.approx(direct.lv.ef_percent, rel=1e-9)
    assert got["lv"]["edv_ml"] == pytest.approx(direct.lv.edv_ml, rel=1e-9)
    assert got["values"]["cardiac_output_l_min"] == pytest.approx(direct.lv.cardiac_output_l_min, rel=1e-9)
    assert got["lv"]["ef_percent"] == pytest.approx(heart.truth.lv_ef_percent, abs=3.0)
    assert math.isfinite(got["lv_mass_g"]) and got["requires_review"] is True
    # written back: the end-diastolic chambers as a SEG over the ED phase's images, and the SR
    assert [o["kind"] for o in result.outputs] == ["SEG", "SR"], got["notes"]
    seg = hd.seg.Segmentation.from_dataset(_stored(v.runtime, result.outputs[0]["sop_instance_uid"]))
    labels = [d.SegmentLabel for d in seg.SegmentSequence]
    assert labels[0] == "LV blood pool" and "LV myocardium" in labels, labels
    ed_uids = {str(r.ReferencedSOPInstanceUID) for r in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert ed_uids and all(u.startswith(f"{SERIES}.{int(got['ed_phase_percent']) + 1}") for u in ed_uids), ed_uids
    values = _sr_numbers(_stored(v.runtime, result.outputs[1]["sop_instance_uid"]))
    assert float(values["Left ventricular ejection fraction by CT"]) == pytest.approx(direct.lv.ef_percent, abs=1e-3)


# --------------------------------------------------------------------------- calcium: percentile and MESA risk


def test_calcium_tool_reports_percentile_and_mesa_risk(voxa_factory: Any, tmp_path: Path) -> None:
    from voxa.analysis.cac_risk import RiskFactors, mesa_chd_risk

    table = tmp_path / "percentiles.csv"
    table.write_text("sex,race,age_min,age_max,percentile,agatston\n"
                     "M,white,55,64,50,0\nM,white,55,64,75,50\nM,white,55,64,90,400\nM,any,45,85,50,10\n",
                     encoding="utf-8")
    v = voxa_factory(calcium_percentile_table=table, calcium_percentile_source="test table, not for clinical use")
    ingest_series(v.archive, phantom_series(quadrant_phantom(mass_calibration=CALIBRATION), study_uid=STUDY,
                                            series_uid=SERIES))
    params = {"age_years": 60, "sex": "m", "race": "white", "total_cholesterol_mg_dl": 210,
              "hdl_cholesterol_mg_dl": 45, "systolic_bp_mm_hg": "135", "current_smoker": "yes",
              "antihypertensive_medication": True}
    done = _run(v.runtime, "calcium", SERIES, params)
    assert done.status is store.ResultStatus.DONE, done.error
    got = done.result
    agatston = got["agatston_total"]
    assert 50 < agatston < 400  # between two points of the table's curve
    assert got["percentile"] == {"value": pytest.approx(75 + 15 * (agatston - 50) / 350),
                                 "source": "test table, not for clinical use", "requires_review": True}
    want = mesa_chd_risk(agatston, RiskFactors(age_years=60, sex="M", race="white", total_cholesterol_mg_dl=210,
                                               hdl_cholesterol_mg_dl=45, systolic_bp_mm_hg=135, current_smoker=True,
                                               antihypertensive_medication=True))
    risk = got["mesa_risk"]
    assert risk["ten_year_chd_risk_percent"] == pytest.approx(want.ten_year_chd_risk_percent, rel=1e-12)
    assert risk["requires_review"] is True and "McClelland" in risk["reference"]
    assert risk["inputs"]["current_smoker"] is True and risk["inputs"]["diabetes"] is False

    # a factor missing: no risk, and the notes say what is missing; the age from the series' header;
    # a group the table lacks: no percentile
    partial = _run(v.runtime, "calcium", SERIES, {"sex": "F", "race": "hispanic", "total_cholesterol_mg_dl": 190})
    assert partial.status is store.ResultStatus.DONE, partial.error
    assert partial.result["mesa_risk"] is None and partial.result["percentile"] is None
    notes = " ".join(partial.result["notes"])
    assert "no MESA risk: missing hdl_cholesterol_mg_dl, systolic_bp_mm_hg" in notes
    age = partial.result["patient"]["age_years"]
    assert age is not None and f"the reference table has no group for sex F, race hispanic, age {age:.0f}" in notes
    with pytest.raises(tools.ParameterError, match="'current_smoker': expected true or false"):
        tools.submit_analysis(v.runtime, tool="calcium", study_instance_uid=STUDY, series=SERIES,
                              params={"current_smoker": "sometimes"}, created_by="tester")
