"""A beating-heart phantom: multi-phase contrast CT of four chambers with analytic ground truth.

For testing :mod:`voxa.analysis.cardiac`. Geometry is in patient coordinates (DICOM LPS, mm);
the returned :class:`~voxa.imaging.volume.Volume` objects use the standard axial orientation
(columns towards the patient's left, rows towards posterior, slices towards superior) unless the
caller re-orients them. A voxel belongs to a structure when its centre does (centre sampling, no
partial-volume blur, as in :mod:`voxa.testing.phantoms`).

Anatomy (roughly, not to scale of any one patient):

* **LV**: a prolate half-spheroid cavity (semi-axes ``a`` along the long axis, ``b`` across),
  base plane through the origin, long axis pointing left, anterior and inferior. Its volume is
  ``2/3·π·a·b²``.
* **LV myocardium**: every point outside the cavity, on the apical side of the base plane, whose
  distance ``s`` to the spheroid surface is at most ``τ(q)``, ``q`` being its nearest surface
  point. The wall is therefore exactly ``τ(q)`` thick along the surface normal at ``q``.
  ``τ = k·(t0 + Δ·exp(κ(cos(θ − θ_peak) − 1))·sin²ψ)``: ``t0`` everywhere (and at the apex),
  plus a bump of ``Δ`` centred on the basal-to-mid anteroseptal wall (``θ`` is the angle about
  the long axis from the septal direction towards anterior, ``ψ`` the polar angle from the apex).
  Its volume is ``∫ dA ∫₀^τ (1 + s·k₁)(1 + s·k₂) ds`` (``k₁``, ``k₂`` principal curvatures),
  evaluated by quadrature on a fine (ψ, θ) grid. ``k`` (wall scale) is solved per phase so that
  the myocardial volume stays that of end-diastole: the wall thickens as the cavity empties.
* **RV, LA, RA**: ellipsoids, volume ``4/3·π·abc``; RV right-anterior of the septum, LA
  posterior-superior of the LV base, RA to the right of the LA. All chambers are separated by
  tissue; ``mitral_channel_radius_mm > 0`` adds a blood-filled cylinder joining LV base and LA,
  so the blood pool of the two is one connected component (its volume is reported apart).
* **Around the heart**: body tissue (``body_hu``), two air lungs (one touches the LV lateral
  wall), a contrast-filled descending aorta and a vertebral column (cortex ``bone_hu``, trabecular
  bone 250 HU, inside the blood window) spanning every slice: distractors for the chamber
  identification.

Volumes follow a physiological curve over the R-R interval: ventricles largest at 0 % (end
diastole), smallest at 40 % (end systole), rapid filling at 45-60 %, diastasis, atrial kick at
80-95 %; atria largest at 40 %, smallest at 0 %. Voxelised volumes differ from the analytic ones
by the lattice-counting error (see ``docs/analysis-cardiac.md``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from voxa.analysis.cardiac import AHA_SEGMENT_NAMES, MYOCARDIAL_DENSITY_G_PER_ML
from voxa.imaging.volume import Volume

F64 = NDArray[np.float64]

#: LV and RV volume over the R-R interval, as a fraction between ESV (0) and EDV (1).
VENTRICLE_CURVE: tuple[tuple[float, float], ...] = (
    (0, 1.0), (10, 0.82), (20, 0.45), (30, 0.14), (40, 0.0), (50, 0.38),
    (60, 0.70), (70, 0.80), (80, 0.84), (90, 0.95), (100, 1.0),
)
#: LA and RA volume over the R-R interval, as a fraction between minimum (0) and maximum (1).
ATRIUM_CURVE: tuple[tuple[float, float], ...] = (
    (0, 0.0), (10, 0.22), (20, 0.50), (30, 0.82), (40, 1.0), (50, 0.62),
    (60, 0.45), (70, 0.42), (80, 0.38), (90, 0.12), (100, 0.0),
)

_RV_SHAPE = (1.5, 1.0, 0.55)  # semi-axes along the LV axis, anterior direction, septal direction
_LA_SHAPE = (1.2, 0.85, 1.0)  # semi-axes along patient x, y, z
_RA_SHAPE = (0.9, 1.0, 1.15)
_BUMP_KAPPA = 2.0
_BUMP_PEAK_DEG = 30.0  # centre of the anteroseptal segments
_GAP_MM = 4.0  # minimum tissue between chambers
_TRABECULAR_HU = 250.0


@dataclass(frozen=True)
class PhaseTruth:
    """Analytic values of one phase (volumes in mL, lengths in mm)."""

    phase_percent: float
    lv_ml: float
    rv_ml: float
    la_ml: float
    ra_ml: float
    lv_myocardium_ml: float
    mitral_channel_ml: float  # approximate (π r² × length between LV base and LA surface); 0 without
    lv_length_mm: float  # a: base plane to apex of the cavity
    lv_radius_mm: float  # b: cavity radius at the base
    wall_scale: float  # k: wall thickness relative to the end-diastolic pattern
    segment_thickness_mm: dict[int, float]  # AHA 1-17: area-weighted mean normal thickness


@dataclass(frozen=True)
class HeartTruth:
    phases: tuple[PhaseTruth, ...]
    ed_phase_percent: float
    es_phase_percent: float
    lv_edv_ml: float
    lv_esv_ml: float
    lv_sv_ml: float
    lv_ef_percent: float
    rv_edv_ml: float
    rv_esv_ml: float
    rv_sv_ml: float
    rv_ef_percent: float
    la_max_ml: float
    la_min_ml: float
    ra_max_ml: float
    ra_min_ml: float
    lv_myocardium_ml: float
    lv_mass_g: float
    segment_thickness_ed_mm: dict[int, float]
    segment_thickness_es_mm: dict[int, float]
    heart_rate_bpm: float
    cardiac_output_l_min: float
    lv_axis_lps: tuple[float, float, float]  # unit vector, base -> apex
    lv_base_centre_lps: tuple[float, float, float]
    septal_direction_lps: tuple[float, float, float]  # unit vector across the LV axis towards the RV
    anterior_direction_lps: tuple[float, float, float]  # septal x axis: AHA "anterior" side

    def phase(self, percent: float) -> PhaseTruth:
        for p in self.phases:
            if abs(p.phase_percent - percent) < 1e-9:
                return p
        raise KeyError(percent)


@dataclass(frozen=True)
class HeartPhantom:
    phases: dict[float, Volume]  # nominal percentage of the R-R interval -> volume
    truth: HeartTruth


# --------------------------------------------------------------------------------------------
# geometry helpers


def _unit(v: Sequence[float] | F64) -> F64:
    a = np.asarray(v, dtype=np.float64)
    return a / float(np.linalg.norm(a))


def _across(v: Sequence[float], axis: F64) -> F64:
    """Unit component of ``v`` perpendicular to ``axis``."""
    a = np.asarray(v, dtype=np.float64)
    return _unit(a - float(a @ axis) * axis)


def curve_value(knots: Sequence[tuple[float, float]], percent: float) -> float:
    """Linear interpolation of a periodic volume curve at ``percent`` of the R-R interval."""
    xs = [k[0] for k in knots]
    ys = [k[1] for k in knots]
    return float(np.interp(percent % 100.0, xs, ys))


def _ellipsoid_support(axes: F64, semi: F64) -> F64:
    """Half extent along patient x, y, z of an ellipsoid with unit ``axes`` rows and ``semi``."""
    return np.sqrt(((axes * semi[:, None]) ** 2).sum(axis=0))


@dataclass(frozen=True)
class _Ellipsoid:
    centre: F64
    axes: F64  # 3x3, rows unit vectors
    semi: F64  # (3,)

    @property
    def volume_ml(self) -> float:
        return 4.0 / 3.0 * math.pi * float(np.prod(self.semi)) / 1000.0

    def box(self) -> tuple[F64, F64]:
        h = _ellipsoid_support(self.axes, self.semi)
        return self.centre - h, self.centre + h

    def inside(self, x: F64, y: F64, z: F64) -> NDArray[np.bool_]:
        total: F64 | float = 0.0
        for k in range(3):
            e = self.axes[k]
            proj = (x - self.centre[0]) * e[0] + (y - self.centre[1]) * e[1] + (z - self.centre[2]) * e[2]
            total = total + (proj / self.semi[k]) ** 2
        return np.asarray(total <= 1.0)


# --------------------------------------------------------------------------------------------
# the LV wall: quadrature on the half-spheroid


def _pattern(theta: F64, psi: F64, t0: float, bump: float) -> F64:
    c = np.exp(_BUMP_KAPPA * (np.cos(theta - math.radians(_BUMP_PEAK_DEG)) - 1.0))
    return np.asarray(t0 + bump * c * np.sin(psi) ** 2)


def _surface_grid(a: float, b: float, n_psi: int = 900, n_theta: int = 360) -> tuple[F64, F64, F64, F64, F64]:
    """Midpoint grid on the apical half of the spheroid: psi, theta, dA (mm²), H, K."""
    psi = (np.arange(n_psi) + 0.5) * (math.pi / 2) / n_psi
    theta = (np.arange(n_theta) + 0.5) * (2 * math.pi) / n_theta - math.pi
    s, c = np.sin(psi), np.cos(psi)
    d = np.sqrt(a**2 * s**2 + b**2 * c**2)
    k_meridian = a * b / d**3
    k_parallel = a / (b * d)
    da = b * s * d * (math.pi / 2 / n_psi) * (2 * math.pi / n_theta)
    mean_h = (k_meridian + k_parallel) / 2
    gauss_k = k_meridian * k_parallel
    p2, t2 = np.meshgrid(psi, theta, indexing="ij")
    return p2, t2, np.broadcast_to(da[:, None], p2.shape), mean_h[:, None], gauss_k[:, None]


def _wall_volume_coefficients(a: float, b: float, t0: float, bump: float) -> tuple[float, float, float]:
    """(c1, c2, c3) with wall volume (mm³) = c1 k + c2 k² + c3 k³ for thickness k·pattern."""
    psi, theta, da, mean_h, gauss_k = _surface_grid(a, b)
    tau = _pattern(theta, psi, t0, bump)
    return (
        float((da * tau).sum()),
        float((da * tau**2 * mean_h).sum()),
        float((da * tau**3 * gauss_k / 3.0).sum()),
    )


def wall_volume_ml(a: float, b: float, t0: float, bump: float = 0.0, scale: float = 1.0) -> float:
    """Analytic (quadrature) volume in mL of the LV wall described in the module docstring."""
    c1, c2, c3 = _wall_volume_coefficients(a, b, t0, bump)
    return (c1 * scale + c2 * scale**2 + c3 * scale**3) / 1000.0


def _solve_scale(a: float, b: float, t0: float, bump: float, target_mm3: float) -> float:
    c1, c2, c3 = _wall_volume_coefficients(a, b, t0, bump)
    lo, hi = 0.0, 1.0
    while c1 * hi + c2 * hi**2 + c3 * hi**3 < target_mm3:
        hi *= 2.0
    for _ in range(80):
        mid = (lo + hi) / 2
        if c1 * mid + c2 * mid**2 + c3 * mid**3 < target_mm3:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _segment_of(axial_fraction: F64, theta: F64) -> NDArray[np.int64]:
    """AHA segment (1-16) of surface points at ``axial_fraction`` (0 base, 1 apex) and ``theta``
    (radians from the septal direction towards anterior), as defined in voxa.analysis.cardiac."""
    deg = np.degrees(theta)
    # basal/mid: 2 anteroseptal [0, 60), 1 anterior [60, 120), 6 anterolateral [120, 180),
    # 5 inferolateral [-180, -120), 4 inferior [-120, -60), 3 inferoseptal [-60, 0)
    six = np.array([2, 1, 6, 5, 4, 3])
    sector6 = np.floor(np.mod(deg, 360.0) / 60.0).astype(np.int64) % 6
    # apical: 14 septal [-45, 45), 13 anterior [45, 135), 16 lateral [135, 225), 15 inferior
    four = np.array([14, 13, 16, 15])
    sector4 = np.floor(np.mod(deg + 45.0, 360.0) / 90.0).astype(np.int64) % 4
    ring = np.minimum((axial_fraction * 3.0).astype(np.int64), 2)
    return np.where(ring == 0, six[sector6], np.where(ring == 1, six[sector6] + 6, four[sector4]))


def segment_thickness_truth(a: float, b: float, t0: float, bump: float = 0.0, scale: float = 1.0) -> dict[int, float]:
    """Area-weighted mean wall thickness (mm) per AHA segment of the phantom's LV."""
    psi, theta, da, _, _ = _surface_grid(a, b)
    tau = scale * _pattern(theta, psi, t0, bump)
    axial = np.cos(psi)  # fraction of the length from the base (psi = 90°) to the apex (psi = 0)
    seg = _segment_of(axial, theta)
    out: dict[int, float] = {}
    for s in range(1, 17):
        w = da[seg == s]
        out[s] = float((w * tau[seg == s]).sum() / w.sum())
    out[17] = scale * t0
    return out


def _nearest_on_spheroid(z: F64, rho: F64, a: float, b: float) -> tuple[F64, F64, F64]:
    """Nearest point (q_z, q_rho) on the ellipse z²/a² + rho²/b² = 1 to exterior points, and the
    distance; Newton on the Lagrange parameter (monotone from t = 0 for exterior points)."""
    t = np.zeros_like(z)
    a2, b2 = a * a, b * b
    for _ in range(60):
        fz = a * z / (t + a2)
        fr = b * rho / (t + b2)
        f = fz**2 + fr**2 - 1.0
        df = -2.0 * (fz**2 / (t + a2) + fr**2 / (t + b2))
        step = f / df
        t = t - step
        if float(np.max(np.abs(step), initial=0.0)) < 1e-9:
            break
    qz = a2 * z / (t + a2)
    qr = b2 * rho / (t + b2)
    return qz, qr, np.hypot(z - qz, rho - qr)


# --------------------------------------------------------------------------------------------
# the phantom


@dataclass(frozen=True)
class _Layout:
    u: F64
    septal: F64
    anterior: F64
    base: F64
    rv_offset: F64  # RV centre minus base centre, apart from the per-phase length term
    la_centre: F64
    ra_centre: F64
    aorta_xy: F64
    aorta_radius: float
    spine_xy: F64
    spine_radius: float
    lungs: tuple[tuple[F64, F64], ...]  # (centre xy, semi-axes xy)


def _layout(lv_radius_max: float, wall_max: float, rv_semi_septal_max: float,
            la_semi_max: F64) -> _Layout:
    u = _unit((0.55, -0.45, -0.70))  # base -> apex: left, anterior, inferior
    septal = _across((-1.0, -0.35, 0.15), u)  # towards the RV: right and anterior
    anterior = _unit(np.cross(septal, u))
    posterior = _across((0.0, 1.0, 0.0), u)
    base = np.zeros(3)
    rv_offset = (lv_radius_max + wall_max + _GAP_MM + rv_semi_septal_max) * septal
    # LA on the basal side of the base plane, clear of it by at least the gap
    la_support_u = float(np.sqrt(((la_semi_max * u) ** 2).sum()))
    la_centre = base - (la_support_u + _GAP_MM + 4.0) * u + 12.0 * posterior
    ra_centre = la_centre + np.array([-50.0, -22.0, 2.0])
    aorta_xy = la_centre[:2] + np.array([26.0, 44.0])
    spine_xy = la_centre[:2] + np.array([-4.0, 80.0])
    # the left lung touches the LV lateral wall, the right lung the RA (heart painted over them)
    lung_left = (np.array([base[0] + 100.0, base[1] + 15.0]), np.array([55.0, 80.0]))
    lung_right = (np.array([ra_centre[0] - 62.0, ra_centre[1] + 10.0]), np.array([40.0, 70.0]))
    return _Layout(u, septal, anterior, base, rv_offset, la_centre, ra_centre, aorta_xy, 11.0,
                   spine_xy, 16.0, (lung_left, lung_right))


def _spheroid_radius(volume_ml: float, length_mm: float) -> float:
    return math.sqrt(3.0 * volume_ml * 1000.0 / (2.0 * math.pi * length_mm))


def _scaled_semi(volume_ml: float, shape: tuple[float, float, float]) -> F64:
    r = (3.0 * volume_ml * 1000.0 / (4.0 * math.pi * float(np.prod(shape)))) ** (1.0 / 3.0)
    return r * np.asarray(shape, dtype=np.float64)


def beating_heart_phantom(
    *,
    phases_percent: Sequence[float] = (0, 10, 20, 30, 40, 50, 60, 70, 80, 90),
    spacing_mm: tuple[float, float, float] = (1.25, 1.25, 1.25),
    shape: tuple[int, int, int] | None = None,
    lv_edv_ml: float = 130.0,
    lv_esv_ml: float = 55.0,
    lv_length_ed_mm: float = 88.0,
    lv_length_es_mm: float = 75.0,
    rv_edv_ml: float = 150.0,
    rv_esv_ml: float = 70.0,
    la_max_ml: float = 70.0,
    la_min_ml: float = 35.0,
    ra_max_ml: float = 75.0,
    ra_min_ml: float = 40.0,
    wall_thickness_mm: float = 9.0,
    septal_bump_mm: float = 5.0,
    heart_rate_bpm: float = 60.0,
    blood_hu: float = 350.0,
    right_heart_blood_hu: float = 310.0,
    myocardium_hu: float = 100.0,
    body_hu: float = 40.0,
    lung_hu: float = -800.0,
    bone_hu: float = 700.0,
    noise_sd_hu: float = 0.0,
    seed: int = 0,
    mitral_channel_radius_mm: float = 0.0,
) -> HeartPhantom:
    """Multi-phase CT of a beating heart with analytic chamber volumes, mass and wall thickness.

    ``spacing_mm`` is (z, y, x). Without ``shape`` the field of view is the box around the heart,
    the aorta and the spine plus a 10 mm margin; with it, the grid is centred on that box (a
    ValueError is raised when a heart structure does not fit). ``wall_thickness_mm`` is the ED
    wall everywhere (and at the apex); ``septal_bump_mm`` the extra ED thickness at the centre
    of the anteroseptal wall (see the module docstring). Noise is Gaussian, per phase, seeded.
    Raises ValueError for inconsistent inputs or when structures would overlap.
    """
    phases = [float(p) for p in phases_percent]
    if len(set(phases)) != len(phases) or not phases:
        raise ValueError("phases_percent must be non-empty and distinct")
    if not (0 < lv_esv_ml < lv_edv_ml and 0 < rv_esv_ml < rv_edv_ml):
        raise ValueError("ventricular volumes need 0 < ESV < EDV")
    if not (0 < la_min_ml <= la_max_ml and 0 < ra_min_ml <= ra_max_ml):
        raise ValueError("atrial volumes need 0 < min <= max")
    if not (0 < lv_length_es_mm <= lv_length_ed_mm) or wall_thickness_mm <= 0 or septal_bump_mm < 0:
        raise ValueError("LV lengths and wall thickness must be positive (ES length <= ED length)")
    sz, sy, sx = (float(s) for s in spacing_mm)

    # ---- per-phase analytic geometry
    f_v = {p: curve_value(VENTRICLE_CURVE, p) for p in phases}
    f_a = {p: curve_value(ATRIUM_CURVE, p) for p in phases}
    lv_ml = {p: lv_esv_ml + f_v[p] * (lv_edv_ml - lv_esv_ml) for p in phases}
    lv_a = {p: lv_length_es_mm + f_v[p] * (lv_length_ed_mm - lv_length_es_mm) for p in phases}
    lv_b = {p: _spheroid_radius(lv_ml[p], lv_a[p]) for p in phases}
    rv_ml = {p: rv_esv_ml + f_v[p] * (rv_edv_ml - rv_esv_ml) for p in phases}
    la_ml = {p: la_min_ml + f_a[p] * (la_max_ml - la_min_ml) for p in phases}
    ra_ml = {p: ra_min_ml + f_a[p] * (ra_max_ml - ra_min_ml) for p in phases}
    a_ed, b_ed = lv_length_ed_mm, _spheroid_radius(lv_edv_ml, lv_length_ed_mm)
    myo_mm3 = wall_volume_ml(a_ed, b_ed, wall_thickness_mm, septal_bump_mm) * 1000.0
    scale = {p: _solve_scale(lv_a[p], lv_b[p], wall_thickness_mm, septal_bump_mm, myo_mm3) for p in phases}

    wall_max = max(scale.values()) * (wall_thickness_mm + septal_bump_mm)
    rv_semi_max = _scaled_semi(rv_edv_ml, _RV_SHAPE)
    la_semi_max = _scaled_semi(la_max_ml, _LA_SHAPE)
    lay = _layout(max(lv_b.values()), wall_max, float(rv_semi_max[2]), la_semi_max)
    rv_axes = np.stack([lay.u, lay.anterior, lay.septal])
    world = np.eye(3)

    def rv(p: float) -> _Ellipsoid:
        return _Ellipsoid(lay.base + 0.38 * lv_a[p] * lay.u + lay.rv_offset, rv_axes,
                          _scaled_semi(rv_ml[p], _RV_SHAPE))

    def la(p: float) -> _Ellipsoid:
        return _Ellipsoid(lay.la_centre, world, _scaled_semi(la_ml[p], _LA_SHAPE))

    def ra(p: float) -> _Ellipsoid:
        return _Ellipsoid(lay.ra_centre, world, _scaled_semi(ra_ml[p], _RA_SHAPE))

    def lv_box(p: float) -> tuple[F64, F64]:
        reach = lv_b[p] + scale[p] * (wall_thickness_mm + septal_bump_mm)
        ends = np.stack([lay.base, lay.base + (lv_a[p] + scale[p] * wall_thickness_mm) * lay.u])
        spread = reach * np.sqrt(np.clip(1.0 - lay.u**2, 0.0, 1.0))
        return ends.min(axis=0) - spread, ends.max(axis=0) + spread

    # ---- field of view
    boxes = [lv_box(p) for p in phases]
    for p in phases:
        boxes += [rv(p).box(), la(p).box(), ra(p).box()]
    heart_lo = np.min([bx[0] for bx in boxes], axis=0)
    heart_hi = np.max([bx[1] for bx in boxes], axis=0)
    lo, hi = heart_lo.copy(), heart_hi.copy()
    for xy, r in ((lay.aorta_xy, lay.aorta_radius), (lay.spine_xy, lay.spine_radius)):
        lo[:2] = np.minimum(lo[:2], xy - r)
        hi[:2] = np.maximum(hi[:2], xy + r)
    lo -= 10.0
    hi += 10.0
    step = np.array([sx, sy, sz])  # patient x, y, z
    if shape is None:
        n_xyz = np.ceil((hi - lo) / step).astype(int) + 1
        origin = lo
    else:
        n_xyz = np.array([shape[2], shape[1], shape[0]])
        centre = (heart_lo + heart_hi) / 2
        origin = centre - (n_xyz - 1) / 2 * step
        top = origin + (n_xyz - 1) * step
        if np.any(heart_lo < origin) or np.any(heart_hi > top):
            raise ValueError(f"the heart ({heart_hi - heart_lo} mm) does not fit the grid {shape} x {spacing_mm} mm")
    nx, ny, nz = (int(n) for n in n_xyz)
    xs = origin[0] + np.arange(nx) * sx
    ys = origin[1] + np.arange(ny) * sy
    zs = origin[2] + np.arange(nz) * sz

    def box_slices(b_lo: F64, b_hi: F64) -> tuple[slice, slice, slice]:
        i0 = np.clip(np.floor((b_lo - origin) / step).astype(int), 0, n_xyz)
        i1 = np.clip(np.ceil((b_hi - origin) / step).astype(int) + 1, 0, n_xyz)
        return slice(int(i0[2]), int(i1[2])), slice(int(i0[1]), int(i1[1])), slice(int(i0[0]), int(i1[0]))

    def coords(box: tuple[slice, slice, slice]) -> tuple[F64, F64, F64]:
        return xs[box[2]][None, None, :], ys[box[1]][None, :, None], zs[box[0]][:, None, None]

    # ---- static structures
    static = np.full((nz, ny, nx), body_hu, dtype=np.float32)
    owner = np.zeros((nz, ny, nx), dtype=np.int8)
    x2, y2 = xs[None, :], ys[:, None]
    for centre_xy, semi in lay.lungs:
        inside = ((x2 - centre_xy[0]) / semi[0]) ** 2 + ((y2 - centre_xy[1]) / semi[1]) ** 2 <= 1.0
        static[:, inside] = lung_hu
    r_spine = np.hypot(x2 - lay.spine_xy[0], y2 - lay.spine_xy[1])
    static[:, r_spine <= lay.spine_radius] = bone_hu
    static[:, r_spine <= lay.spine_radius - 2.5] = _TRABECULAR_HU
    owner[:, r_spine <= lay.spine_radius] = 1
    r_aorta = np.hypot(x2 - lay.aorta_xy[0], y2 - lay.aorta_xy[1])
    static[:, r_aorta <= lay.aorta_radius] = blood_hu
    owner[:, r_aorta <= lay.aorta_radius] = 2

    volumes: dict[float, Volume] = {}
    truths: list[PhaseTruth] = []
    channel_ml = 0.0
    for index, p in enumerate(phases):
        canvas = _Canvas(static.copy(), owner.copy(), p)
        paint = canvas.paint
        for code, (name, ell, value) in enumerate(
            (("RV", rv(p), right_heart_blood_hu), ("LA", la(p), blood_hu), ("RA", ra(p), right_heart_blood_hu)),
            start=3,
        ):
            box = box_slices(*ell.box())
            paint(ell.inside(*coords(box)), box, value, code, name)
        if mitral_channel_radius_mm > 0:
            start, end = lay.base, lay.la_centre
            axis = _unit(end - start)
            r = mitral_channel_radius_mm
            box = box_slices(np.minimum(start, end) - r, np.maximum(start, end) + r)
            x, y, z = coords(box)
            along = (x - start[0]) * axis[0] + (y - start[1]) * axis[1] + (z - start[2]) * axis[2]
            dx, dy, dz = x - start[0] - along * axis[0], y - start[1] - along * axis[1], z - start[2] - along * axis[2]
            length = float(np.linalg.norm(end - start))
            mask = (dx**2 + dy**2 + dz**2 <= r * r) & (along >= 0) & (along <= length)
            # the LV cavity and LA are painted over it; only LA may already own these voxels
            paint(mask, box, blood_hu, 6, "mitral channel", allowed=(4,))
            channel_ml = math.pi * r * r * _ray_outside_length(la(p), start, axis, length) / 1000.0
        # LV wall and cavity
        a, b = lv_a[p], lv_b[p]
        box = box_slices(*lv_box(p))
        x, y, z = coords(box)
        rx, ry, rz = x - lay.base[0], y - lay.base[1], z - lay.base[2]
        zp = rx * lay.u[0] + ry * lay.u[1] + rz * lay.u[2]
        vs = rx * lay.septal[0] + ry * lay.septal[1] + rz * lay.septal[2]
        va = rx * lay.anterior[0] + ry * lay.anterior[1] + rz * lay.anterior[2]
        rho = np.hypot(vs, va)
        zp, rho = np.broadcast_arrays(zp, rho)
        vs, va = np.broadcast_arrays(vs, va)
        g = (zp / a) ** 2 + (rho / b) ** 2
        apical = zp >= 0
        cavity = apical & (g <= 1.0)
        t_max = scale[p] * (wall_thickness_mm + septal_bump_mm)
        band = apical & ~cavity & ((np.sqrt(g) - 1.0) * min(a, b) <= t_max)
        qz, qr, dist = _nearest_on_spheroid(zp[band], rho[band], a, b)
        theta = np.arctan2(va[band], vs[band])
        sin_psi = np.clip(qr / b, 0.0, 1.0)
        tau = scale[p] * _pattern(theta, np.arcsin(sin_psi), wall_thickness_mm, septal_bump_mm)
        wall = np.zeros_like(band)
        wall[band] = dist <= tau
        paint(wall, box, myocardium_hu, 7, "LV myocardium", allowed=(6,))
        paint(cavity, box, blood_hu, 8, "LV cavity", allowed=(6,))

        hu = canvas.hu
        if noise_sd_hu > 0:
            rng = np.random.default_rng([seed, index])
            hu += rng.normal(0.0, noise_sd_hu, size=hu.shape).astype(np.float32)
        volumes[p] = Volume(
            voxels=hu,
            spacing_mm=(sz, sy, sx),
            origin_mm=(float(origin[0]), float(origin[1]), float(origin[2])),
            direction=np.eye(3),
            units="HU",
            modality="CT",
            notes=(f"beating_heart_phantom phase {p:g}%",),
        )
        truths.append(PhaseTruth(
            phase_percent=p,
            lv_ml=lv_ml[p],
            rv_ml=rv(p).volume_ml,
            la_ml=la(p).volume_ml,
            ra_ml=ra(p).volume_ml,
            lv_myocardium_ml=myo_mm3 / 1000.0,
            mitral_channel_ml=channel_ml,
            lv_length_mm=a,
            lv_radius_mm=b,
            wall_scale=scale[p],
            segment_thickness_mm=segment_thickness_truth(a, b, wall_thickness_mm, septal_bump_mm, scale[p]),
        ))

    ed = max(truths, key=lambda t: t.lv_ml)
    es = min(truths, key=lambda t: t.lv_ml)
    sv = ed.lv_ml - es.lv_ml
    return HeartPhantom(
        phases=volumes,
        truth=HeartTruth(
            phases=tuple(truths),
            ed_phase_percent=ed.phase_percent,
            es_phase_percent=es.phase_percent,
            lv_edv_ml=ed.lv_ml,
            lv_esv_ml=es.lv_ml,
            lv_sv_ml=sv,
            lv_ef_percent=100.0 * sv / ed.lv_ml,
            rv_edv_ml=ed.rv_ml,
            rv_esv_ml=es.rv_ml,
            rv_sv_ml=ed.rv_ml - es.rv_ml,
            rv_ef_percent=100.0 * (ed.rv_ml - es.rv_ml) / ed.rv_ml,
            la_max_ml=max(t.la_ml for t in truths),
            la_min_ml=min(t.la_ml for t in truths),
            ra_max_ml=max(t.ra_ml for t in truths),
            ra_min_ml=min(t.ra_ml for t in truths),
            lv_myocardium_ml=myo_mm3 / 1000.0,
            lv_mass_g=myo_mm3 / 1000.0 * MYOCARDIAL_DENSITY_G_PER_ML,
            segment_thickness_ed_mm=ed.segment_thickness_mm,
            segment_thickness_es_mm=es.segment_thickness_mm,
            heart_rate_bpm=heart_rate_bpm,
            cardiac_output_l_min=sv * heart_rate_bpm / 1000.0,
            lv_axis_lps=_tuple3(lay.u),
            lv_base_centre_lps=_tuple3(lay.base),
            septal_direction_lps=_tuple3(lay.septal),
            anterior_direction_lps=_tuple3(lay.anterior),
        ),
    )


@dataclass
class _Canvas:
    """One phase being painted: HU and which structure owns each voxel (0 none, lungs included)."""

    hu: NDArray[np.float32]
    owner: NDArray[np.int8]
    phase: float

    def paint(self, mask: NDArray[np.bool_], box: tuple[slice, slice, slice], value: float, code: int,
              name: str, allowed: tuple[int, ...] = ()) -> None:
        clash = self.owner[box][mask]
        if ((clash != 0) & ~np.isin(clash, allowed)).any():
            raise ValueError(f"phantom structures overlap at phase {self.phase:g}% ({name}); adjust the volumes")
        self.hu[box][mask] = value
        self.owner[box][mask] = code


def _tuple3(v: F64) -> tuple[float, float, float]:
    return float(v[0]), float(v[1]), float(v[2])


def _ray_outside_length(ell: _Ellipsoid, start: F64, axis: F64, length: float) -> float:
    """Length of the segment ``start + s·axis``, ``0 <= s <= length``, before it enters ``ell``."""
    m = ell.axes / ell.semi[:, None]
    d0 = m @ (start - ell.centre)
    d1 = m @ axis
    qa, qb, qc = float(d1 @ d1), 2.0 * float(d0 @ d1), float(d0 @ d0) - 1.0
    disc = qb * qb - 4 * qa * qc
    if disc < 0:
        return length
    s_in = (-qb - math.sqrt(disc)) / (2 * qa)
    return float(min(max(s_in, 0.0), length))


__all__ = [
    "ATRIUM_CURVE",
    "AHA_SEGMENT_NAMES",
    "VENTRICLE_CURVE",
    "HeartPhantom",
    "HeartTruth",
    "PhaseTruth",
    "beating_heart_phantom",
    "curve_value",
    "segment_thickness_truth",
    "wall_volume_ml",
]
