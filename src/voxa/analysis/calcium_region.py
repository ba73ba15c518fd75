"""The heart region of a non-contrast chest CT, where coronary calcium scoring looks for lesions.

Without a region :func:`~voxa.analysis.calcium.score_calcium` scores every structure at or above
the calcium threshold: the patient table, ribs, sternum and spine.  :func:`heart_region` is a
pure, vectorised heuristic (scipy.ndimage, no model) that keeps the mediastinum between the lungs:

1. **Body.** Voxels above -500 HU, opened in-plane with a disc of 5 mm radius so that the table
   comes apart from the back; the largest 3-D component is the body, its holes filled slice by
   slice.  The table, and anything else outside the body, is never in the region.
2. **Lungs.** Air (< -400 HU) inside the body, in 3-D components of at least a tenth of the
   largest (20 mL in all, or there is no chest: empty region).  Holes of up to 300 mm\u00b2 in
   them (vessels, nodules, calcified granulomas) count as lung.
3. **Between the lungs.** Per slice, the convex hull of the lungs minus the lungs.
4. **In front of the spine.** Bone (>= 200 HU) inside that hull, in the posterior half and the
   middle fifth of its width, is the vertebral body: rows from its anterior edge back are cut
   off, here and after step 6 (slices without such bone, at a disc, take the edge of their
   neighbours).
5. **The blob.** Opened in-plane (disc of 5 mm), the largest 3-D component: heart, great vessels
   and mediastinal fat, without the slivers the hull leaves along the chest wall.
6. **Margin.** Grown by ``margin_mm`` (6 mm, Euclidean) inside the body, so that calcium on the
   heart's surface is inside; and forward (anterior) by 15 mm, because where the left lung
   leaves the heart uncovered its anterior surface (RV, LAD) lies against the chest wall, in
   front of the line between the lungs' anterior edges.
7. **Whole components.** Each calcified in-plane component (8-connected voxels at or above
   ``calcium_threshold_hu`` on one image: what the scoring counts) that the region reaches is
   measured in the region and 10 mm around it, and taken whole when at least half of it lies in
   the region, left out whole otherwise.  A component larger than 150 mm² (a section of rib,
   sternum or vertebra; coronary calcium is smaller) is taken only when three quarters of it
   lie within the 6 mm margin.  So a rib or the sternum that the region grazes is not cut into
   a small "lesion", and a calcification on the edge is not cut in two.  Bone that is taken
   whole all the same is large in 3-D and left out by ``max_lesion_volume_mm3``.

Steps 1-6 run on a grid of about 3 mm (strided sampling), step 7 at full resolution in the
region's bounding box.  Any axial series works (head or feet first, supine or prone: the
orientation comes from the volume's direction cosines); other orientations give an empty
region and a note.

:func:`heart_centre` and :func:`suggest_artery_in_heart` give a position-based artery
suggestion relative to the heart rather than the image centre.

Limits (``docs/analysis-calcium.md``): the region is the mediastinum, not a heart segmentation.
Aortic wall and valve calcification, calcified hilar lymph nodes, and calcium in the oesophagus
or the descending aorta in front of the spine lie inside it and are scored: the reader must
exclude them.  Above the heart the region follows the mediastinum (aortic arch, great vessels);
below the lung bases there is no region.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from voxa.analysis.calcium import Artery
from voxa.imaging.volume import Volume

#: Edge of the coarse grid the region is found on (mm).
GRID_MM = 3.0
#: The body: voxels above this (HU).
TISSUE_HU = -500.0
#: Lungs: air below this inside the body (HU).
AIR_HU = -400.0
#: Vertebral body: bone at or above this (HU).
BONE_HU = 200.0
#: In-plane opening radius for the body and for the mediastinal blob (mm).
OPENING_MM = 5.0
#: Holes in the lungs up to this area are lung (mm²): vessels, nodules, granulomas.
LUNG_HOLE_MM2 = 300.0
#: Less air than this (mL) in the body is not a chest.
MIN_LUNG_ML = 20.0
#: Default margin around the mediastinum (mm).
MARGIN_MM = 6.0
#: How far the region reaches forward of the mediastinum (mm): the heart's anterior surface
#: lies against the chest wall, in front of the line between the lungs' anterior edges.
FRONT_MM = 15.0
#: How far beyond the region calcified components are followed (mm).
RING_MM = 10.0
#: A calcified component larger than this on one image is a section of bone (mm²): it is taken
#: only when three quarters of it lie within the margin (not in the forward reach).
LARGE_AREA_MM2 = 150.0
_AWAY, _RING, _INSIDE, _FRONT = 0, 1, 2, 3  # zones of step 7: region = _INSIDE or _FRONT
_SLAB = 16  # images labelled at a time in step 7

Mask = NDArray[np.bool_]

_IN_PLANE = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE[1] = ndimage.generate_binary_structure(2, 1)
_IN_PLANE_8 = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE_8[1] = True
_FULL = np.ones((3, 3, 3), dtype=bool)


def _disc(radius_px: float) -> Mask:
    """A (1, n, n) in-plane disc: per-slice morphology on a 3-D array."""
    r = max(1, int(round(radius_px)))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return np.asarray((yy * yy + xx * xx <= r * r)[np.newaxis])


def _largest(mask: Mask, structure: Mask | None = None) -> Mask:
    labels, n = ndimage.label(mask, structure=structure)
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return np.asarray(labels == int(sizes.argmax()))


def _fill_holes(mask: Mask, max_area_px: float | None = None) -> Mask:
    """Per slice, ``mask`` with the background pockets it encloses filled (only those of at
    most ``max_area_px`` pixels when given).  One labelling pass: faster than
    ``binary_fill_holes``'s iterated dilation."""
    labels, n = ndimage.label(~mask, structure=_IN_PLANE)
    outside = np.zeros(n + 1, dtype=bool)
    for edge in (labels[:, 0, :], labels[:, -1, :], labels[:, :, 0], labels[:, :, -1]):
        outside[edge.ravel()] = True
    if max_area_px is not None:
        outside |= np.bincount(labels.ravel(), minlength=n + 1) > max_area_px
    outside[0] = False
    return np.asarray(mask | ((labels > 0) & ~outside[labels]))


def _canonical_axes(volume: Volume) -> tuple[bool, bool] | None:
    """How to view the voxels so that axis 1 runs from anterior to posterior: (swap rows and
    columns, then flip axis 1); None when the slices are not axial."""
    d = np.asarray(volume.direction, dtype=np.float64)
    if abs(d[2][2]) < 0.8:
        return None
    swap = abs(d[0][1]) > abs(d[1][1])
    ap = d[0] if swap else d[1]
    if abs(ap[1]) < 0.7:
        return None
    return swap, bool(ap[1] < 0)


def _convex_hulls(mask: Mask) -> Mask:
    """Per slice, the filled convex hull of ``mask``'s pixel centres."""
    out = mask.copy()
    inner = np.zeros_like(mask)
    inner[:, 1:-1, 1:-1] = (mask[:, 1:-1, 1:-1] & mask[:, :-2, 1:-1] & mask[:, 2:, 1:-1]
                            & mask[:, 1:-1, :-2] & mask[:, 1:-1, 2:])
    k, r, c = np.nonzero(mask & ~inner)
    starts = np.searchsorted(k, np.arange(mask.shape[0] + 1))
    for z in range(mask.shape[0]):
        lo, hi = int(starts[z]), int(starts[z + 1])
        if hi - lo < 3:
            continue
        points = np.column_stack([r[lo:hi], c[lo:hi]]).astype(np.float64)
        try:
            equations = ConvexHull(points).equations  # a.p + b <= 0 inside
        except QhullError:  # collinear pixels: no area
            continue
        r0, c0 = points.min(axis=0).astype(int)
        r1, c1 = points.max(axis=0).astype(int)
        rr, cc = np.mgrid[r0:r1 + 1, c0:c1 + 1]
        grid = np.stack([rr.ravel(), cc.ravel()], axis=1).astype(np.float64)
        inside = (grid @ equations[:, :2].T + equations[:, 2] <= 1e-9).all(axis=1)
        out[z, r0:r1 + 1, c0:c1 + 1] |= inside.reshape(rr.shape)
    return out


def _spine_front(bone: Mask, hull: Mask) -> NDArray[np.float64] | None:
    """Per slice, the row of the vertebral body's anterior edge (rows run anterior to
    posterior); interpolated over slices without one; None when no slice has one."""
    nz, ny, nx = hull.shape
    any_row: Mask = np.any(hull, axis=2)
    any_col: Mask = np.any(hull, axis=1)
    has: Mask = np.any(any_row, axis=1)
    r0 = any_row.argmax(axis=1)
    r1 = ny - 1 - any_row[:, ::-1].argmax(axis=1)
    c0 = any_col.argmax(axis=1)
    c1 = nx - 1 - any_col[:, ::-1].argmax(axis=1)
    rows = np.arange(ny)[None, :, None]
    cols = np.arange(nx)[None, None, :]
    candidates = (bone & hull & has[:, None, None]
                  & (rows > ((r0 + r1) / 2.0)[:, None, None])
                  & (np.abs(cols - ((c0 + c1) / 2.0)[:, None, None]) <= ((c1 - c0) / 10.0)[:, None, None]))
    found = candidates.any(axis=(1, 2))
    if not found.any():
        return None
    front = np.where(candidates, rows, ny).min(axis=(1, 2)).astype(np.float64)
    z = np.arange(nz)
    return np.asarray(np.interp(z, z[found], front[found]))


def heart_region(
    volume: Volume,
    *,
    calcium_threshold_hu: float = 130.0,
    margin_mm: float = MARGIN_MM,
) -> tuple[Mask, tuple[str, ...]]:
    """The heart (mediastinal) region of a non-contrast chest CT: a mask of ``volume``'s shape.

    ``calcium_threshold_hu`` is the scoring threshold: calcified components at its edge are
    taken whole or left out whole (the module docstring has the method).  The notes say what the
    region is, or why it is empty (not axial, no body, no lungs).
    """
    hu = np.asarray(volume.voxels)
    if hu.ndim != 3:
        raise ValueError(f"the volume must be 3-D, got shape {hu.shape}")
    if not (math.isfinite(margin_mm) and margin_mm >= 0):
        raise ValueError(f"margin_mm must be a number >= 0, got {margin_mm}")
    axes = _canonical_axes(volume)
    if axes is None:
        return np.zeros(hu.shape, dtype=bool), ("heart region: the slices are not axial; no region",)
    swap, flip = axes
    view = hu.swapaxes(1, 2) if swap else hu
    if flip:
        view = view[:, ::-1, :]
    sz, sy, sx = (float(s) for s in volume.spacing_mm)
    if swap:
        sy, sx = sx, sy
    step = tuple(max(1, int(math.floor(GRID_MM / s + 1e-6))) for s in (sz, sy, sx))
    gz, gy, gx = sz * step[0], sy * step[1], sx * step[2]
    g = np.ascontiguousarray(view[::step[0], ::step[1], ::step[2]])

    def empty(why: str) -> tuple[Mask, tuple[str, ...]]:
        return np.zeros(hu.shape, dtype=bool), (f"heart region: {why}; no region",)

    # 1. the body: the largest tissue component once the table has come apart from it
    opening = _disc(OPENING_MM / min(gy, gx))
    body = _largest(ndimage.binary_opening(g > TISSUE_HU, structure=opening))
    if not body.any():
        return empty("no body found")
    body = _fill_holes(body)

    # 2. the lungs
    labels, n = ndimage.label((g < AIR_HU) & body)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    sizes[0] = 0
    keep = (sizes > 0) & (sizes >= 0.1 * sizes.max())
    lung_ml = float(sizes[keep].sum()) * gz * gy * gx / 1000.0
    if lung_ml < MIN_LUNG_ML:
        return empty(f"no lungs found ({lung_ml:.0f} mL of air in the body)")
    lungs = _fill_holes(keep[labels], LUNG_HOLE_MM2 / (gy * gx))

    # 3. between the lungs; 4. in front of the spine
    hull = _convex_hulls(lungs)
    between = hull & ~lungs & body
    notes: list[str] = []
    spine = _spine_front(g >= BONE_HU, hull)
    if spine is None:
        notes.append("heart region: no spine found between the lungs; nothing cut off behind")
    else:
        between &= np.arange(g.shape[1])[None, :, None] < spine[:, None, None]

    # 5. the mediastinal blob; 6. its margin, inside the body (and a ring around it for step 7)
    blob = _largest(ndimage.binary_opening(between, structure=opening), _FULL)
    if not blob.any():
        return empty("nothing between the lungs")
    reach = max(margin_mm, FRONT_MM) + RING_MM
    pad = [int(math.ceil(reach / s)) + 1 for s in (gz, gy, gx)]
    k, r, c = (np.flatnonzero(blob.any(axis=a)) for a in ((1, 2), (0, 2), (0, 1)))
    lo = [max(int(i[0]) - p, 0) for i, p in zip((k, r, c), pad, strict=True)]
    hi = [min(int(i[-1]) + p + 1, n_) for i, p, n_ in zip((k, r, c), pad, g.shape, strict=True)]
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    distance = ndimage.distance_transform_edt(~blob[box], sampling=(gz, gy, gx))
    zone = np.where(distance <= margin_mm, _INSIDE, np.where(distance <= reach, _RING, _AWAY)).astype(np.uint8)
    core = blob[box]
    ahead = np.zeros_like(core)
    for j in range(1, int(FRONT_MM / gy) + 1):  # rows run from anterior to posterior
        ahead[:, :-j] |= core[:, j:]
    zone[ahead & (zone != _INSIDE)] = _FRONT
    if spine is not None:  # the margin does not reach behind the spine's front either
        behind = np.arange(lo[1], hi[1])[None, :, None] >= spine[lo[0]:hi[0], None, None]
        zone[behind & (zone != _AWAY)] = _RING
    zone[~body[box]] = _AWAY

    # 7. back to full resolution (each voxel takes its nearest coarse sample), in the box only,
    # with the calcified components on the region's edge taken whole or left out whole
    fine_lo = [a * f for a, f in zip(lo, step, strict=True)]
    fine_hi = [min(b * f, n_) for b, f, n_ in zip(hi, step, view.shape, strict=True)]
    nearest = [np.minimum((np.arange(a, b) + f // 2) // f - c0, m - 1)
               for a, b, f, c0, m in zip(fine_lo, fine_hi, step, lo, zone.shape, strict=True)]
    canonical = np.zeros(view.shape, dtype=bool)
    edges = _Edges()
    for z0 in range(0, fine_hi[0] - fine_lo[0], _SLAB):
        slab_zone = zone[nearest[0][z0:z0 + _SLAB]]
        active = slab_zone != _AWAY
        if not active.any():
            continue
        # the slab's images, cropped to where its zone is
        (y0, y1), (x0, x1) = ((int(np.searchsorted(index, used[0])), int(np.searchsorted(index, used[-1], "right")))
                              for index, used in ((nearest[1], np.flatnonzero(active.any(axis=(0, 2)))),
                                                  (nearest[2], np.flatnonzero(active.any(axis=(0, 1))))))
        fine_zone = slab_zone[:, nearest[1][y0:y1]][:, :, nearest[2][x0:x1]]
        fine = (slice(fine_lo[0] + z0, fine_lo[0] + z0 + fine_zone.shape[0]),
                slice(fine_lo[1] + y0, fine_lo[1] + y1), slice(fine_lo[2] + x0, fine_lo[2] + x1))
        canonical[fine] = _whole_components(np.asarray(view[fine]), fine_zone, calcium_threshold_hu, sy * sx, edges)

    per_slice = canonical[fine_lo[0]:fine_hi[0]].any(axis=(1, 2))
    if not per_slice.any():
        return empty("nothing between the lungs")
    slices = np.flatnonzero(per_slice) + fine_lo[0]
    volume_ml = float(np.count_nonzero(canonical[fine_lo[0]:fine_hi[0]])) * sz * sy * sx / 1000.0
    out = canonical[:, ::-1, :] if flip else canonical
    mask = np.ascontiguousarray(out.swapaxes(1, 2) if swap else out)
    notes.insert(0, f"heart region: the mediastinum between the lungs, in front of the spine, with a {margin_mm:g} mm "
                    f"margin ({FRONT_MM:g} mm forward): {volume_ml:.0f} mL, slices {int(slices[0])}-{int(slices[-1])} "
                    f"of {hu.shape[0]}")
    if edges.taken or edges.dropped:
        notes.append(f"heart region: of the calcified components on its edge, {edges.taken} taken whole and "
                     f"{edges.dropped} (mostly outside: bone) left out")
    return mask, tuple(notes)


@dataclass
class _Edges:
    """How many calcified components on the region's edge were taken whole and left out."""

    taken: int = 0
    dropped: int = 0


def _whole_components(hu: NDArray[np.floating], zone: NDArray[np.uint8], threshold_hu: float, pixel_mm2: float,
                      edges: _Edges) -> Mask:
    """The region (``zone`` _INSIDE or _FRONT) of a slab of images, with each calcified in-plane
    component that it reaches taken whole or left out whole (counted in ``edges``): taken when
    at least half of it lies in the region and, for a component larger than ``LARGE_AREA_MM2``,
    three quarters in the margin (_INSIDE).  Components are measured in the region and the ring
    around it (_RING)."""
    region = zone >= _INSIDE  # _INSIDE or _FRONT
    calcium = (hu >= threshold_hu) & (zone != _AWAY)
    try:  # 16-bit labels where they suffice: half the memory, and faster
        parts, n = ndimage.label(calcium, structure=_IN_PLANE_8, output=np.uint16)
    except RuntimeError:
        parts, n = ndimage.label(calcium, structure=_IN_PLANE_8)
    if n == 0:
        return region
    part_of = parts[calcium]
    zone_of = zone[calcium]
    total = np.bincount(part_of, minlength=n + 1)
    within = np.bincount(part_of[zone_of >= _INSIDE], minlength=n + 1)
    in_core = np.bincount(part_of[zone_of == _INSIDE], minlength=n + 1)
    large = total * pixel_mm2 > LARGE_AREA_MM2
    taken = (within > 0) & (2 * within >= total) & (~large | (4 * in_core >= 3 * total))
    taken[0] = False
    region[calcium] = taken[part_of]
    edge = (within > 0) & (within < total)
    edges.taken += int((edge & taken).sum())
    edges.dropped += int((edge & ~taken).sum())
    return region


# --------------------------------------------------------------------------- artery suggestion


@dataclass(frozen=True)
class HeartCentre:
    """Where the heart is: the centroid of the soft tissue (-30 to 130 HU) in the region and its
    in-plane radius of gyration."""

    centre_mm: tuple[float, float, float]  # patient (LPS)
    radius_mm: float


def heart_centre(volume: Volume, region: Mask) -> HeartCentre | None:
    """The heart's centre and size from the soft tissue in ``region``; None without any."""
    step = tuple(max(1, int(math.floor(GRID_MM / float(s) + 1e-6))) for s in volume.spacing_mm)
    sample = tuple(slice(None, None, f) for f in step)
    hu = np.asarray(volume.voxels)[sample]
    soft = np.asarray(region)[sample] & (hu > -30.0) & (hu < 130.0)
    index = np.argwhere(soft).astype(np.float64) * np.asarray(step, dtype=np.float64)
    if index.shape[0] < 10:
        return None
    points = volume.index_to_patient(index)
    centre = points.mean(axis=0)
    radius = float(np.sqrt(((points[:, :2] - centre[:2]) ** 2).sum(axis=1).mean()))
    return HeartCentre(centre_mm=(float(centre[0]), float(centre[1]), float(centre[2])), radius_mm=radius)


def suggest_artery_in_heart(point_mm: tuple[float, float, float] | NDArray[np.floating], heart: HeartCentre) -> Artery:
    """A crude artery suggestion for calcium at ``point_mm`` (patient LPS) from its direction
    seen from the heart's centre in the axial plane (always needs review).

    The angle runs from the patient's left (0\u00b0) through anterior (90\u00b0): 25-110\u00b0 is
    the anterior interventricular groove (LAD), -110-25\u00b0 the left atrioventricular groove
    (LCX), the rest the right atrioventricular groove (RCA).  In the LAD sector, calcium above
    the centre and within 0.8 radii of the heart's axis is at the base, by the aortic root: LM.
    """
    dx = float(point_mm[0]) - heart.centre_mm[0]
    anterior = heart.centre_mm[1] - float(point_mm[1])  # LPS: y grows posterior
    dz = float(point_mm[2]) - heart.centre_mm[2]
    angle = math.degrees(math.atan2(anterior, dx))
    if 25.0 < angle <= 110.0:
        if dz > 0 and math.hypot(dx, anterior) < 0.8 * heart.radius_mm:
            return Artery.LM
        return Artery.LAD
    if -110.0 < angle <= 25.0:
        return Artery.LCX
    return Artery.RCA


__all__ = ["GRID_MM", "MARGIN_MM", "HeartCentre", "heart_centre", "heart_region", "suggest_artery_in_heart"]
