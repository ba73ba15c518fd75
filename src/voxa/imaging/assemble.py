"""Series to :class:`~voxa.imaging.volume.Volume`: pure assembly of decoded DICOM datasets.

No I/O here: the caller reads the instances (see :mod:`voxa.imaging.series`). Rules, in order:

1. Every image becomes a slice: a single-frame CT/MR image, or each frame of an enhanced
   multi-frame image (geometry and rescale from the per-frame, else shared, functional groups).
2. All slices must share Rows, Columns, PixelSpacing and ImageOrientationPatient — otherwise
   :class:`AssemblyError`.
3. Slices are sorted by their distance along the slice normal (row × column of IOP, dotted with
   ImagePositionPatient), never by InstanceNumber.
4. Two slices at the same position (within 0.01 mm) → :class:`AssemblyError`; several phases of a
   4-D series must first be separated with :func:`split_phases`.
5. Gantry tilt (slices displaced along the column/row direction from one to the next) is
   corrected by shifting each slice in-plane onto an orthogonal grid (linear interpolation) when
   ``tilt="resample"`` (default), or refused with ``tilt="refuse"``; ``Volume.tilt_deg`` reports it.
6. Uneven spacing (gaps differing by more than 1 % of the median gap or 0.01 mm, whichever is
   larger) is resampled by linear interpolation along the normal to the smallest gap with
   ``uneven="resample"`` (default), or refused with ``uneven="refuse"``.
7. Rescale Slope/Intercept is applied per slice; values are float32.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset

from voxa.imaging.volume import F32, F64, Volume

POSITION_TOLERANCE_MM = 0.01
SPACING_TOLERANCE_FRACTION = 0.01
_ORIENTATION_TOLERANCE = 1e-4
_TILT_TOLERANCE_DEG = 0.01

UnevenPolicy = Literal["resample", "refuse"]
TiltPolicy = Literal["resample", "refuse"]


class AssemblyError(ValueError):
    """The datasets cannot be made into one volume; ``reason`` says why, for a human."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class _Slice:
    position: F64  # ImagePositionPatient
    row_dir: F64
    col_dir: F64
    row_spacing_mm: float  # PixelSpacing[0]: between rows (along the column direction)
    col_spacing_mm: float  # PixelSpacing[1]: between columns (along the row direction)
    slope: float
    intercept: float
    pixels: NDArray[Any]  # (rows, columns), stored values
    sop_instance_uid: str
    label: str  # for messages: "instance <uid>" or "frame 3 of <uid>"


def _floats(value: Any, n: int, what: str, label: str) -> F64:
    try:
        arr = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        raise AssemblyError(f"{label}: {what} is missing or not numeric") from None
    if arr.shape != (n,):
        raise AssemblyError(f"{label}: {what} must have {n} values, has {arr.size}")
    return arr


def _item(ds: Dataset, keyword: str) -> Dataset | None:
    seq = ds.get(keyword)
    return seq[0] if seq else None


def _functional_group(ds: Dataset, frame: int, keyword: str) -> Dataset | None:
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame and frame < len(per_frame):
        found = _item(per_frame[frame], keyword)
        if found is not None:
            return found
    shared = ds.get("SharedFunctionalGroupsSequence")
    return _item(shared[0], keyword) if shared else None


def _rescale(source: Dataset | None) -> tuple[float, float]:
    if source is None:
        return 1.0, 0.0
    slope = source.get("RescaleSlope")
    intercept = source.get("RescaleIntercept")
    return (float(slope) if slope not in (None, "") else 1.0,
            float(intercept) if intercept not in (None, "") else 0.0)


_NATIVE_LITTLE_ENDIAN = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"})


def _native_pixels(ds: Dataset) -> NDArray[Any] | None:
    """The pixels of an uncompressed little-endian grey image straight from its bytes, or None
    when pydicom's decoder is needed.  pydicom's general pixel pipeline costs ~3 ms per CT
    slice, most of a 300-slice load."""
    meta = getattr(ds, "file_meta", None)
    ts = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    raw = ds.get("PixelData")
    if ts not in _NATIVE_LITTLE_ENDIAN or not isinstance(raw, bytes):
        return None
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        allocated, stored = int(ds.BitsAllocated), int(ds.get("BitsStored", ds.BitsAllocated))
        signed = int(ds.get("PixelRepresentation", 0)) == 1
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        return None
    if allocated not in (8, 16, 32) or (stored < allocated and not signed) or ds.get("PhotometricInterpretation") \
            not in ("MONOCHROME1", "MONOCHROME2"):
        return None  # unsigned values with high bits to mask, or unusual layouts: let pydicom do it
    dtype = np.dtype(f"<{'i' if signed else 'u'}{allocated // 8}")
    count = rows * cols * frames
    if len(raw) < count * dtype.itemsize:
        return None
    pixels = np.frombuffer(raw, dtype=dtype, count=count)
    if signed and stored < allocated:
        shift = allocated - stored  # sign-extend the stored bits, as pydicom does
        pixels = (pixels << shift) >> shift
    return pixels.reshape((frames, rows, cols) if frames > 1 else (rows, cols))


def _pixels(ds: Dataset, label: str) -> NDArray[Any]:
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise AssemblyError(f"{label}: colour images (SamplesPerPixel > 1) cannot form a volume")
    fast = _native_pixels(ds)
    if fast is not None:
        return fast
    try:
        return np.asarray(ds.pixel_array)
    except Exception as e:  # noqa: BLE001 - pydicom and its handlers raise many kinds
        raise AssemblyError(f"{label}: pixel data cannot be decoded: {type(e).__name__}: {e}") from None


def _slices_of(ds: Dataset) -> list[_Slice]:
    uid = str(ds.get("SOPInstanceUID", ""))
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    enhanced = "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds
    if not enhanced:
        label = f"instance {uid}"
        if frames > 1:
            raise AssemblyError(f"{label}: multi-frame image without functional groups (not a slice stack)")
        iop = _floats(ds.get("ImageOrientationPatient"), 6, "ImageOrientationPatient", label)
        ipp = _floats(ds.get("ImagePositionPatient"), 3, "ImagePositionPatient", label)
        ps = _floats(ds.get("PixelSpacing"), 2, "PixelSpacing", label)
        slope, intercept = _rescale(ds)
        return [_Slice(ipp, iop[:3], iop[3:], float(ps[0]), float(ps[1]), slope, intercept,
                       _pixels(ds, label), uid, label)]
    pixels = _pixels(ds, f"instance {uid}")
    if frames == 1 and pixels.ndim == 2:
        pixels = pixels[np.newaxis]
    out = []
    for f in range(frames):
        label = f"frame {f + 1} of instance {uid}"
        pos = _functional_group(ds, f, "PlanePositionSequence")
        ori = _functional_group(ds, f, "PlaneOrientationSequence")
        meas = _functional_group(ds, f, "PixelMeasuresSequence")
        if pos is None or ori is None or meas is None:
            raise AssemblyError(f"{label}: plane position, plane orientation or pixel measures missing")
        iop = _floats(ori.get("ImageOrientationPatient"), 6, "ImageOrientationPatient", label)
        ipp = _floats(pos.get("ImagePositionPatient"), 3, "ImagePositionPatient", label)
        ps = _floats(meas.get("PixelSpacing"), 2, "PixelSpacing", label)
        slope, intercept = _rescale(_functional_group(ds, f, "PixelValueTransformationSequence") or ds)
        out.append(_Slice(ipp, iop[:3], iop[3:], float(ps[0]), float(ps[1]), slope, intercept,
                          pixels[f], uid, label))
    return out


def _units(first: Dataset) -> str:
    modality = str(first.get("Modality", ""))
    rescale_type = str(first.get("RescaleType", "") or "")
    if not rescale_type:
        pvt = _functional_group(first, 0, "PixelValueTransformationSequence")
        rescale_type = str(pvt.get("RescaleType", "") or "") if pvt is not None else ""
    if modality == "CT":
        return "HU"
    return "" if rescale_type in ("", "US") else rescale_type


def _unit(v: F64) -> F64:
    n = float(np.linalg.norm(v))
    if n < 1e-6:
        raise AssemblyError("ImageOrientationPatient has a zero-length direction")
    return v / n


def volume_from_datasets(
    datasets: Iterable[Dataset],
    *,
    uneven: UnevenPolicy = "resample",
    tilt: TiltPolicy = "resample",
) -> Volume:
    """One :class:`Volume` from the images of one series (any order). Raises :class:`AssemblyError`."""
    dss = list(datasets)
    if not dss:
        raise AssemblyError("no images to assemble")
    series = {str(d.get("SeriesInstanceUID", "")) for d in dss}
    if len(series) > 1:
        raise AssemblyError(f"images of {len(series)} different series cannot form one volume")
    slices = [s for d in dss for s in _slices_of(d)]

    first = slices[0]
    shape = first.pixels.shape
    for s in slices[1:]:
        if s.pixels.shape != shape:
            raise AssemblyError(f"mixed image sizes: {s.label} is {s.pixels.shape[0]}x{s.pixels.shape[1]}, "
                                f"{first.label} is {shape[0]}x{shape[1]} (rows x columns)")
        if (np.abs(s.row_dir - first.row_dir).max() > _ORIENTATION_TOLERANCE
                or np.abs(s.col_dir - first.col_dir).max() > _ORIENTATION_TOLERANCE):
            raise AssemblyError(f"mixed orientations: {s.label} has ImageOrientationPatient "
                                f"{[*s.row_dir, *s.col_dir]}, {first.label} has {[*first.row_dir, *first.col_dir]}")
        if (abs(s.row_spacing_mm - first.row_spacing_mm) > 1e-4
                or abs(s.col_spacing_mm - first.col_spacing_mm) > 1e-4):
            raise AssemblyError(f"mixed pixel spacing: {s.label} differs from {first.label}")

    row_dir, col_dir = _unit(first.row_dir), _unit(first.col_dir)
    if abs(float(row_dir @ col_dir)) > 1e-3:
        raise AssemblyError("ImageOrientationPatient row and column directions are not orthogonal")
    normal = _unit(np.cross(row_dir, col_dir))

    dist = np.array([float(s.position @ normal) for s in slices])
    order = np.argsort(dist, kind="stable")
    slices = [slices[i] for i in order]
    dist = dist[order]
    if len(slices) > 1:
        gaps = np.diff(dist)
        dup = np.flatnonzero(gaps < POSITION_TOLERANCE_MM)
        if dup.size:
            a, b = slices[int(dup[0])], slices[int(dup[0]) + 1]
            raise AssemblyError(
                f"{dup.size} duplicated slice position(s), e.g. {a.label} and {b.label} at "
                f"{dist[int(dup[0])]:.3f} mm along the normal: a 4-D series (split it with split_phases) "
                "or duplicated images")

    # Gantry tilt: in-plane displacement of each slice relative to the first.
    origin = slices[0].position
    offsets = np.array([[float((s.position - origin) @ col_dir), float((s.position - origin) @ row_dir)]
                        for s in slices])  # (along column direction = rows, along row direction = columns)
    tilt_deg = 0.0
    if len(slices) > 1 and dist[-1] > dist[0]:
        lateral = float(np.hypot(offsets[-1, 0], offsets[-1, 1]))
        tilt_deg = float(np.degrees(np.arctan2(lateral, dist[-1] - dist[0])))
    notes: list[str] = []

    stack = np.empty((len(slices), *shape), dtype=np.float32)
    for k, s in enumerate(slices):
        np.multiply(s.pixels, s.slope, out=stack[k], casting="unsafe")
        stack[k] += np.float32(s.intercept)

    if tilt_deg > _TILT_TOLERANCE_DEG:
        if tilt == "refuse":
            raise AssemblyError(f"gantry tilt of {tilt_deg:.2f}° (slices are sheared, not stacked along the normal)")
        stack = _correct_tilt(stack, offsets, first.row_spacing_mm, first.col_spacing_mm)
        notes.append(f"corrected gantry tilt of {tilt_deg:.2f} degrees")
    else:
        tilt_deg = 0.0

    uids = tuple(s.sop_instance_uid for s in slices)
    slice_spacing = 1.0
    if len(slices) > 1:
        gaps = np.diff(dist)
        median = float(np.median(gaps))
        tolerance = max(POSITION_TOLERANCE_MM, SPACING_TOLERANCE_FRACTION * median)
        if float(gaps.max() - gaps.min()) > tolerance:
            if uneven == "refuse":
                raise AssemblyError(f"uneven slice spacing: gaps from {gaps.min():.3f} to {gaps.max():.3f} mm")
            stack, uids, slice_spacing = _resample_even(stack, dist, uids, float(gaps.min()))
            notes.append(f"resampled uneven spacing ({gaps.min():.3f}-{gaps.max():.3f} mm) "
                         f"to {slice_spacing:.4f} mm")
        else:
            slice_spacing = float((dist[-1] - dist[0]) / (len(dist) - 1))
    else:
        thickness = dss[0].get("SliceThickness")
        slice_spacing = float(thickness) if thickness not in (None, "") else 1.0

    # origin: first slice's position, projected onto the normal line through it (tilt removed)
    return Volume(
        voxels=stack,
        spacing_mm=(slice_spacing, first.row_spacing_mm, first.col_spacing_mm),
        origin_mm=(float(origin[0]), float(origin[1]), float(origin[2])),
        direction=np.stack([row_dir, col_dir, normal]),
        units=_units(dss[0]),
        modality=str(dss[0].get("Modality", "")),
        series_instance_uid=next(iter(series)),
        sop_instance_uids=uids,
        tilt_deg=tilt_deg,
        notes=tuple(notes),
    )


def _correct_tilt(stack: F32, offsets: F64, row_spacing_mm: float, col_spacing_mm: float) -> F32:
    """Shift each slice in-plane so that voxel (j, i) of every slice lies on the normal through
    voxel (j, i) of the first slice; outside the field of view is filled with the minimum value."""
    from scipy import ndimage

    fill = float(stack.min())
    out = np.empty_like(stack)
    for k in range(stack.shape[0]):
        shift = (offsets[k, 0] / row_spacing_mm, offsets[k, 1] / col_spacing_mm)
        ndimage.shift(stack[k], shift, output=out[k], order=1, mode="constant", cval=fill, prefilter=False)
    return out


def _resample_even(stack: F32, dist: F64, uids: Sequence[str], spacing: float) -> tuple[F32, tuple[str, ...], float]:
    """Linear interpolation along z onto an even grid from the first to the last slice."""
    length = float(dist[-1] - dist[0])
    n = int(round(length / spacing)) + 1
    spacing = length / (n - 1)
    targets = dist[0] + spacing * np.arange(n)
    hi = np.clip(np.searchsorted(dist, targets, side="right"), 1, len(dist) - 1)
    lo = hi - 1
    w = ((targets - dist[lo]) / (dist[hi] - dist[lo])).clip(0.0, 1.0).astype(np.float32)
    out = np.empty((n, *stack.shape[1:]), dtype=np.float32)
    for k in range(n):
        out[k] = stack[lo[k]] * (1.0 - w[k]) + stack[hi[k]] * w[k]
    nearest = np.where(w < 0.5, lo, hi)
    return out, tuple(uids[int(i)] for i in nearest), spacing


# --------------------------------------------------------------------------------------------
# 4-D series


@dataclass(frozen=True, order=True)
class PhaseKey:
    """Which attribute separated the phases, and this phase's value (AcquisitionTime in seconds)."""

    attribute: str
    value: float


_PHASE_ATTRIBUTES = ("TriggerTime", "NominalPercentageOfCardiacPhase", "TemporalPositionIdentifier",
                     "AcquisitionTime")


def _phase_value(ds: Dataset, attribute: str) -> float | None:
    value = ds.get(attribute)
    if value in (None, ""):
        return None
    if attribute == "AcquisitionTime":
        t = str(value).strip()
        try:
            parsed = dt.datetime.strptime(t.split(".")[0].ljust(6, "0")[:6], "%H%M%S")
        except ValueError:
            return None
        frac = float("0." + t.split(".")[1]) if "." in t and t.split(".")[1] else 0.0
        return parsed.hour * 3600 + parsed.minute * 60 + parsed.second + frac
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def split_phases(datasets: Iterable[Dataset]) -> dict[PhaseKey, list[Dataset]]:
    """Separate a 4-D series (several images per position) into phases, in increasing order.

    The first of TriggerTime, NominalPercentageOfCardiacPhase (cardiac), TemporalPositionIdentifier,
    AcquisitionTime (perfusion) that every image carries and that tells the images sharing a
    position apart is used; the i-th image of each position (in increasing value) belongs to
    phase i, keyed by the phase's median value (times differ slightly between slices). A 3-D series (one image per position) comes back as one phase keyed
    ``PhaseKey("", 0.0)``. Single-frame images only. Raises :class:`AssemblyError` when no
    attribute separates the phases.
    """
    dss = list(datasets)
    positions: dict[tuple[float, ...], list[Dataset]] = {}
    for d in dss:
        ipp = d.get("ImagePositionPatient")
        label = f"instance {d.get('SOPInstanceUID', '')}"
        key = tuple(np.round(_floats(ipp, 3, "ImagePositionPatient", label) / POSITION_TOLERANCE_MM).tolist())
        positions.setdefault(key, []).append(d)
    if all(len(group) == 1 for group in positions.values()):
        return {PhaseKey("", 0.0): dss}
    counts = {len(group) for group in positions.values()}
    if len(counts) != 1:
        raise AssemblyError(f"positions hold different numbers of images ({sorted(counts)}): "
                            "incomplete phases cannot be separated")
    for attribute in _PHASE_ATTRIBUTES:
        value_of = {id(d): _phase_value(d, attribute) for d in dss}
        if any(v is None for v in value_of.values()):
            continue
        # the i-th image of every position (in increasing value) belongs to phase i: trigger
        # and acquisition times differ slightly from slice to slice within one phase
        ranked: list[list[Dataset]] = []
        for group in positions.values():
            ordered = sorted(group, key=lambda d: value_of[id(d)] or 0.0)
            values = [value_of[id(d)] for d in ordered]
            if len(set(values)) != len(values):
                break
            ranked.append(ordered)
        else:
            phases: dict[PhaseKey, list[Dataset]] = {}
            for i in range(counts.pop()):
                members = [group[i] for group in ranked]
                median = float(np.median([value_of[id(d)] or 0.0 for d in members]))
                member_ids = {id(d) for d in members}
                phases[PhaseKey(attribute, median)] = [d for d in dss if id(d) in member_ids]
            return phases
    raise AssemblyError("several images share a position and no attribute (TriggerTime, "
                        "NominalPercentageOfCardiacPhase, TemporalPositionIdentifier, AcquisitionTime) "
                        "separates them into phases")


__all__ = ["AssemblyError", "PhaseKey", "split_phases", "volume_from_datasets"]
