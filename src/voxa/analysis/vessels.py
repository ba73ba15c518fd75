"""Vessel analysis on CT angiography: vesselness, segmentation, centreline, diameters, stenosis.

A pure analysis engine (DESIGN.md decision 7): a :class:`~voxa.imaging.volume.Volume` (HU,
explicit spacing and geometry) and points in, typed results out; no database, no I/O. Results
are decision support and carry ``requires_review=True``: a reader must check the segmentation,
the centreline and the reference segments before a measurement is reported.

Geometry. All distances are in mm and respect anisotropic voxels. Internally points live in the
volume's *frame*, ``q = (k sz, j sy, i sx)`` (mm, (z, y, x) order), which is a rigid image of
patient space when the volume's direction cosines are orthonormal (checked); results give every
point both as fractional voxel indices ``(k, j, i)`` and as patient (LPS) coordinates in mm.

Steps (all documented in ``docs/analysis-vessels.md``):

1. :func:`vesselness` - multiscale Hessian "vesselness" of Frangi et al. (MICCAI 1998,
   LNCS 1496:130-137) for bright tubes, with Gaussian derivatives in mm (sigma per axis =
   ``sigma_mm / spacing``), scale-normalised by ``sigma_mm²`` so responses are in HU.
2. :func:`grow_region` - seeded region growing: the connected component (6/18/26) of the
   voxels inside an HU window (optionally also above a vesselness threshold) that holds the
   seed, inside an optional region of interest.
3. :func:`extract_centerline` - minimal-cost path (``skimage.graph.MCP_Geometric`` with the
   voxel spacing) through the segmentation from a start to an end point, the cost favouring
   voxels far from the wall; smoothed, resampled every ``step_mm`` and re-centred on the
   centroids of the orthogonal cross-sections.
4. :func:`measure_cross_sections` - on the plane perpendicular to the local centreline
   direction, HU is sampled (trilinear, ``scipy.ndimage.map_coordinates``) on a fine grid; the
   lumen is the connected region at or above the half-maximum boundary HU that contains the
   centre: area (mm²), equivalent diameter ``2 sqrt(area / pi)``, minimum and maximum caliper
   (Feret) diameters.
5. :func:`measure_stenosis` - NASCET-style diameter stenosis ``1 - d_min / d_reference``, the
   reference given or the median diameter of the healthy segments just proximal and distal to
   the lesion.

:func:`analyse_vessel` runs the whole chain in a region of interest around the points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage
from skimage.graph import MCP_Geometric

from voxa.imaging.volume import Volume

ALGORITHM_VERSION = "voxa-vessels-1.0"

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
Box = tuple[slice, slice, slice]

_STRUCTURES = {6: 1, 18: 2, 26: 3}


# ---------------------------------------------------------------- points


@dataclass(frozen=True)
class VoxelPoint:
    """A point given as (fractional) voxel indices in the volume's (z, y, x) order."""

    k: float
    j: float
    i: float


@dataclass(frozen=True)
class PatientPoint:
    """A point given in patient (LPS) coordinates, mm."""

    x_mm: float
    y_mm: float
    z_mm: float


Point = VoxelPoint | PatientPoint


def _to_index(volume: Volume, point: Point) -> F64:
    if isinstance(point, VoxelPoint):
        index = np.array([point.k, point.j, point.i], dtype=np.float64)
    elif isinstance(point, PatientPoint):
        index = volume.patient_to_index([point.x_mm, point.y_mm, point.z_mm])
    else:
        raise TypeError(f"expected a VoxelPoint or PatientPoint, got {type(point).__name__}")
    if not np.all(np.isfinite(index)):
        raise ValueError(f"point {point} is not finite")
    return np.asarray(index, dtype=np.float64)


def _inside_volume(index: F64, shape: tuple[int, ...]) -> bool:
    return bool(np.all(index >= -0.5) and np.all(index <= np.asarray(shape) - 0.5))


def _spacing(volume: Volume) -> F64:
    spacing = np.asarray(volume.spacing_mm, dtype=np.float64)
    if spacing.shape != (3,) or not np.all(np.isfinite(spacing)) or not np.all(spacing > 0):
        raise ValueError(f"spacing_mm must be three positive numbers, got {volume.spacing_mm}")
    return spacing


def _frame_to_patient_rotation(volume: Volume) -> F64:
    """Rotation taking frame vectors (z, y, x mm) to patient vectors (x, y, z mm)."""
    d = np.asarray(volume.direction, dtype=np.float64)
    if not np.allclose(d @ d.T, np.eye(3), atol=1e-4):
        raise ValueError("vessel measurements need orthonormal direction cosines (resample first)")
    return np.stack([d[2], d[1], d[0]], axis=1)


def roi_around(volume: Volume, points: list[Point], margin_mm: float) -> Box:
    """Voxel box holding ``points`` plus ``margin_mm`` on every side, clipped to the volume."""
    if not margin_mm >= 0:
        raise ValueError("margin_mm must be >= 0")
    spacing = _spacing(volume)
    index = np.stack([_to_index(volume, p) for p in points])
    for p, ix in zip(points, index, strict=True):
        if not _inside_volume(ix, volume.shape):
            raise ValueError(f"point {p} lies outside the volume {volume.shape}")
    pad = margin_mm / spacing
    lo = np.maximum(np.floor(index.min(axis=0) - pad), 0).astype(int)
    hi = np.minimum(np.ceil(index.max(axis=0) + pad) + 1, volume.shape).astype(int)
    return (slice(int(lo[0]), int(hi[0])), slice(int(lo[1]), int(hi[1])), slice(int(lo[2]), int(hi[2])))


def _box_offset(box: Box) -> F64:
    return np.array([s.start for s in box], dtype=np.float64)


def _bbox(mask: BoolArray, pad: int) -> Box:
    coords = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != n))) for n in range(3)]
    return tuple(  # type: ignore[return-value]
        slice(max(int(c[0]) - pad, 0), min(int(c[-1]) + pad + 1, mask.shape[n])) for n, c in enumerate(coords)
    )


# ---------------------------------------------------------------- vesselness


def _gaussian_second_derivatives(image: F32, sigma_vox: F64, spacing: F64, truncate: float) -> list[F32]:
    """dzz, dyy, dxx, dzy, dzx, dyx of the Gaussian-smoothed image, in HU/mm² (separable passes)."""

    def g(a: F32, axis: int, order: int) -> F32:
        return ndimage.gaussian_filter1d(
            a,
            float(sigma_vox[axis]),
            axis=axis,
            order=order,
            mode="nearest",
            truncate=truncate,
            output=np.float32,
        )

    z0, z1, z2 = (g(image, 0, o) for o in (0, 1, 2))
    y00, y01, y02 = (g(z0, 1, o) for o in (0, 1, 2))
    y10, y11 = g(z1, 1, 0), g(z1, 1, 1)
    y20 = g(z2, 1, 0)
    sz, sy, sx = (float(v) for v in spacing)
    dxx = g(y00, 2, 2) / np.float32(sx * sx)
    dyx = g(y01, 2, 1) / np.float32(sy * sx)
    dyy = g(y02, 2, 0) / np.float32(sy * sy)
    dzx = g(y10, 2, 1) / np.float32(sz * sx)
    dzy = g(y11, 2, 0) / np.float32(sz * sy)
    dzz = g(y20, 2, 0) / np.float32(sz * sz)
    return [dzz, dyy, dxx, dzy, dzx, dyx]


def symmetric_eigenvalues(a11: F64, a22: F64, a33: F64, a12: F64, a13: F64, a23: F64) -> F64:
    """Eigenvalues of symmetric 3x3 matrices given by their six entries, (N, 3), sorted by |value|.

    Closed form (trigonometric solution of the characteristic cubic; O. K. Smith, Commun ACM
    1961;4:168), vectorised.
    """
    q = (a11 + a22 + a33) / 3.0
    p1 = a12**2 + a13**2 + a23**2
    b11, b22, b33 = a11 - q, a22 - q, a33 - q
    p2 = b11**2 + b22**2 + b33**2 + 2.0 * p1
    p = np.sqrt(p2 / 6.0)
    safe = np.where(p > 0, p, 1.0)
    det = (
        b11 * (b22 * b33 - a23 * a23) - a12 * (a12 * b33 - a23 * a13) + a13 * (a12 * a23 - b22 * a13)
    ) / safe**3
    r = np.clip(det / 2.0, -1.0, 1.0)
    phi = np.arccos(r) / 3.0
    e1 = q + 2.0 * p * np.cos(phi)
    e3 = q + 2.0 * p * np.cos(phi + 2.0 * np.pi / 3.0)
    e2 = 3.0 * q - e1 - e3
    eig = np.stack([e1, e2, e3], axis=-1)
    order = np.argsort(np.abs(eig), axis=-1)
    return np.take_along_axis(eig, order, axis=-1)


def hessian_eigenvalues(
    volume: Volume, sigma_mm: float, *, mask: BoolArray | None = None, truncate: float = 3.0
) -> F64:
    """Scale-normalised Hessian eigenvalues (HU) at ``sigma_mm``, (N, 3) sorted by |value|.

    Gaussian derivatives are taken in mm (per-axis sigma ``sigma_mm / spacing``) and multiplied
    by ``sigma_mm²`` (Lindeberg's gamma = 1 normalisation), so a structure of a given contrast
    gives comparable values at every scale and spacing. Returned for the voxels of ``mask``
    (all voxels when ``None``), in C order.
    """
    spacing = _spacing(volume)
    if not sigma_mm > 0:
        raise ValueError("sigma_mm must be positive")
    image = np.asarray(volume.voxels, dtype=np.float32)
    dzz, dyy, dxx, dzy, dzx, dyx = _gaussian_second_derivatives(image, sigma_mm / spacing, spacing, truncate)
    select = np.ones(image.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if select.shape != image.shape:
        raise ValueError(f"mask shape {select.shape} differs from the volume {image.shape}")
    s2 = sigma_mm**2
    return symmetric_eigenvalues(
        *(np.asarray(d[select], dtype=np.float64) * s2 for d in (dzz, dyy, dxx, dzy, dzx, dyx))
    )


def frangi_response(eigenvalues: F64, *, alpha: float, beta: float, c_hu: float, bright: bool = True) -> F64:
    """Frangi's vesselness of eigenvalues sorted by |value| (``|l1| <= |l2| <= |l3|``), in [0, 1].

    ``V = (1 - exp(-Ra² / 2 alpha²)) exp(-Rb² / 2 beta²) (1 - exp(-S² / 2 c²))`` with
    ``Ra = |l2| / |l3|`` (plate vs line), ``Rb = |l1| / sqrt(|l2 l3|)`` (blob vs line) and
    ``S = sqrt(l1² + l2² + l3²)`` (structure vs noise, HU); 0 unless ``l2, l3 < 0`` (bright
    tubes; ``> 0`` for dark ones).
    """
    l1, l2, l3 = eigenvalues[:, 0], eigenvalues[:, 1], eigenvalues[:, 2]
    a2, a3 = np.abs(l2), np.abs(l3)
    with np.errstate(divide="ignore", invalid="ignore"):
        ra = np.where(a3 > 0, a2 / a3, 0.0)
        rb = np.where(a2 * a3 > 0, np.abs(l1) / np.sqrt(a2 * a3), np.inf)
    s2 = l1**2 + l2**2 + l3**2
    v = (
        (1.0 - np.exp(-(ra**2) / (2 * alpha**2)))
        * np.exp(-(rb**2) / (2 * beta**2))
        * (1.0 - np.exp(-s2 / (2 * c_hu**2)))
    )
    wrong_sign = (l2 > 0) | (l3 > 0) if bright else (l2 < 0) | (l3 < 0)
    return np.where(wrong_sign | ~np.isfinite(v), 0.0, v)


@dataclass(frozen=True)
class FrangiParameters:
    """Parameters of :func:`vesselness` (see there)."""

    sigmas_mm: tuple[float, ...] = (0.75, 1.25, 2.0)
    alpha: float = 0.5
    beta: float = 0.5
    c_hu: float = 80.0
    bright: bool = True


def vesselness(
    volume: Volume,
    *,
    sigmas_mm: tuple[float, ...] = (0.75, 1.25, 2.0),
    alpha: float = 0.5,
    beta: float = 0.5,
    c_hu: float = 80.0,
    bright: bool = True,
    mask: BoolArray | None = None,
) -> F32:
    """Multiscale Frangi vesselness in [0, 1] (maximum over ``sigmas_mm``), same shape as the volume.

    ``sigmas_mm``: Gaussian scales in mm; a bright solid cylinder of radius r responds most near
    ``sigma = 0.7-0.8 r`` (measured on the phantom, see the docs), so cover the radii of
    interest, and keep sigmas at least about the largest voxel spacing (a sampled Gaussian
    narrower than a voxel is inaccurate). ``alpha`` (0.5) and ``beta`` (0.5) are
    Frangi's sensitivities to the plate-like and blob-like measures; ``c_hu`` is the
    structureness sensitivity in scale-normalised HU (Frangi suggested half the largest Hessian
    norm; a vessel with 350-500 HU of contrast gives S of about 100-160 HU at its best scale, the
    flank of a large bright chamber 10-30 HU, so 80 HU keeps the first and damps the second).
    Voxels outside ``mask`` are 0 and cost nothing for the eigen-analysis.
    """
    if not sigmas_mm:
        raise ValueError("need at least one sigma")
    for name, value in (("alpha", alpha), ("beta", beta), ("c_hu", c_hu), *(("sigma", s) for s in sigmas_mm)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number, got {value}")
    shape = volume.shape
    select = np.ones(shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    out = np.zeros(shape, dtype=np.float32)
    if not select.any():
        return out
    best = np.zeros(int(select.sum()), dtype=np.float64)
    for sigma in sigmas_mm:
        eig = hessian_eigenvalues(volume, sigma, mask=select)
        best = np.maximum(best, frangi_response(eig, alpha=alpha, beta=beta, c_hu=c_hu, bright=bright))
    out[select] = best.astype(np.float32)
    return out


# ---------------------------------------------------------------- segmentation


@dataclass(frozen=True, eq=False)
class VesselSegmentation:
    """A vessel lumen label mask and the HU levels measured around it."""

    mask: BoolArray  # (z, y, x), the volume's shape: the label for a DICOM SEG
    seed_voxel: tuple[int, int, int]  # (k, j, i) the region grew from
    voxel_count: int
    volume_mm3: float
    hu_window: tuple[float, float] | None  # inclusive HU range used (None for an external mask)
    min_vesselness: float | None
    connectivity: int
    lumen_hu: float  # median HU of the mask's interior (mask eroded by one voxel)
    surround_hu: float  # median HU of the voxels 1-2.5 mm outside the mask
    boundary_hu: float  # half-maximum lumen edge: (lumen_hu + surround_hu) / 2
    requires_review: bool = True
    algorithm_version: str = ALGORITHM_VERSION
    notes: tuple[str, ...] = field(default_factory=tuple)


def _levels(hu: F32, mask: BoolArray, spacing: F64) -> tuple[float, float]:
    """Median HU of the mask's interior and of a shell 1-2.5 mm outside it."""
    pad = int(np.ceil(2.5 / spacing.min())) + 1
    box = _bbox(mask, pad)
    m = mask[box]
    h = hu[box]
    core = ndimage.binary_erosion(m)
    lumen = float(np.median(h[core] if core.any() else h[m]))
    outside = ndimage.distance_transform_edt(~m, sampling=spacing)
    shell = (outside >= 1.0) & (outside <= 2.5)
    surround = float(np.median(h[shell])) if shell.any() else float("nan")
    return lumen, surround


def _make_segmentation(
    volume: Volume,
    mask: BoolArray,
    seed: tuple[int, int, int],
    hu_window: tuple[float, float] | None,
    min_vesselness: float | None,
    connectivity: int,
    notes: list[str],
) -> VesselSegmentation:
    spacing = _spacing(volume)
    count = int(mask.sum())
    lumen, surround = _levels(np.asarray(volume.voxels, dtype=np.float32), mask, spacing)
    if not math.isfinite(surround):
        notes.append("no voxels around the mask: the boundary HU falls back to the lumen HU window floor")
        surround = hu_window[0] if hu_window is not None else lumen / 2
    return VesselSegmentation(
        mask=mask,
        seed_voxel=seed,
        voxel_count=count,
        volume_mm3=count * float(np.prod(spacing)),
        hu_window=hu_window,
        min_vesselness=min_vesselness,
        connectivity=connectivity,
        lumen_hu=lumen,
        surround_hu=surround,
        boundary_hu=(lumen + surround) / 2.0,
        notes=tuple(notes),
    )


def _snap(index: F64, allowed: BoolArray, spacing: F64, radius_mm: float) -> tuple[int, int, int] | None:
    """The allowed voxel nearest (in mm) to ``index`` within ``radius_mm``, or None."""
    centre = np.clip(np.rint(index).astype(int), 0, np.asarray(allowed.shape) - 1)
    if allowed[tuple(centre)]:
        return int(centre[0]), int(centre[1]), int(centre[2])
    reach = np.ceil(radius_mm / spacing).astype(int)
    lo = np.maximum(centre - reach, 0)
    hi = np.minimum(centre + reach + 1, allowed.shape)
    sub = allowed[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    if not sub.any():
        return None
    cand = np.argwhere(sub) + lo
    dist = np.linalg.norm((cand - index) * spacing, axis=1)
    best = int(np.argmin(dist))
    if dist[best] > radius_mm:
        return None
    k, j, i = (int(v) for v in cand[best])
    return k, j, i


def grow_region(
    volume: Volume,
    seed: Point,
    *,
    hu_window: tuple[float, float] = (150.0, 1000.0),
    connectivity: int = 26,
    roi: Box | None = None,
    min_vesselness: float | None = None,
    vesselness_map: F32 | None = None,
    frangi: FrangiParameters = FrangiParameters(),
    gate_dilation_mm: float = 1.0,
    snap_radius_mm: float = 1.0,
) -> VesselSegmentation:
    """Seeded region growing: the connected component of candidate voxels that holds the seed.

    Candidates: ``hu_window[0] <= HU <= hu_window[1]`` (inclusive; the upper bound keeps out
    dense calcium and metal). ``connectivity`` 6, 18 or 26. ``roi`` (a voxel box, see
    :func:`roi_around`) confines the growth; the returned mask has the volume's full shape.
    The seed snaps to the nearest candidate within ``snap_radius_mm`` (a click beside a thin
    vessel); otherwise ValueError.

    Vesselness gating (``min_vesselness`` set): the region first grows through candidates whose
    vesselness (``vesselness_map`` of the ROI's shape, or computed with ``frangi`` inside the ROI
    on candidate voxels) is at least ``min_vesselness``, then the HU candidates within
    ``gate_dilation_mm`` of that core are added back (vesselness is low at the lumen wall). This
    stops leaks into large touching bright structures (a contrast-filled chamber); it does not
    stop leaks into thin plates (their rims look tubular) or vessel-sized blobs, and it can cut
    a vessel at a tight stenosis (low vesselness there). See the docs.
    """
    spacing = _spacing(volume)
    if connectivity not in _STRUCTURES:
        raise ValueError(f"connectivity must be 6, 18 or 26, got {connectivity}")
    low, high = (float(v) for v in hu_window)
    if not low <= high:
        raise ValueError(f"hu_window must be (low, high) with low <= high, got {hu_window}")
    index = _to_index(volume, seed)
    if not _inside_volume(index, volume.shape):
        raise ValueError(f"seed {seed} lies outside the volume (shape {volume.shape})")
    box: Box = (
        roi
        if roi is not None
        else (slice(0, volume.shape[0]), slice(0, volume.shape[1]), slice(0, volume.shape[2]))
    )
    offset = _box_offset(box)
    local_index = index - offset
    hu = np.asarray(volume.voxels[box], dtype=np.float32)
    if not _inside_volume(local_index, hu.shape):
        raise ValueError(f"seed {seed} lies outside the region of interest")
    candidate = (hu >= low) & (hu <= high)
    structure = ndimage.generate_binary_structure(3, _STRUCTURES[connectivity])
    notes: list[str] = []
    grow_from = candidate
    if min_vesselness is not None:
        if vesselness_map is None:
            # Gating only removes voxels from the HU region, so vesselness is needed on that
            # region alone: its bounding box plus the filters' reach, not the whole ROI.
            hu_start = _snap(local_index, candidate, spacing, snap_radius_mm)
            vmap = np.zeros(hu.shape, dtype=np.float32)
            if hu_start is not None:
                hu_labels, _ = ndimage.label(candidate, structure=structure)
                hu_region = hu_labels == hu_labels[hu_start]
                reach = int(np.ceil(3 * max(frangi.sigmas_mm) / spacing.min())) + 1
                sub = _bbox(hu_region, reach)
                sub_volume = Volume(
                    voxels=hu[sub],
                    spacing_mm=volume.spacing_mm,
                    origin_mm=(0.0, 0.0, 0.0),
                    direction=np.eye(3),
                )
                vmap[sub] = vesselness(
                    sub_volume,
                    sigmas_mm=frangi.sigmas_mm,
                    alpha=frangi.alpha,
                    beta=frangi.beta,
                    c_hu=frangi.c_hu,
                    bright=frangi.bright,
                    mask=hu_region[sub],
                )
        else:
            vmap = np.asarray(vesselness_map, dtype=np.float32)
            if vmap.shape != hu.shape:
                raise ValueError(f"vesselness_map shape {vmap.shape} differs from the region {hu.shape}")
        grow_from = candidate & (vmap >= min_vesselness)
        notes.append(
            f"vesselness-gated growth (>= {min_vesselness}), HU voxels within {gate_dilation_mm} mm added back"
        )
    start = _snap(local_index, grow_from, spacing, snap_radius_mm)
    if start is None:
        raise ValueError(
            f"seed {seed} is not in a vessel: no voxel within {snap_radius_mm} mm has HU in "
            f"[{low}, {high}]"
            + (f" and vesselness >= {min_vesselness}" if min_vesselness is not None else "")
        )
    labels, _ = ndimage.label(grow_from, structure=structure)
    region = labels == labels[start]
    if min_vesselness is not None:
        sub = _bbox(region, int(np.ceil(gate_dilation_mm / spacing.min())) + 1)
        near = ndimage.distance_transform_edt(~region[sub], sampling=spacing) <= gate_dilation_mm
        grown = np.zeros_like(region)
        grown[sub] = near & candidate[sub]
        labels, _ = ndimage.label(grown, structure=structure)
        region = labels == labels[start]
    if region.all() or region.sum() > 0.5 * region.size:
        notes.append("the region fills over half of the region of interest: check for a leak")
    mask = np.zeros(volume.shape, dtype=bool)
    mask[box] = region
    seed_voxel = (int(start[0] + offset[0]), int(start[1] + offset[1]), int(start[2] + offset[2]))
    return _make_segmentation(volume, mask, seed_voxel, (low, high), min_vesselness, connectivity, notes)


def segmentation_from_mask(volume: Volume, mask: BoolArray) -> VesselSegmentation:
    """Wrap an external lumen mask (an AI model's, an edited one) for centreline and measurements."""
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != volume.shape:
        raise ValueError(f"mask shape {mask.shape} differs from the volume {volume.shape}")
    if not mask.any():
        raise ValueError("empty segmentation: the mask has no voxel")
    first = np.argwhere(mask)[0]
    return _make_segmentation(
        volume, mask, (int(first[0]), int(first[1]), int(first[2])), None, None, 26, ["external mask"]
    )


# ---------------------------------------------------------------- cross-sections


def _plane_axes(tangents: F64) -> tuple[F64, F64]:
    """Two unit vectors spanning the plane perpendicular to each tangent (N, 3)."""
    helper = np.zeros_like(tangents)
    helper[np.arange(len(tangents)), np.argmin(np.abs(tangents), axis=1)] = 1.0
    u = np.cross(tangents, helper)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    v = np.cross(tangents, u)
    return u, v


@dataclass(frozen=True)
class _Sections:
    area_mm2: F64
    centroid_offset_mm: F64  # (N, 3) frame mm, from the point to the lumen centroid
    min_diameter_mm: F64
    max_diameter_mm: F64
    valid: BoolArray
    notes: tuple[str, ...]


def _cross_sections(
    hu: F32,
    allowed: BoolArray,
    spacing: F64,
    points_q: F64,
    tangents: F64,
    *,
    boundary_hu: float,
    half_width_mm: float,
    step_mm: float,
    n_angles: int = 90,
    order: int = 3,
    chunk: int = 32,
) -> _Sections:
    n = len(points_q)
    # Spline coefficients once: cubic interpolation adds no blur of its own (trilinear does).
    coefficients = (
        ndimage.spline_filter(hu, order=order, mode="nearest", output=np.float32) if order > 1 else hu
    )
    u, v = _plane_axes(tangents)
    m = int(np.ceil(half_width_mm / step_mm))
    offsets = np.arange(-m, m + 1) * step_mm
    a_grid, b_grid = np.meshgrid(offsets, offsets, indexing="ij")
    size = 2 * m + 1
    angles = np.linspace(0.0, np.pi, n_angles, endpoint=False)
    directions = np.stack([np.cos(angles), np.sin(angles)])
    area = np.zeros(n)
    centroid = np.zeros((n, 3))
    dmin = np.full(n, np.nan)
    dmax = np.full(n, np.nan)
    valid = np.zeros(n, dtype=bool)
    problems: set[str] = set()
    upper = np.asarray(hu.shape) - 1
    structure = np.ones((3, 3), dtype=bool)
    near_centre = (a_grid**2 + b_grid**2) <= max(1.0, 2 * step_mm) ** 2
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        p = points_q[start:stop, None, None, :]
        q = (
            p
            + a_grid[None, :, :, None] * u[start:stop, None, None, :]
            + b_grid[None, :, :, None] * v[start:stop, None, None, :]
        )
        index = q / spacing
        sampled = ndimage.map_coordinates(
            coefficients, index.reshape(-1, 3).T, order=order, mode="nearest", prefilter=False
        )
        sampled = sampled.reshape(stop - start, size, size)
        nearest = np.clip(np.rint(index).astype(int), 0, upper)
        in_allowed = allowed[nearest[..., 0], nearest[..., 1], nearest[..., 2]]
        outside_volume = np.any((index < -0.5) | (index > upper + 0.5), axis=-1)
        lumen = (sampled >= boundary_hu) & in_allowed & ~outside_volume
        for row in range(stop - start):
            plane = lumen[row]
            labels, _ = ndimage.label(plane, structure=structure)
            pick = int(labels[m, m])
            if pick == 0:
                candidates = labels[near_centre & (labels > 0)]
                if candidates.size == 0:
                    problems.add(
                        "no lumen at the centre of some cross-sections (occlusion, or below resolution)"
                    )
                    continue
                pick = int(np.bincount(candidates).argmax())
            component = labels == pick
            if (
                component[0, :].any()
                or component[-1, :].any()
                or component[:, 0].any()
                or component[:, -1].any()
            ):
                problems.add(
                    "some cross-sections reach the edge of the sampling plane (leak, or a touching structure)"
                )
                continue
            count = int(component.sum())
            a_c, b_c = a_grid[component], b_grid[component]
            k = start + row
            area[k] = count * step_mm**2
            centroid[k] = a_c.mean() * u[k] + b_c.mean() * v[k]
            proj = np.stack([a_c, b_c], axis=1) @ directions
            widths = proj.max(axis=0) - proj.min(axis=0) + step_mm
            dmin[k], dmax[k] = float(widths.min()), float(widths.max())
            valid[k] = True
    return _Sections(area, centroid, dmin, dmax, valid, tuple(sorted(problems)))


# ---------------------------------------------------------------- centreline


@dataclass(frozen=True, eq=False)
class Centerline:
    """A vessel centreline sampled every ``step_mm`` of arc length, from start to end."""

    points_voxel: F64  # (N, 3) fractional voxel indices (k, j, i)
    points_patient_mm: F64  # (N, 3) patient (LPS) x, y, z in mm
    tangents_patient: F64  # (N, 3) unit direction of travel, patient space
    arc_length_mm: F64  # (N,) from the start
    length_mm: float
    step_mm: float
    requires_review: bool = True
    algorithm_version: str = ALGORITHM_VERSION
    notes: tuple[str, ...] = field(default_factory=tuple)


def _resample(points: F64, step_mm: float) -> F64:
    """Points at uniform arc length ``step_mm`` along the polyline (last point kept)."""
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    arc = np.concatenate(([0.0], np.cumsum(seg)))
    total = float(arc[-1])
    if total <= 0:
        return points[:1].copy()
    n = max(2, int(np.floor(total / step_mm)) + 1)
    targets = np.arange(n) * step_mm
    if total - targets[-1] > 1e-6 * step_mm:
        targets = np.append(targets, total)
    return np.stack([np.interp(targets, arc, points[:, d]) for d in range(3)], axis=1)


def _smooth(points: F64, sigma_samples: float) -> F64:
    """Gaussian smoothing along the curve; odd reflection at both ends keeps straight ends straight."""
    if sigma_samples <= 0 or len(points) < 3:
        return points.copy()
    pad = min(len(points) - 1, int(np.ceil(3 * sigma_samples)))
    head = 2 * points[0] - points[pad:0:-1]
    tail = 2 * points[-1] - points[-2 : -pad - 2 : -1]
    padded = np.concatenate([head, points, tail])
    smoothed = ndimage.gaussian_filter1d(padded, sigma_samples, axis=0, mode="nearest")
    return np.asarray(smoothed[pad : pad + len(points)], dtype=np.float64)


def _tangents(points: F64) -> F64:
    t = np.gradient(points, axis=0)
    norm = np.linalg.norm(t, axis=1, keepdims=True)
    return np.asarray(t / np.where(norm > 0, norm, 1.0), dtype=np.float64)


def _minimal_path(
    mask: BoolArray, spacing: F64, start: tuple[int, int, int], end: tuple[int, int, int] | None
) -> tuple[F64, tuple[int, int, int]]:
    dt = ndimage.distance_transform_edt(mask, sampling=spacing)
    if end is None:
        geodesic = MCP_Geometric(np.where(mask, 1.0, np.inf), fully_connected=True, sampling=tuple(spacing))
        reach, _ = geodesic.find_costs([start])
        reach = np.where(np.isfinite(reach), reach, -1.0)
        far = np.unravel_index(int(np.argmax(reach)), reach.shape)
        end = (int(far[0]), int(far[1]), int(far[2]))
    # Cost per mm: 1 on the ridge of the distance map, growing as (dt_max / dt)² towards the wall.
    dt_max = float(dt.max())
    cost = np.where(mask, (dt_max / np.maximum(dt, 1e-6)) ** 2, np.inf)
    mcp = MCP_Geometric(cost, fully_connected=True, sampling=tuple(spacing))
    cumulative, _ = mcp.find_costs([start], [end])
    if not np.isfinite(cumulative[end]):
        raise ValueError("start and end are not connected within the segmentation")
    path = np.asarray(mcp.traceback(end), dtype=np.float64)
    return path, end


def extract_centerline(
    volume: Volume,
    segmentation: VesselSegmentation,
    start: Point,
    end: Point | None = None,
    *,
    step_mm: float = 0.5,
    smoothing_mm: float = 1.0,
    recentre_iterations: int = 2,
    boundary_hu: float | None = None,
    snap_radius_mm: float = 2.0,
    plane_step_mm: float | None = None,
) -> Centerline:
    """Centreline of the segmented vessel from ``start`` to ``end`` (or to the farthest point).

    1. ``start`` and ``end`` snap to the nearest mask voxel within ``snap_radius_mm``
       (ValueError otherwise); without ``end`` the path runs to the mask voxel farthest from
       the start along the vessel (geodesic distance).
    2. Minimal-cost path through the mask (26-neighbour moves weighted by their length in mm),
       cost per mm ``(dt_max / dt)²`` with ``dt`` the distance to the wall, so it follows the
       medial ridge.
    3. Resampled every ``step_mm``, Gaussian-smoothed along the arc (``smoothing_mm``), then
       ``recentre_iterations`` times moved to the centroid of the lumen on the plane
       perpendicular to the curve (see :func:`measure_cross_sections`) and smoothed again.
    """
    spacing = _spacing(volume)
    rotation = _frame_to_patient_rotation(volume)
    mask_full = np.asarray(segmentation.mask, dtype=bool)
    if mask_full.shape != volume.shape:
        raise ValueError(f"segmentation shape {mask_full.shape} differs from the volume {volume.shape}")
    if not mask_full.any():
        raise ValueError("empty segmentation: no voxel to trace a centreline through")
    for name, value in (("step_mm", step_mm), ("snap_radius_mm", snap_radius_mm)):
        if not value > 0:
            raise ValueError(f"{name} must be positive")
    box = _bbox(mask_full, 2)
    offset = _box_offset(box)
    mask = mask_full[box]
    points = [start] + ([end] if end is not None else [])
    snapped: list[tuple[int, int, int]] = []
    notes: list[str] = []
    for name, point in zip(("start", "end"), points, strict=False):
        index = _to_index(volume, point)
        if not _inside_volume(index, volume.shape):
            raise ValueError(f"{name} point {point} lies outside the volume (shape {volume.shape})")
        s = _snap(index - offset, mask, spacing, snap_radius_mm)
        if s is None:
            raise ValueError(f"{name} point {point} is not within {snap_radius_mm} mm of the segmentation")
        moved_mm = float(np.linalg.norm((np.asarray(s) + offset - index) * spacing))
        if moved_mm > float(spacing.max()):
            notes.append(f"{name} point moved {moved_mm:.1f} mm onto the segmentation")
        snapped.append(s)
    path, _ = _minimal_path(mask, spacing, snapped[0], snapped[1] if len(snapped) > 1 else None)
    if len(path) < 2:
        raise ValueError("start and end are the same voxel: no centreline")
    hu = np.asarray(volume.voxels[box], dtype=np.float32)
    allowed = ndimage.binary_dilation(mask, structure=np.ones((3, 3, 3), dtype=bool))
    boundary = segmentation.boundary_hu if boundary_hu is None else float(boundary_hu)
    # Centroids need less resolution than areas: half the smallest spacing by default.
    plane_step = float(np.min(spacing)) / 2 if plane_step_mm is None else plane_step_mm
    dt = ndimage.distance_transform_edt(mask, sampling=spacing)
    q = _resample(path * spacing, step_mm)
    sigma = smoothing_mm / step_mm
    q = _resample(_smooth(q, sigma), step_mm)
    for _ in range(max(0, recentre_iterations)):
        if len(q) < 3:
            break
        local = np.clip(np.rint(q / spacing).astype(int), 0, np.asarray(mask.shape) - 1)
        radius = float(dt[local[:, 0], local[:, 1], local[:, 2]].max())
        sections = _cross_sections(
            hu,
            allowed,
            spacing,
            q,
            _tangents(q),
            boundary_hu=boundary,
            half_width_mm=2 * radius + 2 * float(spacing.max()),
            step_mm=plane_step,
            n_angles=1,
        )
        moved = q + np.where(sections.valid[:, None], sections.centroid_offset_mm, 0.0)
        q = _resample(_smooth(moved, sigma), step_mm)
    if len(q) < 2:
        raise ValueError("the centreline is shorter than one step")
    arc = np.concatenate(([0.0], np.cumsum(np.linalg.norm(np.diff(q, axis=0), axis=1))))
    q_full = q + offset * spacing
    index = q_full / spacing
    return Centerline(
        points_voxel=index,
        points_patient_mm=volume.index_to_patient(index),
        tangents_patient=_tangents(q) @ rotation.T,
        arc_length_mm=arc,
        length_mm=float(arc[-1]),
        step_mm=step_mm,
        notes=tuple(notes),
    )


# ---------------------------------------------------------------- measurements


@dataclass(frozen=True, eq=False)
class VesselProfile:
    """Lumen cross-sections along a centreline (one entry per centreline point)."""

    arc_length_mm: F64
    area_mm2: F64  # lumen area on the plane perpendicular to the centreline
    diameter_mm: F64  # equivalent diameter 2 sqrt(area / pi)
    min_diameter_mm: F64  # smallest caliper (Feret) width
    max_diameter_mm: F64  # largest caliper (Feret) width
    valid: BoolArray  # False: no closed lumen section (NaN diameters, area 0)
    in_end_margin: BoolArray  # within end_margin_mm of either end (excluded from stenosis)
    points_voxel: F64
    points_patient_mm: F64
    boundary_hu: float
    plane_step_mm: float
    end_margin_mm: float
    requires_review: bool = True
    algorithm_version: str = ALGORITHM_VERSION
    notes: tuple[str, ...] = field(default_factory=tuple)


def measure_cross_sections(
    volume: Volume,
    segmentation: VesselSegmentation,
    centerline: Centerline,
    *,
    boundary_hu: float | None = None,
    plane_step_mm: float | None = None,
    plane_half_width_mm: float | None = None,
    end_margin_mm: float | None = None,
    n_angles: int = 90,
) -> VesselProfile:
    """Area and diameters of the lumen on the plane perpendicular to the centreline at each point.

    The plane is sampled every ``plane_step_mm`` (default a quarter of the smallest voxel
    spacing) over ``±plane_half_width_mm`` (default twice the largest distance from the
    centreline to the mask wall, plus two voxels) by trilinear interpolation of HU. Lumen
    pixels have ``HU >= boundary_hu`` (default the segmentation's half-maximum level) and lie
    within one voxel of the mask; the section is the 8-connected lumen region at the centre.
    Area = pixel count x step²; equivalent diameter ``2 sqrt(area / pi)``; min / max diameter =
    smallest / largest caliper width over ``n_angles`` directions. A section that reaches the
    plane's edge or has no lumen at its centre is not valid. ``end_margin_mm`` (default the
    largest distance from the centreline to the mask wall plus two of the largest voxel
    spacings) flags the points near either end, where a flat cap or an off-centre start point
    bias the section.
    """
    spacing = _spacing(volume)
    mask_full = np.asarray(segmentation.mask, dtype=bool)
    if not mask_full.any():
        raise ValueError("empty segmentation: nothing to measure")
    if mask_full.shape != volume.shape:
        raise ValueError(f"segmentation shape {mask_full.shape} differs from the volume {volume.shape}")
    pts = np.asarray(centerline.points_voxel, dtype=np.float64)
    if len(pts) < 2:
        raise ValueError("the centreline needs at least two points")
    pad = int(np.ceil((plane_half_width_mm or 0.0) / spacing.min())) + 3
    box = _bbox(mask_full, pad)
    offset = _box_offset(box)
    mask = mask_full[box]
    hu = np.asarray(volume.voxels[box], dtype=np.float32)
    allowed = ndimage.binary_dilation(mask, structure=np.ones((3, 3, 3), dtype=bool))
    q = (pts - offset) * spacing
    dt = ndimage.distance_transform_edt(mask, sampling=spacing)
    local = np.clip(np.rint(q / spacing).astype(int), 0, np.asarray(mask.shape) - 1)
    radius = float(dt[local[:, 0], local[:, 1], local[:, 2]].max())
    half_width = 2 * radius + 2 * float(spacing.max()) if plane_half_width_mm is None else plane_half_width_mm
    step = float(np.min(spacing)) / 4 if plane_step_mm is None else plane_step_mm
    if not (step > 0 and half_width > step):
        raise ValueError("plane_step_mm must be positive and smaller than the plane half-width")
    boundary = segmentation.boundary_hu if boundary_hu is None else float(boundary_hu)
    sections = _cross_sections(
        hu,
        allowed,
        spacing,
        q,
        _tangents(q),
        boundary_hu=boundary,
        half_width_mm=half_width,
        step_mm=step,
        n_angles=n_angles,
    )
    margin = radius + 2 * float(spacing.max()) if end_margin_mm is None else float(end_margin_mm)
    arc = np.asarray(centerline.arc_length_mm, dtype=np.float64)
    in_margin = (arc < margin) | (arc > arc[-1] - margin)
    diameter = np.where(sections.valid, 2.0 * np.sqrt(sections.area_mm2 / np.pi), np.nan)
    return VesselProfile(
        arc_length_mm=arc,
        area_mm2=sections.area_mm2,
        diameter_mm=diameter,
        min_diameter_mm=sections.min_diameter_mm,
        max_diameter_mm=sections.max_diameter_mm,
        valid=sections.valid,
        in_end_margin=in_margin,
        points_voxel=pts,
        points_patient_mm=np.asarray(centerline.points_patient_mm, dtype=np.float64),
        boundary_hu=boundary,
        plane_step_mm=step,
        end_margin_mm=margin,
        notes=sections.notes,
    )


@dataclass(frozen=True)
class StenosisMeasurement:
    """NASCET-style diameter stenosis at the narrowest point of a profile."""

    stenosis_percent: float  # 100 (1 - min_diameter / reference_diameter), clamped at 0
    area_stenosis_percent: float  # 100 (1 - min_area / (pi reference_diameter² / 4))
    min_diameter_mm: float  # equivalent diameter at the narrowest point
    min_area_mm2: float
    reference_diameter_mm: float
    reference_source: str  # "given", "proximal+distal", "proximal" or "distal"
    arc_length_mm: float  # position of the narrowest point along the centreline
    point_voxel: tuple[float, float, float]
    point_patient_mm: tuple[float, float, float]
    lesion_start_mm: float  # extent of the narrowed segment (arc length)
    lesion_end_mm: float
    requires_review: bool = True
    algorithm_version: str = ALGORITHM_VERSION
    notes: tuple[str, ...] = field(default_factory=tuple)


def measure_stenosis(
    profile: VesselProfile,
    *,
    reference_diameter_mm: float | None = None,
    arc_range_mm: tuple[float, float] | None = None,
    reference_window_mm: float = 10.0,
    lesion_fraction: float = 0.9,
) -> StenosisMeasurement:
    """Diameter stenosis ``1 - d_min / d_reference`` (percent) of the narrowest valid section.

    Only valid sections outside the end margin (and inside ``arc_range_mm`` when given) count.
    ``d_min`` is the smallest equivalent diameter. Reference: ``reference_diameter_mm`` when
    given; otherwise the lesion is the run of sections around ``d_min`` narrower than
    ``lesion_fraction`` x the median diameter, and the reference is the median diameter of the
    sections within ``reference_window_mm`` just proximal and just distal to it (one side when
    the other has none).
    """
    arc = profile.arc_length_mm
    use = profile.valid & ~profile.in_end_margin
    if arc_range_mm is not None:
        use &= (arc >= arc_range_mm[0]) & (arc <= arc_range_mm[1])
    if not use.any():
        raise ValueError("no valid cross-section to measure a stenosis on")
    d = np.where(use, profile.diameter_mm, np.nan)
    k = int(np.nanargmin(d))
    d_min = float(d[k])
    notes: list[str] = []
    order = np.flatnonzero(use)
    where = int(np.searchsorted(order, k))
    limit = lesion_fraction * float(np.nanmedian(d))
    lo = where
    while lo > 0 and d[order[lo - 1]] < limit:
        lo -= 1
    hi = where
    while hi < len(order) - 1 and d[order[hi + 1]] < limit:
        hi += 1
    lesion_start, lesion_end = float(arc[order[lo]]), float(arc[order[hi]])
    if reference_diameter_mm is not None:
        if not reference_diameter_mm > 0:
            raise ValueError("reference_diameter_mm must be positive")
        reference, source = float(reference_diameter_mm), "given"
    else:
        proximal = use & (arc < lesion_start) & (arc >= lesion_start - reference_window_mm)
        distal = use & (arc > lesion_end) & (arc <= lesion_end + reference_window_mm)
        sides = [name for name, sel in (("proximal", proximal), ("distal", distal)) if sel.any()]
        if not sides:
            raise ValueError(
                "no healthy segment beside the lesion to take a reference from; give reference_diameter_mm"
            )
        reference = float(np.median(profile.diameter_mm[proximal | distal]))
        source = "+".join(sides)
        if len(sides) == 1:
            notes.append(f"reference from the {sides[0]} segment only")
    percent = 100.0 * (1.0 - d_min / reference)
    area_percent = 100.0 * (1.0 - float(profile.area_mm2[k]) / (np.pi * reference**2 / 4))
    if percent < 0:
        notes.append("narrowest section is wider than the reference: no stenosis")
        percent, area_percent = 0.0, max(area_percent, 0.0)
    pv = profile.points_voxel[k]
    pp = profile.points_patient_mm[k]
    return StenosisMeasurement(
        stenosis_percent=percent,
        area_stenosis_percent=area_percent,
        min_diameter_mm=d_min,
        min_area_mm2=float(profile.area_mm2[k]),
        reference_diameter_mm=reference,
        reference_source=source,
        arc_length_mm=float(arc[k]),
        point_voxel=(float(pv[0]), float(pv[1]), float(pv[2])),
        point_patient_mm=(float(pp[0]), float(pp[1]), float(pp[2])),
        lesion_start_mm=lesion_start,
        lesion_end_mm=lesion_end,
        notes=tuple(notes),
    )


# ---------------------------------------------------------------- the whole chain


@dataclass(frozen=True, eq=False)
class VesselAnalysis:
    """Everything :func:`analyse_vessel` produced; ``roi`` is the voxel box it worked in."""

    segmentation: VesselSegmentation
    centerline: Centerline
    profile: VesselProfile
    stenosis: StenosisMeasurement | None
    roi: Box
    requires_review: bool = True
    algorithm_version: str = ALGORITHM_VERSION
    notes: tuple[str, ...] = field(default_factory=tuple)


def analyse_vessel(
    volume: Volume,
    start: Point,
    end: Point | None = None,
    *,
    hu_window: tuple[float, float] = (150.0, 1000.0),
    roi_margin_mm: float | None = 20.0,
    connectivity: int = 26,
    min_vesselness: float | None = None,
    frangi: FrangiParameters = FrangiParameters(),
    step_mm: float = 0.5,
    reference_diameter_mm: float | None = None,
) -> VesselAnalysis:
    """Segment from ``start``, trace to ``end``, measure and grade the narrowest point.

    The work is confined to a region of interest: the box around ``start`` (and ``end``)
    widened by ``roi_margin_mm`` (``None``: the whole volume). The vessel between the points
    must stay inside it, or the centreline fails with a ValueError.
    """
    shape = volume.shape
    points: list[Point] = [start] + ([end] if end is not None else [])
    if roi_margin_mm is None:
        for p in points:
            if not _inside_volume(_to_index(volume, p), shape):
                raise ValueError(f"point {p} lies outside the volume {shape}")
        roi: Box = (slice(0, shape[0]), slice(0, shape[1]), slice(0, shape[2]))
    else:
        roi = roi_around(volume, points, roi_margin_mm)
    segmentation = grow_region(
        volume,
        start,
        hu_window=hu_window,
        connectivity=connectivity,
        roi=roi,
        min_vesselness=min_vesselness,
        frangi=frangi,
    )
    centerline = extract_centerline(volume, segmentation, start, end, step_mm=step_mm)
    profile = measure_cross_sections(volume, segmentation, centerline)
    notes = [*segmentation.notes, *centerline.notes, *profile.notes]
    try:
        stenosis: StenosisMeasurement | None = measure_stenosis(
            profile, reference_diameter_mm=reference_diameter_mm
        )
    except ValueError as exc:
        stenosis = None
        notes.append(f"no stenosis grade: {exc}")
    return VesselAnalysis(
        segmentation=segmentation,
        centerline=centerline,
        profile=profile,
        stenosis=stenosis,
        roi=roi,
        notes=tuple(notes),
    )


__all__ = [
    "ALGORITHM_VERSION",
    "Centerline",
    "FrangiParameters",
    "PatientPoint",
    "Point",
    "StenosisMeasurement",
    "VesselAnalysis",
    "VesselProfile",
    "VesselSegmentation",
    "VoxelPoint",
    "analyse_vessel",
    "extract_centerline",
    "frangi_response",
    "grow_region",
    "hessian_eigenvalues",
    "measure_cross_sections",
    "measure_stenosis",
    "roi_around",
    "segmentation_from_mask",
    "symmetric_eigenvalues",
    "vesselness",
]
