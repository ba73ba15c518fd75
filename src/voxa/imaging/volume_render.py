"""CPU volume rendering: orthographic ray casting with front-to-back compositing.

Pure functions, no I/O. :func:`render_volume` takes a :class:`~voxa.imaging.volume.Volume`,
down-samples it to at most ``max_dim`` voxels per axis (block means, see
:func:`voxa.imaging.mpr.downsample`), and casts parallel rays from a camera placed by azimuth and
elevation around the patient (:func:`voxa.imaging.mpr.view_from_angles`).

Ray casting is factorised as shear-warp (Lacroute & Levoy, 1994): the rays sample every slice of
the array axis most parallel to them, each slice at a constant sub-voxel shift, so one bilinear
shift per slice replaces per-sample trilinear interpolation; the composited intermediate image is
then warped onto the screen. Each slice is classified through the transfer function (a lookup
table over the modality's values), shaded, shifted as opacity-weighted colour, and composited
front to back: ``C += (1 - A) * a * c``, ``A += (1 - A) * a``.

Transfer functions are piecewise linear in value: points ``(value, r, g, b, opacity)``, colour
in 0..1, opacity per millimetre of ray (corrected to the sampling step,
``1 - (1 - opacity) ** step_mm``), so an image does not change with the down-sampling. Presets
for CT use Hounsfield units; ``relative`` presets (MR) use fractions of the range between the
volume's 1st and 99th percentiles.

Shading (optional, on by default): a headlight, Lambertian on the normalised value gradient
(central differences on the down-sampled voxels, in patient space), faded out where the
gradient is weak so homogeneous regions keep their colour.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from voxa.imaging.mpr import (
    Plane,
    ShearWarp,
    View,
    downsample,
    screen_plane,
    slices_along,
    view_from_angles,
    volume_diagonal_mm,
)
from voxa.imaging.volume import F32, Volume

U8 = NDArray[np.uint8]

_LUT_SIZE = 4096
_AMBIENT, _DIFFUSE = 0.3, 0.7


@dataclass(frozen=True)
class TransferFunction:
    """Piecewise-linear colour and opacity: points ``(value, r, g, b, opacity_per_mm)`` in
    increasing value; below the first point and above the last the end points hold."""

    name: str
    points: tuple[tuple[float, float, float, float, float], ...]
    relative: bool = False  # values are fractions of the volume's 1st..99th percentile range
    gradient_mm: float = 40.0  # value change per mm at which shading is fully applied

    def __post_init__(self) -> None:
        if len(self.points) < 2:
            raise ValueError("a transfer function needs at least two points")
        values = [p[0] for p in self.points]
        if any(b <= a for a, b in zip(values, values[1:], strict=False)):
            raise ValueError("transfer-function values must increase")
        for p in self.points:
            if len(p) != 5 or not all(math.isfinite(x) for x in p) or not all(0 <= x <= 1 for x in p[1:]):
                raise ValueError("transfer-function points are (value, r, g, b, opacity) with r, g, b, "
                                 "opacity in 0..1")

    def value_range(self, volume: Volume | None = None) -> tuple[float, float]:
        lo, hi = self.points[0][0], self.points[-1][0]
        if not self.relative:
            return lo, hi
        if volume is None:
            raise ValueError("a relative transfer function needs the volume")
        p1, p99 = _percentiles(volume)
        return p1 + lo * (p99 - p1), p1 + hi * (p99 - p1)

    def lut(self, volume: Volume | None, step_mm: float) -> tuple[F32, float, float]:
        """(RGBA table (_LUT_SIZE, 4) with opacity per sample step, first value, value per bin)."""
        lo, hi = self.value_range(volume)
        pts = np.asarray(self.points, dtype=np.float64)
        xs = np.linspace(0.0, 1.0, _LUT_SIZE)
        rel = (pts[:, 0] - pts[0, 0]) / (pts[-1, 0] - pts[0, 0])
        table = np.stack([np.interp(xs, rel, pts[:, c]) for c in range(1, 5)], axis=1)
        table[:, 3] = 1.0 - np.power(1.0 - np.clip(table[:, 3], 0.0, 0.999999), step_mm)
        width = max(hi - lo, 1e-6)
        return table.astype(np.float32), lo, width / (_LUT_SIZE - 1)


def _percentiles(volume: Volume) -> tuple[float, float]:
    vox = np.asarray(volume.voxels)
    stride = max(1, round((vox.size / 2_000_000) ** (1 / 3)))
    sample = vox[::stride, ::stride, ::stride]
    p1, p99 = (float(x) for x in np.percentile(sample, [1, 99]))
    return p1, max(p99, p1 + 1e-3)


PRESETS: dict[str, TransferFunction] = {
    tf.name: tf
    for tf in (
        TransferFunction("ct-bone", (
            (-1000.0, 0.0, 0.0, 0.0, 0.0),
            (150.0, 0.55, 0.25, 0.15, 0.0),
            (250.0, 0.88, 0.60, 0.40, 0.12),
            (500.0, 1.00, 0.92, 0.80, 0.45),
            (1200.0, 1.00, 1.00, 0.96, 0.85),
            (3000.0, 1.00, 1.00, 1.00, 0.95),
        ), gradient_mm=60.0),
        TransferFunction("ct-soft-tissue", (
            (-1000.0, 0.0, 0.0, 0.0, 0.0),
            (-500.0, 0.30, 0.10, 0.05, 0.0),
            (-150.0, 0.80, 0.50, 0.35, 0.015),
            (-40.0, 0.90, 0.65, 0.45, 0.03),
            (40.0, 0.75, 0.30, 0.25, 0.06),
            (160.0, 0.95, 0.55, 0.45, 0.12),
            (400.0, 1.00, 0.95, 0.85, 0.5),
            (3000.0, 1.00, 1.00, 1.00, 0.9),
        ), gradient_mm=30.0),
        TransferFunction("ct-lung", (
            (-1000.0, 0.0, 0.0, 0.0, 0.0),
            (-950.0, 0.30, 0.45, 0.65, 0.0),
            (-850.0, 0.50, 0.65, 0.85, 0.02),
            (-600.0, 0.85, 0.55, 0.50, 0.06),
            (-450.0, 0.90, 0.45, 0.40, 0.0),
            (3000.0, 0.90, 0.45, 0.40, 0.0),
        ), gradient_mm=20.0),
        TransferFunction("ct-angio", (
            (-1000.0, 0.0, 0.0, 0.0, 0.0),
            (120.0, 0.60, 0.05, 0.05, 0.0),
            (200.0, 0.85, 0.15, 0.10, 0.25),
            (450.0, 1.00, 0.55, 0.45, 0.6),
            (700.0, 1.00, 0.95, 0.90, 0.8),
            (3000.0, 1.00, 1.00, 1.00, 0.95),
        ), gradient_mm=60.0),
        TransferFunction("mr-default", (
            (0.0, 0.0, 0.0, 0.0, 0.0),
            (0.15, 0.30, 0.20, 0.15, 0.0),
            (0.35, 0.75, 0.55, 0.45, 0.03),
            (0.70, 0.95, 0.85, 0.75, 0.12),
            (1.00, 1.00, 1.00, 1.00, 0.3),
        ), relative=True, gradient_mm=0.05),
    )
}


def get_preset(name: str | TransferFunction) -> TransferFunction:
    if isinstance(name, TransferFunction):
        return name
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}") from None


def render_volume(
    volume: Volume,
    *,
    preset: str | TransferFunction = "ct-bone",
    azimuth_deg: float = 0.0,
    elevation_deg: float = 0.0,
    view: View | None = None,
    size: int | tuple[int, int] = 512,
    shading: bool = True,
    max_dim: int = 256,
    background: Sequence[float] = (0.0, 0.0, 0.0),
    fov_mm: float | None = None,
) -> U8:
    """An RGB uint8 (rows, columns, 3) volume rendering.

    ``view`` (default from ``azimuth_deg``/``elevation_deg``: 0/0 is the anterior view, superior
    up, the patient's right on the left) sets the rays; the field of view is the volume's
    diagonal unless ``fov_mm`` is given, so the object stays whole while it turns.
    ``background`` is an RGB colour in 0..1.
    """
    tf = get_preset(preset)
    if len(background) != 3:
        raise ValueError("background must be three numbers")
    cam = view_from_angles(azimuth_deg, elevation_deg) if view is None else view
    fov = volume_diagonal_mm(volume) if fov_mm is None else fov_mm
    small = downsample(volume, max_dim)
    plane = screen_plane(small, cam, size, fov_mm=fov)
    sw = ShearWarp.build(small, cam.direction)
    data = slices_along(small, sw.axis)
    lut, lo, per_bin = tf.lut(small, sw.step_mm)
    opaque = lut[:, 3] > 0
    lut_rgba = lut.copy()
    lut_rgba[:, :3] *= lut[:, 3:4]  # opacity-weighted colour
    if not opaque.any():
        return _finish(np.zeros((*sw.shape, 4), np.float32), sw, plane, background)
    # the values that can be seen at all: skip slices and regions below/above them
    first_bin, last_bin = int(np.argmax(opaque)), int(len(opaque) - 1 - np.argmax(opaque[::-1]))
    v_min = lo + first_bin * per_bin if first_bin > 0 else -np.inf
    v_max = lo + (last_bin + 1) * per_bin if last_bin < _LUT_SIZE - 1 else np.inf

    # shading: the world gradient from index-space central differences, g_w = M^T g_idx
    inv = sw.inverse  # patient -> index
    axes = (sw.axis, sw.u, sw.v)
    m_rows = inv[list(axes), :]  # rows: index axes (slice, u, v) in patient space
    light = -np.asarray(cam.direction, dtype=np.float64)
    light_idx = (m_rows @ light).astype(np.float32)  # g_w . L = g_idx . (M L)
    metric = (m_rows @ m_rows.T).astype(np.float32)  # |g_w|^2 = g_idx^T (M M^T) g_idx
    g_ref = np.float32(tf.gradient_mm if not tf.relative else tf.gradient_mm * (tf.value_range(small)[1]
                                                                                   - tf.value_range(small)[0]))

    acc = np.zeros((*sw.shape, 4), dtype=np.float32)
    n_c = data.shape[0]
    nu, nv = data.shape[1], data.shape[2]
    for s in sw.order:
        sl = data[s]
        visible = (sl >= v_min) & (sl <= v_max)
        if not visible.any():
            continue
        rows_any = np.flatnonzero(visible.any(axis=1))
        cols_any = np.flatnonzero(visible.any(axis=0))
        r0, r1 = max(0, int(rows_any[0]) - 1), min(nu, int(rows_any[-1]) + 2)
        c0, c1 = max(0, int(cols_any[0]) - 1), min(nv, int(cols_any[-1]) + 2)
        sub = sl[r0:r1, c0:c1]
        bins = ((sub - np.float32(lo)) * np.float32(1.0 / per_bin)).clip(0, _LUT_SIZE - 1).astype(np.intp)
        rgba = lut_rgba[bins]  # (h, w, 4)
        if shading:
            factor = _shade(data, s, n_c, r0, r1, c0, c1, light_idx, metric, g_ref)
            rgba[..., :3] *= factor[..., None]
        padded = np.zeros((r1 - r0 + 2, c1 - c0 + 2, 4), dtype=np.float32)
        padded[1:-1, 1:-1] = rgba
        iu, iv, hu, hv = sw.placement(s)
        shifted = sw.shift(padded, hu, hv)
        region = acc[iu + r0:iu + r1 + 1, iv + c0:iv + c1 + 1]
        transparency = 1.0 - region[..., 3:4]
        region += transparency * shifted
    return _finish(acc, sw, plane, background)


def _shade(data: F32, s: int, n_c: int, r0: int, r1: int, c0: int, c1: int,
           light_idx: F32, metric: F32, g_ref: np.float32) -> F32:
    """Headlight Lambertian factor for a window of slice ``s`` (1 where the gradient is weak)."""
    lo_r, hi_r = max(0, r0 - 1), min(data.shape[1], r1 + 1)
    lo_c, hi_c = max(0, c0 - 1), min(data.shape[2], c1 + 1)
    prev_s, next_s = max(0, s - 1), min(n_c - 1, s + 1)
    win = data[s, lo_r:hi_r, lo_c:hi_c]
    gu_full, gv_full = (np.gradient(win, axis=a) if win.shape[a] > 1 else np.zeros_like(win) for a in (0, 1))
    crop = (slice(r0 - lo_r, r0 - lo_r + (r1 - r0)), slice(c0 - lo_c, c0 - lo_c + (c1 - c0)))
    gu, gv = gu_full[crop], gv_full[crop]
    span = max(1, next_s - prev_s)
    gs = (data[next_s, r0:r1, c0:c1] - data[prev_s, r0:r1, c0:c1]) / np.float32(span)
    dot = gs * light_idx[0] + gu * light_idx[1] + gv * light_idx[2]
    norm2 = (gs * gs * metric[0, 0] + gu * gu * metric[1, 1] + gv * gv * metric[2, 2]
             + 2 * (gs * gu * metric[0, 1] + gs * gv * metric[0, 2] + gu * gv * metric[1, 2]))
    norm = np.sqrt(np.maximum(norm2, np.float32(0)))
    cos = np.abs(dot) / np.maximum(norm, np.float32(1e-6))
    weight = np.minimum(norm / g_ref, np.float32(1.0))
    return (np.float32(1.0) - weight + weight * (np.float32(_AMBIENT) + np.float32(_DIFFUSE) * cos)).astype(
        np.float32)


def _finish(acc: F32, sw: ShearWarp, plane: Plane, background: Sequence[float]) -> U8:
    coords = sw.warp_coordinates(plane)
    channels = [
        ndimage.map_coordinates(acc[..., c], coords, order=1, mode="constant", cval=0.0, output=np.float32,
                                prefilter=False)
        for c in range(4)
    ]
    alpha = np.clip(channels[3], 0.0, 1.0)
    rgb = np.stack([channels[c] + (1.0 - alpha) * np.float32(background[c]) for c in range(3)], axis=-1)
    return (np.clip(rgb, 0.0, 1.0) * np.float32(255.0) + np.float32(0.5)).astype(np.uint8)


__all__ = ["PRESETS", "TransferFunction", "get_preset", "render_volume"]
