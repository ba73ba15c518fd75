"""A voxel mask as the image regions of an SR volumetric ROI (TID 1411 "Image Region" rows).

TID 1411 may define its volume by a SEG segment or by outlines on the source images. Voxa's
reports use the outlines: every viewer that reads TID 1500 can draw them, while a group that only
references a segment carries no image coordinates, and OHIF 3.13 cannot display such a report at
all (its SR loader reads the first coordinate of every group: OHIF/Viewers#3390). The SEG is still
written beside the report, and listed in its evidence.

Outlines are closed POLYLINEs in DICOM's image coordinates ((column, row); the top-left corner of
the top-left pixel is (0, 0), pixel centres at .5): the 0.5 iso-line of each in-plane connected
part of the mask (``skimage.measure.find_contours``), simplified to within ``tolerance_px``
(Douglas-Peucker). The slice where the mask is largest comes first: a viewer that draws one
region of a group (OHIF draws the first) shows the structure where it is largest.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset

from voxa.analysis.dicom_outputs import OutputError


def slice_outlines(mask2d: NDArray[np.bool_], *, tolerance_px: float = 0.5) -> list[NDArray[np.float32]]:
    """Closed outlines (first point repeated last) of each 8-connected part of a 2-D mask, in
    image coordinates, largest part first. Holes are not outlined (the region is the part's
    outer boundary)."""
    from skimage.measure import approximate_polygon, find_contours, label

    parts = label(np.asarray(mask2d, dtype=bool), connectivity=2)
    n = int(parts.max())
    if n == 0:
        return []
    sizes = np.bincount(parts.ravel())[1:]
    outlines: list[NDArray[np.float32]] = []
    for part in np.argsort(-sizes, kind="stable") + 1:
        # padded so that a part touching the image's edge still gets a closed outline
        contours = find_contours(np.pad(parts == part, 1).astype(np.float32), 0.5)
        if not contours:
            continue
        outer = max(contours, key=_enclosed_area)
        if tolerance_px > 0:
            outer = approximate_polygon(outer, tolerance=tolerance_px)
        points = np.column_stack([outer[:, 1] - 0.5, outer[:, 0] - 0.5]).astype(np.float32)
        if not np.array_equal(points[0], points[-1]):
            points = np.vstack([points, points[:1]])
        if len(points) >= 4:  # at least a triangle, closed
            outlines.append(points)
    return outlines


def _enclosed_area(points: NDArray[np.floating]) -> float:
    x, y = points[:, 1], points[:, 0]
    return float(abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) / 2.0)


def mask_regions(mask: NDArray[np.bool_], source_images: Sequence[Dataset], *,
                 tolerance_px: float = 0.5) -> list[hd.sr.ImageRegion]:
    """The outlines of a (slices, rows, columns) mask on ``source_images`` (one per slice, in the
    mask's slice order), the largest slice's first. Raises :class:`OutputError` when the images
    do not match the mask or the mask is empty."""
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 3 or len(source_images) != m.shape[0]:
        raise OutputError(f"a {m.shape} mask needs one source image per slice, got {len(source_images)} images")
    areas = m.reshape(m.shape[0], -1).sum(axis=1)
    if not areas.any():
        raise OutputError("the mask is empty: there is no region to outline")
    regions: list[hd.sr.ImageRegion] = []
    for z in np.argsort(-areas, kind="stable"):
        if areas[z] == 0:
            break
        image = source_images[int(z)]
        source = hd.sr.SourceImageForRegion(str(image.SOPClassUID), str(image.SOPInstanceUID))
        for points in slice_outlines(m[z], tolerance_px=tolerance_px):
            regions.append(hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POLYLINE, graphic_data=points,
                                             source_image=source))
    if not regions:
        raise OutputError("the mask has no outline of at least three points")
    return regions


__all__ = ["mask_regions", "slice_outlines"]
