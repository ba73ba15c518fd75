"""Cardiac CT function against the beating-heart phantom, and input validation.

Tolerances (acceptance criteria of the feature, reasoning in docs/analysis-cardiac.md)
---------------------------------------------------------------------------------------
* Volumes (LV, RV, LA, RA) within 5 % of the analytic ellipsoid / half-spheroid volumes, EF
  within 2 percentage points, LV mass within 5 %. The phantom is centre-sampled, so a chamber's
  voxel count differs from its volume only by lattice counting: the worst-case bound (boundary
  area x half the voxel diagonal) is 10-20 % for these sizes at 1.25 mm and would make the test
  toothless, but the error of smooth convex bodies is far smaller in practice (measured here:
  under 0.2 % for volumes, under 0.5 % for the mass). The 5 % / 2-point limits therefore have room
  for noise and the LV-LA connection, while a wrong chamber, a lost or double-counted region or
  an ED/ES mix-up (EF off by tens of points) fails.
* Wall thickness per AHA segment within one voxel (1.25 mm) of the phantom's area-weighted mean
  normal thickness of that segment. The estimator's lattice bias is about ±h/2; the phantom's
  anteroseptal thickening makes neighbouring segments differ by 1.5-4 mm, so a rotated or
  mirrored segment assignment fails.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest
from scipy import ndimage

from voxa.analysis.cardiac import (
    AHA_SEGMENT_NAMES,
    ALGORITHM_VERSION,
    CardiacFunctionResult,
    analyse_cardiac_function,
)
from voxa.analysis.cardiac_reference import (
    REFERENCE_RANGES,
    ReferenceRange,
    evaluate_ranges,
    normalise_sex,
)
from voxa.imaging.volume import Volume
from voxa.testing.heart_phantom import (
    ATRIUM_CURVE,
    VENTRICLE_CURVE,
    HeartPhantom,
    HeartTruth,
    beating_heart_phantom,
    curve_value,
    wall_volume_ml,
)

VOXEL_MM = 1.25
ALL_PHASES = (0, 10, 20, 30, 40, 50, 60, 70, 80, 90)


def close(measured: float | None, expected: float, rel: float = 0.05) -> bool:
    return measured is not None and abs(measured - expected) <= rel * expected


def angle_deg(a: Any, b: Any) -> float:
    cos = float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
    return math.degrees(math.acos(max(-1.0, min(1.0, cos))))


def check_against_truth(result: CardiacFunctionResult, truth: HeartTruth, *, volume_rel: float = 0.05,
                        thickness_mm: float = VOXEL_MM) -> None:
    assert result.ed_phase_percent == truth.ed_phase_percent
    assert result.es_phase_percent == truth.es_phase_percent
    assert close(result.lv.edv_ml, truth.lv_edv_ml, volume_rel)
    assert close(result.lv.esv_ml, truth.lv_esv_ml, volume_rel)
    assert close(result.lv.sv_ml, truth.lv_sv_ml, 2 * volume_rel)
    assert abs(result.lv.ef_percent - truth.lv_ef_percent) <= 2.0
    assert result.rv is not None
    assert close(result.rv.edv_ml, truth.rv_edv_ml, volume_rel)
    assert close(result.rv.esv_ml, truth.rv_esv_ml, volume_rel)
    assert abs(result.rv.ef_percent - truth.rv_ef_percent) <= 2.0
    assert close(result.la_max_ml, truth.la_max_ml, volume_rel)
    assert close(result.la_min_ml, truth.la_min_ml, volume_rel)
    assert close(result.ra_max_ml, truth.ra_max_ml, volume_rel)
    assert close(result.ra_min_ml, truth.ra_min_ml, volume_rel)
    assert close(result.lv_mass_g, truth.lv_mass_g)
    assert close(result.lv_mass_es_g, truth.lv_mass_g)
    for row in result.phases:
        expected = truth.phase(row.phase_percent)
        assert close(row.lv_ml, expected.lv_ml, volume_rel)
        assert close(row.rv_ml, expected.rv_ml, volume_rel)
        assert close(row.la_ml, expected.la_ml, volume_rel)
        assert close(row.ra_ml, expected.ra_ml, volume_rel)
    for seg in result.wall_thickness:
        assert seg.ed_mm is not None and seg.es_mm is not None, seg
        assert abs(seg.ed_mm - truth.segment_thickness_ed_mm[seg.segment]) <= thickness_mm, seg
        assert abs(seg.es_mm - truth.segment_thickness_es_mm[seg.segment]) <= thickness_mm, seg


@pytest.fixture(scope="module")
def normal() -> HeartPhantom:
    return beating_heart_phantom(phases_percent=ALL_PHASES)


@pytest.fixture(scope="module")
def normal_result(normal: HeartPhantom) -> CardiacFunctionResult:
    return analyse_cardiac_function(normal.phases, heart_rate_bpm=normal.truth.heart_rate_bpm, sex="M")


def two_phases(phantom: HeartPhantom) -> dict[float, Volume]:
    return {p: phantom.phases[p] for p in (phantom.truth.ed_phase_percent, phantom.truth.es_phase_percent)}


# ---------------------------------------------------------------- analytic agreement


def test_normal_phantom_matches_analytic_truth(normal: HeartPhantom, normal_result: CardiacFunctionResult) -> None:
    truth = normal.truth
    assert (truth.ed_phase_percent, truth.es_phase_percent) == (0.0, 40.0)
    check_against_truth(normal_result, truth)
    assert normal_result.lv.cardiac_output_l_min is not None
    assert close(normal_result.lv.cardiac_output_l_min, truth.cardiac_output_l_min)
    assert normal_result.requires_review is True
    assert normal_result.algorithm_version == ALGORITHM_VERSION
    assert [p.phase_percent for p in normal_result.phases] == [float(p) for p in ALL_PHASES]


def test_normal_phantom_is_not_flagged(normal_result: CardiacFunctionResult) -> None:
    assert normal_result.sex == "M"
    assert normal_result.flags == ()


def test_segments_follow_the_aha_layout(normal: HeartPhantom, normal_result: CardiacFunctionResult) -> None:
    segs = normal_result.wall_thickness
    assert [s.segment for s in segs] == list(range(1, 18))
    assert [s.name for s in segs] == [AHA_SEGMENT_NAMES[k] for k in range(1, 18)]
    # the phantom is thickest anteroseptally: basal and mid anteroseptal are the maxima of their rings
    basal = {s.segment: s.ed_mm for s in segs[:6]}
    mid = {s.segment: s.ed_mm for s in segs[6:12]}
    assert max(basal, key=lambda k: basal[k] or 0.0) == 2
    assert max(mid, key=lambda k: mid[k] or 0.0) == 8
    # the wall thickens in systole (myocardial volume is conserved in the phantom)
    for s in segs:
        assert s.thickening_percent is not None and s.thickening_percent > 20
    assert normal_result.max_wall_thickness_mm == max(s.ed_mm for s in segs if s.ed_mm is not None)


def test_long_axis_and_septum_match_the_phantom(normal: HeartPhantom, normal_result: CardiacFunctionResult) -> None:
    g, t = normal_result.geometry, normal.truth
    assert angle_deg(g.long_axis_lps, t.lv_axis_lps) < 2.0
    assert angle_deg(g.septal_direction_lps, t.septal_direction_lps) < 3.0
    assert angle_deg(g.anterior_direction_lps, t.anterior_direction_lps) < 3.0
    assert abs(g.length_mm - t.phase(t.ed_phase_percent).lv_length_mm) <= 2 * VOXEL_MM
    assert np.linalg.norm(np.subtract(g.base_centre_lps, t.lv_base_centre_lps)) <= 2 * VOXEL_MM


def test_values_and_indexing(normal_result: CardiacFunctionResult) -> None:
    values = normal_result.values()
    assert values["lv_ef_percent"] == normal_result.lv.ef_percent
    assert "lv_edv_ml_m2" not in values
    indexed = dataclasses.replace(normal_result, body_surface_area_m2=2.0).values()
    assert indexed["lv_edv_ml_m2"] == pytest.approx(normal_result.lv.edv_ml / 2.0)
    assert indexed["cardiac_index_l_min_m2"] == pytest.approx((normal_result.lv.cardiac_output_l_min or 0) / 2.0)


def test_abnormal_phantom_is_flagged() -> None:
    phantom = beating_heart_phantom(
        phases_percent=(0, 40), lv_edv_ml=200.0, lv_esv_ml=140.0, lv_length_ed_mm=98.0,
        lv_length_es_mm=92.0, septal_bump_mm=9.0,
    )
    truth = phantom.truth
    assert truth.lv_ef_percent == pytest.approx(30.0)
    result = analyse_cardiac_function(phantom.phases, sex="F", heart_rate_bpm=70.0, body_surface_area_m2=1.7)
    check_against_truth(result, truth)
    flagged = {(f.quantity, f.status) for f in result.flags}
    assert ("lv_ef_percent", "low") in flagged
    assert ("lv_edv_ml", "high") in flagged
    assert ("lv_esv_ml", "high") in flagged
    assert ("lv_edv_ml_m2", "high") in flagged
    assert ("lv_max_wall_thickness_mm", "high") in flagged
    ef_flag = next(f for f in result.flags if f.quantity == "lv_ef_percent")
    assert "CONFIRM" in ef_flag.reference and ef_flag.lower is not None and ef_flag.value < ef_flag.lower
    assert "CONFIRM" in str(ef_flag)
    # without a sex no range applies, and the result says so
    assert evaluate_ranges(result.values(), None) == ()


# ---------------------------------------------------------------- not keyed to the phantom


def reoriented(volume: Volume, flip_axes: tuple[int, ...]) -> Volume:
    """The same image stored with the given array axes reversed (geometry adjusted)."""
    voxels = volume.voxels
    direction = np.array(volume.direction, dtype=np.float64)
    corner = [0, 0, 0]
    for axis in flip_axes:
        voxels = np.flip(voxels, axis=axis)
        corner[axis] = volume.shape[axis] - 1
        direction[2 - axis] *= -1  # array axis 0, 1, 2 = slice normal, column, row direction
    origin = volume.index_to_patient(corner)
    return Volume(np.ascontiguousarray(voxels), volume.spacing_mm, (float(origin[0]), float(origin[1]), float(origin[2])),
                  direction, units="HU", modality="CT")


def test_storage_orientation_does_not_change_the_result(normal: HeartPhantom,
                                                         normal_result: CardiacFunctionResult) -> None:
    # slices superior -> inferior and rows posterior -> anterior
    flipped = {p: reoriented(v, (0, 1)) for p, v in two_phases(normal).items()}
    result = analyse_cardiac_function(flipped)
    assert result.flags == () and any("sex not given" in n for n in result.notes)
    assert result.lv.edv_ml == pytest.approx(normal_result.lv.edv_ml)
    assert result.lv.esv_ml == pytest.approx(normal_result.lv.esv_ml)
    assert result.lv_mass_g == pytest.approx(normal_result.lv_mass_g)
    assert angle_deg(result.geometry.long_axis_lps, normal_result.geometry.long_axis_lps) < 0.5
    for a, b in zip(result.wall_thickness, normal_result.wall_thickness, strict=True):
        assert a.ed_mm is not None and b.ed_mm is not None
        assert abs(a.ed_mm - b.ed_mm) < 0.3


def test_open_mitral_connection_is_split() -> None:
    phantom = beating_heart_phantom(phases_percent=(0, 40, 80), mitral_channel_radius_mm=5.0)
    ed = phantom.phases[0.0]
    # LV and LA blood really form one connected component
    labels, _ = ndimage.label(ed.voxels >= 200)
    lv_point = np.add(phantom.truth.lv_base_centre_lps, np.multiply(30.0, phantom.truth.lv_axis_lps))
    lv_label = labels[tuple(np.round(ed.patient_to_index(lv_point)).astype(int))]
    la_label = labels[tuple(np.round(ed.patient_to_index(phantom.truth.lv_base_centre_lps)).astype(int))]
    assert lv_label != 0 and lv_label == la_label
    result = analyse_cardiac_function(phantom.phases, sex="M")
    check_against_truth(result, phantom.truth)
    # the channel is narrow: it does not move the LV base
    assert abs(result.geometry.length_mm - phantom.truth.phase(0.0).lv_length_mm) <= 2 * VOXEL_MM


def test_noise(normal: HeartPhantom) -> None:
    phantom = beating_heart_phantom(phases_percent=(0, 40), noise_sd_hu=20.0, seed=7)
    result = analyse_cardiac_function(phantom.phases)
    check_against_truth(result, phantom.truth)


def test_analysed_box_grows_with_the_chambers(normal: HeartPhantom, monkeypatch: pytest.MonkeyPatch) -> None:
    # with no margin, the box drawn round the chambers at the reference phase (80 %, most blood)
    # is too small for the atria at 40 % (their maximum): it must grow, not truncate them
    import voxa.analysis.cardiac as cardiac

    monkeypatch.setattr(cardiac, "_ROI_MARGIN_MM", 1.0)
    phases = {p: normal.phases[p] for p in (0.0, 40.0, 80.0)}
    result = analyse_cardiac_function(phases)
    assert close(result.la_max_ml, normal.truth.la_max_ml) and close(result.ra_max_ml, normal.truth.ra_max_ml)
    assert not any("truncated" in n for n in result.notes)


def test_truncated_field_of_view_is_reported(normal: HeartPhantom) -> None:
    # drop the top 30 mm (slices run inferior -> superior): the atria are cut
    cut = int(30 / VOXEL_MM)
    phases = {p: Volume(np.ascontiguousarray(v.voxels[:-cut]), v.spacing_mm, v.origin_mm, v.direction,
                        units="HU", modality="CT") for p, v in two_phases(normal).items()}
    result = analyse_cardiac_function(phases)
    assert any(n.startswith("LA reaches the edge of the field of view") for n in result.notes)
    assert result.la_max_ml is not None and result.la_max_ml < normal.truth.la_max_ml


def test_seeds(normal: HeartPhantom, normal_result: CardiacFunctionResult) -> None:
    t = normal.truth
    lv_point = np.add(t.lv_base_centre_lps, np.multiply(30.0, t.lv_axis_lps))
    seeded = analyse_cardiac_function(two_phases(normal), lv_seed_mm=tuple(lv_point))
    assert seeded.lv.edv_ml == pytest.approx(normal_result.lv.edv_ml)
    # a point in the myocardium is not blood
    wall_point = np.add(lv_point, np.multiply(t.phase(0.0).lv_radius_mm * 0.9 + 6.0, t.septal_direction_lps))
    with pytest.raises(ValueError, match="not inside a contrast blood pool"):
        analyse_cardiac_function(two_phases(normal), lv_seed_mm=tuple(wall_point))
    with pytest.raises(ValueError, match="outside the volume"):
        analyse_cardiac_function(two_phases(normal), rv_seed_mm=(1e4, 0.0, 0.0))
    with pytest.raises(ValueError, match="one blood-pool region"):
        analyse_cardiac_function(two_phases(normal), lv_seed_mm=tuple(lv_point), rv_seed_mm=tuple(lv_point))


# ---------------------------------------------------------------- input validation


def small(units: str = "HU", modality: str = "CT", shape: tuple[int, int, int] = (8, 8, 8),
          spacing: tuple[float, float, float] = (1.0, 1.0, 1.0), origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
          hu: float = 40.0) -> Volume:
    return Volume(np.full(shape, hu, dtype=np.float32), spacing, origin, np.eye(3), units=units, modality=modality)


@pytest.mark.parametrize(
    ("phases", "message"),
    [
        ({}, "at least 2 phases"),
        ({0.0: small()}, "at least 2 phases"),
        ({0.0: small(), 40.0: small(shape=(8, 8, 9))}, "share one grid"),
        ({0.0: small(), 40.0: small(spacing=(1.0, 1.0, 0.5))}, "share one grid"),
        ({0.0: small(), 40.0: small(origin=(0.0, 5.0, 0.0))}, "share one grid"),
        ({0.0: small(units=""), 40.0: small(units="")}, "Hounsfield"),
        ({0.0: small(units="HU", modality="MR"), 40.0: small(units="HU", modality="MR")}, "Hounsfield"),
        ({0.0: small(), 100.0: small()}, "outside 0-100"),
        ({"ED": small(), 40.0: small()}, "not a number"),
        ([(0.0, small()), (0.0, small())], "duplicate"),
        ({0.0: small(), 40.0: np.zeros((8, 8, 8))}, "expected a Volume"),
    ],
)
def test_bad_phases_are_refused(phases: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        analyse_cardiac_function(phases)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"heart_rate_bpm": 0.0}, "heart_rate_bpm"),
        ({"heart_rate_bpm": float("nan")}, "heart_rate_bpm"),
        ({"sex": "X"}, "sex"),
        ({"body_surface_area_m2": 9.0}, "body_surface_area_m2"),
        ({"blood_window_hu": (300.0, 200.0)}, "blood_window_hu"),
        ({"myocardium_window_hu": (70.0, 250.0)}, "overlaps"),
        ({"wall_search_mm": -1.0}, "wall_search_mm"),
    ],
)
def test_bad_options_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        analyse_cardiac_function({0.0: small(), 40.0: small()}, **kwargs)


def test_no_heart_is_reported() -> None:
    with pytest.raises(ValueError, match="could not identify the left ventricle"):
        analyse_cardiac_function({0.0: small(shape=(20, 20, 20)), 40.0: small(shape=(20, 20, 20))})


# ---------------------------------------------------------------- reference ranges


def test_range_edges() -> None:
    r = ReferenceRange("q", "M", 50.0, 80.0, "%", "ref")
    assert r.status(50.0) is None and r.status(80.0) is None
    assert r.status(49.99) == "low" and r.status(80.01) == "high"
    hcm = next(x for x in REFERENCE_RANGES if x.quantity == "lv_max_wall_thickness_mm" and x.sex == "F")
    assert hcm.status(14.99) is None and hcm.status(15.0) == "high"


def test_every_range_cites_a_reference() -> None:
    for r in REFERENCE_RANGES:
        assert r.sex in ("M", "F") and r.reference and r.unit
        assert r.lower is not None or r.upper is not None
    quantities = {r.quantity for r in REFERENCE_RANGES}
    assert {"lv_ef_percent", "lv_edv_ml", "lv_esv_ml", "lv_mass_g", "rv_edv_ml", "la_max_ml",
            "ra_max_ml_m2"} <= quantities


def test_sex_and_custom_ranges(normal_result: CardiacFunctionResult) -> None:
    assert normalise_sex("m") == "M" and normalise_sex("Female") == "F"
    assert normalise_sex("O") is None and normalise_sex(None) is None
    with pytest.raises(ValueError):
        normalise_sex("?")
    assert evaluate_ranges(normal_result.values(), None) == ()
    strict = [ReferenceRange("lv_ef_percent", "M", 60.0, None, "%", "site table")]
    flags = evaluate_ranges(normal_result.values(), "M", strict)
    assert [(f.quantity, f.status, f.reference) for f in flags] == [("lv_ef_percent", "low", "site table")]


# ---------------------------------------------------------------- the phantom itself


def test_wall_volume_quadrature_matches_a_sphere() -> None:
    r, t = 30.0, 8.0
    exact = 2.0 / 3.0 * math.pi * ((r + t) ** 3 - r**3) / 1000.0  # half a spherical shell
    assert wall_volume_ml(r, r, t) == pytest.approx(exact, rel=1e-4)


def test_phantom_voxels_match_its_truth(normal: HeartPhantom) -> None:
    # the myocardium voxels of the noiseless phantom carry the analytic myocardial volume
    for p in (0.0, 40.0):
        v = normal.phases[p]
        myo_ml = float((v.voxels == 100.0).sum()) * v.voxel_volume_ml
        assert myo_ml == pytest.approx(normal.truth.lv_myocardium_ml, rel=0.01)
    assert v.units == "HU" and v.modality == "CT"
    assert curve_value(VENTRICLE_CURVE, 0) == 1.0 and curve_value(VENTRICLE_CURVE, 40) == 0.0
    assert curve_value(ATRIUM_CURVE, 40) == 1.0 and curve_value(ATRIUM_CURVE, 0) == 0.0


def test_phantom_refuses_overlapping_chambers() -> None:
    with pytest.raises(ValueError, match="overlap"):
        beating_heart_phantom(phases_percent=(40,), la_max_ml=400.0, la_min_ml=300.0)
    with pytest.raises(ValueError, match="ESV < EDV"):
        beating_heart_phantom(lv_edv_ml=50.0, lv_esv_ml=60.0)
