"""Measurement geometry: pure, typed computations with explicit units.

Conventions (``docs/measurements.md``):

* **Image coordinates** are ``(column, row)`` pairs as in a DICOM SCOORD (PS3.3 C.18.6.1.2):
  ``(0, 0)`` is the top-left corner of the top-left pixel, so the centre of array element
  ``pixels[r, c]`` is ``(c + 0.5, r + 0.5)``.
* **Pixel spacing** is ``(row spacing, column spacing)`` in mm, the order of DICOM Pixel Spacing
  (0028,0030): the row spacing is the distance between adjacent rows (vertical), the column
  spacing between adjacent columns (horizontal).  Image coordinates become in-plane millimetres
  as ``(column * column_spacing, row * row_spacing)``, so anisotropic pixels are handled.
* **Patient coordinates** are ``(x, y, z)`` in mm in the DICOM patient system (LPS).
* Pixel values are modality values (Rescale Slope/Intercept applied): HU for CT.

Nothing here reads files or the database; :func:`frame_image` and :func:`segment_volume_ml`
take a pydicom dataset already in memory.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pydicom.dataset import Dataset

from voxa.measurements import (
    UNIT_DEG,
    UNIT_HU,
    UNIT_ML,
    UNIT_MM,
    UNIT_MM2,
    UNIT_NONE,
    MeasurementKind,
)

F64 = NDArray[np.float64]
Point = tuple[float, ...]
PixelSpacing = tuple[float, float]  # (row spacing, column spacing) mm, as DICOM PixelSpacing

MAX_POINTS = 10_000
MAX_COORDINATE = 1e9  # |coordinate| beyond this is refused (no overflow in any computation below)
SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
LABEL_MAP_SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.7"


class MeasurementError(ValueError):
    """The graphic data or the image do not allow the measurement; the message says why."""


@dataclass(frozen=True)
class Quantity:
    value: float
    unit: str  # UCUM

    def as_json(self) -> dict[str, float | str]:
        return {"value": self.value, "unit": self.unit}


# --------------------------------------------------------------------------- lengths and angles


def _array(points: ArrayLike, dims: int | None = None, what: str = "points") -> F64:
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim != 2 or (dims is not None and arr.shape[1] != dims):
        shape = f"(n, {dims})" if dims else "(n, d)"
        raise MeasurementError(f"{what} must be an array of shape {shape}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise MeasurementError(f"{what} must be finite numbers")
    if arr.size and float(np.abs(arr).max()) > MAX_COORDINATE:
        raise MeasurementError(f"{what} must lie within ±{MAX_COORDINATE:g}")
    return arr


def distance_mm(p1: Sequence[float], p2: Sequence[float]) -> float:
    """Euclidean distance between two points in patient coordinates (mm), or in any space whose
    coordinates are in mm."""
    a, b = np.asarray(p1, dtype=np.float64), np.asarray(p2, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise MeasurementError("both points need the same number of coordinates")
    return float(np.linalg.norm(b - a))


def image_to_mm(points: ArrayLike, pixel_spacing_mm: PixelSpacing) -> F64:
    """Image ``(column, row)`` coordinates as in-plane millimetres ``(x_mm, y_mm)``."""
    arr = _array(points, 2)
    row_spacing, col_spacing = _spacing(pixel_spacing_mm)
    return arr * np.array([col_spacing, row_spacing])


def image_distance_mm(p1: Sequence[float], p2: Sequence[float], pixel_spacing_mm: PixelSpacing) -> float:
    """Distance (mm) between two image points on one image plane."""
    mm = image_to_mm([p1, p2], pixel_spacing_mm)
    return distance_mm(mm[0], mm[1])


def image_to_patient_mm(points: ArrayLike, *, position_mm: Sequence[float], orientation: Sequence[float],
                        pixel_spacing_mm: PixelSpacing) -> F64:
    """Image ``(column, row)`` coordinates to patient coordinates (mm).

    ``position_mm`` is Image Position (Patient), the centre of the first pixel, at image
    coordinates (0.5, 0.5); ``orientation`` is Image Orientation (Patient): the row direction
    (in which the column index grows), then the column direction."""
    arr = _array(points, 2)
    ipp = np.asarray(position_mm, dtype=np.float64)
    iop = np.asarray(orientation, dtype=np.float64)
    if ipp.shape != (3,) or iop.shape != (6,):
        raise MeasurementError("position needs 3 values and orientation 6")
    row_spacing, col_spacing = _spacing(pixel_spacing_mm)
    cols = (arr[:, 0] - 0.5) * col_spacing
    rows = (arr[:, 1] - 0.5) * row_spacing
    return ipp + np.outer(cols, iop[:3]) + np.outer(rows, iop[3:])


def angle_deg(p1: Sequence[float], vertex: Sequence[float], p2: Sequence[float]) -> float:
    """The angle (degrees, 0-180) at ``vertex`` between the rays to ``p1`` and ``p2``.

    Points in mm (patient or in-plane): scale image points first with :func:`image_to_mm`."""
    v = np.asarray(vertex, dtype=np.float64)
    a = np.asarray(p1, dtype=np.float64) - v
    b = np.asarray(p2, dtype=np.float64) - v
    return _angle_between(a, b)


def _angle_between(a: F64, b: F64) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        raise MeasurementError("an angle needs arms of non-zero length")
    cos = float(np.dot(a, b)) / (na * nb)
    return math.degrees(math.acos(max(-1.0, min(1.0, cos))))


def cobb_angle_deg(line1: ArrayLike, line2: ArrayLike) -> float:
    """The Cobb angle (degrees, 0-90): the acute angle between two lines, each given by two
    points (in mm), as drawn along the end plates of the end vertebrae.  The lines need not
    cross on the image."""
    l1, l2 = np.asarray(line1, dtype=np.float64), np.asarray(line2, dtype=np.float64)
    if l1.shape[0] != 2 or l2.shape[0] != 2 or l1.shape != l2.shape:
        raise MeasurementError("a Cobb angle needs two lines of two points each")
    angle = _angle_between(l1[1] - l1[0], l2[1] - l2[0])
    return min(angle, 180.0 - angle)


# --------------------------------------------------------------------------- areas and perimeters


def _spacing(pixel_spacing_mm: PixelSpacing) -> PixelSpacing:
    row_spacing, col_spacing = (float(v) for v in pixel_spacing_mm)
    if not (row_spacing > 0 and col_spacing > 0 and math.isfinite(row_spacing) and math.isfinite(col_spacing)):
        raise MeasurementError(f"pixel spacing must be positive, got {tuple(pixel_spacing_mm)}")
    return row_spacing, col_spacing


def _open_ring(points: ArrayLike) -> F64:
    """The polygon's vertices without a repeated closing vertex."""
    arr = _array(points, 2)
    if len(arr) > 1 and np.array_equal(arr[0], arr[-1]):
        arr = arr[:-1]
    if len(arr) < 3:
        raise MeasurementError("a polygon needs at least 3 distinct vertices")
    return arr


def polygon_area_mm2(points: ArrayLike, pixel_spacing_mm: PixelSpacing) -> float:
    """Area (mm²) of a simple polygon given in image coordinates (shoelace formula)."""
    mm = image_to_mm(_open_ring(points), pixel_spacing_mm)
    x, y = mm[:, 0], mm[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def perimeter_mm(points: ArrayLike, pixel_spacing_mm: PixelSpacing, *, closed: bool = True) -> float:
    """Length (mm) of a polygon's boundary (``closed``) or of an open polyline, in image coordinates."""
    arr = _open_ring(points) if closed else _array(points, 2)
    mm = image_to_mm(arr, pixel_spacing_mm)
    if closed:
        mm = np.vstack([mm, mm[:1]])
    return float(np.sum(np.linalg.norm(np.diff(mm, axis=0), axis=1)))


def rectangle_corners(corner1: Sequence[float], corner2: Sequence[float]) -> F64:
    """The 4 corners, clockwise on screen from the top-left, of the axis-aligned rectangle
    with two opposite corners given (image coordinates)."""
    (c1, r1), (c2, r2) = corner1, corner2
    cmin, cmax, rmin, rmax = min(c1, c2), max(c1, c2), min(r1, r2), max(r1, r2)
    if cmin == cmax or rmin == rmax:
        raise MeasurementError("a rectangle needs two corners that differ in both column and row")
    return np.array([[cmin, rmin], [cmax, rmin], [cmax, rmax], [cmin, rmax]], dtype=np.float64)


def ellipse_axes(points: ArrayLike) -> F64:
    """The 4 points of a DICOM ELLIPSE (major axis end points, then minor axis end points) from
    either those 4 points (reordered so the longer axis comes first) or 2 opposite corners of
    the axis-aligned bounding box."""
    arr = _array(points, 2)
    if len(arr) == 2:
        (c1, r1), (c2, r2) = arr
        cc, rc = (c1 + c2) / 2.0, (r1 + r2) / 2.0
        half_w, half_h = abs(c2 - c1) / 2.0, abs(r2 - r1) / 2.0
        arr = np.array([[cc - half_w, rc], [cc + half_w, rc], [cc, rc - half_h], [cc, rc + half_h]])
    elif len(arr) != 4:
        raise MeasurementError("an ellipse needs its 4 axis end points or 2 bounding-box corners")
    if np.linalg.norm(arr[1] - arr[0]) < np.linalg.norm(arr[3] - arr[2]):
        arr = arr[[2, 3, 0, 1]]
    _ellipse_frame(arr)  # refuse a degenerate ellipse early
    return arr


def _ellipse_frame(axes: F64) -> tuple[F64, F64]:
    """(centre, M) with M's columns the two semi-axis vectors (image coordinates)."""
    centre = (axes[0] + axes[1]) / 2.0
    m = np.column_stack([(axes[1] - axes[0]) / 2.0, (axes[3] - axes[2]) / 2.0])
    if abs(float(np.linalg.det(m))) < 1e-12:
        raise MeasurementError("an ellipse needs two non-zero, non-parallel axes")
    return centre, m


def ellipse_area_mm2(axes: ArrayLike, pixel_spacing_mm: PixelSpacing) -> float:
    """Area (mm²) of an ellipse given by its 4 axis end points (image coordinates).

    With anisotropic pixels the image axes map to conjugate semi-diameters u, v of the
    ellipse in mm, whose area is π·|u × v|."""
    centre, m = _ellipse_frame(_array(axes, 2))
    row_spacing, col_spacing = _spacing(pixel_spacing_mm)
    m_mm = np.diag([col_spacing, row_spacing]) @ m
    return float(math.pi * abs(np.linalg.det(m_mm)))


def ellipse_perimeter_mm(axes: ArrayLike, pixel_spacing_mm: PixelSpacing) -> float:
    """Perimeter (mm) of an ellipse given by its 4 axis end points (Ramanujan's second
    approximation, relative error below 1e-9 for ordinary shapes)."""
    _, m = _ellipse_frame(_array(axes, 2))
    row_spacing, col_spacing = _spacing(pixel_spacing_mm)
    a, b = (float(s) for s in np.linalg.svd(np.diag([col_spacing, row_spacing]) @ m, compute_uv=False))
    h = ((a - b) / (a + b)) ** 2
    return math.pi * (a + b) * (1.0 + 3.0 * h / (10.0 + math.sqrt(4.0 - 3.0 * h)))


# --------------------------------------------------------------------------- masks and statistics


def _centres(shape: tuple[int, int], lo: F64, hi: F64) -> tuple[slice, slice, F64, F64]:
    """Pixel centres (column, row grids) of the part of the image inside the box [lo, hi]."""
    rows, cols = shape
    lo = np.nan_to_num(np.clip(lo, -1.0, max(rows, cols) + 1.0), nan=0.0)
    hi = np.nan_to_num(np.clip(hi, -1.0, max(rows, cols) + 1.0), nan=0.0)
    c0, c1 = max(int(math.floor(lo[0])), 0), min(int(math.ceil(hi[0])) + 1, cols)
    r0, r1 = max(int(math.floor(lo[1])), 0), min(int(math.ceil(hi[1])) + 1, rows)
    c0, r0 = min(c0, c1), min(r0, r1)
    cc, rr = np.meshgrid(np.arange(c0, c1) + 0.5, np.arange(r0, r1) + 0.5)
    return slice(r0, r1), slice(c0, c1), cc, rr


def polygon_mask(points: ArrayLike, shape: tuple[int, int]) -> NDArray[np.bool_]:
    """Pixels (rows, columns) whose centre lies inside the polygon (even-odd rule), filled
    scanline by scanline: O(rows x vertices)."""
    ring = _open_ring(points)
    rows, cols = shape
    mask = np.zeros(shape, dtype=bool)
    x0, y0 = ring[:, 0], ring[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    r_lo = max(int(math.floor(float(y0.min()) - 0.5)), 0)
    r_hi = min(int(math.ceil(float(y0.max()) - 0.5)) + 1, rows)
    for r in range(r_lo, r_hi):
        y = r + 0.5
        crosses = (y0 > y) != (y1 > y)
        if not crosses.any():
            continue
        xa, ya, xb, yb = x0[crosses], y0[crosses], x1[crosses], y1[crosses]
        xs = np.sort(np.clip(xa + (y - ya) * (xb - xa) / (yb - ya), -1.0, cols + 1.0))
        # A centre x is inside when an odd number of crossings lie to its right:
        # xs[2k] <= x < xs[2k + 1].
        for left, right in zip(xs[0::2], xs[1::2], strict=True):
            c0 = max(int(math.ceil(left - 0.5)), 0)
            c1 = min(int(math.ceil(right - 0.5)), cols)
            if c1 > c0:
                mask[r, c0:c1] = True
    return mask


def rectangle_mask(corner1: Sequence[float], corner2: Sequence[float], shape: tuple[int, int]) -> NDArray[np.bool_]:
    """Pixels whose centre lies inside (or on the edge of) the axis-aligned rectangle."""
    corners = rectangle_corners(corner1, corner2)
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    mask = np.zeros(shape, dtype=bool)
    rs, cs, cc, rr = _centres(shape, lo, hi)
    mask[rs, cs] = (cc >= lo[0]) & (cc <= hi[0]) & (rr >= lo[1]) & (rr <= hi[1])
    return mask


def ellipse_mask(axes: ArrayLike, shape: tuple[int, int]) -> NDArray[np.bool_]:
    """Pixels whose centre lies inside (or on) the ellipse given by its 4 axis end points."""
    centre, m = _ellipse_frame(_array(axes, 2))
    reach = np.abs(m).sum(axis=1)
    mask = np.zeros(shape, dtype=bool)
    rs, cs, cc, rr = _centres(shape, centre - reach, centre + reach)
    d = np.stack([cc - centre[0], rr - centre[1]])  # (2, h, w)
    ab = np.tensordot(np.linalg.inv(m), d, axes=1)
    mask[rs, cs] = (ab[0] ** 2 + ab[1] ** 2) <= 1.0 + 1e-12
    return mask


@dataclass(frozen=True)
class RoiStats:
    """Statistics of the pixels of a region; ``sd`` is the population standard deviation."""

    mean: float
    sd: float
    min: float
    max: float
    pixel_count: int
    area_mm2: float | None  # pixel_count x pixel area; None without a pixel spacing


def roi_stats(pixels_hu: ArrayLike, mask: ArrayLike, *, pixel_spacing_mm: PixelSpacing | None = None) -> RoiStats:
    """Mean, SD, min and max of the pixels selected by ``mask`` (modality values, e.g. HU), and
    the area those pixels cover."""
    values = np.asarray(pixels_hu, dtype=np.float64)
    sel = np.asarray(mask, dtype=bool)
    if values.shape != sel.shape:
        raise MeasurementError(f"mask shape {sel.shape} differs from the image's {values.shape}")
    picked = values[sel]
    if picked.size == 0:
        raise MeasurementError("the region contains no pixel centre")
    area = None
    if pixel_spacing_mm is not None:
        row_spacing, col_spacing = _spacing(pixel_spacing_mm)
        area = float(picked.size * row_spacing * col_spacing)
    return RoiStats(mean=float(picked.mean()), sd=float(picked.std()), min=float(picked.min()),
                    max=float(picked.max()), pixel_count=int(picked.size), area_mm2=area)


def mask_volume_ml(mask: ArrayLike, spacing_mm: tuple[float, float, float]) -> float:
    """Volume (ml) of the voxels set in a (z, y, x) mask; ``spacing_mm`` is (between slices,
    between rows, between columns)."""
    sel = np.asarray(mask, dtype=bool)
    if sel.ndim != 3:
        raise MeasurementError(f"a volume mask must be 3-D (z, y, x), got shape {sel.shape}")
    sz, sy, sx = (float(v) for v in spacing_mm)
    if not (sz > 0 and sy > 0 and sx > 0):
        raise MeasurementError(f"voxel spacing must be positive, got {tuple(spacing_mm)}")
    return float(np.count_nonzero(sel)) * sz * sy * sx / 1000.0


def contour_volume_ml(areas_mm2: Sequence[float], slice_spacing_mm: float) -> float:
    """Volume (ml) of a structure outlined on parallel, evenly spaced slices (Cavalieri):
    the sum of the outlined areas times the distance between slices."""
    if slice_spacing_mm <= 0:
        raise MeasurementError("slice spacing must be positive")
    return float(sum(areas_mm2)) * float(slice_spacing_mm) / 1000.0


# --------------------------------------------------------------------------- images


@dataclass(frozen=True)
class FrameImage:
    """What a measurement needs of one frame of a stored image."""

    rows: int
    columns: int
    pixel_spacing_mm: PixelSpacing | None
    position_mm: tuple[float, float, float] | None  # Image Position (Patient)
    orientation: tuple[float, ...] | None  # Image Orientation (Patient), 6 values
    frame_of_reference_uid: str
    value_unit: str  # UCUM unit of the modality values: "[hnsf'U]" for CT, else "1"
    values: F64 | None = None  # (rows, columns) modality values, when decoded

    def normal(self) -> F64 | None:
        if self.orientation is None:
            return None
        iop = np.asarray(self.orientation, dtype=np.float64)
        n = np.cross(iop[:3], iop[3:])
        norm = float(np.linalg.norm(n))
        return n / norm if norm > 0 else None


def _item(ds: Dataset | None, keyword: str) -> Dataset | None:
    seq = ds.get(keyword) if ds is not None else None
    return seq[0] if seq else None


def _group(ds: Dataset, frame_index: int, keyword: str) -> Dataset | None:
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame and frame_index < len(per_frame):
        found = _item(per_frame[frame_index], keyword)
        if found is not None:
            return found
    return _item(_item(ds, "SharedFunctionalGroupsSequence"), keyword)


def _floats(value: Any, n: int) -> tuple[float, ...] | None:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n and all(math.isfinite(v) for v in out) else None


def frame_count(ds: Dataset) -> int:
    try:
        return max(int(ds.get("NumberOfFrames", 1) or 1), 1)
    except (TypeError, ValueError):
        return 1


def frame_image(ds: Dataset, frame_number: int | None, *, with_pixels: bool) -> FrameImage:
    """The geometry (and, with ``with_pixels``, the modality values) of one frame (1-based; None
    for a single-frame image).  Functional groups of enhanced images are read per frame."""
    frames = frame_count(ds)
    if frame_number is None:
        if frames > 1:
            raise MeasurementError(f"the image has {frames} frames: frame_number is required")
        frame_number = 1
    if not 1 <= frame_number <= frames:
        raise MeasurementError(f"frame_number {frame_number} is outside 1..{frames}")
    index = frame_number - 1
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError):
        raise MeasurementError("the referenced instance is not an image (no Rows/Columns)") from None
    measures = _group(ds, index, "PixelMeasuresSequence")
    spacing = _floats((measures or ds).get("PixelSpacing"), 2) or _floats(ds.get("PixelSpacing"), 2)
    if spacing is None:  # projection radiography: at the detector, not corrected for magnification
        spacing = _floats(ds.get("ImagerPixelSpacing"), 2)
    if spacing is not None and not all(v > 0 for v in spacing):
        spacing = None
    plane = _group(ds, index, "PlanePositionSequence")
    orient = _group(ds, index, "PlaneOrientationSequence")
    position = _floats((plane or ds).get("ImagePositionPatient"), 3)
    orientation = _floats((orient or ds).get("ImageOrientationPatient"), 6)
    transform = _group(ds, index, "PixelValueTransformationSequence") or ds
    rescale_type = str(transform.get("RescaleType", "") or "")
    unit = UNIT_HU if ds.get("Modality") == "CT" or rescale_type == "HU" else UNIT_NONE
    values = None
    if with_pixels:
        if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
            raise MeasurementError("pixel values of colour images cannot be measured")
        try:
            decoded = np.asarray(ds.pixel_array)
        except Exception as e:  # noqa: BLE001 - pydicom and its decoders raise many kinds
            raise MeasurementError(f"the pixel data cannot be decoded: {type(e).__name__}: {e}") from None
        plane_pixels = decoded[index] if frames > 1 else decoded
        if plane_pixels.shape != (rows, columns):
            raise MeasurementError(f"the decoded frame has shape {plane_pixels.shape}, not ({rows}, {columns})")
        try:
            slope = float(transform.get("RescaleSlope", 1) or 1)
            intercept = float(transform.get("RescaleIntercept", 0) or 0)
        except (TypeError, ValueError):
            raise MeasurementError("Rescale Slope/Intercept are not numbers") from None
        values = plane_pixels.astype(np.float64) * slope + intercept
    return FrameImage(
        rows=rows, columns=columns,
        pixel_spacing_mm=(spacing[0], spacing[1]) if spacing else None,
        position_mm=(position[0], position[1], position[2]) if position else None,
        orientation=orientation, frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "") or ""),
        value_unit=unit, values=values)


def segment_volume_ml(seg: Dataset, segment_number: int) -> float:
    """Volume (ml) of one segment of a DICOM Segmentation (binary, fractional or label map):
    its voxels, counted once per plane position, times the voxel size (Pixel Spacing and
    Spacing Between Slices, else Slice Thickness)."""
    try:
        return _segment_volume_ml(seg, segment_number)
    except MeasurementError:
        raise
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as e:
        raise MeasurementError(f"the segmentation cannot be read: {type(e).__name__}: {e}") from None


def _segment_volume_ml(seg: Dataset, segment_number: int) -> float:
    sop_class = str(seg.get("SOPClassUID", ""))
    if sop_class not in (SEGMENTATION_STORAGE, LABEL_MAP_SEGMENTATION_STORAGE):
        raise MeasurementError("the referenced instance is not a DICOM Segmentation")
    numbers = {int(s.SegmentNumber) for s in seg.get("SegmentSequence", [])}
    if segment_number not in numbers:
        raise MeasurementError(f"the segmentation has no segment {segment_number} (has {sorted(numbers)})")
    measures = _group(seg, 0, "PixelMeasuresSequence")
    spacing = _floats(measures.get("PixelSpacing") if measures else None, 2)
    thickness = None
    if measures is not None:
        for keyword in ("SpacingBetweenSlices", "SliceThickness"):
            if measures.get(keyword) not in (None, ""):
                thickness = float(measures.get(keyword))
                break
    if spacing is None or thickness is None:
        raise MeasurementError("the segmentation lacks Pixel Spacing or slice spacing/thickness")
    try:
        pixels = np.asarray(seg.pixel_array)
    except Exception as e:  # noqa: BLE001
        raise MeasurementError(f"the segmentation's pixel data cannot be decoded: {type(e).__name__}: {e}") from None
    frames = frame_count(seg)
    if frames == 1 and pixels.ndim == 2:
        pixels = pixels[np.newaxis]
    label_map = sop_class == LABEL_MAP_SEGMENTATION_STORAGE or seg.get("SegmentationType") == "LABELMAP"
    threshold = 0.0
    if seg.get("SegmentationType") == "FRACTIONAL":
        threshold = float(seg.get("MaximumFractionalValue", 255)) / 2.0
    planes: dict[tuple[float, ...], NDArray[np.bool_]] = {}
    for i in range(frames):
        if label_map:
            selected = pixels[i] == segment_number
        else:
            ident = _group(seg, i, "SegmentIdentificationSequence")
            if ident is None or int(ident.ReferencedSegmentNumber) != segment_number:
                continue
            selected = pixels[i] > threshold
        plane = _group(seg, i, "PlanePositionSequence")
        position = _floats(plane.get("ImagePositionPatient") if plane else None, 3)
        key = tuple(round(v, 3) for v in position) if position else (float(i),)
        planes[key] = planes[key] | selected if key in planes else selected
    if not planes:
        return 0.0
    stack = np.stack(list(planes.values()))
    return mask_volume_ml(stack, (thickness, spacing[0], spacing[1]))


# --------------------------------------------------------------------------- what each kind measures

_POINT_COUNTS: dict[MeasurementKind, tuple[int, int]] = {
    MeasurementKind.DISTANCE: (2, 2),
    MeasurementKind.ANGLE: (3, 3),
    MeasurementKind.COBB_ANGLE: (4, 4),
    MeasurementKind.POLYGON: (3, MAX_POINTS),
    MeasurementKind.RECTANGLE_ROI: (2, 2),
    MeasurementKind.ELLIPSE_ROI: (2, 4),
    MeasurementKind.FREEHAND_ROI: (3, MAX_POINTS),
    MeasurementKind.PROBE: (1, 1),
    MeasurementKind.ARROW: (2, 2),
    MeasurementKind.TEXT: (1, 1),
}
# Kinds that may be drawn in patient coordinates (MPR, 3-D) instead of on an image.
PATIENT_COORDINATE_KINDS = frozenset({MeasurementKind.DISTANCE, MeasurementKind.ANGLE,
                                      MeasurementKind.COBB_ANGLE, MeasurementKind.ARROW, MeasurementKind.TEXT})
ROI_KINDS = frozenset({MeasurementKind.RECTANGLE_ROI, MeasurementKind.ELLIPSE_ROI, MeasurementKind.FREEHAND_ROI})
PIXEL_KINDS = ROI_KINDS | {MeasurementKind.PROBE}


def check_points(kind: MeasurementKind, points: Sequence[Sequence[float]], dims: int) -> F64:
    """The points as an array, refused when their number does not fit the kind."""
    lo, hi = _POINT_COUNTS[kind]
    n = len(points)
    if not lo <= n <= hi or (kind is MeasurementKind.ELLIPSE_ROI and n == 3):
        wanted = str(lo) if lo == hi else ("2 or 4" if kind is MeasurementKind.ELLIPSE_ROI else f"at least {lo}")
        raise MeasurementError(f"a {kind.value} needs {wanted} points, got {n}")
    return _array(points, dims)


def _need_spacing(image: FrameImage, kind: MeasurementKind) -> PixelSpacing:
    if image.pixel_spacing_mm is None:
        raise MeasurementError(f"the image has no pixel spacing: a {kind.value} in mm cannot be computed")
    return image.pixel_spacing_mm


def measure_patient(kind: MeasurementKind, points_mm: ArrayLike) -> dict[str, Quantity]:
    """The values of a measurement drawn in patient coordinates (mm)."""
    pts = check_points(kind, np.asarray(points_mm, dtype=np.float64).tolist(), 3)
    if kind is MeasurementKind.DISTANCE:
        return {"length": Quantity(distance_mm(pts[0], pts[1]), UNIT_MM)}
    if kind is MeasurementKind.ANGLE:
        return {"angle": Quantity(angle_deg(pts[0], pts[1], pts[2]), UNIT_DEG)}
    if kind is MeasurementKind.COBB_ANGLE:
        return {"angle": Quantity(cobb_angle_deg(pts[:2], pts[2:]), UNIT_DEG)}
    if kind in (MeasurementKind.ARROW, MeasurementKind.TEXT):
        return {}
    raise MeasurementError(f"a {kind.value} must be drawn on an image (image coordinates)")


def measure_image(kind: MeasurementKind, points: ArrayLike, image: FrameImage) -> dict[str, Quantity]:
    """The values of a measurement drawn on one frame, in image coordinates."""
    pts = check_points(kind, np.asarray(points, dtype=np.float64).tolist(), 2)
    if kind in (MeasurementKind.ARROW, MeasurementKind.TEXT):
        return {}
    if kind is MeasurementKind.DISTANCE:
        return {"length": Quantity(image_distance_mm(pts[0], pts[1], _need_spacing(image, kind)), UNIT_MM)}
    if kind in (MeasurementKind.ANGLE, MeasurementKind.COBB_ANGLE):
        # Angles need no calibration, only the pixels' aspect ratio.
        mm = image_to_mm(pts, image.pixel_spacing_mm or (1.0, 1.0))
        if kind is MeasurementKind.ANGLE:
            return {"angle": Quantity(angle_deg(mm[0], mm[1], mm[2]), UNIT_DEG)}
        return {"angle": Quantity(cobb_angle_deg(mm[:2], mm[2:]), UNIT_DEG)}
    if kind is MeasurementKind.POLYGON:
        spacing = _need_spacing(image, kind)
        return {"area": Quantity(polygon_area_mm2(pts, spacing), UNIT_MM2),
                "perimeter": Quantity(perimeter_mm(pts, spacing), UNIT_MM)}
    shape = (image.rows, image.columns)
    if kind is MeasurementKind.PROBE:
        column, row = int(math.floor(pts[0][0])), int(math.floor(pts[0][1]))
        if not (0 <= row < image.rows and 0 <= column < image.columns):
            raise MeasurementError("the probe point lies outside the image")
        assert image.values is not None, "probe needs the pixel values"
        return {"value": Quantity(float(image.values[row, column]), image.value_unit)}
    spacing = _need_spacing(image, kind)
    if kind is MeasurementKind.RECTANGLE_ROI:
        corners = rectangle_corners(pts[0], pts[1])
        mask = rectangle_mask(pts[0], pts[1], shape)
        area, perimeter = polygon_area_mm2(corners, spacing), perimeter_mm(corners, spacing)
    elif kind is MeasurementKind.ELLIPSE_ROI:
        axes = ellipse_axes(pts)
        mask = ellipse_mask(axes, shape)
        area, perimeter = ellipse_area_mm2(axes, spacing), ellipse_perimeter_mm(axes, spacing)
    elif kind is MeasurementKind.FREEHAND_ROI:
        mask = polygon_mask(pts, shape)
        area, perimeter = polygon_area_mm2(pts, spacing), perimeter_mm(pts, spacing)
    else:  # pragma: no cover - every kind is handled above
        raise MeasurementError(f"cannot measure a {kind.value} here")
    assert image.values is not None, "ROI statistics need the pixel values"
    stats = roi_stats(image.values, mask, pixel_spacing_mm=spacing)
    unit = image.value_unit
    return {"area": Quantity(area, UNIT_MM2), "perimeter": Quantity(perimeter, UNIT_MM),
            "mean": Quantity(stats.mean, unit), "sd": Quantity(stats.sd, unit),
            "min": Quantity(stats.min, unit), "max": Quantity(stats.max, unit)}


def volume_quantity(volume_ml: float) -> dict[str, Quantity]:
    return {"volume": Quantity(volume_ml, UNIT_ML)}
