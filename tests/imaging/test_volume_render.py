"""CPU volume rendering: background, brightness, placement, compositing order, shading, presets."""

from __future__ import annotations

import numpy as np
import pytest

from voxa.imaging import mpr
from voxa.imaging.volume import Volume
from voxa.imaging.volume_render import PRESETS, TransferFunction, get_preset, render_volume

SHAPE = (24, 40, 40)
SPACING = (2.0, 1.2, 1.2)
ORIGIN = (-24.0, -24.0, -23.0)


def _axial(values: np.ndarray, *, direction: np.ndarray | None = None, spacing: tuple[float, ...] = SPACING,
           origin: tuple[float, ...] = ORIGIN, units: str = "HU") -> Volume:
    return Volume(voxels=values.astype(np.float32), spacing_mm=(spacing[0], spacing[1], spacing[2]),
                  origin_mm=(origin[0], origin[1], origin[2]),
                  direction=np.eye(3) if direction is None else direction, units=units,
                  modality="CT" if units == "HU" else "MR")


def _patient_grid(vol: Volume) -> np.ndarray:
    idx = np.stack(np.indices(vol.shape), axis=-1).reshape(-1, 3)
    return vol.index_to_patient(idx).reshape(*vol.shape, 3)


def _spheres(spheres: list[tuple[tuple[float, float, float], float, float]], *, direction: np.ndarray | None = None,
             shape: tuple[int, int, int] = SHAPE, spacing: tuple[float, ...] = SPACING,
             origin: tuple[float, ...] = ORIGIN) -> Volume:
    """Air with spheres (centre in patient mm, radius mm, HU)."""
    vol = _axial(np.zeros(shape), direction=direction, spacing=spacing, origin=origin)
    p = _patient_grid(vol)
    values = np.full(shape, -1000.0, np.float32)
    for centre, radius, hu in spheres:
        values[np.linalg.norm(p - np.asarray(centre), axis=-1) <= radius] = hu
    return _axial(values, direction=direction, spacing=spacing, origin=origin)


def _centre_mm() -> np.ndarray:
    return mpr.volume_center_mm(_axial(np.zeros(SHAPE)))


def test_empty_volume_is_background() -> None:
    vol = _axial(np.full(SHAPE, -1000.0))
    for name in PRESETS:
        if name == "mr-default":
            continue
        img = render_volume(vol, preset=name, size=48)
        assert img.shape == (48, 48, 3) and img.dtype == np.uint8
        assert img.max() == 0, name
    grey = render_volume(vol, size=32, background=(0.5, 0.5, 0.5))
    assert np.all(grey == 128)


def test_bright_sphere_is_brighter_in_the_centre() -> None:
    vol = _spheres([(tuple(_centre_mm()), 12.0, 1000.0)])
    img = render_volume(vol, preset="ct-bone", size=64).astype(float)
    lum = img.mean(axis=2)
    assert lum[28:36, 28:36].mean() > 150
    assert lum[:6, :6].max() == 0 and lum[-6:, -6:].max() == 0
    # shading: facing the light in the middle, darker towards the rim
    radius_px = 12.0 / (mpr.volume_diagonal_mm(vol) / 64)
    near_rim = 32 + int(0.8 * radius_px)
    middle, rim = lum[32, 32], lum[32, near_rim]
    assert rim > 20 and middle > rim + 30
    flat = render_volume(vol, preset="ct-bone", size=64, shading=False).astype(float).mean(axis=2)
    assert abs(flat[32, 32] - flat[32, near_rim]) < 0.5 * (middle - rim)


def test_anterior_view_puts_the_patients_left_on_the_right() -> None:
    c = _centre_mm()
    vol = _spheres([((c[0] + 12, c[1], c[2] + 8), 5.0, 1000.0)])  # patient's left, superior
    lum = render_volume(vol, preset="ct-bone", size=64).astype(float).mean(axis=2)
    rows, cols = np.nonzero(lum > 30)
    assert cols.mean() > 32 and rows.mean() < 32
    back = render_volume(vol, preset="ct-bone", size=64, azimuth_deg=180).astype(float).mean(axis=2)
    rows, cols = np.nonzero(back > 30)
    assert cols.mean() < 32 and rows.mean() < 32
    above = render_volume(vol, preset="ct-bone", size=64, elevation_deg=90).astype(float).mean(axis=2)
    rows, cols = np.nonzero(above > 30)  # from above the head, anterior up: left still on the right
    assert cols.mean() > 32 and abs(rows.mean() - 32) < 4


def test_front_to_back_compositing() -> None:
    c = _centre_mm()
    # contrast (red in ct-angio) in front, anteriorly; bone (white) behind it
    vol = _spheres([((c[0], c[1] - 9, c[2]), 7.0, 350.0), ((c[0], c[1] + 9, c[2]), 7.0, 2000.0)])
    front = render_volume(vol, preset="ct-angio", size=64, shading=False).astype(float)
    back = render_volume(vol, preset="ct-angio", size=64, shading=False, azimuth_deg=180).astype(float)
    r_f, b_f = front[30:34, 30:34, 0].mean(), front[30:34, 30:34, 2].mean()
    r_b, b_b = back[30:34, 30:34, 0].mean(), back[30:34, 30:34, 2].mean()
    assert r_f > 1.5 * b_f  # the red sphere hides the white one
    assert b_b > 0.8 * r_b  # from behind the white one hides the red one


def test_direction_cosines_do_not_change_the_picture() -> None:
    c = _centre_mm()
    spheres = [((c[0] + 10, c[1], c[2]), 6.0, 1000.0), ((c[0] - 6, c[1] + 5, c[2] - 8), 5.0, 700.0)]
    axial = _spheres(spheres, shape=(30, 30, 30), spacing=(1.6, 1.6, 1.6))
    # a sagittal acquisition of the same patient space: rows +y, columns -z, slices -x
    sag_dir = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [-1.0, 0.0, 0.0]])
    centre = mpr.volume_center_mm(axial)
    half = 14.5 * 1.6
    origin = centre + half * sag_dir[2] * -1 - half * sag_dir[0] - half * sag_dir[1]
    sagittal = _spheres(spheres, direction=sag_dir, shape=(30, 30, 30), spacing=(1.6, 1.6, 1.6),
                        origin=tuple(origin))
    assert np.allclose(mpr.volume_center_mm(sagittal), centre)
    a = render_volume(axial, preset="ct-bone", size=64, azimuth_deg=25, elevation_deg=15).astype(float)
    s = render_volume(sagittal, preset="ct-bone", size=64, azimuth_deg=25, elevation_deg=15).astype(float)
    assert a.mean() > 5
    assert np.abs(a - s).mean() < 0.1 * a.mean() + 1.0


def test_opacity_is_per_mm_whatever_the_sampling() -> None:
    vol = _axial(np.full(SHAPE, 100.0))  # 40 rows of 1.2 mm: 48 mm from front to back
    faint = TransferFunction("faint", ((0.0, 1, 1, 1, 0.0), (50.0, 1, 1, 1, 0.03)))
    expected = 255 * (1 - 0.97 ** 48)  # 3 % per mm over 48 mm
    full = render_volume(vol, preset=faint, size=48, shading=False)
    small = render_volume(vol, preset=faint, size=48, shading=False, max_dim=10)  # 4.8 mm steps
    assert full[24, 24, 0] == pytest.approx(expected, abs=4)
    assert small[24, 24, 0] == pytest.approx(expected, abs=4)


def test_presets_and_transfer_functions() -> None:
    assert set(PRESETS) == {"ct-bone", "ct-soft-tissue", "ct-lung", "ct-angio", "mr-default"}
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("ct-brain")
    with pytest.raises(ValueError, match="increase"):
        TransferFunction("bad", ((0.0, 0, 0, 0, 0), (0.0, 1, 1, 1, 1)))
    with pytest.raises(ValueError, match="0..1"):
        TransferFunction("bad", ((0.0, 0, 0, 0, 0), (1.0, 2, 1, 1, 1)))
    rng = np.random.default_rng(0)
    mr = _axial(np.clip(rng.normal(300, 80, SHAPE), 0, None), units="")
    img = render_volume(mr, preset="mr-default", size=32)
    assert img.max() > 0
    custom = TransferFunction("mine", ((0.0, 0, 1, 0, 0), (100.0, 0, 1, 0, 1)))
    green = render_volume(_spheres([(tuple(_centre_mm()), 10.0, 500.0)]), preset=custom, size=32, shading=False)
    assert green[16, 16, 1] > 200 and green[16, 16, 0] == 0
