"""Vessel analysis against analytic tube phantoms (voxa.testing.vessel_phantom).

Tolerances (derived in docs/analysis-vessels.md)
------------------------------------------------
* Equivalent diameter: within half a voxel, taken as half the *smallest* spacing (0.25 mm for
  0.8 x 0.5 x 0.5 mm voxels), at every centreline point outside the end margin. The phantom's
  partial volume and the threshold at half maximum put the edge within a small fraction of a
  voxel of the true wall; the remaining bias (a blurred convex edge moves inwards by about
  sigma² / r) stays well inside this bound for radii of two voxels and more.
* Minimum / maximum caliper diameters: within half the *largest* spacing (extremes over
  directions are set by single boundary pixels).
* Stenosis: within 5 percentage points of the phantom's ``percent`` (the cosine narrowing is
  concentric, so diameter stenosis is exactly ``percent``).
* Centreline: within a quarter of the smallest spacing of the analytic axis; its length within
  1 mm of the analytic arc length between the two points.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from numpy.typing import ArrayLike

from voxa.analysis.vessels import (
    ALGORITHM_VERSION,
    FrangiParameters,
    PatientPoint,
    VesselAnalysis,
    VoxelPoint,
    analyse_vessel,
    extract_centerline,
    grow_region,
    hessian_eigenvalues,
    measure_cross_sections,
    measure_stenosis,
    segmentation_from_mask,
    symmetric_eigenvalues,
    vesselness,
)
from voxa.imaging.volume import Volume
from voxa.testing.vessel_phantom import (
    ArcTube,
    Slab,
    Sphere,
    StenosisSpec,
    StraightTube,
    Tube,
    VesselPhantom,
    vessel_phantom,
)

SPACING = (0.8, 0.5, 0.5)  # (z, y, x) mm: anisotropic, thicker slices
HALF_VOXEL_MM = 0.5 * min(SPACING)


def _oblique() -> tuple[float, float, float]:
    d = np.array([0.5, 0.6, 0.8])
    d /= np.linalg.norm(d)
    return float(d[0]), float(d[1]), float(d[2])


STRAIGHT = StraightTube(
    start_mm=(6.0, 6.0, 5.0),
    direction=_oblique(),
    length_mm=40.0,
    radius_mm=2.0,
    stenoses=(StenosisSpec(centre_mm=20.0, length_mm=8.0, percent=50.0),),
)
CURVED = ArcTube(
    centre_mm=(20.0, 20.0, 20.0),
    normal=(1.0, 0.5, 0.3),
    start_direction=(0.0, 0.0, 1.0),
    bend_radius_mm=12.0,
    angle_deg=200.0,
    radius_mm=1.75,
    stenoses=(StenosisSpec(centre_mm=20.0, length_mm=7.0, percent=50.0),),
)
SHAPE = (52, 84, 84)
ORIGIN = (-80.0, -120.0, 35.0)  # patient (LPS) position of voxel (0, 0, 0)


def _phantom(
    tube: Tube, *, noise_sd_hu: float = 0.0, blur_sigma_mm: float = 0.0, seed: int = 0
) -> VesselPhantom:
    return vessel_phantom(
        [tube],
        shape=SHAPE,
        spacing_mm=SPACING,
        origin_mm=ORIGIN,
        noise_sd_hu=noise_sd_hu,
        blur_sigma_mm=blur_sigma_mm,
        seed=seed,
    )


def _patient(phantom: VesselPhantom, tube: Tube, s: float) -> PatientPoint:
    x, y, z = phantom.frame_to_patient(tube.point_at(s))
    return PatientPoint(float(x), float(y), float(z))


def _analyse(phantom: VesselPhantom, tube: Tube) -> VesselAnalysis:
    """Start and end 1 mm inside the tube's ends, given in patient coordinates."""
    start = _patient(phantom, tube, 1.0)
    return analyse_vessel(phantom.volume, start, _patient(phantom, tube, tube.length_mm - 1.0))


# ---------------------------------------------------------------- the phantom itself


def test_phantom_truth_is_analytic() -> None:
    assert STRAIGHT.radius_at(20.0) == pytest.approx(1.0)  # 50 % of the diameter
    assert STRAIGHT.radius_at([0.0, 15.9, 24.1, 40.0]) == pytest.approx([2.0] * 4)
    assert CURVED.length_mm == pytest.approx(math.radians(200) * 12.0)
    for tube in (STRAIGHT, CURVED):
        s = np.linspace(0.0, tube.length_mm, 9)
        s_back, off_axis = tube.project(tube.point_at(s))
        assert s_back == pytest.approx(s, abs=1e-9)
        assert off_axis == pytest.approx(np.zeros_like(s), abs=1e-9)
        assert np.linalg.norm(tube.tangent_at(s), axis=1) == pytest.approx(np.ones_like(s))


def test_phantom_partial_volume_matches_cross_section_area() -> None:
    # A tube along z: each slice's HU excess integrates to the disc area (partial volume).
    tube = StraightTube((0.0, 16.0, 16.0), (1.0, 0.0, 0.0), 40.0, 2.0)
    phantom = vessel_phantom([tube], shape=(40, 64, 64), spacing_mm=SPACING)
    fraction = (phantom.volume.voxels[20] - 40.0) / (tube.hu - 40.0)
    assert float(fraction.sum()) * 0.25 == pytest.approx(math.pi * 4.0, rel=0.02)
    assert phantom.volume.units == "HU" and phantom.volume.spacing_mm == SPACING


# ---------------------------------------------------------------- vesselness


def test_symmetric_eigenvalues_match_lapack() -> None:
    rng = np.random.default_rng(3)
    a = rng.normal(size=(500, 3, 3))
    a = a + a.transpose(0, 2, 1)
    a[0] = np.eye(3) * 2.0  # a degenerate (isotropic) matrix
    ours = symmetric_eigenvalues(a[:, 0, 0], a[:, 1, 1], a[:, 2, 2], a[:, 0, 1], a[:, 0, 2], a[:, 1, 2])
    ref = np.linalg.eigvalsh(a)
    ref = np.take_along_axis(ref, np.argsort(np.abs(ref), axis=1), axis=1)
    assert np.allclose(ours, ref, atol=1e-8)


def test_vesselness_prefers_tube_to_blob_and_plate_of_same_contrast() -> None:
    tube = StraightTube((4.0, 8.0, 4.0), (0.3, 0.2, 1.0), 26.0, 1.5)
    blob = Sphere((16.0, 24.0, 16.0), 1.5)
    plate = Slab((16.0, 10.0, 22.0), (1.0, 0.2, 0.1), 3.0, 6.0)
    phantom = vessel_phantom([tube], distractors=[blob, plate], shape=(40, 64, 64), spacing_mm=SPACING)
    v = vesselness(phantom.volume)

    def at(q: ArrayLike) -> float:
        return float(v[tuple(np.rint(phantom.frame_to_index(q)).astype(int))])

    along_tube = min(at(tube.point_at(s)) for s in np.linspace(6.0, 20.0, 8))
    assert along_tube > 0.6
    assert at(blob.centre_mm) < along_tube / 4
    assert at(plate.centre_mm) < along_tube / 20
    assert float(v.min()) >= 0.0 and float(v.max()) <= 1.0
    # the background far from every shape gives nothing
    assert float(v[:, :, -4:].max()) < 0.01


@pytest.mark.parametrize("direction", [(0.0, 1.0, 0.0), (0.0, 0.0, 1.0)])
def test_vesselness_respects_anisotropic_spacing(direction: tuple[float, float, float]) -> None:
    # A tube along z (cross-section in x-y, 0.5 mm pixels) and one along y or x (cross-section
    # through 0.8 mm slices) of the same physical radius must look alike.
    along_z = StraightTube((4.0, 16.0, 16.0), (1.0, 0.0, 0.0), 24.0, 1.5)
    lateral = StraightTube((16.0, 4.0, 4.0), direction, 24.0, 1.5)
    responses = []
    eigen = []
    for tube in (along_z, lateral):
        phantom = vessel_phantom([tube], shape=(40, 64, 64), spacing_mm=SPACING)
        centre = tuple(np.rint(phantom.frame_to_index(tube.point_at(12.0))).astype(int))
        responses.append(float(vesselness(phantom.volume)[centre]))
        select = np.zeros(phantom.volume.shape, dtype=bool)
        select[centre] = True
        eigen.append(hessian_eigenvalues(phantom.volume, 1.25, mask=select)[0])
        if tube is lateral:
            # the same voxels read as isotropic 0.5 mm: the tube looks flattened
            wrong = dataclasses.replace(phantom.volume, spacing_mm=(0.5, 0.5, 0.5))
            ignored = float(vesselness(wrong)[centre])
    assert abs(responses[0] - responses[1]) < 0.05
    assert eigen[1][1:] == pytest.approx(eigen[0][1:], rel=0.1)
    assert abs(ignored - responses[0]) > 0.1  # the check above can fail


# ---------------------------------------------------------------- accuracy on phantoms


@pytest.mark.parametrize("noise_sd_hu", [0.0, 20.0])
@pytest.mark.parametrize("tube", [STRAIGHT, CURVED], ids=["straight-oblique", "arc"])
def test_diameters_and_stenosis_match_analytic_truth(tube: Tube, noise_sd_hu: float) -> None:
    phantom = _phantom(tube, noise_sd_hu=noise_sd_hu, seed=11)
    result = _analyse(phantom, tube)
    profile, centerline = result.profile, result.centerline

    q = profile.points_voxel * np.asarray(SPACING)
    s_true, off_axis = tube.project(q)
    use = profile.valid & ~profile.in_end_margin
    assert np.all(profile.valid[~profile.in_end_margin])
    assert profile.end_margin_mm <= 4.0 and use.sum() >= len(use) - 2 * (4.0 / centerline.step_mm + 1)
    truth = tube.diameter_at(s_true)
    assert np.max(np.abs(profile.diameter_mm[use] - truth[use])) <= HALF_VOXEL_MM
    assert np.max(np.abs(profile.min_diameter_mm[use] - truth[use])) <= 0.5 * max(SPACING)
    assert np.max(np.abs(profile.max_diameter_mm[use] - truth[use])) <= 0.5 * max(SPACING)
    assert profile.area_mm2[use] == pytest.approx(np.pi * truth[use] ** 2 / 4, rel=0.15)

    # centreline on the axis, with the right length, in voxel and patient coordinates
    assert np.max(off_axis[use]) <= 0.25 * min(SPACING)
    assert centerline.length_mm == pytest.approx(tube.length_mm - 2.0, abs=1.0)
    assert centerline.points_patient_mm == pytest.approx(
        phantom.volume.index_to_patient(centerline.points_voxel)
    )
    assert np.linalg.norm(centerline.tangents_patient, axis=1) == pytest.approx(np.ones(len(q)))
    assert profile.arc_length_mm[0] == 0.0 and np.all(np.diff(profile.arc_length_mm) > 0)

    stenosis = result.stenosis
    assert stenosis is not None
    (spec,) = tube.stenoses
    assert abs(stenosis.stenosis_percent - spec.percent) <= 5.0
    assert stenosis.reference_source == "proximal+distal"
    assert stenosis.reference_diameter_mm == pytest.approx(2 * tube.radius_mm, abs=HALF_VOXEL_MM)
    s_narrow, _ = tube.project(np.asarray(stenosis.point_voxel) * np.asarray(SPACING))
    assert abs(float(s_narrow) - spec.centre_mm) <= 1.5
    assert stenosis.lesion_start_mm < stenosis.arc_length_mm < stenosis.lesion_end_mm
    assert stenosis.point_patient_mm == pytest.approx(
        tuple(phantom.volume.index_to_patient(stenosis.point_voxel))
    )


def test_blurred_straight_tube_within_half_voxel() -> None:
    # A scanner-like point-spread function (Gaussian, 0.4 mm) on top of partial volume.
    phantom = _phantom(STRAIGHT, blur_sigma_mm=0.4)
    result = _analyse(phantom, STRAIGHT)
    profile = result.profile
    s_true, _ = STRAIGHT.project(profile.points_voxel * np.asarray(SPACING))
    use = profile.valid & ~profile.in_end_margin
    assert np.max(np.abs(profile.diameter_mm[use] - STRAIGHT.diameter_at(s_true[use]))) <= HALF_VOXEL_MM
    assert result.stenosis is not None and abs(result.stenosis.stenosis_percent - 50.0) <= 5.0


def test_healthy_tube_has_no_stenosis_and_given_reference_is_used() -> None:
    tube = dataclasses.replace(STRAIGHT, stenoses=())
    phantom = _phantom(tube)
    result = _analyse(phantom, tube)
    assert result.stenosis is not None and result.stenosis.stenosis_percent <= 5.0
    graded = measure_stenosis(result.profile, reference_diameter_mm=5.0)
    assert graded.reference_source == "given"
    assert graded.stenosis_percent == pytest.approx(100 * (1 - graded.min_diameter_mm / 5.0))
    assert graded.area_stenosis_percent == pytest.approx(100 * (1 - graded.min_area_mm2 / (math.pi * 6.25)))


def test_results_are_flagged_for_review_and_carry_the_mask() -> None:
    phantom = _phantom(STRAIGHT)
    result = _analyse(phantom, STRAIGHT)
    seg = result.segmentation
    for item in (result, seg, result.centerline, result.profile, result.stenosis):
        assert item is not None
        assert item.requires_review is True
        assert item.algorithm_version == ALGORITHM_VERSION
    assert seg.mask.shape == phantom.volume.shape and seg.mask.dtype == np.bool_
    assert seg.volume_mm3 == pytest.approx(seg.voxel_count * 0.2)
    assert seg.lumen_hu == pytest.approx(400.0, abs=5) and seg.surround_hu == pytest.approx(40.0, abs=5)
    assert seg.boundary_hu == pytest.approx(220.0, abs=5)
    # the mask agrees with the phantom's own half-inside voxels (Dice)
    truth = phantom.tube_mask(0)
    dice = 2 * np.sum(seg.mask & truth) / (seg.mask.sum() + truth.sum())
    assert dice > 0.9


# ---------------------------------------------------------------- region growing


def test_region_growing_does_not_leak_into_an_unconnected_blob() -> None:
    tube = StraightTube((4.0, 10.0, 6.0), (0.3, 0.2, 1.0), 30.0, 1.5)
    near = tube.point_at(15.0) + np.array([1.0, 0.0, 0.0]) * (1.5 + 1.5 + 2.0)  # 1.5 mm gap
    phantom = vessel_phantom(
        [tube],
        distractors=[Sphere(tuple(near), 2.0, 400.0)],
        shape=(48, 80, 80),
        spacing_mm=SPACING,
        noise_sd_hu=15.0,
    )
    seed_index = phantom.frame_to_index(tube.point_at(3.0))
    seg = grow_region(phantom.volume, VoxelPoint(*seed_index))
    blob = phantom.labels == 2
    assert not np.any(seg.mask & blob)
    assert seg.mask[phantom.tube_mask(0)].mean() > 0.99
    # the same seed in patient coordinates gives the same region
    x, y, z = phantom.volume.index_to_patient(seed_index)
    again = grow_region(phantom.volume, PatientPoint(x, y, z))
    assert np.array_equal(again.mask, seg.mask)


def test_vesselness_gating_stops_a_leak_into_a_touching_chamber() -> None:
    tube = StraightTube((4.0, 10.0, 6.0), (0.3, 0.2, 1.0), 30.0, 1.5)
    touching = tube.point_at(15.0) + np.array([0.0, 1.0, 0.0]) * (1.5 + 9.5)
    phantom = vessel_phantom(
        [tube],
        distractors=[Sphere(tuple(touching), 10.0, 400.0)],
        shape=(48, 80, 80),
        spacing_mm=SPACING,
        noise_sd_hu=15.0,
    )
    seed = VoxelPoint(*phantom.frame_to_index(tube.point_at(3.0)))
    chamber = phantom.labels == 2
    plain = grow_region(phantom.volume, seed)
    assert plain.mask[chamber].mean() > 0.95  # HU alone leaks
    gated = grow_region(phantom.volume, seed, min_vesselness=0.2, frangi=FrangiParameters(c_hu=80.0))
    assert gated.mask[chamber].mean() < 0.05
    assert gated.mask[phantom.tube_mask(0)].mean() > 0.9


def test_connectivity_is_explicit() -> None:
    voxels = np.full((5, 5, 5), 40.0, dtype=np.float32)
    voxels[1, 1, 1] = voxels[2, 2, 2] = 400.0  # touching only at a corner
    volume = Volume(voxels=voxels, spacing_mm=(1.0, 1.0, 1.0), origin_mm=(0.0, 0.0, 0.0), direction=np.eye(3))
    seed = VoxelPoint(1, 1, 1)
    assert grow_region(volume, seed, connectivity=26, snap_radius_mm=0.1).voxel_count == 2
    assert grow_region(volume, seed, connectivity=18, snap_radius_mm=0.1).voxel_count == 1
    assert grow_region(volume, seed, connectivity=6, snap_radius_mm=0.1).voxel_count == 1


# ---------------------------------------------------------------- errors


@pytest.fixture(scope="module")
def small() -> VesselPhantom:
    tube = StraightTube((4.0, 10.0, 6.0), (0.3, 0.2, 1.0), 20.0, 1.5)
    other = StraightTube((30.0, 30.0, 6.0), (0.0, 0.0, 1.0), 20.0, 1.5)
    return vessel_phantom([tube, other], shape=(48, 80, 80), spacing_mm=SPACING)


def test_seed_outside_the_volume_is_refused(small: VesselPhantom) -> None:
    with pytest.raises(ValueError, match="outside the volume"):
        grow_region(small.volume, VoxelPoint(-3.0, 10.0, 10.0))
    with pytest.raises(ValueError, match="outside the volume"):
        grow_region(small.volume, PatientPoint(1e4, 0.0, 0.0))
    with pytest.raises(ValueError, match="outside the volume"):
        analyse_vessel(small.volume, VoxelPoint(10.0, 500.0, 10.0))


def test_seed_not_in_a_vessel_is_refused(small: VesselPhantom) -> None:
    with pytest.raises(ValueError, match="not in a vessel"):
        grow_region(small.volume, VoxelPoint(40.0, 70.0, 5.0))


def test_bad_parameters_are_refused(small: VesselPhantom) -> None:
    seed = VoxelPoint(*small.frame_to_index(small.tubes[0].point_at(3.0)))
    with pytest.raises(ValueError, match="connectivity"):
        grow_region(small.volume, seed, connectivity=8)
    with pytest.raises(ValueError, match="hu_window"):
        grow_region(small.volume, seed, hu_window=(500.0, 100.0))
    with pytest.raises(ValueError, match="sigma"):
        vesselness(small.volume, sigmas_mm=(0.0,))


def test_empty_segmentation_is_refused(small: VesselPhantom) -> None:
    empty = np.zeros(small.volume.shape, dtype=bool)
    with pytest.raises(ValueError, match="empty segmentation"):
        segmentation_from_mask(small.volume, empty)
    seed = VoxelPoint(*small.frame_to_index(small.tubes[0].point_at(3.0)))
    seg = dataclasses.replace(grow_region(small.volume, seed), mask=empty)
    with pytest.raises(ValueError, match="empty segmentation"):
        extract_centerline(small.volume, seg, seed)


def test_unconnected_end_and_far_points_are_refused(small: VesselPhantom) -> None:
    a, b = small.tubes
    seed = VoxelPoint(*small.frame_to_index(a.point_at(2.0)))
    seg = grow_region(small.volume, seed)
    with pytest.raises(ValueError, match="not within"):
        extract_centerline(small.volume, seg, seed, VoxelPoint(*small.frame_to_index(b.point_at(10.0))))
    both = segmentation_from_mask(small.volume, small.labels > 0)
    with pytest.raises(ValueError, match="not connected"):
        extract_centerline(small.volume, both, seed, VoxelPoint(*small.frame_to_index(b.point_at(10.0))))


def test_centerline_without_end_runs_to_the_far_end(small: VesselPhantom) -> None:
    tube = small.tubes[0]
    seed = VoxelPoint(*small.frame_to_index(tube.point_at(1.0)))
    seg = grow_region(small.volume, seed)
    line = extract_centerline(small.volume, seg, seed)
    s_end, _ = tube.project(line.points_voxel[-1] * np.asarray(SPACING))
    assert float(s_end) > tube.length_mm - 1.5
    profile = measure_cross_sections(small.volume, seg, line)
    with pytest.raises(ValueError, match="no valid cross-section"):
        measure_stenosis(profile, arc_range_mm=(1e3, 2e3))
