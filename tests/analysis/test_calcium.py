"""Calcium scoring against analytic phantoms, and pinned edge cases.

Voxelisation bounds used below (derived here, repeated in docs/analysis-calcium.md)
------------------------------------------------------------------------------------
In-plane. A disc of radius r is sampled at pixel centres on a grid of pixel size (pr, pc),
d = sqrt(pr² + pc²) / 2 (half the pixel diagonal). A pixel whose centre-membership disagrees
with the disc's coverage of the pixel must meet the circle, and every such pixel lies in the
annulus r - d <= rho <= r + d, of area 4 pi r d. Hence

    |A_vox - pi r²| <= E_A := 4 pi r d      (= 2 sqrt(2) pi r p for square pixels p).

Along z. Slice centres at (k + 1/2) s; a cylinder occupying [z0, z0 + h) contains N centres
with |N s - h| <= s, and N s = h exactly when z0 and h are multiples of s.

Propagation (A = pi r², w the weight, exact for a uniform lesion whose HU is inside a band):

    volume   V_vox = A_vox N s:   |V_vox - A h| <= E_A (h + s) + A s        (=: E_V)
    Agatston w A_vox N s / 3:     |Ag - w A h / 3| <= w E_V / 3
    mass     c HU V_vox / 1000:   |m - c HU A h / 1000| <= c HU E_V / 1000
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from voxa.analysis.calcium import (
    Artery,
    CalciumScore,
    KvThresholds,
    cac_drs,
    cac_drs_category,
    classic_grade,
    reassign,
    score_calcium,
    thresholds_for_kvp,
)
from voxa.testing.phantoms import (
    CalciumPhantom,
    CylinderLesion,
    SquareLesion,
    calcium_phantom,
    square_calcium_phantom,
)


def run(phantom: CalciumPhantom, **kwargs: Any) -> CalciumScore:
    return score_calcium(
        phantom.hu,
        pixel_spacing_mm=phantom.pixel_spacing_mm,
        slice_thickness_mm=phantom.slice_thickness_mm,
        slice_increment_mm=phantom.slice_increment_mm,
        kvp=phantom.kvp,
        artery_labels=phantom.artery_labels,
        mass_calibration_mg_per_ml_per_hu=phantom.mass_calibration_mg_per_ml_per_hu,
        **kwargs,
    )


def area_bound(radius_mm: float, spacing: tuple[float, float]) -> float:
    d = math.hypot(*spacing) / 2
    return 4 * math.pi * radius_mm * d


def volume_bound(
    radius_mm: float, height_mm: float, spacing: tuple[float, float], s: float, aligned: bool
) -> float:
    area = math.pi * radius_mm**2
    z_error = 0.0 if aligned else s
    return area_bound(radius_mm, spacing) * (height_mm + z_error) + area * z_error


# ---------------------------------------------------------------- analytic agreement


@pytest.mark.parametrize("increment", [0.5, 1.5, 3.0])
@pytest.mark.parametrize("hu", [180.0, 250.0, 350.0, 600.0])
def test_cylinder_scores_match_analytic_within_bounds(increment: float, hu: float) -> None:
    radius, height, spacing, factor = 3.0, 6.0, (0.25, 0.25), 0.8
    # z0 = 9 - 3 = 6 and h = 6 are multiples of 0.5, 1.5 and 3: N s = h exactly.
    phantom = calcium_phantom(
        [CylinderLesion((9.0, 16.1, 15.9), radius, height, hu)],
        pixel_spacing_mm=spacing,
        # 1.5 mm increment with 3 mm images: an overlapping reconstruction.
        slice_thickness_mm=3.0 if increment == 1.5 else increment,
        slice_increment_mm=increment,
        mass_calibration_mg_per_ml_per_hu=factor,
    )
    truth = phantom.lesions[0]
    score = run(phantom)
    assert len(score.lesions) == 1
    e_v = volume_bound(radius, height, spacing, increment, aligned=True)
    assert abs(score.volume_mm3_total - truth.volume_mm3) <= e_v
    assert abs(score.agatston_total - truth.agatston) <= truth.weight * e_v / 3
    assert score.mass_mg_total is not None and truth.mass_mg is not None
    assert abs(score.mass_mg_total - truth.mass_mg) <= factor * hu * e_v / 1000
    # Each image carries the same voxelised disc, within the in-plane bound.
    for area in score.lesions[0].area_mm2_by_slice.values():
        assert abs(area - math.pi * radius**2) <= area_bound(radius, spacing)
    assert len(score.lesions[0].slice_indices) == round(height / increment)


def test_unaligned_cylinder_within_general_bound() -> None:
    radius, height, spacing, s = 2.5, 5.0, (0.5, 0.4), 3.0
    phantom = calcium_phantom(
        [CylinderLesion((10.3, 15.2, 14.7), radius, height, 420.0)],
        pixel_spacing_mm=spacing,
        slice_thickness_mm=s,
        mass_calibration_mg_per_ml_per_hu=1.0,
    )
    truth = phantom.lesions[0]
    score = run(phantom)
    e_v = volume_bound(radius, height, spacing, s, aligned=False)
    assert abs(score.volume_mm3_total - truth.volume_mm3) <= e_v
    assert abs(score.agatston_total - truth.agatston) <= 4 * e_v / 3


def test_same_lesion_same_normalised_score_at_0_5_1_5_3_mm() -> None:
    radius, height, spacing = 3.0, 6.0, (0.25, 0.25)
    scores = {}
    for thickness, increment in [(0.5, 0.5), (1.5, 1.5), (3.0, 3.0), (3.0, 1.5)]:
        phantom = calcium_phantom(
            [CylinderLesion((9.0, 16.0, 16.0), radius, height, 330.0)],
            pixel_spacing_mm=spacing,
            slice_thickness_mm=thickness,
            slice_increment_mm=increment,
        )
        scores[(thickness, increment)] = run(phantom).agatston_total
    # Aligned z: the in-plane disc is identical on every image, so the normalised scores agree
    # exactly (up to float rounding), and each is within 3 E_A h / 3 of 3 pi r² h / 3.
    values = list(scores.values())
    assert max(values) - min(values) <= 1e-9 * max(values)
    assert (
        abs(values[0] - 3 * math.pi * radius**2 * height / 3) <= 3 * area_bound(radius, spacing) * height / 3
    )


def test_overlapping_reconstruction_normalised_by_increment() -> None:
    # 3 mm images every 1.5 mm: a 4 mm² square at 300 HU on 4 images.
    # Raw sum 4 x 4 mm² x 3 = 48; x 1.5 / 3 = 24.
    phantom = square_calcium_phantom(
        [SquareLesion(first_slice=1, row=10, col=10, rows=4, cols=4, hu=300.0, n_slices=4)],
        shape=(6, 32, 32),
        slice_thickness_mm=3.0,
        slice_increment_mm=1.5,
    )
    score = run(phantom)
    assert score.agatston_total == pytest.approx(24.0)
    assert score.agatston_total == pytest.approx(phantom.agatston_total)
    assert score.volume_mm3_total == pytest.approx(16 * 0.25 * 1.5 * 4)  # voxels x pixel area x increment


# ---------------------------------------------------------------- pinned edge cases


def _square_score(
    hu: float, *, peak: float | None = None, rows: int = 4, cols: int = 4, kvp: float = 120.0
) -> tuple[CalciumPhantom, CalciumScore]:
    phantom = square_calcium_phantom(
        [SquareLesion(first_slice=1, row=8, col=8, rows=rows, cols=cols, hu=hu, peak_hu=peak)], kvp=kvp
    )
    return phantom, run(phantom)


def test_exactly_130_hu_counts_and_129_does_not() -> None:
    _, at = _square_score(130.0)
    assert at.agatston_total == pytest.approx(4.0)  # 16 px x 0.25 mm² x weight 1
    _, below = _square_score(129.0)
    assert below.agatston_total == 0.0
    assert below.lesions == ()


def test_lesion_of_exactly_1_mm2_counts_and_smaller_does_not() -> None:
    phantom, exactly = _square_score(300.0, rows=2, cols=2)  # 4 px x 0.25 mm² = 1 mm²
    assert exactly.agatston_total == pytest.approx(3.0) == phantom.agatston_total
    _, smaller = _square_score(300.0, rows=1, cols=3)  # 0.75 mm²
    assert smaller.agatston_total == 0.0
    assert smaller.volume_mm3_total == 0.0


@pytest.mark.parametrize(
    ("peak", "weight"), [(199.0, 1), (200.0, 2), (299.0, 2), (300.0, 3), (399.0, 3), (400.0, 4), (1500.0, 4)]
)
def test_weight_bands_at_120_kv(peak: float, weight: int) -> None:
    phantom, score = _square_score(150.0, peak=peak)
    assert score.lesions[0].peak_hu == peak
    assert score.agatston_total == pytest.approx(4.0 * weight)
    assert phantom.lesions[0].weight == weight


def test_non_120_kv_thresholds() -> None:
    band = thresholds_for_kvp(80)
    assert band.threshold_hu == 177.0
    _, below = _square_score(176.0, kvp=80)
    assert below.agatston_total == 0.0
    _, at = _square_score(177.0, kvp=80)
    assert at.agatston_total == pytest.approx(4.0)
    assert at.threshold_hu == 177.0 and at.kvp == 80.0
    # 150 HU is calcium at 120 kV and 135 kV, not at 70, 80 or 100 kV.
    for kvp, counted in [(70, False), (80, False), (100, True), (120, True), (135, True)]:
        _, score = _square_score(150.0, kvp=kvp)
        assert (score.agatston_total > 0) is counted, kvp
    _, w2 = _square_score(180.0, peak=271.0, kvp=80)
    assert w2.agatston_total == pytest.approx(8.0)
    with pytest.raises(ValueError, match="kV"):
        thresholds_for_kvp(90)
    # A configurable table row: 90 kV with a user-supplied threshold.
    custom = KvThresholds(160.0, 246.0, 369.0, 492.0)
    phantom = square_calcium_phantom([SquareLesion(1, 8, 8, 4, 4, 160.0)])
    score = score_calcium(
        phantom.hu,
        pixel_spacing_mm=(0.5, 0.5),
        slice_thickness_mm=3,
        slice_increment_mm=3,
        kvp=90,
        thresholds=custom,
    )
    assert score.agatston_total == pytest.approx(4.0)


# ---------------------------------------------------------------- arteries and categories


def test_per_artery_totals_reassign_and_cac_drs() -> None:
    phantom = square_calcium_phantom(
        [
            SquareLesion(1, 2, 2, 8, 10, 350.0, artery=Artery.LAD),  # 20 mm² x 3 = 60
            SquareLesion(1, 2, 20, 4, 4, 450.0, n_slices=2, artery=Artery.RCA),  # 2 x 4 mm² x 4 = 32
            SquareLesion(1, 20, 2, 2, 2, 250.0, artery=Artery.LM),  # 1 mm² x 2 = 2
        ],
        mass_calibration_mg_per_ml_per_hu=0.7,
    )
    score = run(phantom)
    assert score.agatston_total == pytest.approx(94.0) == pytest.approx(phantom.agatston_total)
    assert score.per_artery[Artery.LAD].agatston == pytest.approx(60.0)
    assert score.per_artery[Artery.RCA].agatston == pytest.approx(32.0)
    assert score.per_artery[Artery.LM].agatston == pytest.approx(2.0)
    assert score.per_artery[Artery.LCX].lesion_count == 0
    assert Artery.UNASSIGNED not in score.per_artery
    assert score.cac_drs == "A1/N3" and score.classic_grade == "mild"
    assert score.mass_mg_total == pytest.approx(phantom.mass_mg_total)
    assert {lesion.artery_source for lesion in score.lesions} == {"labels"}

    rca = next(lesion for lesion in score.lesions if lesion.artery is Artery.RCA)
    moved = reassign(score, rca.label, "LAD")
    assert moved.per_artery[Artery.LAD].agatston == pytest.approx(92.0)
    assert moved.per_artery[Artery.RCA].lesion_count == 0
    assert moved.cac_drs == "A1/N2"
    assert next(lesion for lesion in moved.lesions if lesion.label == rca.label).artery_source == "user"
    assert score.cac_drs == "A1/N3"  # the original is unchanged
    assert moved.agatston_total == score.agatston_total and moved.requires_review
    with pytest.raises(KeyError):
        reassign(score, 99, Artery.LAD)


def test_position_suggestion_without_labels() -> None:
    phantom = square_calcium_phantom(
        [
            SquareLesion(1, 4, 4, 4, 4, 300.0),  # patient's right (image left) -> RCA
            SquareLesion(1, 4, 24, 4, 4, 300.0),  # patient's left, anterior -> LAD
            SquareLesion(1, 24, 24, 4, 4, 300.0),  # patient's left, posterior -> LCX
        ]
    )
    score = run(phantom)
    assert sorted(lesion.artery.value for lesion in score.lesions) == ["LAD", "LCX", "RCA"]
    assert {lesion.artery_source for lesion in score.lesions} == {"position"}


def test_unassigned_lesions_are_reported_and_not_counted_as_vessels() -> None:
    hu = np.full((2, 16, 16), 40.0)
    hu[0, 2:6, 2:6] = 300.0
    labels = np.zeros(hu.shape, dtype=np.int16)
    score = score_calcium(
        hu,
        pixel_spacing_mm=(0.5, 0.5),
        slice_thickness_mm=3,
        slice_increment_mm=3,
        kvp=120,
        artery_labels=labels,
    )
    assert score.lesions[0].artery is Artery.UNASSIGNED
    assert score.per_artery[Artery.UNASSIGNED].agatston == pytest.approx(12.0)
    assert score.cac_drs == "A1/N0"
    assert any("unassigned" in note for note in score.notes)


def test_zero_calcium() -> None:
    hu = np.full((5, 32, 32), 40.0)
    score = score_calcium(
        hu,
        pixel_spacing_mm=(0.5, 0.5),
        slice_thickness_mm=3,
        slice_increment_mm=3,
        kvp=120,
        mass_calibration_mg_per_ml_per_hu=0.8,
    )
    assert score.agatston_total == 0 and score.volume_mm3_total == 0 and score.mass_mg_total == 0
    assert score.cac_drs == "A0" and score.classic_grade == "none"
    assert score.lesions == () and score.requires_review is True
    assert all(a.lesion_count == 0 for a in score.per_artery.values())


@pytest.mark.parametrize(
    ("agatston", "category", "grade"),
    [
        (0.0, "A0", "none"),
        (0.4, "A1", "minimal"),
        (10.0, "A1", "minimal"),
        (10.5, "A1", "mild"),
        (99.9, "A1", "mild"),
        (100.0, "A2", "mild"),
        (101.0, "A2", "moderate"),
        (299.9, "A2", "moderate"),
        (300.0, "A3", "moderate"),
        (400.0, "A3", "moderate"),
        (400.5, "A3", "severe"),
    ],
)
def test_category_boundaries(agatston: float, category: str, grade: str) -> None:
    assert cac_drs_category(agatston) == category
    assert classic_grade(agatston) == grade


def test_cac_drs_string() -> None:
    assert cac_drs(0.0, 0) == "A0"
    assert cac_drs(150.0, 2) == "A2/N2"


def test_noise_is_off_by_default_and_seeded_when_on() -> None:
    lesion = [CylinderLesion((6.0, 8.0, 8.0), 2.0, 6.0, 400.0)]
    quiet = calcium_phantom(lesion, field_of_view_mm=(16, 16), z_extent_mm=12)
    assert set(np.unique(quiet.hu)) == {40.0, 400.0}
    a = calcium_phantom(lesion, field_of_view_mm=(16, 16), z_extent_mm=12, noise_sd_hu=10, seed=3)
    b = calcium_phantom(lesion, field_of_view_mm=(16, 16), z_extent_mm=12, noise_sd_hu=10, seed=3)
    assert np.array_equal(a.hu, b.hu)


def test_input_validation() -> None:
    hu = np.zeros((2, 4, 4))
    with pytest.raises(ValueError):
        score_calcium(hu[0], pixel_spacing_mm=(0.5, 0.5), slice_thickness_mm=3, slice_increment_mm=3, kvp=120)
    with pytest.raises(ValueError):
        score_calcium(hu, pixel_spacing_mm=(0.0, 0.5), slice_thickness_mm=3, slice_increment_mm=3, kvp=120)
    with pytest.raises(ValueError):
        score_calcium(
            hu,
            pixel_spacing_mm=(0.5, 0.5),
            slice_thickness_mm=3,
            slice_increment_mm=3,
            kvp=120,
            artery_labels=np.zeros((1, 4, 4), dtype=np.int16),
        )
