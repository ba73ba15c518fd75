"""MPR: planes, reslicing, slabs, curved MPR, projections — checked against analytic volumes
whose value is a known function of patient coordinates."""

from __future__ import annotations

import math

import numpy as np
import pytest

from voxa.imaging import mpr
from voxa.imaging.mpr import Plane
from voxa.imaging.volume import Volume

SPACING = (2.0, 1.0, 0.5)  # anisotropic (z, y, x)
ORIGIN = (-10.0, -20.0, 30.0)


def _orthonormal(rx: float, ry: float, rz: float) -> np.ndarray:
    """A rotation matrix; its rows are the volume's row, column and normal directions."""
    cx, sx, cy, sy, cz, sz = math.cos(rx), math.sin(rx), math.cos(ry), math.sin(ry), math.cos(rz), math.sin(rz)
    rot_x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    rot_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rot_z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return (rot_z @ rot_y @ rot_x).T


AXIAL = np.eye(3)
SAGITTAL_ACQ = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [-1.0, 0.0, 0.0]])  # rows: row, col, normal
OBLIQUE_ACQ = _orthonormal(0.2, -0.3, 0.35)


def _f(p: np.ndarray) -> np.ndarray:
    return p[..., 0] + 2.0 * p[..., 1] + 3.0 * p[..., 2]


def _volume(values: np.ndarray | None = None, *, shape: tuple[int, int, int] = (12, 18, 24),
            direction: np.ndarray = AXIAL, spacing: tuple[float, float, float] = SPACING,
            units: str = "HU") -> Volume:
    """A volume whose voxels are x + 2y + 3z of their patient positions (or ``values``)."""
    geo = Volume(voxels=np.zeros(shape, np.float32), spacing_mm=spacing, origin_mm=ORIGIN,
                 direction=np.asarray(direction, dtype=np.float64), units=units, modality="CT" if units else "")
    if values is None:
        idx = np.stack(np.indices(shape), axis=-1).reshape(-1, 3)
        values = _f(geo.index_to_patient(idx)).reshape(shape)
    return Volume(voxels=np.asarray(values, dtype=np.float32), spacing_mm=spacing, origin_mm=ORIGIN,
                  direction=geo.direction, units=units, modality=geo.modality)


def _pixels_mm(plane: Plane) -> np.ndarray:
    rows, cols = plane.size
    return plane.pixel_to_patient(np.arange(rows)[:, None], np.arange(cols)[None, :])


def _inside(volume: Volume, pts: np.ndarray) -> np.ndarray:
    idx = volume.patient_to_index(pts.reshape(-1, 3)).reshape(pts.shape)
    return np.all((idx >= 0) & (idx <= np.asarray(volume.shape) - 1), axis=-1)


def _check_linear(volume: Volume, plane: Plane, *, min_inside: float = 0.2) -> None:
    image, returned = mpr.reslice(volume, plane)
    assert returned is plane and image.shape == plane.size and image.dtype == np.float32
    pts = _pixels_mm(plane)
    inside = _inside(volume, pts)
    assert inside.mean() >= min_inside
    # trilinear interpolation reproduces a linear function exactly (float32 rounding only)
    np.testing.assert_allclose(image[inside], _f(pts)[inside], atol=2e-3 * float(np.abs(_f(pts)).max()))
    assert np.all(image[~_inside_half(volume, pts)] == -1024.0)


def _inside_half(volume: Volume, pts: np.ndarray) -> np.ndarray:
    idx = volume.patient_to_index(pts.reshape(-1, 3)).reshape(pts.shape)
    return np.all((idx >= -0.5) & (idx <= np.asarray(volume.shape) - 0.5), axis=-1)


# -- standard planes -------------------------------------------------------------------------


@pytest.mark.parametrize("direction", [AXIAL, SAGITTAL_ACQ, OBLIQUE_ACQ], ids=["axial", "sagittal-acq", "oblique-acq"])
@pytest.mark.parametrize("orientation", mpr.ORIENTATIONS)
def test_standard_planes_sample_the_function(direction: np.ndarray, orientation: str) -> None:
    vol = _volume(direction=direction)
    plane = mpr.standard_plane(vol, orientation)
    axis = {"axial": 2, "coronal": 1, "sagittal": 0}[orientation]
    assert abs(float(np.abs(plane.normal)[axis]) - 1.0) < 1e-9  # a plane of the patient
    _check_linear(vol, plane, min_inside=0.2 if direction is OBLIQUE_ACQ else 0.99)


def test_standard_plane_orientation_conventions() -> None:
    vol = _volume()
    axial, coronal, sagittal = (mpr.standard_plane(vol, o) for o in ("axial", "coronal", "sagittal"))
    assert axial.row_direction == (1.0, 0.0, 0.0) and axial.column_direction == (0.0, 1.0, 0.0)
    assert coronal.row_direction == (1.0, 0.0, 0.0) and coronal.column_direction == (0.0, 0.0, -1.0)
    assert sagittal.row_direction == (0.0, 1.0, 0.0) and sagittal.column_direction == (0.0, 0.0, -1.0)
    # pixel spacing follows the voxels: (between rows, between columns)
    assert axial.pixel_spacing_mm == (1.0, 0.5) and axial.size == (18, 24)
    assert coronal.pixel_spacing_mm == (2.0, 0.5) and coronal.size == (12, 24)
    assert sagittal.pixel_spacing_mm == (2.0, 1.0) and sagittal.size == (12, 18)

    # a marker at the patient's left (+x), anterior (-y), superior (+z) corner of the volume
    values = np.zeros((12, 18, 24), np.float32)
    values[9, 2, 20] = 1000.0
    marked = _volume(values)
    k, j, i = 9, 2, 20
    pos = marked.index_to_patient(np.array([k, j, i], dtype=float))
    img, _ = mpr.reslice(marked, mpr.standard_plane(marked, "axial", position_mm=float(pos[2])))
    r, c = np.unravel_index(np.argmax(img), img.shape)
    assert (r, c) == (2, 20)  # anterior at the top, the patient's left on the image's right
    img, _ = mpr.reslice(marked, mpr.standard_plane(marked, "coronal", position_mm=float(pos[1])))
    r, c = np.unravel_index(np.argmax(img), img.shape)
    assert (r, c) == (12 - 1 - 9, 20)  # superior at the top
    img, _ = mpr.reslice(marked, mpr.standard_plane(marked, "sagittal", position_mm=float(pos[0])))
    r, c = np.unravel_index(np.argmax(img), img.shape)
    assert (r, c) == (12 - 1 - 9, 2)  # superior at the top, anterior on the left


def test_axis_aligned_planes_copy_voxels() -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(0, 100, size=(12, 18, 24)).astype(np.float32)  # no interpolation can match this
    vol = _volume(values)
    img, _ = mpr.reslice(vol, mpr.standard_plane(vol, "axial", index=5))
    np.testing.assert_array_equal(img, values[5])
    img, _ = mpr.reslice(vol, mpr.standard_plane(vol, "coronal", index=7))
    np.testing.assert_array_equal(img, values[::-1, 7, :])
    img, _ = mpr.reslice(vol, mpr.standard_plane(vol, "sagittal", index=3))
    np.testing.assert_array_equal(img, values[::-1, :, 3])
    # a position in mm on a slice is the same slice; half-way between two slices blends them
    z5 = float(vol.index_to_patient(np.array([5.0, 0, 0]))[2])
    img, _ = mpr.reslice(vol, mpr.standard_plane(vol, "axial", position_mm=z5))
    np.testing.assert_array_equal(img, values[5])
    img, _ = mpr.reslice(vol, mpr.standard_plane(vol, "axial", position_mm=z5 + 0.5))  # 1/4 of 2 mm
    np.testing.assert_allclose(img, 0.75 * values[5] + 0.25 * values[6], atol=1e-3)
    img, _ = mpr.reslice(vol, mpr.standard_plane(vol, "axial", position_mm=z5 + 0.5), order=0)
    np.testing.assert_array_equal(img, values[5])
    # a sagittal acquisition's axial plane is a permuted copy too
    sag = _volume(values, direction=SAGITTAL_ACQ)
    plane = mpr.standard_plane(sag, "axial", index=4)
    img, _ = mpr.reslice(sag, plane)
    idx = sag.patient_to_index(_pixels_mm(plane).reshape(-1, 3))
    assert np.allclose(idx, np.round(idx), atol=1e-6)
    k, j, i = np.round(idx).astype(int).T
    np.testing.assert_array_equal(img.reshape(-1), values[k, j, i])


def test_standard_plane_errors() -> None:
    vol = _volume()
    with pytest.raises(ValueError, match="orientation"):
        mpr.standard_plane(vol, "transverse")
    with pytest.raises(ValueError, match="outside"):
        mpr.standard_plane(vol, "axial", position_mm=1e4)
    with pytest.raises(ValueError, match="outside"):
        mpr.standard_plane(vol, "axial", index=12)
    with pytest.raises(ValueError, match="not both"):
        mpr.standard_plane(vol, "axial", index=1, position_mm=31.0)
    with pytest.raises(ValueError, match="mode"):
        mpr.reslice(vol, mpr.standard_plane(vol, "axial"), slab_mm=4, mode="max")
    with pytest.raises(ValueError, match="slab"):
        mpr.reslice(vol, mpr.standard_plane(vol, "axial"), slab_mm=-1)


# -- oblique planes --------------------------------------------------------------------------


@pytest.mark.parametrize("direction", [AXIAL, OBLIQUE_ACQ], ids=["axial", "oblique-acq"])
def test_oblique_plane_samples_the_function(direction: np.ndarray) -> None:
    vol = _volume(direction=direction)
    centre = mpr.volume_center_mm(vol)
    plane = mpr.oblique_plane(vol, centre, (1.0, 2.0, 3.0), up=(0.0, 0.0, 1.0), size=64)
    n = plane.normal
    assert np.allclose(n, np.array([1.0, 2.0, 3.0]) / math.sqrt(14))
    assert np.allclose(plane.center_mm, centre)
    assert float(np.asarray(plane.column_direction) @ np.array([0.0, 0.0, 1.0])) < 0  # up is the top
    _check_linear(vol, plane, min_inside=0.1)


def test_oblique_plane_errors() -> None:
    vol = _volume()
    with pytest.raises(ValueError, match="zero"):
        mpr.oblique_plane(vol, (0, 0, 0), (0, 0, 0))
    with pytest.raises(ValueError, match="parallel"):
        mpr.oblique_plane(vol, (0, 0, 0), (0, 0, 1), up=(0, 0, -2))
    with pytest.raises(ValueError, match="three"):
        mpr.oblique_plane(vol, (0, 0), (0, 0, 1))


# -- slabs -----------------------------------------------------------------------------------


def _one_bright_voxel() -> tuple[Volume, tuple[int, int, int]]:
    values = np.zeros((12, 18, 24), np.float32)
    at = (6, 9, 10)
    values[at] = 1000.0
    return _volume(values, units=""), at


def test_slab_mip_minip_average_of_one_bright_voxel() -> None:
    vol, (k, j, i) = _one_bright_voxel()
    z_k = float(vol.index_to_patient(np.array([k, j, i], dtype=float))[2])
    plane = mpr.standard_plane(vol, "axial", position_mm=z_k + 4.0)  # two slices (2 mm) above
    thin, _ = mpr.reslice(vol, plane)
    assert thin.max() == 0.0
    too_thin, _ = mpr.reslice(vol, plane, slab_mm=7.9)  # reaches 3.95 mm: not the voxel's centre
    assert too_thin.max() == 0.0
    mip, _ = mpr.reslice(vol, plane, slab_mm=8.0, mode="mip")  # 5 slices: k-2 .. k+2 around k+2
    assert mip[j, i] == 1000.0 and np.count_nonzero(mip) == 1
    minip, _ = mpr.reslice(vol, plane, slab_mm=8.0, mode="minip")
    assert minip.max() == 0.0
    avg, _ = mpr.reslice(vol, plane, slab_mm=8.0, mode="average")
    assert avg[j, i] == pytest.approx(1000.0 / 5)  # slices k .. k+4


def test_slab_average_counts_the_slices() -> None:
    vol, (k, j, i) = _one_bright_voxel()
    z_k = float(vol.index_to_patient(np.array([k, j, i], dtype=float))[2])
    avg, _ = mpr.reslice(vol, mpr.standard_plane(vol, "axial", position_mm=z_k), slab_mm=4.0, mode="average")
    assert avg[j, i] == pytest.approx(1000.0 / 3)  # k-1, k, k+1
    # at the top edge only the slices inside count
    top = float(vol.index_to_patient(np.array([11.0, 0, 0]))[2])
    edge, _ = mpr.reslice(vol, mpr.standard_plane(vol, "axial", position_mm=top), slab_mm=4.0, mode="average")
    np.testing.assert_allclose(edge, 0.0)


def test_oblique_slab_mip_finds_the_voxel() -> None:
    vol, (k, j, i) = _one_bright_voxel()
    p = vol.index_to_patient(np.array([k, j, i], dtype=float))
    normal = np.array([0.3, -0.2, 1.0])
    shifted = p + 3.0 * normal / np.linalg.norm(normal)  # the plane passes 3 mm from the voxel
    plane = mpr.oblique_plane(vol, shifted, normal, size=48, fov_mm=24.0)
    thin, _ = mpr.reslice(vol, plane)
    assert thin.max() == 0.0
    mip, _ = mpr.reslice(vol, plane, slab_mm=8.0)
    assert mip.max() > 100.0
    r, c = np.unravel_index(np.argmax(mip), mip.shape)
    where = plane.pixel_to_patient(r, c)
    offset = where - p
    in_plane = offset - float(offset @ plane.normal) * plane.normal
    assert float(np.linalg.norm(in_plane)) < 1.5  # within a voxel of the voxel's projection


# -- curved MPR ------------------------------------------------------------------------------


def test_curved_mpr_of_a_straight_line_is_the_oblique_plane() -> None:
    rng = np.random.default_rng(2)
    vol = _volume(rng.normal(0, 100, size=(12, 18, 24)).astype(np.float32), direction=OBLIQUE_ACQ)
    c = mpr.volume_center_mm(vol)
    t = np.array([0.2, 0.3, 1.0])
    t /= np.linalg.norm(t)
    start, end = c - 8.0 * t, c + 8.0 * t
    lateral = np.array([1.0, 0.0, 0.0])
    sp = 0.5
    image, cp = mpr.curved_mpr(vol, [start, c, end], width_mm=10.0, spacing_mm=sp, lateral=lateral)
    rows, cols = image.shape
    assert rows == 33 and cols == 21 and cp.size == (rows, cols)
    lat = lateral - float(lateral @ t) * t
    lat /= np.linalg.norm(lat)
    assert np.allclose(cp.lateral, lat) and np.allclose(cp.tangent, t)
    plane = Plane(tuple(start - (cols - 1) / 2 * sp * lat), tuple(lat), tuple(t), (sp, sp), (rows, cols))
    expected, _ = mpr.reslice(vol, plane)
    np.testing.assert_allclose(image, expected, atol=1e-3)
    # with a slab too
    slab_img, _ = mpr.curved_mpr(vol, [start, end], width_mm=10.0, spacing_mm=sp, lateral=lateral, slab_mm=3.0)
    slab_expected, _ = mpr.reslice(vol, plane, slab_mm=3.0)
    np.testing.assert_allclose(slab_img, slab_expected, atol=1e-3)


def test_curved_mpr_follows_a_curve_without_twisting() -> None:
    vol = _volume(shape=(16, 40, 60), spacing=(1.0, 1.0, 1.0))
    c = mpr.volume_center_mm(vol)
    theta = np.linspace(0, math.pi / 2, 40)
    arc = np.stack([c[0] + 15 * np.cos(theta), c[1] + 15 * np.sin(theta), np.full_like(theta, c[2])], axis=1)
    image, cp = mpr.curved_mpr(vol, arc, width_mm=6.0, spacing_mm=0.5)
    # an arc in an axial plane: the across direction stays the body axis, perpendicular to it
    assert np.allclose(np.abs(cp.lateral @ np.array([0.0, 0.0, 1.0])), 1.0, atol=1e-6)
    assert np.allclose(np.einsum("ij,ij->i", cp.lateral, cp.tangent), 0.0, atol=1e-9)
    length = 15 * math.pi / 2
    assert image.shape[0] == pytest.approx(length / 0.5 + 1, abs=2)
    pts = cp.pixel_to_patient(np.arange(image.shape[0])[:, None], np.arange(image.shape[1])[None, :])
    np.testing.assert_allclose(image, _f(pts), atol=0.05)
    assert np.allclose(np.linalg.norm(np.diff(cp.centerline_mm, axis=0), axis=1), 0.5, atol=0.02)


def test_curved_mpr_errors() -> None:
    vol = _volume()
    with pytest.raises(ValueError, match="two"):
        mpr.curved_mpr(vol, [[0, 0, 0]], width_mm=10)
    with pytest.raises(ValueError, match="distinct"):
        mpr.curved_mpr(vol, [[0, 0, 0], [0, 0, 0]], width_mm=10)
    with pytest.raises(ValueError, match="parallel"):
        mpr.curved_mpr(vol, [[0, 0, 0], [0, 0, 10]], width_mm=10, lateral=(0, 0, 1))


# -- projections -----------------------------------------------------------------------------


def test_downsample_block_means_and_geometry() -> None:
    vol = _volume(shape=(12, 18, 25), direction=OBLIQUE_ACQ)
    small = mpr.downsample(vol, 8)
    assert small.shape == (6, 6, 7) and small.spacing_mm == (4.0, 3.0, 2.0)
    # the mean of a linear function over a block is its value at the block's centre
    idx = np.stack(np.indices(small.shape), axis=-1).reshape(-1, 3)
    expected = _f(small.index_to_patient(idx)).reshape(small.shape)
    np.testing.assert_allclose(small.voxels[:, :, :-1], expected[:, :, :-1], rtol=1e-5, atol=1e-2)
    assert mpr.downsample(vol, 64) is vol


def test_projection_places_a_bright_voxel() -> None:
    values = np.zeros((12, 18, 24), np.float32)
    values[3, 4, 18] = 1000.0  # inferior, anterior, patient's left
    vol = _volume(values, units="")
    p = vol.index_to_patient(np.array([3.0, 4.0, 18.0]))
    for az, el in ((0, 0), (90, 0), (180, 0), (30, 40)):
        view = mpr.view_from_angles(az, el)
        image, plane = mpr.project(vol, view, size=64)
        r, c = np.unravel_index(np.argmax(image), image.shape)
        expected = np.array([(p - plane.origin_mm) @ np.asarray(plane.column_direction),
                             (p - plane.origin_mm) @ np.asarray(plane.row_direction)]) / plane.pixel_spacing_mm[0]
        assert abs(r - expected[0]) <= 1.0 and abs(c - expected[1]) <= 1.0, (az, el)
        assert image.max() > 150.0
    front, plane = mpr.project(vol, mpr.view_from_angles(0, 0), size=64)
    centre = (plane.size[1] - 1) / 2
    assert np.unravel_index(np.argmax(front), front.shape)[1] > centre  # left of the patient: right
    back, _ = mpr.project(vol, mpr.view_from_angles(180, 0), size=64)
    assert np.unravel_index(np.argmax(back), back.shape)[1] < centre


def test_projection_modes() -> None:
    vol = _volume(np.full((12, 18, 24), 7.0, np.float32), units="")
    for mode in mpr.SLAB_MODES:
        image, _ = mpr.project(vol, mpr.view_from_angles(20, 10), size=32, mode=mode, fill=-5.0)
        hit = image != -5.0
        assert hit.any() and (~hit).any()  # the field of view is the diagonal: corners miss
        interior = image[10:22, 10:22]
        np.testing.assert_allclose(interior, 7.0, atol=1e-3)


def test_rotating_mip_frames() -> None:
    values = np.zeros((12, 18, 24), np.float32)
    values[6, 9, 20] = 1000.0
    vol = _volume(values, units="")
    frames, views = mpr.rotating_mip(vol, 8, "z", 48)
    assert frames.shape == (8, 48, 48) and len(views) == 8
    cols = [int(np.unravel_index(np.argmax(f), f.shape)[1]) for f in frames]
    # the voxel sits at the patient's left: it swings from the right (anterior view) to the left
    # (posterior view) and back
    assert cols[0] > 24 and cols[4] < 24
    assert np.allclose(views[2].direction, (1.0, 0.0, 0.0), atol=1e-12)
    with pytest.raises(ValueError, match="axis"):
        mpr.rotation_views(4, "w")
    for axis in ("x", "y"):  # a quarter turn looks down from above the head
        quarter = mpr.rotation_views(4, axis)[1]
        assert np.allclose(quarter.direction, (0.0, 0.0, -1.0), atol=1e-12), axis
        assert abs(float(np.dot(quarter.direction, quarter.up))) < 1e-12
