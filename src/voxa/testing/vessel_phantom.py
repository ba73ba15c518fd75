"""A contrast-enhanced (CTA-like) vessel phantom with analytic ground truth.

Frame. Shapes are placed in the volume's own frame in mm, **(z, y, x) order**: the centre of
voxel ``(k, j, i)`` lies at ``(k sz, j sy, i sx)`` with ``spacing_mm = (sz, sy, sx)``. The
returned :class:`~voxa.imaging.volume.Volume` has an identity direction, so a frame point ``q``
sits at patient (LPS) ``origin_mm + (q_x, q_y, q_z)``; :meth:`VesselPhantom.frame_to_patient`
and :meth:`VesselPhantom.frame_to_index` convert.

Tubes. A tube has a centreline parametrised by arc length ``s`` in ``[0, length_mm]`` and a
radius ``r(s)``; a point belongs to it when its nearest centreline point ``c(s*)`` has ``s*``
in ``[0, length]`` and lies within ``r(s*)`` (flat end caps). With this definition the tube's
cross-section in the plane perpendicular to the centreline at ``s`` is exactly a disc of radius
``r(s)`` (straight tubes always; arcs while ``r < bend radius``), so the analytic area is
``pi r(s)²`` and the analytic diameter ``2 r(s)``:

* :class:`StraightTube` runs from ``start_mm`` along ``direction`` (any oblique direction);
* :class:`ArcTube` is a circular arc (a torus section) in any oblique plane.

A :class:`StenosisSpec` narrows the radius smoothly (raised cosine): over
``|s - s_c| <= L/2``, ``r(s) = r0 (1 - f (1 + cos(2 pi (s - s_c) / L)) / 2)`` with ``f`` the
diameter stenosis fraction, so ``r(s_c) = r0 (1 - f)`` and the NASCET-style diameter stenosis
is exactly ``100 f`` percent.

Partial volume. Each voxel takes the fraction of it that lies inside a shape, estimated on a
``supersample³`` grid of sub-voxel points (only voxels near a surface are supersampled), so
edges are sub-voxel accurate: ``HU = background + fraction x (shape HU - background)``. Where
shapes overlap, the larger contribution wins per voxel. Optional Gaussian blur (a scanner
point-spread function, sigma in mm) and Gaussian noise (SD in HU, seeded) come last.

:class:`Sphere` and :class:`Slab` are blob- and plate-shaped distractors of chosen HU for
vesselness and leak tests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage

from voxa.imaging.volume import Volume

F64 = NDArray[np.float64]
Vec3 = tuple[float, float, float]


def _unit(v: ArrayLike) -> F64:
    a = np.asarray(v, dtype=np.float64)
    n = float(np.linalg.norm(a))
    if not (a.shape == (3,) and n > 0 and math.isfinite(n)):
        raise ValueError(f"need a non-zero 3-vector, got {v!r}")
    return a / n


@dataclass(frozen=True)
class StenosisSpec:
    """A smooth (raised-cosine) concentric narrowing: diameter reduced by ``percent`` at ``centre_mm``."""

    centre_mm: float  # arc length of the narrowest point
    length_mm: float  # full length of the narrowing
    percent: float  # diameter stenosis, 0-100

    def __post_init__(self) -> None:
        if not 0 <= self.percent < 100:
            raise ValueError("stenosis percent must be in [0, 100)")
        if not self.length_mm > 0:
            raise ValueError("stenosis length must be positive")


def _radius(s: ArrayLike, radius_mm: float, stenoses: Sequence[StenosisSpec]) -> F64:
    s = np.asarray(s, dtype=np.float64)
    factor = np.ones_like(s)
    for st in stenoses:
        u = s - st.centre_mm
        inside = np.abs(u) <= st.length_mm / 2
        dip = st.percent / 100.0 * (1 + np.cos(2 * np.pi * u / st.length_mm)) / 2
        factor = np.minimum(factor, np.where(inside, 1.0 - dip, 1.0))
    return radius_mm * factor


@dataclass(frozen=True)
class StraightTube:
    """A straight tube from ``start_mm`` along ``direction`` (both (z, y, x), frame mm)."""

    start_mm: Vec3
    direction: Vec3
    length_mm: float
    radius_mm: float
    stenoses: tuple[StenosisSpec, ...] = ()
    hu: float = 400.0

    def radius_at(self, s: ArrayLike) -> F64:
        """Analytic lumen radius (mm) at arc length ``s`` (mm)."""
        return _radius(s, self.radius_mm, self.stenoses)

    def diameter_at(self, s: ArrayLike) -> F64:
        return 2.0 * self.radius_at(s)

    def point_at(self, s: ArrayLike) -> F64:
        """Centreline point(s), frame mm (z, y, x): (N, 3) for an array ``s``, (3,) for a scalar."""
        s = np.asarray(s, dtype=np.float64)
        return np.asarray(self.start_mm) + s[..., None] * _unit(self.direction)

    def tangent_at(self, s: ArrayLike) -> F64:
        s = np.asarray(s, dtype=np.float64)
        return np.broadcast_to(_unit(self.direction), (*s.shape, 3)).copy()

    def project(self, q: ArrayLike) -> tuple[F64, F64]:
        """Arc length of the nearest centreline point (unclamped) and distance to the axis."""
        w = np.asarray(q, dtype=np.float64) - np.asarray(self.start_mm)
        d = _unit(self.direction)
        s = w @ d
        radial = np.linalg.norm(w - s[..., None] * d, axis=-1)
        return s, radial

    def _signed(self, q: F64) -> tuple[F64, F64]:
        s, radial = self.project(q)
        inside_s = np.clip(s, 0.0, self.length_mm)
        cap = np.maximum(-s, s - self.length_mm)
        return np.maximum(radial - self.radius_at(inside_s), cap), s

    def _bbox(self) -> tuple[F64, F64]:
        a = np.asarray(self.start_mm, dtype=np.float64)
        b = self.point_at(self.length_mm)
        r = self.radius_mm
        return np.minimum(a, b) - r, np.maximum(a, b) + r


@dataclass(frozen=True)
class ArcTube:
    """A tube along a circular arc of radius ``bend_radius_mm`` about ``centre_mm``.

    The arc lies in the plane through ``centre_mm`` perpendicular to ``normal``; it starts at
    ``centre + bend_radius x start_direction`` (``start_direction`` is made perpendicular to
    ``normal``) and turns by ``angle_deg`` right-handedly about ``normal``. All vectors (z, y, x).
    """

    centre_mm: Vec3
    normal: Vec3
    start_direction: Vec3
    bend_radius_mm: float
    angle_deg: float
    radius_mm: float
    stenoses: tuple[StenosisSpec, ...] = ()
    hu: float = 400.0

    def __post_init__(self) -> None:
        if not self.radius_mm < self.bend_radius_mm:
            raise ValueError("tube radius must be smaller than the bend radius")
        if not 0 < self.angle_deg < 360:
            raise ValueError("arc angle must be in (0, 360) degrees")

    def _axes(self) -> tuple[F64, F64, F64]:
        n = _unit(self.normal)
        e1 = np.asarray(self.start_direction, dtype=np.float64)
        e1 = _unit(e1 - (e1 @ n) * n)
        e2 = np.cross(n, e1)
        return n, e1, e2

    @property
    def length_mm(self) -> float:
        return math.radians(self.angle_deg) * self.bend_radius_mm

    def radius_at(self, s: ArrayLike) -> F64:
        return _radius(s, self.radius_mm, self.stenoses)

    def diameter_at(self, s: ArrayLike) -> F64:
        return 2.0 * self.radius_at(s)

    def point_at(self, s: ArrayLike) -> F64:
        _, e1, e2 = self._axes()
        phi = np.asarray(s, dtype=np.float64)[..., None] / self.bend_radius_mm
        return np.asarray(self.centre_mm) + self.bend_radius_mm * (np.cos(phi) * e1 + np.sin(phi) * e2)

    def tangent_at(self, s: ArrayLike) -> F64:
        _, e1, e2 = self._axes()
        phi = np.asarray(s, dtype=np.float64)[..., None] / self.bend_radius_mm
        return -np.sin(phi) * e1 + np.cos(phi) * e2

    def _polar(self, q: ArrayLike) -> tuple[F64, F64, F64]:
        n, e1, e2 = self._axes()
        w = np.asarray(q, dtype=np.float64) - np.asarray(self.centre_mm)
        h = w @ n
        a, b = w @ e1, w @ e2
        rho = np.hypot(a, b)
        theta = math.radians(self.angle_deg)
        # angle in [theta/2 - pi, theta/2 + pi): the wrap lies opposite the arc's middle
        phi = np.mod(np.arctan2(b, a) - (theta / 2 - np.pi), 2 * np.pi) + (theta / 2 - np.pi)
        return phi, rho, h

    def project(self, q: ArrayLike) -> tuple[F64, F64]:
        """Arc length of the nearest centreline point (unclamped) and distance to the arc's circle."""
        phi, rho, h = self._polar(q)
        return phi * self.bend_radius_mm, np.hypot(rho - self.bend_radius_mm, h)

    def _signed(self, q: F64) -> tuple[F64, F64]:
        phi, rho, h = self._polar(q)
        s = phi * self.bend_radius_mm
        theta = math.radians(self.angle_deg)
        radial = np.hypot(rho - self.bend_radius_mm, h)
        inside_s = np.clip(s, 0.0, self.length_mm)
        beyond = np.minimum(np.maximum(-phi, phi - theta), np.pi / 2)
        cap = np.where(beyond > 0, rho * np.sin(beyond), beyond * rho)
        return np.maximum(radial - self.radius_at(inside_s), cap), s

    def _bbox(self) -> tuple[F64, F64]:
        pts = self.point_at(np.linspace(0.0, self.length_mm, 721))
        r = self.radius_mm
        return pts.min(axis=0) - r, pts.max(axis=0) + r


Tube = StraightTube | ArcTube


@dataclass(frozen=True)
class Sphere:
    """A uniform ball (a blob distractor)."""

    centre_mm: Vec3
    radius_mm: float
    hu: float = 400.0

    def _signed(self, q: F64) -> tuple[F64, F64]:
        d = np.linalg.norm(q - np.asarray(self.centre_mm), axis=-1)
        return d - self.radius_mm, d

    def _bbox(self) -> tuple[F64, F64]:
        c = np.asarray(self.centre_mm, dtype=np.float64)
        return c - self.radius_mm, c + self.radius_mm


@dataclass(frozen=True)
class Slab:
    """A square plate: ``thickness_mm`` along ``normal``, ``2 x half_width_mm`` wide (a plate distractor)."""

    centre_mm: Vec3
    normal: Vec3
    thickness_mm: float
    half_width_mm: float
    hu: float = 400.0

    def _signed(self, q: F64) -> tuple[F64, F64]:
        n = _unit(self.normal)
        w = q - np.asarray(self.centre_mm)
        along = w @ n
        lateral = w - along[..., None] * n
        # in-plane square: two axes perpendicular to n
        helper = np.array([1.0, 0.0, 0.0]) if abs(n[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
        u = _unit(np.cross(n, helper))
        v = np.cross(n, u)
        extent = np.maximum(np.abs(lateral @ u), np.abs(lateral @ v)) - self.half_width_mm
        return np.maximum(np.abs(along) - self.thickness_mm / 2, extent), along

    def _bbox(self) -> tuple[F64, F64]:
        c = np.asarray(self.centre_mm, dtype=np.float64)
        e = self.half_width_mm * math.sqrt(2) + self.thickness_mm
        return c - e, c + e


Shape = StraightTube | ArcTube | Sphere | Slab


@dataclass(frozen=True, eq=False)
class VesselPhantom:
    """The phantom volume, its shapes and per-shape truth masks."""

    volume: Volume
    tubes: tuple[Tube, ...]
    distractors: tuple[Sphere | Slab, ...]
    labels: NDArray[np.int16]  # 1 + index into tubes + distractors where the fraction >= 1/2, else 0
    background_hu: float
    noise_sd_hu: float
    blur_sigma_mm: float
    notes: tuple[str, ...] = field(default=())

    def frame_to_index(self, q_mm: ArrayLike) -> F64:
        """Fractional voxel index (k, j, i) of frame points (z, y, x mm)."""
        return np.asarray(q_mm, dtype=np.float64) / np.asarray(self.volume.spacing_mm)

    def frame_to_patient(self, q_mm: ArrayLike) -> F64:
        """Patient (LPS, mm) coordinates of frame points (z, y, x mm)."""
        return self.volume.index_to_patient(self.frame_to_index(q_mm))

    def tube_mask(self, index: int) -> NDArray[np.bool_]:
        """Voxels at least half inside ``tubes[index]``."""
        return np.asarray(self.labels == index + 1)


def _fraction(
    shape: Shape,
    grid_shape: tuple[int, int, int],
    spacing: F64,
    supersample: int,
) -> tuple[tuple[slice, ...], NDArray[np.float32]] | None:
    """Inside fraction of each voxel in the shape's bounding box (slices into the grid)."""
    lo, hi = shape._bbox()
    half_diag = 0.5 * float(np.linalg.norm(spacing))
    lo_i = np.maximum(np.floor((lo - 2 * half_diag) / spacing).astype(int), 0)
    hi_i = np.minimum(np.ceil((hi + 2 * half_diag) / spacing).astype(int) + 1, grid_shape)
    if np.any(hi_i <= lo_i):
        return None
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo_i, hi_i, strict=True))
    axes = [np.arange(a, b) * spacing[n] for n, (a, b) in enumerate(zip(lo_i, hi_i, strict=True))]
    q = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    signed, _ = shape._signed(q)
    fraction = (signed <= 0).astype(np.float32)
    # |signed| is at most ~1/cos(slope) times the distance to the surface; 1.5 half-diagonals
    # covers every voxel the surface can cross for the gentle narrowings used here.
    edge = np.abs(signed) <= 1.5 * half_diag
    if supersample > 1 and np.any(edge):
        n = supersample
        offsets = (np.arange(n) + 0.5) / n - 0.5
        sub = np.stack(np.meshgrid(offsets, offsets, offsets, indexing="ij"), axis=-1).reshape(-1, 3)
        sub = sub * spacing
        centres = q[edge]
        inside = np.zeros(len(centres), dtype=np.float64)
        chunk = max(1, 200_000 // len(sub))
        for start in range(0, len(centres), chunk):
            pts = centres[start : start + chunk, None, :] + sub[None, :, :]
            s_signed, _ = shape._signed(pts)
            inside[start : start + chunk] = (s_signed <= 0).mean(axis=1)
        fraction[edge] = inside.astype(np.float32)
    return box, fraction


def vessel_phantom(
    tubes: Sequence[Tube],
    *,
    distractors: Sequence[Sphere | Slab] = (),
    shape: tuple[int, int, int] = (64, 64, 64),
    spacing_mm: Vec3 = (0.8, 0.5, 0.5),
    origin_mm: Vec3 = (0.0, 0.0, 0.0),
    background_hu: float = 40.0,
    noise_sd_hu: float = 0.0,
    blur_sigma_mm: float = 0.0,
    supersample: int = 4,
    seed: int = 0,
) -> VesselPhantom:
    """Tubes (and distractors) of uniform HU on a uniform background, with partial volume.

    ``shape`` and ``spacing_mm`` are (z, y, x); ``origin_mm`` is the patient (LPS) x, y, z of
    voxel (0, 0, 0). Defaults: 40 HU background, no noise, no blur, 4³ sub-samples per edge
    voxel. Noise is Gaussian, seeded by ``seed``. Edge voxels are found from an approximate
    signed distance with a 1.5 half-diagonal margin, which is safe for narrowings whose radius
    slope ``pi f r0 / L`` stays under about 1.
    """
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    if spacing.shape != (3,) or not np.all(spacing > 0):
        raise ValueError("spacing_mm must be three positive numbers (z, y, x)")
    if supersample < 1:
        raise ValueError("supersample must be >= 1")
    contribution = np.zeros(shape, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.int16)
    best = np.zeros(shape, dtype=np.float32)
    all_shapes: list[Shape] = [*tubes, *distractors]
    for number, item in enumerate(all_shapes, start=1):
        result = _fraction(item, shape, spacing, supersample)
        if result is None:
            continue
        box, fraction = result
        delta = fraction * np.float32(item.hu - background_hu)
        region = contribution[box]
        np.copyto(region, delta, where=np.abs(delta) > np.abs(region))
        take = (fraction >= 0.5) & (fraction > best[box])
        labels[box][take] = number
        best[box][take] = fraction[take]
    hu = contribution + np.float32(background_hu)
    notes: list[str] = []
    if blur_sigma_mm > 0:
        hu = ndimage.gaussian_filter(hu, sigma=tuple(blur_sigma_mm / spacing), mode="nearest")
        notes.append(f"Gaussian blur sigma {blur_sigma_mm} mm")
    if noise_sd_hu > 0:
        rng = np.random.default_rng(seed)
        hu += rng.standard_normal(size=shape, dtype=np.float32) * np.float32(noise_sd_hu)
        notes.append(f"Gaussian noise SD {noise_sd_hu} HU, seed {seed}")
    volume = Volume(
        voxels=np.ascontiguousarray(hu, dtype=np.float32),
        spacing_mm=(float(spacing[0]), float(spacing[1]), float(spacing[2])),
        origin_mm=(float(origin_mm[0]), float(origin_mm[1]), float(origin_mm[2])),
        direction=np.eye(3),
        units="HU",
        modality="CT",
    )
    return VesselPhantom(
        volume=volume,
        tubes=tuple(tubes),
        distractors=tuple(distractors),
        labels=labels,
        background_hu=background_hu,
        noise_sd_hu=noise_sd_hu,
        blur_sigma_mm=blur_sigma_mm,
        notes=tuple(notes),
    )


__all__ = [
    "ArcTube",
    "Slab",
    "Sphere",
    "StenosisSpec",
    "StraightTube",
    "Tube",
    "VesselPhantom",
    "vessel_phantom",
]
