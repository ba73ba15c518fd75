"""Multi-planar reformatting: planes through a :class:`~voxa.imaging.volume.Volume` in patient space.

Pure functions, no I/O. Conventions (see ``docs/rendering.md``):

* A :class:`Plane` is described as DICOM describes an image: ``origin_mm`` is the patient (LPS)
  position of the centre of pixel (row 0, column 0) — ImagePositionPatient; ``row_direction`` is
  the unit vector along which the column index grows and ``column_direction`` the one along
  which the row index grows — ImageOrientationPatient; ``pixel_spacing_mm`` is (between rows,
  between columns) — PixelSpacing; ``size`` is (rows, columns).
* Standard planes are planes of the *patient*, shown as radiologists read them: axial with the
  patient's right on the image's left and anterior at the top; coronal with the right on the
  left and superior at the top; sagittal with anterior on the left and superior at the top.
* :func:`reslice` copies voxels without interpolation when the plane's pixels fall on voxel
  centres (any standard plane of an axis-aligned acquisition, in any of the 48 axis
  permutations and flips); otherwise it interpolates (``scipy.ndimage.map_coordinates``).
* Samples outside the volume are ``fill`` (-1024 for CT, else 0); a slab ignores them.
* :func:`project` is an orthographic projection (MIP / MinIP / average) along any direction,
  computed as a shear-warp factorisation of ray casting: the (down-sampled) volume's slices
  along the axis most parallel to the rays are shifted — a constant sub-voxel shift per slice
  — and accumulated into an intermediate image, which is then warped onto the screen.
  :mod:`voxa.imaging.volume_render` composites colours with the same machinery.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

from voxa.imaging.volume import F32, F64, Volume

Orientation = Literal["axial", "sagittal", "coronal"]
SlabMode = Literal["mip", "minip", "average"]
Axis = Literal["x", "y", "z"]

ORIENTATIONS: tuple[Orientation, ...] = ("axial", "sagittal", "coronal")
SLAB_MODES: tuple[SlabMode, ...] = ("mip", "minip", "average")

# (row direction, column direction, patient axis that the position is measured along)
_STANDARD: dict[str, tuple[tuple[float, float, float], tuple[float, float, float], int]] = {
    "axial": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), 2),
    "coronal": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0), 1),
    "sagittal": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0), 0),
}
_ALIGN_TOL = 1e-4  # index units: how close to a voxel centre counts as "on the grid"
_MAX_PIXELS = 4096 * 4096
_MAX_CURVED_ROWS = 8192
_MAX_CURVED_PIXELS = 2048 * 2048
_MAX_SLAB_SAMPLES = 256  # an interpolated slab thicker than this many voxels is sampled more coarsely

Vec3 = tuple[float, float, float]


def _vec3(value: ArrayLike, what: str) -> F64:
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if arr.shape != (3,) or not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} must be three finite numbers")
    return arr


def _unit(value: ArrayLike, what: str) -> F64:
    v = _vec3(value, what)
    n = float(np.linalg.norm(v))
    if n < 1e-9:
        raise ValueError(f"{what} must not be the zero vector")
    return v / n


def _tuple3(v: ArrayLike) -> Vec3:
    a = np.asarray(v, dtype=np.float64).reshape(3)
    return float(a[0]), float(a[1]), float(a[2])


def default_fill(volume: Volume) -> float:
    """The value of samples outside the volume: air (-1024) for CT, else 0."""
    return -1024.0 if volume.units == "HU" or volume.modality == "CT" else 0.0


# --------------------------------------------------------------------------------------------
# Planes


@dataclass(frozen=True, eq=False)
class Plane:
    """A rectangular grid of pixels in patient space (see the module's conventions)."""

    origin_mm: Vec3  # patient position of the centre of pixel (row 0, column 0)
    row_direction: Vec3  # unit; the column index grows along it (IOP[0:3])
    column_direction: Vec3  # unit; the row index grows along it (IOP[3:6])
    pixel_spacing_mm: tuple[float, float]  # (between rows, between columns)
    size: tuple[int, int]  # (rows, columns)

    def __post_init__(self) -> None:
        r = np.asarray(self.row_direction, dtype=np.float64)
        c = np.asarray(self.column_direction, dtype=np.float64)
        if r.shape != (3,) or c.shape != (3,) or not (np.all(np.isfinite(r)) and np.all(np.isfinite(c))):
            raise ValueError("plane directions must be three finite numbers each")
        if abs(float(np.linalg.norm(r)) - 1) > 1e-6 or abs(float(np.linalg.norm(c)) - 1) > 1e-6:
            raise ValueError("plane directions must be unit vectors")
        if abs(float(r @ c)) > 1e-6:
            raise ValueError("plane row and column directions must be orthogonal")
        if not all(math.isfinite(s) and s > 0 for s in self.pixel_spacing_mm):
            raise ValueError("plane pixel spacing must be positive")
        rows, cols = self.size
        if rows < 1 or cols < 1 or rows * cols > _MAX_PIXELS:
            raise ValueError(f"plane size {rows}x{cols} must be at least 1x1 and at most {_MAX_PIXELS} pixels")
        if not all(math.isfinite(x) for x in self.origin_mm):
            raise ValueError("plane origin must be finite")

    @property
    def normal(self) -> F64:
        """row direction × column direction (unit)."""
        return np.cross(np.asarray(self.row_direction), np.asarray(self.column_direction))

    @property
    def center_mm(self) -> F64:
        rows, cols = self.size
        return self.pixel_to_patient((rows - 1) / 2.0, (cols - 1) / 2.0)

    def pixel_to_patient(self, row: ArrayLike, column: ArrayLike) -> F64:
        """Patient positions of (fractional) pixel indices; the result has shape (..., 3)."""
        r = np.asarray(row, dtype=np.float64)[..., None]
        c = np.asarray(column, dtype=np.float64)[..., None]
        sr, sc = self.pixel_spacing_mm
        return (np.asarray(self.origin_mm) + r * sr * np.asarray(self.column_direction)
                + c * sc * np.asarray(self.row_direction))

    def resized(self, rows: int, columns: int) -> Plane:
        """The same field of view (pixel edges kept) sampled with ``rows`` × ``columns`` pixels."""
        r0, c0 = self.size
        sr, sc = self.pixel_spacing_mm
        nsr, nsc = sr * r0 / rows, sc * c0 / columns
        edge = (np.asarray(self.origin_mm) - 0.5 * sr * np.asarray(self.column_direction)
                - 0.5 * sc * np.asarray(self.row_direction))
        origin = edge + 0.5 * nsr * np.asarray(self.column_direction) + 0.5 * nsc * np.asarray(self.row_direction)
        return Plane(_tuple3(origin), self.row_direction, self.column_direction, (nsr, nsc), (rows, columns))

    def to_json(self) -> dict[str, Any]:
        return {
            "origin_mm": [round(x, 4) for x in self.origin_mm],
            "row_direction": [round(x, 6) for x in self.row_direction],
            "column_direction": [round(x, 6) for x in self.column_direction],
            "pixel_spacing_mm": [round(x, 6) for x in self.pixel_spacing_mm],
            "rows": self.size[0],
            "columns": self.size[1],
        }


def volume_corners_mm(volume: Volume) -> F64:
    """Patient positions of the centres of the eight corner voxels, (8, 3)."""
    nz, ny, nx = volume.shape
    idx = np.array([(k, j, i) for k in (0, nz - 1) for j in (0, ny - 1) for i in (0, nx - 1)], dtype=np.float64)
    return volume.index_to_patient(idx)


def volume_center_mm(volume: Volume) -> F64:
    nz, ny, nx = volume.shape
    return volume.index_to_patient(np.array([(nz - 1) / 2, (ny - 1) / 2, (nx - 1) / 2]))


def volume_diagonal_mm(volume: Volume) -> float:
    """Length of the volume's diagonal, voxel edges included."""
    extent = np.asarray(volume.shape, dtype=np.float64) * np.asarray(volume.spacing_mm)
    return float(np.linalg.norm(extent))


def closest_axis(volume: Volume, direction: F64) -> int:
    """The array axis (0 = z/k, 1 = y/j, 2 = x/i) most parallel to a patient direction."""
    d = np.asarray(volume.direction, dtype=np.float64)  # rows: i, j, k directions
    dots = np.abs(np.array([d[2] @ direction, d[1] @ direction, d[0] @ direction]))
    return int(np.argmax(dots))


def standard_plane(
    volume: Volume,
    orientation: str,
    *,
    position_mm: float | None = None,
    index: int | None = None,
) -> Plane:
    """An axial, sagittal or coronal plane of the patient covering the whole volume.

    ``position_mm`` is the patient coordinate of the plane on the axis it cuts: z (superior +)
    for axial, y (posterior +) for coronal, x (patient left +) for sagittal. ``index`` instead
    names a slice along the array axis most parallel to that patient axis (for an oblique
    acquisition: the slice through that voxel index at the centre of the other two axes).
    Neither: the middle slice. Pixel spacing is that of the closest array axes, so a plane of
    an axis-aligned acquisition falls on voxel centres (and :func:`reslice` copies voxels).
    """
    if orientation not in _STANDARD:
        raise ValueError(f"orientation {orientation!r} must be one of {', '.join(ORIENTATIONS)}")
    if position_mm is not None and index is not None:
        raise ValueError("give a position in mm or a slice index, not both")
    row, col, axis = _STANDARD[orientation]
    e_r, e_c = np.asarray(row), np.asarray(col)
    e_n = np.zeros(3)
    e_n[axis] = 1.0
    corners = volume_corners_mm(volume)
    lo, hi = float(corners[:, axis].min()), float(corners[:, axis].max())
    a_n = closest_axis(volume, e_n)
    half = 0.5 * volume.spacing_mm[a_n] * abs(float(_axis_vector(volume, a_n) @ e_n))
    if position_mm is not None:
        if not math.isfinite(position_mm):
            raise ValueError("position must be a finite number of mm")
        if not lo - half - 1e-6 <= position_mm <= hi + half + 1e-6:
            raise ValueError(f"{orientation} position {position_mm:g} mm is outside the volume "
                             f"({lo:.2f} to {hi:.2f} mm)")
        position = float(position_mm)
    else:
        n = volume.shape[a_n]
        k = n // 2 if index is None else index  # by default the middle slice, not between two
        if not 0 <= k < n:
            raise ValueError(f"{orientation} slice index {k} is outside 0..{n - 1}")
        centre = np.array([(s - 1) / 2.0 for s in volume.shape])
        centre[a_n] = k
        position = float(volume.index_to_patient(centre)[axis])
    pr, pc = corners @ e_r, corners @ e_c
    sp_col = float(volume.spacing_mm[closest_axis(volume, e_r)])  # between columns
    sp_row = float(volume.spacing_mm[closest_axis(volume, e_c)])  # between rows
    cols = int(round((float(pr.max()) - float(pr.min())) / sp_col)) + 1
    rows = int(round((float(pc.max()) - float(pc.min())) / sp_row)) + 1
    origin = e_r * float(pr.min()) + e_c * float(pc.min()) + e_n * position
    return Plane(_tuple3(origin), _tuple3(e_r), _tuple3(e_c), (sp_row, sp_col), (rows, cols))


def _axis_vector(volume: Volume, axis: int) -> F64:
    d = np.asarray(volume.direction, dtype=np.float64)
    return d[2 - axis]


def default_up(normal: ArrayLike) -> F64:
    """Screen-up for a plane or a view: superior, or anterior when looking along the body axis."""
    n = _unit(normal, "normal")
    return np.array([0.0, -1.0, 0.0]) if abs(float(n[2])) > 0.9 else np.array([0.0, 0.0, 1.0])


def oblique_plane(
    volume: Volume,
    center_mm: ArrayLike,
    normal: ArrayLike,
    up: ArrayLike | None = None,
    *,
    size: int | tuple[int, int] | None = None,
    spacing_mm: float | None = None,
    fov_mm: float | None = None,
) -> Plane:
    """A square plane centred on ``center_mm`` with the given normal.

    ``up`` (projected onto the plane) points to the top of the image; by default superior, or
    anterior for near-axial normals. The column direction is ``-up`` and the row direction
    ``column × normal``, so ``row × column = normal``. The field of view defaults to the volume's
    diagonal (the plane covers the volume whatever its angle when centred in it); the pixel
    spacing to ``fov / size``, or the volume's finest spacing when no size is given.
    """
    c = _vec3(center_mm, "center")
    n = _unit(normal, "normal")
    u = default_up(n) if up is None else _unit(up, "up")
    u_proj = u - float(u @ n) * n
    if float(np.linalg.norm(u_proj)) < 1e-6:
        raise ValueError("up must not be parallel to the normal")
    col = -u_proj / float(np.linalg.norm(u_proj))
    row = np.cross(col, n)
    row /= float(np.linalg.norm(row))
    fov = volume_diagonal_mm(volume) if fov_mm is None else float(fov_mm)
    if not (math.isfinite(fov) and fov > 0):
        raise ValueError("the field of view must be a positive number of mm")
    if size is None:
        sp = float(min(volume.spacing_mm)) if spacing_mm is None else float(spacing_mm)
        if not (math.isfinite(sp) and sp > 0):
            raise ValueError("the pixel spacing must be a positive number of mm")
        rows = cols = max(1, int(math.ceil(fov / sp)))
    else:
        rows, cols = (size, size) if isinstance(size, int) else size
        if rows < 1 or cols < 1:
            raise ValueError("the plane size must be positive")
        sp = fov / max(rows, cols) if spacing_mm is None else float(spacing_mm)
        if not (math.isfinite(sp) and sp > 0):
            raise ValueError("the pixel spacing must be a positive number of mm")
    origin = c - (cols - 1) / 2.0 * sp * row - (rows - 1) / 2.0 * sp * col
    return Plane(_tuple3(origin), _tuple3(row), _tuple3(col), (sp, sp), (int(rows), int(cols)))


# --------------------------------------------------------------------------------------------
# Reslicing


def _check_mode(mode: str, order: int, slab_mm: float) -> None:
    if mode not in SLAB_MODES:
        raise ValueError(f"mode {mode!r} must be one of {', '.join(SLAB_MODES)}")
    if order not in (0, 1):
        raise ValueError("order must be 0 (nearest) or 1 (linear)")
    if not (math.isfinite(slab_mm) and slab_mm >= 0):
        raise ValueError("the slab thickness must be a non-negative number of mm")


def _index_frame(volume: Volume, plane: Plane) -> tuple[F64, F64, F64, F64]:
    """(index of pixel (0,0), index step per row, per column, per mm along the normal)."""
    a = volume.affine
    inv = np.linalg.inv(a[:3, :3])
    sr, sc = plane.pixel_spacing_mm
    idx0 = inv @ (np.asarray(plane.origin_mm) - a[:3, 3])
    d_row = inv @ (np.asarray(plane.column_direction) * sr)
    d_col = inv @ (np.asarray(plane.row_direction) * sc)
    d_n = inv @ plane.normal
    return idx0, d_row, d_col, d_n


def _single_axis_step(step: F64) -> tuple[int, int] | None:
    """(axis, integer step) when ``step`` moves along one array axis by a whole number of voxels."""
    big = np.flatnonzero(np.abs(step) > _ALIGN_TOL)
    if big.size != 1:
        return None
    axis = int(big[0])
    s = float(step[axis])
    if abs(s - round(s)) > _ALIGN_TOL or round(s) == 0:
        return None
    return axis, int(round(s))


def _valid_range(start: int, step: int, count: int, n: int) -> tuple[int, int]:
    """Output positions [lo, hi) whose index start + step*p lies in [0, n)."""
    p = np.arange(count)
    idx = start + step * p
    ok = np.flatnonzero((idx >= 0) & (idx < n))
    if ok.size == 0:
        return 0, 0
    return int(ok[0]), int(ok[-1]) + 1


def _axis_slice(start: int, step: int, lo: int, hi: int) -> slice:
    first = start + step * lo
    last = start + step * (hi - 1)
    stop: int | None = last + (1 if step > 0 else -1)
    if stop is not None and stop < 0:
        stop = None
    return slice(first, stop, step)


def _reduce(block: Any, axis: int, mode: str) -> F32:
    if block.shape[axis] == 1:
        return np.asarray(np.take(block, 0, axis=axis), dtype=np.float32)
    if mode == "mip":
        return np.asarray(np.max(block, axis=axis), dtype=np.float32)
    if mode == "minip":
        return np.asarray(np.min(block, axis=axis), dtype=np.float32)
    return np.asarray(np.mean(block, axis=axis, dtype=np.float32), dtype=np.float32)


def _reslice_aligned(volume: Volume, plane: Plane, idx0: F64, ra: tuple[int, int], cb: tuple[int, int],
                     d_n: F64, slab_mm: float, mode: str, order: int, fill: float) -> F32 | None:
    """Plain indexing for a plane whose pixels fall on voxel centres; None when they do not."""
    axis_a, step_a = ra
    axis_b, step_b = cb
    if axis_a == axis_b:
        return None
    axis_n = 3 - axis_a - axis_b
    if abs(float(idx0[axis_a]) - round(float(idx0[axis_a]))) > _ALIGN_TOL:
        return None
    if abs(float(idx0[axis_b]) - round(float(idx0[axis_b]))) > _ALIGN_TOL:
        return None
    others = [i for i in range(3) if i != axis_n]
    if np.any(np.abs(d_n[others]) > _ALIGN_TOL * max(1.0, float(np.abs(d_n).max()))):
        return None  # the volume's axes are not orthogonal in patient space
    rows, cols = plane.size
    out = np.full((rows, cols), fill, dtype=np.float32)
    shape = volume.shape
    start_a, start_b = int(round(float(idx0[axis_a]))), int(round(float(idx0[axis_b])))
    r_lo, r_hi = _valid_range(start_a, step_a, rows, shape[axis_a])
    c_lo, c_hi = _valid_range(start_b, step_b, cols, shape[axis_b])
    f = float(idx0[axis_n])
    n = shape[axis_n]
    if r_hi <= r_lo or c_hi <= c_lo or not -0.5 - 1e-6 <= f <= n - 0.5 + 1e-6:
        return out
    ks: list[int] = []
    weights: list[float] | None = None
    if slab_mm > 0:
        half = 0.5 * slab_mm * abs(float(d_n[axis_n]))
        k0 = max(0, math.ceil(f - half - 1e-6))
        k1 = min(n - 1, math.floor(f + half + 1e-6))
        ks = list(range(k0, k1 + 1))
    if not ks:
        kr = int(round(f))
        if abs(f - kr) <= _ALIGN_TOL or order == 0:
            ks = [min(max(kr, 0), n - 1)]
        else:
            k0 = math.floor(f)
            w = f - k0
            if k0 < 0:
                ks = [0]
            elif k0 + 1 > n - 1:
                ks = [n - 1]
            else:
                ks, weights = [k0, k0 + 1], [1.0 - w, w]
    sl: list[slice] = [slice(None)] * 3
    sl[axis_a] = _axis_slice(start_a, step_a, r_lo, r_hi)
    sl[axis_b] = _axis_slice(start_b, step_b, c_lo, c_hi)
    sl[axis_n] = slice(ks[0], ks[-1] + 1)
    block = volume.voxels[tuple(sl)]
    if weights is not None:
        first = np.take(block, 0, axis=axis_n)
        second = np.take(block, 1, axis=axis_n)
        image = (first * np.float32(weights[0]) + second * np.float32(weights[1])).astype(np.float32)
    else:
        image = _reduce(block, axis_n, mode)
    if axis_a > axis_b:  # the remaining axes are in array order: put the row axis first
        image = image.T
    out[r_lo:r_hi, c_lo:c_hi] = image
    return out


def _sample(volume: Volume, coords: F64, order: int) -> F32:
    """Values at fractional indices ``coords`` (3, ...); NaN outside the volume's voxels."""
    inside = np.ones(coords.shape[1:], dtype=bool)
    for axis, n in enumerate(volume.shape):
        c = coords[axis]
        inside &= (c >= -0.5) & (c <= n - 0.5)
    vox = np.asarray(volume.voxels)
    if inside.all():
        return np.asarray(ndimage.map_coordinates(vox, coords, order=order, mode="nearest", output=np.float32,
                                                  prefilter=False), dtype=np.float32)
    out = np.full(coords.shape[1:], np.nan, dtype=np.float32)
    if not inside.any():
        return out
    # interpolate only over the rectangle where the plane crosses the volume
    if coords.ndim == 3:
        rows, cols = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
        box = (slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1))
        vals = ndimage.map_coordinates(vox, coords[(slice(None), *box)], order=order, mode="nearest",
                                       output=np.float32, prefilter=False)
        out[box] = np.where(inside[box], vals, np.float32(np.nan))
    else:
        out[inside] = ndimage.map_coordinates(vox, coords[:, inside], order=order, mode="nearest",
                                              output=np.float32, prefilter=False)
    return out


def _slab_step_mm(d_n: F64) -> float:
    """The step along a normal (``d_n``: index change per mm) that advances at most one voxel
    along every array axis: no voxel is skipped by the samples of a slab."""
    return 1.0 / max(float(np.abs(d_n).max()), 1e-9)


def _slab_offsets(slab_mm: float, step_mm: float) -> F64:
    if slab_mm <= 0:
        return np.zeros(1)
    step_mm = max(step_mm, slab_mm / (_MAX_SLAB_SAMPLES - 1))
    n = int(math.floor(slab_mm / step_mm + 1e-6)) + 1
    return np.asarray((np.arange(n) - (n - 1) / 2.0) * step_mm, dtype=np.float64)


def _accumulate(sample: Callable[[float], F32], offsets: F64, mode: str, fill: float) -> F32:
    acc: F32 | None = None
    count: Any = None
    for off in offsets:
        vals = sample(float(off))
        if acc is None:
            acc = vals.copy()
            if mode == "average":
                count = (~np.isnan(vals)).astype(np.float32)
                acc = np.nan_to_num(acc, nan=0.0)
            continue
        if mode == "mip":
            np.fmax(acc, vals, out=acc)
        elif mode == "minip":
            np.fmin(acc, vals, out=acc)
        else:
            ok = ~np.isnan(vals)
            acc += np.where(ok, vals, np.float32(0))
            count += ok
    assert acc is not None
    if mode == "average" and count is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            acc = np.where(count > 0, acc / np.maximum(count, 1), np.float32(np.nan)).astype(np.float32)
    return np.nan_to_num(acc, nan=fill).astype(np.float32, copy=False)


def reslice(
    volume: Volume,
    plane: Plane,
    *,
    slab_mm: float = 0.0,
    mode: str = "mip",
    order: int = 1,
    fill: float | None = None,
) -> tuple[F32, Plane]:
    """The volume sampled on ``plane``: a float32 (rows, columns) image in the volume's units.

    ``slab_mm`` > 0 reduces a slab of that thickness centred on the plane with ``mode`` ("mip",
    "minip" or "average"): on the voxel grid, the slices whose centres lie within the slab;
    otherwise samples along the normal so that no voxel is skipped (one sample per voxel along
    the array axis the normal crosses fastest; at most 256 samples). ``order`` 0 is nearest-neighbour,
    1 linear. A plane on the voxel grid is copied (no interpolation); one between two slices of
    the grid blends those two slices. Returns the image and the plane it lies on.
    """
    _check_mode(mode, order, slab_mm)
    fill_value = default_fill(volume) if fill is None else float(fill)
    idx0, d_row, d_col, d_n = _index_frame(volume, plane)
    ra, cb = _single_axis_step(d_row), _single_axis_step(d_col)
    if ra is not None and cb is not None:
        image = _reslice_aligned(volume, plane, idx0, ra, cb, d_n, slab_mm, mode, order, fill_value)
        if image is not None:
            return image, plane
    rows, cols = plane.size
    r = np.arange(rows, dtype=np.float64)[:, None]
    c = np.arange(cols, dtype=np.float64)[None, :]
    base = idx0[:, None, None] + d_row[:, None, None] * r + d_col[:, None, None] * c
    offsets = _slab_offsets(slab_mm, _slab_step_mm(d_n))

    def sample(off: float) -> F32:
        return _sample(volume, base + d_n[:, None, None] * off if off else base, order)

    return _accumulate(sample, offsets, mode, fill_value), plane


# --------------------------------------------------------------------------------------------
# Curved MPR


@dataclass(frozen=True, eq=False)
class CurvedPlane:
    """Where the pixels of a straightened curved MPR lie: row ``m`` is centred on
    ``centerline_mm[m]``; column ``w`` is ``(w - (columns - 1) / 2) * spacing_mm`` along
    ``lateral[m]``."""

    centerline_mm: F64  # (rows, 3) the centreline resampled every spacing_mm
    lateral: F64  # (rows, 3) unit vectors across the image (column index grows)
    tangent: F64  # (rows, 3) unit vectors along the centreline (row index grows)
    spacing_mm: float
    columns: int

    @property
    def size(self) -> tuple[int, int]:
        return int(self.centerline_mm.shape[0]), self.columns

    def pixel_to_patient(self, row: ArrayLike, column: ArrayLike) -> F64:
        r = np.asarray(row, dtype=np.intp)
        c = np.asarray(column, dtype=np.float64)[..., None]
        return self.centerline_mm[r] + (c - (self.columns - 1) / 2.0) * self.spacing_mm * self.lateral[r]

    def to_json(self) -> dict[str, Any]:
        return {"rows": self.size[0], "columns": self.columns, "pixel_spacing_mm": [self.spacing_mm] * 2,
                "length_mm": round(self.spacing_mm * (self.size[0] - 1), 4)}


def _resample_polyline(points: F64, step: float) -> F64:
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    keep = np.concatenate([[True], seg > 1e-9])
    points = points[keep]
    if points.shape[0] < 2:
        raise ValueError("the centreline must have at least two distinct points")
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    rows = arc[-1] / step
    if not math.isfinite(rows) or rows > _MAX_CURVED_ROWS:
        raise ValueError(f"the centreline is {arc[-1]:.4g} mm long: more than {_MAX_CURVED_ROWS} rows "
                         f"at {step:g} mm")
    n = int(math.floor(rows + 1e-6)) + 1
    s = np.arange(n) * step
    return np.stack([np.interp(s, arc, points[:, d]) for d in range(3)], axis=1)


def _default_lateral(direction: F64) -> F64:
    """The patient axis (x, then y, then z on ties) least parallel to the centreline."""
    dots = np.abs(direction)
    return np.eye(3)[int(np.argmin(dots + np.array([0.0, 1e-6, 2e-6])))]


def curved_mpr(
    volume: Volume,
    centerline_mm: ArrayLike,
    *,
    width_mm: float,
    spacing_mm: float | None = None,
    lateral: ArrayLike | None = None,
    slab_mm: float = 0.0,
    mode: str = "mip",
    order: int = 1,
    fill: float | None = None,
) -> tuple[F32, CurvedPlane]:
    """A straightened curved MPR along a centreline given in patient mm, (N, 3).

    The centreline is resampled every ``spacing_mm`` (default: the finest voxel spacing) along
    its length; row ``m`` of the image samples the line through point ``m`` perpendicular to the
    centreline, ``width_mm`` wide (an odd number of columns, the centreline on the middle one).
    The across direction starts as ``lateral`` (default: the patient axis least parallel to the
    centreline) projected perpendicular to the first tangent, and is carried along the curve by
    projecting the previous one (a rotation-minimising frame), so the image does not twist.
    ``slab_mm`` > 0 reduces a slab perpendicular to both. A straight centreline gives exactly
    the oblique plane through it.
    """
    _check_mode(mode, order, slab_mm)
    pts = np.asarray(centerline_mm, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3 or pts.shape[0] < 2 or not np.all(np.isfinite(pts)):
        raise ValueError("the centreline must be at least two finite [x, y, z] points")
    sp = float(min(volume.spacing_mm)) if spacing_mm is None else float(spacing_mm)
    if not (math.isfinite(sp) and sp > 0):
        raise ValueError("the spacing must be a positive number of mm")
    if not (math.isfinite(width_mm) and width_mm >= 0):
        raise ValueError("the width must be a non-negative number of mm")
    centre = _resample_polyline(pts, sp)
    m = centre.shape[0]
    if m < 2:
        raise ValueError("the centreline is shorter than one pixel")
    tangent = np.gradient(centre, axis=0)
    tangent /= np.maximum(np.linalg.norm(tangent, axis=1, keepdims=True), 1e-12)
    overall = centre[-1] - centre[0]
    overall = overall / np.linalg.norm(overall) if np.linalg.norm(overall) > 1e-9 else tangent[0]
    ref = _default_lateral(overall) if lateral is None else _unit(lateral, "lateral")
    if lateral is not None and float(np.linalg.norm(ref - float(ref @ tangent[0]) * tangent[0])) < 1e-6:
        raise ValueError("lateral must not be parallel to the centreline")
    lat = np.empty_like(centre)
    prev = ref
    for i in range(m):
        t = tangent[i]
        v = prev - float(prev @ t) * t
        if float(np.linalg.norm(v)) < 1e-6:
            v = ref - float(ref @ t) * t
            if float(np.linalg.norm(v)) < 1e-6:
                v = _default_lateral(t) - float(_default_lateral(t) @ t) * t
        v /= float(np.linalg.norm(v))
        lat[i] = v
        prev = v
    half = int(round(width_mm / (2 * sp)))
    cols = 2 * half + 1
    if m * cols > _MAX_CURVED_PIXELS:
        raise ValueError(f"the curved MPR would be {m}x{cols} pixels: at most {_MAX_CURVED_PIXELS} "
                         "(shorten the centreline, narrow it, or coarsen the spacing)")
    w = (np.arange(cols, dtype=np.float64) - half) * sp
    positions = centre[:, None, :] + w[None, :, None] * lat[:, None, :]  # (m, cols, 3)
    binormal = np.cross(lat, tangent)  # lateral × tangent: the image's normal, like a Plane's
    a = volume.affine
    inv = np.linalg.inv(a[:3, :3])
    base = np.moveaxis((positions - a[:3, 3]) @ inv.T, -1, 0)  # (3, m, cols)
    bn_idx = np.moveaxis(binormal @ inv.T, -1, 0)[:, :, None]  # (3, m, 1) index step per mm
    offsets = _slab_offsets(slab_mm, _slab_step_mm(np.abs(bn_idx).max(axis=(1, 2))))

    def sample(off: float) -> F32:
        return _sample(volume, base + bn_idx * off if off else base, order)

    image = _accumulate(sample, offsets, mode, default_fill(volume) if fill is None else float(fill))
    return image, CurvedPlane(centre, lat, tangent, sp, cols)


# --------------------------------------------------------------------------------------------
# Projections along any direction: shear-warp


@dataclass(frozen=True)
class View:
    """An orthographic camera: rays run along ``direction``; ``up`` is the top of the screen.
    The screen's right is ``direction × up``."""

    direction: Vec3
    up: Vec3

    @property
    def right(self) -> F64:
        return np.cross(np.asarray(self.direction), np.asarray(self.up))

    def to_json(self) -> dict[str, Any]:
        return {"direction": [round(x, 6) for x in self.direction], "up": [round(x, 6) for x in self.up]}


def view_from_angles(azimuth_deg: float = 0.0, elevation_deg: float = 0.0) -> View:
    """A camera around the patient. Azimuth 0, elevation 0 is the anterior view (rays anterior to
    posterior, superior up, the patient's right on the screen's left); azimuth 90 looks from
    the patient's right side; elevation 90 looks down from above the head."""
    if not (math.isfinite(azimuth_deg) and math.isfinite(elevation_deg)):
        raise ValueError("azimuth and elevation must be finite numbers of degrees")
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    d = (math.sin(az) * math.cos(el), math.cos(az) * math.cos(el), -math.sin(el))
    up = (math.sin(az) * math.sin(el), math.cos(az) * math.sin(el), math.cos(el))
    return View(d, up)


def _rotate(v: F64, axis: F64, angle: float) -> F64:
    """Rodrigues' rotation of ``v`` about unit ``axis``."""
    c, s = math.cos(angle), math.sin(angle)
    return v * c + np.cross(axis, v) * s + axis * float(axis @ v) * (1 - c)


def rotation_views(n_frames: int, axis: str = "z", elevation_deg: float = 0.0) -> list[View]:
    """``n_frames`` cameras evenly spaced over a full turn about a patient axis.

    ``z`` (the body axis): starting anterior, turning towards the patient's right side.
    ``x`` (left-right): starting anterior, turning over the head. ``y``: starting from the
    patient's right side, turning over the head. ``elevation_deg`` tilts the ``z`` orbit.
    """
    if not 1 <= n_frames <= 720:
        raise ValueError("the number of frames must be between 1 and 720")
    if axis == "z":
        step = 360.0 / n_frames
        return [view_from_angles(i * step, elevation_deg) for i in range(n_frames)]
    if axis == "x":
        d0, up0, ax = np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, 1.0]), np.array([-1.0, 0.0, 0.0])
    elif axis == "y":
        d0, up0, ax = np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0]), np.array([0.0, 1.0, 0.0])
    else:
        raise ValueError(f"axis {axis!r} must be x, y or z")
    views = []
    for i in range(n_frames):
        ang = 2 * math.pi * i / n_frames
        views.append(View(_tuple3(_rotate(d0, ax, ang)), _tuple3(_rotate(up0, ax, ang))))
    return views


def screen_plane(volume: Volume, view: View, size: int | tuple[int, int],
                 *, fov_mm: float | None = None, center_mm: ArrayLike | None = None) -> Plane:
    """The screen of an orthographic view: a plane through ``center_mm`` (the volume's centre),
    perpendicular to the rays, ``fov_mm`` (the volume's diagonal) across its larger side."""
    rows, cols = (size, size) if isinstance(size, int) else size
    if not (1 <= rows <= 4096 and 1 <= cols <= 4096):
        raise ValueError("the image size must be between 1 and 4096 pixels")
    d = _unit(view.direction, "view direction")
    up = _unit(view.up, "view up")
    up = up - float(up @ d) * d
    if float(np.linalg.norm(up)) < 1e-6:
        raise ValueError("the view's up must not be parallel to its direction")
    up /= float(np.linalg.norm(up))
    right = np.cross(d, up)
    fov = volume_diagonal_mm(volume) if fov_mm is None else float(fov_mm)
    if not (math.isfinite(fov) and fov > 0):
        raise ValueError("the field of view must be positive")
    px = fov / max(rows, cols)
    c = volume_center_mm(volume) if center_mm is None else _vec3(center_mm, "center")
    origin = c - (cols - 1) / 2.0 * px * right + (rows - 1) / 2.0 * px * up
    return Plane(_tuple3(origin), _tuple3(right), _tuple3(-up), (px, px), (rows, cols))


def downsample(volume: Volume, max_dim: int) -> Volume:
    """The volume with no axis longer than ``max_dim``: block means of whole-number factors per
    axis (the last block is padded by repeating the edge). Returns ``volume`` itself when it
    is small enough."""
    if max_dim < 2:
        raise ValueError("max_dim must be at least 2")
    factors = [max(1, math.ceil(n / max_dim)) for n in volume.shape]
    if factors == [1, 1, 1]:
        return volume
    f0, f1, f2 = factors
    nz, ny, nx = volume.shape
    oz, oy, ox = math.ceil(nz / f0), math.ceil(ny / f1), math.ceil(nx / f2)
    out = np.empty((oz, oy, ox), dtype=np.float32)
    src = volume.voxels
    scale = np.float32(1.0 / (f0 * f1 * f2))
    for k in range(oz):
        block = np.asarray(src[k * f0:(k + 1) * f0], dtype=np.float32)
        plane = block.sum(axis=0, dtype=np.float32)
        if block.shape[0] < f0:  # the last block: repeat the last slice
            plane += block[-1] * np.float32(f0 - block.shape[0])
        if ny % f1 or nx % f2:
            plane = np.pad(plane, ((0, oy * f1 - ny), (0, ox * f2 - nx)), mode="edge")
        rows = plane[0::f1].copy()
        for o in range(1, f1):
            rows += plane[o::f1]
        acc = rows[:, 0::f2].copy()
        for o in range(1, f2):
            acc += rows[:, o::f2]
        out[k] = acc * scale
    origin = volume.index_to_patient(np.array([(f0 - 1) / 2.0, (f1 - 1) / 2.0, (f2 - 1) / 2.0]))
    sz, sy, sx = volume.spacing_mm
    return Volume(
        voxels=out, spacing_mm=(sz * f0, sy * f1, sx * f2), origin_mm=_tuple3(origin),
        direction=np.asarray(volume.direction, dtype=np.float64), units=volume.units, modality=volume.modality,
        series_instance_uid=volume.series_instance_uid, tilt_deg=volume.tilt_deg,
        notes=(*volume.notes, f"downsampled by {f0}x{f1}x{f2} (z, y, x)"),
    )


@dataclass(frozen=True)
class ShearWarp:
    """The shear-warp factorisation of orthographic rays through a volume.

    ``axis`` is the array axis most parallel to the rays; the other two, in array order, are
    ``u`` and ``v``. A voxel at index ``s`` along ``axis`` and ``(u, v)`` in its slice lies on the
    ray whose intermediate-image coordinates are ``(u - s*r_u - off_u, v - s*r_v - off_v)``.
    Slices are visited front to back in ``order``.
    """

    axis: int
    u: int
    v: int
    r_u: float
    r_v: float
    off_u: int
    off_v: int
    shape: tuple[int, int]  # intermediate image (rows along u, columns along v)
    order: tuple[int, ...]  # slice indices, front to back
    step_mm: float  # ray length between consecutive slices
    inverse: F64  # patient -> index, 3x3
    translation: F64  # affine translation

    @classmethod
    def build(cls, volume: Volume, direction: ArrayLike) -> ShearWarp:
        d = _unit(direction, "view direction")
        a = volume.affine
        inv = np.asarray(np.linalg.inv(a[:3, :3]), dtype=np.float64)
        d_idx = inv @ d
        axis = int(np.argmax(np.abs(d_idx)))
        u, v = (i for i in range(3) if i != axis)
        r = d_idx / d_idx[axis]
        n_c = volume.shape[axis]
        off_u = math.floor(min(0.0, -(n_c - 1) * float(r[u])))
        off_v = math.floor(min(0.0, -(n_c - 1) * float(r[v])))
        gu = max(0.0, -(n_c - 1) * float(r[u])) - off_u
        gv = max(0.0, -(n_c - 1) * float(r[v])) - off_v
        shape = (volume.shape[u] + math.ceil(gu) + 2, volume.shape[v] + math.ceil(gv) + 2)
        order = tuple(range(n_c)) if d_idx[axis] > 0 else tuple(range(n_c - 1, -1, -1))
        step_mm = float(np.linalg.norm(a[:3, :3] @ r))
        return cls(axis, u, v, float(r[u]), float(r[v]), off_u, off_v, shape, order, step_mm, inv, a[:3, 3].copy())

    def placement(self, s: int) -> tuple[int, int, float, float]:
        """Where slice ``s``, shifted, lands: the padded bilinear result (see :meth:`shift`) goes
        at rows ``row0 ...``, columns ``col0 ...``; ``(hu, hv)`` are the fractional shifts."""
        gu = -s * self.r_u - self.off_u
        gv = -s * self.r_v - self.off_v
        iu, iv = math.floor(gu), math.floor(gv)
        return iu, iv, gu - iu, gv - iv

    @staticmethod
    def shift(padded: Any, hu: float, hv: float) -> Any:
        """Bilinear sub-pixel shift by (+hu, +hv) of a slice padded by one pixel on every side
        (``padded`` has shape (nu + 2, nv + 2, ...)); the result has shape (nu + 1, nv + 1, ...)."""
        a = np.float32((1 - hu) * (1 - hv))
        b = np.float32(hu * (1 - hv))
        c = np.float32((1 - hu) * hv)
        d = np.float32(hu * hv)
        out = padded[1:, 1:] * a
        if b:
            out += padded[:-1, 1:] * b
        if c:
            out += padded[1:, :-1] * c
        if d:
            out += padded[:-1, :-1] * d
        return out

    def warp_coordinates(self, plane: Plane) -> F64:
        """Intermediate-image coordinates (2, rows, cols) of the rays through ``plane``'s pixels."""
        rows, cols = plane.size
        pts = plane.pixel_to_patient(np.arange(rows)[:, None], np.arange(cols)[None, :])  # (r, c, 3)
        p = (pts - self.translation) @ self.inverse.T
        uu = p[..., self.u] - p[..., self.axis] * self.r_u - self.off_u
        vv = p[..., self.v] - p[..., self.axis] * self.r_v - self.off_v
        return np.stack([uu, vv])

    def hits(self, volume: Volume, plane: Plane, direction: ArrayLike) -> Any:
        """Which screen pixels' rays cross the volume's voxels (bool, (rows, cols))."""
        rows, cols = plane.size
        pts = plane.pixel_to_patient(np.arange(rows)[:, None], np.arange(cols)[None, :])
        p = (pts - self.translation) @ self.inverse.T
        d = self.inverse @ _unit(direction, "view direction")
        t_lo = np.full((rows, cols), -np.inf)
        t_hi = np.full((rows, cols), np.inf)
        for ax, n in enumerate(volume.shape):
            lo, hi = -0.5, n - 0.5
            if abs(float(d[ax])) < 1e-12:
                inside = (p[..., ax] >= lo) & (p[..., ax] <= hi)
                t_lo = np.where(inside, t_lo, np.inf)
                continue
            t1 = (lo - p[..., ax]) / d[ax]
            t2 = (hi - p[..., ax]) / d[ax]
            t_lo = np.maximum(t_lo, np.minimum(t1, t2))
            t_hi = np.minimum(t_hi, np.maximum(t1, t2))
        return t_hi >= t_lo


def slices_along(volume: Volume, axis: int) -> Any:
    """The voxels with ``axis`` first, C-contiguous (a copy unless ``axis`` is 0)."""
    if axis == 0:
        return np.asarray(volume.voxels)
    return np.ascontiguousarray(np.moveaxis(np.asarray(volume.voxels), axis, 0))


def project(
    volume: Volume,
    view: View,
    *,
    size: int | tuple[int, int] = 256,
    mode: str = "mip",
    fov_mm: float | None = None,
    fill: float | None = None,
) -> tuple[F32, Plane]:
    """Orthographic projection of the whole volume along ``view`` (MIP, MinIP or average along
    each ray), by shear-warp. Pass a :func:`downsample`-d volume for speed; the image is warped
    bilinearly to ``size``. Pixels whose rays miss the volume are ``fill``."""
    _check_mode(mode, 1, 0.0)
    plane = screen_plane(volume, view, size, fov_mm=fov_mm)
    sw = ShearWarp.build(volume, view.direction)
    data = slices_along(volume, sw.axis)
    lo, hi = float(data.min()), float(data.max())
    pad_value = {"mip": lo, "minip": hi, "average": 0.0}[mode]
    acc = np.full(sw.shape, pad_value, dtype=np.float32)
    count = np.zeros(sw.shape, dtype=np.float32) if mode == "average" else None
    nu, nv = data.shape[1], data.shape[2]
    padded = np.full((nu + 2, nv + 2), pad_value, dtype=np.float32)
    ones = np.zeros((nu + 2, nv + 2), dtype=np.float32)
    ones[1:-1, 1:-1] = 1.0
    for s in sw.order:
        padded[1:-1, 1:-1] = data[s]
        iu, iv, hu, hv = sw.placement(s)
        shifted = sw.shift(padded, hu, hv)
        region = acc[iu:iu + nu + 1, iv:iv + nv + 1]
        if mode == "mip":
            np.maximum(region, shifted, out=region)
        elif mode == "minip":
            np.minimum(region, shifted, out=region)
        else:
            region += shifted
            assert count is not None
            count[iu:iu + nu + 1, iv:iv + nv + 1] += sw.shift(ones, hu, hv)
    if mode == "average":
        assert count is not None
        acc = np.where(count > 1e-3, acc / np.maximum(count, 1e-3), np.float32(0)).astype(np.float32)
    coords = sw.warp_coordinates(plane)
    image = ndimage.map_coordinates(acc, coords, order=1, mode="constant", cval=pad_value,
                                    output=np.float32, prefilter=False)
    fill_value = default_fill(volume) if fill is None else float(fill)
    image[~sw.hits(volume, plane, view.direction)] = fill_value
    return np.asarray(image, dtype=np.float32), plane


def rotating_mip(
    volume: Volume,
    n_frames: int,
    axis: str = "z",
    size: int = 256,
    *,
    mode: str = "mip",
    elevation_deg: float = 0.0,
    max_dim: int | None = None,
) -> tuple[F32, list[View]]:
    """``n_frames`` projections (default MIP) over a full turn about a patient axis (see
    :func:`rotation_views`): a float32 (frames, size, size) stack and the cameras. The volume is
    first :func:`downsample`-d to ``max_dim`` (default ``size``) voxels per axis. The field of
    view is the volume's diagonal, the same in every frame."""
    views = rotation_views(n_frames, axis, elevation_deg)
    if not 1 <= size <= 2048:
        raise ValueError("size must be between 1 and 2048")
    small = downsample(volume, max_dim or max(size, 2))
    fov = volume_diagonal_mm(volume)
    frames = np.empty((n_frames, size, size), dtype=np.float32)
    for i, view in enumerate(views):
        frames[i], _ = project(small, view, size=size, mode=mode, fov_mm=fov)
    return frames, views


__all__ = [
    "ORIENTATIONS",
    "SLAB_MODES",
    "CurvedPlane",
    "Plane",
    "ShearWarp",
    "closest_axis",
    "View",
    "curved_mpr",
    "default_fill",
    "downsample",
    "oblique_plane",
    "project",
    "reslice",
    "rotating_mip",
    "rotation_views",
    "screen_plane",
    "standard_plane",
    "view_from_angles",
    "volume_center_mm",
    "volume_corners_mm",
    "volume_diagonal_mm",
]
