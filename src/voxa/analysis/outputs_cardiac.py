"""DICOM objects of a cardiac function analysis (:mod:`voxa.analysis.cardiac`), built with highdicom.

* :func:`cardiac_label_masks` — the chamber blood pools and the LV myocardium at end-diastole,
  as voxel masks on the analysed grid. :class:`~voxa.analysis.cardiac.CardiacFunctionResult`
  does not carry them, so this function repeats the engine's own steps (2, 3 and 5 of its
  method) with its internal functions, and checks itself against the result: a mask whose
  volume differs from the reported one raises :class:`~voxa.analysis.dicom_outputs.OutputError`.
* :func:`build_cardiac_seg` — a binary **SEG** over the end-diastolic images, one segment per
  structure, category Anatomical Structure (SCT 91723000): "LV blood pool" Left ventricle
  (SCT 87878005), "RV blood pool" Right ventricle (SCT 53085002), "LA" Left atrium (SCT
  82471001), "RA" Right atrium (SCT 73829009), "LV myocardium" Left ventricle myocardium (SCT
  49848007). SNOMED CT has no "cavity" concept for the chambers in DICOM's lists (CID 7151);
  the labels say that the segments hold the contrast blood only.
* :func:`build_cardiac_sr` — a **Comprehensive 3D SR** holding a TID 1500 Measurement Report,
  procedure reported Cardiac CT (SCT 241547009), observer the Voxa algorithm (a device). Groups
  are TID 1411 Volumetric ROIs: given the masks, outlined on the end-diastolic images (image
  regions, :mod:`voxa.analysis.sr_regions`; the AHA segments by :func:`aha_segment_masks`), so
  that viewers such as OHIF draw them; otherwise referencing the structure's segment of the SEG
  (TID 1501 when there is no SEG or no such segment):

  - *Left ventricle*: LV ED volume (LN 8821-1, ``ml``), LV ES volume (LN 8823-7, ``ml``),
    Stroke volume (SCT 90096001, ``ml``), LV ejection fraction by CT (LN 8810-4, ``%``), and
    with a heart rate Cardiac output (SCT 82799009, ``l/min``), with a body surface area also
    Cardiac index (SCT 54993008, ``l/min/m2``); the end-diastolic and end-systolic phases
    (``%`` of the R-R interval, private codes).
  - *LV myocardium*: LV mass (LN 18087-7, ``g``, at end-diastole), Wall volume (DCM 122446,
    ``ml``), Wall thickness (DCM 122445, ``mm``, derivation Maximum SCT 56851009) — the largest
    end-diastolic segment value.
  - *Right ventricle*: RV ED volume (LN 8822-9), RV ES volume (LN 8824-5), RV stroke volume
    (SCT 429483009), RV ejection fraction by CT (LN 8817-9).
  - *Left atrium*, *Right atrium*: Volume (SCT 118565006, ``ml``) with derivation Maximum (SCT
    56851009) and Minimum (SCT 255605001) over the cycle.
  - *AHA 1 ... AHA 17* (one group per segment of the 17-segment model, CID 3717 finding sites,
    e.g. SCT 264850008 left ventricle basal anterior segment; 17 is Apex of left ventricle SCT
    128564006), referencing the LV myocardium segment: Wall thickness at end-diastole (DCM
    122445, ``mm``, derivation Median SCT 373099004: the median over the segment's voxels), and
    the end-systolic thickness and systolic thickening (private codes).

  Quantities without a standard code use the private coding scheme ``99VOXA`` (declared in the
  SR's Coding Scheme Identification Sequence): see :data:`VOXA_CODES`. The report is
  PRELIMINARY and UNVERIFIED: analysis results need a reader's review.

``tests/analysis/test_outputs_cardiac_vessels.py`` writes each object, reads it back with
highdicom and runs dicom3tools' dciodvfy on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import highdicom as hd
import numpy as np
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from scipy import ndimage

from voxa.analysis import cardiac as engine
from voxa.analysis.cardiac import ALGORITHM_VERSION, CardiacFunctionResult, Chamber
from voxa.analysis.dicom_outputs import (
    MANUFACTURER,
    OutputError,
    Segment,
    build_segmentation,
    device_observer,
)
from voxa.dicom.evidence import with_patient_attributes
from voxa.imaging.volume import Volume

ALGORITHM_NAME = "Voxa cardiac function"
CARDIAC_SEG_SERIES_NUMBER = 920
CARDIAC_SR_SERIES_NUMBER = 921

LV_BLOOD_POOL = "LV blood pool"
RV_BLOOD_POOL = "RV blood pool"
LEFT_ATRIUM = "LA"
RIGHT_ATRIUM = "RA"
LV_MYOCARDIUM = "LV myocardium"

#: The SEG's structures in segment order, with their SNOMED CT terms (CID 7151 / 12305).
CARDIAC_STRUCTURES: Mapping[str, Code] = {
    LV_BLOOD_POOL: codes.SCT.LeftVentricle,  # 87878005
    RV_BLOOD_POOL: codes.SCT.RightVentricle,  # 53085002
    LEFT_ATRIUM: codes.SCT.LeftAtrium,  # 82471001
    RIGHT_ATRIUM: codes.SCT.RightAtrium,  # 73829009
    LV_MYOCARDIUM: codes.SCT.LeftVentricleMyocardium,  # 49848007
}
_CHAMBER_LABELS: Mapping[Chamber, str] = {
    Chamber.LV: LV_BLOOD_POOL, Chamber.RV: RV_BLOOD_POOL, Chamber.LA: LEFT_ATRIUM, Chamber.RA: RIGHT_ATRIUM,
}

#: AHA 17-segment model (CID 3717 Myocardial Wall Segments).
AHA_SEGMENT_CODES: Mapping[int, Code] = {
    1: codes.SCT.LeftVentricleBasalAnteriorSegment,  # 264850008
    2: codes.SCT.LeftVentricleBasalAnteroseptalSegment,  # 396482007
    3: codes.SCT.LeftVentricleBasalInferoseptalSegment,  # 396646008
    4: codes.SCT.LeftVentricleBasalInferiorSegment,  # 264846001
    5: codes.SCT.LeftVentricleBasalInferolateralSegment,  # 396652009
    6: codes.SCT.LeftVentricleBasalAnterolateralSegment,  # 396654005
    7: codes.SCT.LeftVentricleMidAnteriorSegment,  # 264848000
    8: codes.SCT.LeftVentricleMidAnteroseptalSegment,  # 396647004
    9: codes.SCT.LeftVentricleMidInferoseptalSegment,  # 396649001
    10: codes.SCT.LeftVentricleMidInferiorSegment,  # 264847005
    11: codes.SCT.LeftVentricleMidInferolateralSegment,  # 396655006
    12: codes.SCT.LeftVentricleMidAnterolateralSegment,  # 396656007
    13: codes.SCT.LeftVentricleApicalAnteriorSegment,  # 264844003
    14: codes.SCT.LeftVentricleApicalSeptalSegment,  # 264845002
    15: codes.SCT.LeftVentricleApicalInferiorSegment,  # 264849008
    16: codes.SCT.LeftVentricleApicalLateralSegment,  # 264853005
    17: codes.SCT.ApexOfLeftVentricle,  # 128564006
}

#: Voxa's private coding scheme, for quantities no standard code names.
PRIVATE_SCHEME = "99VOXA"
VOXA_CODES: Mapping[str, Code] = {
    "ed_phase": Code("CARD-EDPHASE", PRIVATE_SCHEME, "End-diastolic phase of the R-R interval"),
    "es_phase": Code("CARD-ESPHASE", PRIVATE_SCHEME, "End-systolic phase of the R-R interval"),
    "es_wall_thickness": Code("CARD-ESWT", PRIVATE_SCHEME, "Wall thickness at end-systole"),
    "wall_thickening": Code("CARD-SWT", PRIVATE_SCHEME, "Systolic wall thickening"),
}



def voxa_coding_scheme() -> CodingSchemeIdentificationItem:
    """The Coding Scheme Identification item that declares :data:`PRIVATE_SCHEME` in an SR."""
    return CodingSchemeIdentificationItem(designator=PRIVATE_SCHEME, name="Voxa private codes",
                                          responsible_organization="Voxa")


UNIT_ML = Code("ml", "UCUM", "milliliter")
UNIT_G = Code("g", "UCUM", "gram")
UNIT_PERCENT = codes.UCUM.Percent
UNIT_MM = codes.UCUM.Millimeter
UNIT_L_MIN = Code("l/min", "UCUM", "liter per minute")
UNIT_L_MIN_M2 = Code("l/min/m2", "UCUM", "liter per minute per square meter")

Mask = NDArray[np.bool_]


# --------------------------------------------------------------------------------------------
# masks


def images_in_volume_order(datasets: Sequence[Dataset], volume: Volume) -> list[Dataset]:
    """The images of ``volume`` in its slice order (by :attr:`Volume.sop_instance_uids`), as a
    SEG over the volume needs them. Raises :class:`OutputError` when the volume is not one
    stored image per slice (resampled, multi-frame) or an image is missing."""
    uids = volume.sop_instance_uids
    if volume.notes or len(uids) != volume.shape[0] or len(set(uids)) != len(uids):
        raise OutputError("the volume is not one stored image per slice (" + ("; ".join(volume.notes) or
                          "no SOP Instance UIDs") + "): a SEG cannot be written over it")
    by_uid = {str(ds.SOPInstanceUID): ds for ds in datasets}
    missing = [u for u in uids if u not in by_uid]
    if missing:
        raise OutputError(f"{len(missing)} images of the volume are not among the datasets, e.g. {missing[0]}")
    return [by_uid[u] for u in uids]


def _chamber_codes(volume: Volume, ref: engine._Reference, blood_window: tuple[float, float]) -> NDArray[np.uint8]:
    """Chamber code of every voxel of ``ref.roi`` at one phase: the engine's step 3
    (``cardiac._segment_phase``), kept for every voxel instead of counted."""
    roi = ref.roi
    start = np.array([s.start for s in roi])
    f = np.array(ref.factors)
    lab, n = ndimage.label(engine._in_window(volume.voxels[roi], blood_window))
    offset = (-start) % f
    c0 = (start + offset) // f
    sampled = lab[offset[0]::f[0], offset[1]::f[1], offset[2]::f[2]]
    ref_box = tuple(slice(int(c0[i]), int(c0[i]) + sampled.shape[i]) for i in range(3))
    ref_codes = ref.coarse[ref_box]
    sampled = sampled[tuple(slice(0, s) for s in ref_codes.shape)]
    both = (sampled > 0) & (ref_codes > 0)
    overlap = np.bincount(sampled[both].astype(np.int64) * 6 + ref_codes[both], minlength=(n + 1) * 6)
    overlap = overlap.reshape(n + 1, 6)
    total = overlap.sum(axis=1)
    dominant = overlap.argmax(axis=1)
    clear = (total > 0) & (overlap[np.arange(n + 1), dominant] >= 0.9 * total)
    lut = np.where(clear, dominant, 0).astype(np.uint8)
    mixed = np.flatnonzero((total > 0) & ~clear)
    out = lut[lab]
    if mixed.size:
        split = np.isin(lab, mixed)
        if split.any():
            idx = np.argwhere(split) + start
            c = np.minimum(np.round(idx / f).astype(np.int64), np.array(ref.nearest.shape) - 1)
            out[split] = ref.nearest[c[:, 0], c[:, 1], c[:, 2]]
    return np.asarray(out, dtype=np.uint8)


def _myocardium_mask(volume: Volume, sg: engine._PhaseSegmentation, *, blood_window: tuple[float, float],
                     myocardium_window: tuple[float, float], max_wall_mm: float) -> tuple[Mask, float]:
    """The LV myocardium of the engine's step 5 (``cardiac._myocardium``) on the volume's grid,
    and its volume (mL) on the analysis grid."""
    spacing = np.array(volume.spacing_mm, dtype=np.float64)
    g = engine._factors(volume.spacing_mm, engine._MYOCARDIUM_GRID_MM)
    gv = np.array(g)
    grid_mm = spacing * gv
    pad = np.ceil((max_wall_mm + 3 * grid_mm) / spacing).astype(int)
    lo = np.maximum(np.array([s.start for s in sg.lv_box]) - pad, 0)
    hi = np.minimum(np.array([s.stop for s in sg.lv_box]) + pad, np.array(volume.shape))
    hi = lo + (hi - lo) // gv * gv
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    lv_full = np.zeros(tuple(int(v) for v in hi - lo), dtype=np.float32)
    box_lo = np.array([s.start for s in sg.lv_box])
    a0 = np.maximum(box_lo, lo)
    a1 = np.minimum(np.array([s.stop for s in sg.lv_box]), hi)
    lv_full[tuple(slice(int(x - o), int(y - o)) for x, y, o in zip(a0, a1, lo, strict=True))] = sg.lv_mask[
        tuple(slice(int(x - b), int(y - b)) for x, y, b in zip(a0, a1, box_lo, strict=True))
    ]
    hu = engine._block_mean(volume.voxels[box], g)
    cavity = engine._block_mean(lv_full, g) >= 0.5
    blood = engine._in_window(hu, blood_window) | cavity
    window = (hu >= myocardium_window[0]) & (hu < myocardium_window[1]) & ~blood
    w_myo = ndimage.gaussian_filter(window.astype(np.float32), 1.0, mode="nearest")
    w_all = ndimage.gaussian_filter((~blood).astype(np.float32), 1.0, mode="nearest")
    myo = (w_myo >= 0.5 * w_all) & ~blood
    d_in = ndimage.distance_transform_edt(~cavity, sampling=grid_mm)
    myo &= np.asarray(d_in) <= max_wall_mm
    parts, n_parts = ndimage.label(myo)
    touching = np.unique(parts[ndimage.binary_dilation(cavity) & myo])
    myo = np.isin(parts, touching[touching > 0]) if n_parts else myo
    epi = ndimage.binary_fill_holes(cavity | myo)
    myo = np.asarray(epi & ~cavity, dtype=bool)
    volume_ml = float(myo.sum()) * float(np.prod(grid_mm)) / 1000.0
    fine = myo
    for axis, k in enumerate(g):
        if k > 1:
            fine = np.repeat(fine, k, axis=axis)
    out = np.zeros(volume.shape, dtype=bool)
    out[box] = fine
    return out, volume_ml


def cardiac_label_masks(
    phases: Mapping[float, Volume] | Sequence[tuple[float, Volume]],
    result: CardiacFunctionResult,
    *,
    lv_seed_mm: Sequence[float] | None = None,
    rv_seed_mm: Sequence[float] | None = None,
    la_seed_mm: Sequence[float] | None = None,
    ra_seed_mm: Sequence[float] | None = None,
    wall_search_mm: float = 30.0,
) -> dict[str, Mask]:
    """The end-diastolic structures of ``result`` as masks of the phases' grid, keyed by the
    SEG's labels (:data:`CARDIAC_STRUCTURES`); a chamber the analysis did not find is left out.

    ``phases`` and the keyword arguments must be those ``result`` was computed with (the HU
    windows are read from the result). The chambers are exactly the voxels the engine counted;
    the myocardium is the engine's, on its grid of about 0.8 mm (the volume's own grid at 1.2 mm
    spacing and above) repeated onto the volume's voxels. Raises :class:`OutputError` when the
    masks do not reproduce the result's volumes (a changed engine, or other inputs)."""
    items = engine._phase_list(phases)
    blood_window = result.blood_window_hu
    myo_window = result.myocardium_window_hu
    first = items[0][1]
    seeds = {Chamber.LV: lv_seed_mm, Chamber.RV: rv_seed_mm, Chamber.LA: la_seed_mm, Chamber.RA: ra_seed_mm}
    cycle = engine._segment_cycle(items, blood_window, myo_window, seeds, [])
    chosen, ref, segs = cycle.chosen, cycle.reference, cycle.segmentations
    ed = [i for i, (p, _) in enumerate(items) if p == result.ed_phase_percent]
    if not ed:
        raise OutputError(f"the end-diastolic phase {result.ed_phase_percent:g}% is not among the phases")
    ed_volume, ed_seg = items[ed[0]][1], segs[ed[0]]
    codes_roi = _chamber_codes(ed_volume, ref, blood_window)
    out: dict[str, Mask] = {}
    voxel_ml = first.voxel_volume_ml
    row = next(r for r in result.phases if r.phase_percent == result.ed_phase_percent)
    reported = {Chamber.LV: row.lv_ml, Chamber.RV: row.rv_ml, Chamber.LA: row.la_ml, Chamber.RA: row.ra_ml}
    for chamber, label in _CHAMBER_LABELS.items():
        if chamber not in chosen:
            continue
        mask = np.zeros(first.shape, dtype=bool)
        mask[ref.roi] = codes_roi == engine._CODES[chamber]
        count = int(mask.sum())
        expected = reported[chamber]
        off = expected is None or abs(count * voxel_ml - expected) > 1e-6 * max(1.0, expected)
        if off or count != ed_seg.counts[chamber]:
            raise OutputError(f"the {label} mask ({count * voxel_ml:.3f} mL) does not reproduce the analysis "
                              f"({expected} mL): were the same phases and seeds given?")
        out[label] = mask
    myo, myo_ml = _myocardium_mask(ed_volume, ed_seg, blood_window=blood_window, myocardium_window=myo_window,
                                   max_wall_mm=wall_search_mm)
    if abs(myo_ml - result.lv_myocardial_volume_ml) > 1e-6 * max(1.0, result.lv_myocardial_volume_ml):
        raise OutputError(f"the LV myocardium mask ({myo_ml:.3f} mL) does not reproduce the analysis "
                          f"({result.lv_myocardial_volume_ml:.3f} mL): were the same phases and wall_search_mm "
                          "given?")
    out[LV_MYOCARDIUM] = myo
    return out


# --------------------------------------------------------------------------------------------
# SEG


def build_cardiac_seg(
    source_images: Sequence[Dataset],
    masks: Mapping[str, NDArray[np.bool_]],
    *,
    algorithm_version: str = ALGORITHM_VERSION,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
) -> Dataset:
    """The end-diastolic chambers and LV myocardium as a binary SEG over ``source_images`` (the
    end-diastolic phase's images, one per mask slice, in the masks' slice order — see
    :func:`images_in_volume_order`).

    ``masks`` maps labels of :data:`CARDIAC_STRUCTURES` to (slices, rows, columns) masks, e.g.
    from :func:`cardiac_label_masks`; segments follow that order, a structure that is absent or
    empty gets no segment. Raises :class:`OutputError` for an unknown label or when every mask
    is empty."""
    unknown = sorted(set(masks) - set(CARDIAC_STRUCTURES))
    if unknown:
        raise OutputError(f"unknown structures {unknown}: expected some of {list(CARDIAC_STRUCTURES)}")
    labels = [label for label in CARDIAC_STRUCTURES if label in masks and np.asarray(masks[label]).any()]
    if not labels:
        raise OutputError("every cardiac mask is empty: there is nothing to write")
    shapes = {np.asarray(masks[label]).shape for label in labels}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3:
        raise OutputError(f"the masks must share one 3-D shape, got {sorted(shapes)}")
    check_slice_order(source_images)
    stacked = np.stack([np.asarray(masks[label], dtype=bool) for label in labels], axis=-1)
    segments = [Segment(label=label, category=codes.SCT.AnatomicalStructure, property_type=CARDIAC_STRUCTURES[label],
                        tracking_id=label) for label in labels]
    return build_segmentation(
        source_images, segments, stacked, algorithm_name=ALGORITHM_NAME, algorithm_version=algorithm_version,
        series_description="Cardiac chambers at end-diastole (Voxa)", series_number=CARDIAC_SEG_SERIES_NUMBER,
        series_instance_uid=series_instance_uid, sop_instance_uid=sop_instance_uid)


def check_slice_order(source_images: Sequence[Dataset]) -> None:
    """The images must be stacked along their normal (either direction), as a volume's slices are."""
    if len(source_images) < 3 or any("ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds
                                     for ds in source_images):
        return
    iop = np.asarray(source_images[0].ImageOrientationPatient, dtype=np.float64)
    normal = np.cross(iop[:3], iop[3:])
    d = np.diff([float(np.asarray(ds.ImagePositionPatient, dtype=np.float64) @ normal) for ds in source_images])
    if not (np.all(d > 0) or np.all(d < 0)):
        raise OutputError("the source images are not in slice order: pass them in the volume's order "
                          "(images_in_volume_order)")


# --------------------------------------------------------------------------------------------
# SR


def segment_numbers(seg: Dataset) -> dict[str, int]:
    """Segment number of each label in a SEG."""
    return {str(item.SegmentLabel): int(item.SegmentNumber) for item in seg.SegmentSequence}


def referenced_series_uid(seg: Dataset | None, source_images: Sequence[Dataset]) -> str:
    """The series a SEG's segments are drawn on (the source images' series without a SEG)."""
    if seg is not None and "ReferencedSeriesSequence" in seg and seg.ReferencedSeriesSequence:
        return str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID)
    return str(source_images[0].SeriesInstanceUID)


def measurement(name: Code, value: float, unit: Code, algorithm: hd.sr.AlgorithmIdentification, *,
                derivation: Code | None = None, finding_site: Code | None = None) -> hd.sr.Measurement:
    return hd.sr.Measurement(name=name, value=float(value), unit=unit, algorithm_id=algorithm, derivation=derivation,
                             finding_sites=[hd.sr.FindingSite(finding_site)] if finding_site is not None else None)


Group = hd.sr.MeasurementsAndQualitativeEvaluations | hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations


def measurement_group(
    tracking_id: str, measurements: Sequence[hd.sr.Measurement], *, finding_type: Code, finding_site: Code,
    algorithm: hd.sr.AlgorithmIdentification, seg: Dataset | None, segment_label: str, source_series_uid: str,
    regions: Sequence[hd.sr.ImageRegion] | None = None,
) -> Group:
    """A TID 1411 group whose volume is ``regions`` (outlines on the source images, see
    :mod:`voxa.analysis.sr_regions`) when given, else the SEG segment ``segment_label``; a TID
    1501 group when there is neither."""
    tracking = hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=tracking_id)
    site = [hd.sr.FindingSite(finding_site)]
    if regions:
        return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking, referenced_regions=list(regions), finding_type=finding_type,
            algorithm_id=algorithm, finding_sites=site, measurements=list(measurements))
    number = segment_numbers(seg).get(segment_label) if seg is not None else None
    if seg is not None and number is not None:
        reference = hd.sr.ReferencedSegment(
            sop_class_uid=str(seg.SOPClassUID), sop_instance_uid=str(seg.SOPInstanceUID), segment_number=number,
            source_series=hd.sr.SourceSeriesForSegmentation(source_series_uid))
        return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking, referenced_segment=reference, finding_type=finding_type,
            algorithm_id=algorithm, finding_sites=site, measurements=list(measurements))
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking, finding_type=finding_type, algorithm_id=algorithm, finding_sites=site,
        measurements=list(measurements))


def aha_segment_masks(myocardium: NDArray[np.bool_], volume: Volume,
                      geometry: engine.LvGeometry) -> dict[int, NDArray[np.bool_]]:
    """The LV myocardium split into the AHA 17 segments by each voxel's own position, with the
    engine's rule (:func:`voxa.analysis.cardiac._segments`: thirds of the base-apex length, 60°
    basal and mid sectors and 90° apical sectors from the septal direction, segment 17 beyond
    the apex of the blood pool). The engine assigns a wall voxel by the foot of its endocardial
    normal, so voxels near a border may fall in the neighbouring segment here; the masks locate
    the segments for a reader, the thickness values are the engine's."""
    mask = np.asarray(myocardium, dtype=bool)
    idx = np.argwhere(mask)
    out: dict[int, NDArray[np.bool_]] = {}
    if idx.shape[0] == 0:
        return out
    points = volume.index_to_patient(idx.astype(np.float64))
    axis = np.asarray(geometry.long_axis_lps, dtype=np.float64)
    septal = np.asarray(geometry.septal_direction_lps, dtype=np.float64)
    anterior = np.asarray(geometry.anterior_direction_lps, dtype=np.float64)
    rel = points - np.asarray(geometry.base_centre_lps, dtype=np.float64)
    along = rel @ axis
    radial = rel - np.outer(along, axis)
    segment = engine._segments(along / max(geometry.length_mm, 1e-9), np.arctan2(radial @ anterior, radial @ septal))
    segment = np.where(along > geometry.length_mm, 17, segment)
    for k in range(1, 18):
        chosen = idx[segment == k]
        if chosen.shape[0]:
            m = np.zeros(mask.shape, dtype=bool)
            m[tuple(chosen.T)] = True
            out[k] = m
    return out


def build_cardiac_sr(
    result: CardiacFunctionResult,
    source_images: Sequence[Dataset],
    seg: Dataset | None = None,
    *,
    masks: Mapping[str, NDArray[np.bool_]] | None = None,
    ed_volume: Volume | None = None,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
) -> Dataset:
    """``result`` as a TID 1500 Measurement Report (Comprehensive 3D SR); see the module
    docstring for its groups and codes.

    ``source_images`` are the analysed images (headers suffice; the end-diastolic phase's at
    least); ``seg`` the SEG of :func:`build_cardiac_seg` (None: the groups reference no
    segment). With ``masks`` (:func:`cardiac_label_masks`) and ``source_images`` the
    end-diastolic images in the masks' slice order, each structure's group is outlined on the
    images instead (TID 1411 image regions, which viewers can draw), and with ``ed_volume`` (the
    end-diastolic volume, for the AHA segments' positions) each AHA segment's group too."""
    from voxa.analysis.sr_regions import mask_regions

    if not source_images:
        raise OutputError("no source images")
    algorithm = hd.sr.AlgorithmIdentification(name=ALGORITHM_NAME, version=result.algorithm_version)
    series_uid = referenced_series_uid(seg, source_images)
    outlined = masks is not None and all(np.asarray(v).shape[0] == len(source_images) for v in masks.values())

    def regions_of(mask: NDArray[np.bool_] | None) -> list[hd.sr.ImageRegion] | None:
        if not outlined or mask is None or not np.asarray(mask).any():
            return None
        return mask_regions(mask, source_images)

    def group(tracking_id: str, items: Sequence[hd.sr.Measurement], structure: Code, label: str) -> Group:
        return measurement_group(tracking_id, items, finding_type=structure, finding_site=structure,
                                 algorithm=algorithm, seg=seg, segment_label=label, source_series_uid=series_uid,
                                 regions=regions_of(masks.get(label) if masks is not None else None))

    def m(name: Code, value: float, unit: Code, *, derivation: Code | None = None) -> hd.sr.Measurement:
        return measurement(name, value, unit, algorithm, derivation=derivation)

    groups: list[Group] = []
    lv = result.lv
    lv_items = [
        m(codes.LN.LeftVentricularEDVolume, lv.edv_ml, UNIT_ML),
        m(codes.LN.LeftVentricularESVolume, lv.esv_ml, UNIT_ML),
        m(codes.SCT.StrokeVolume, lv.sv_ml, UNIT_ML),
        m(codes.LN.LeftVentricularEjectionFractionByCT, lv.ef_percent, UNIT_PERCENT),
    ]
    if lv.cardiac_output_l_min is not None:
        lv_items.append(m(codes.SCT.CardiacOutput, lv.cardiac_output_l_min, UNIT_L_MIN))
        if result.body_surface_area_m2:
            lv_items.append(m(codes.SCT.CardiacIndex, lv.cardiac_output_l_min / result.body_surface_area_m2,
                              UNIT_L_MIN_M2))
    lv_items += [m(VOXA_CODES["ed_phase"], result.ed_phase_percent, UNIT_PERCENT),
                 m(VOXA_CODES["es_phase"], result.es_phase_percent, UNIT_PERCENT)]
    groups.append(group("Left ventricle", lv_items, CARDIAC_STRUCTURES[LV_BLOOD_POOL], LV_BLOOD_POOL))

    myo = CARDIAC_STRUCTURES[LV_MYOCARDIUM]
    myo_items = [m(codes.LN.LeftVentricleMass, result.lv_mass_g, UNIT_G),
                 m(codes.DCM.WallVolume, result.lv_myocardial_volume_ml, UNIT_ML)]
    if result.max_wall_thickness_mm is not None:
        myo_items.append(m(codes.DCM.WallThickness, result.max_wall_thickness_mm, UNIT_MM,
                           derivation=codes.SCT.Maximum))
    groups.append(group("LV myocardium", myo_items, myo, LV_MYOCARDIUM))

    if result.rv is not None:
        rv = result.rv
        groups.append(group("Right ventricle", [
            m(codes.LN.RightVentricularEDVolume, rv.edv_ml, UNIT_ML),
            m(codes.LN.RightVentricularESVolume, rv.esv_ml, UNIT_ML),
            m(codes.SCT.RightVentricularStrokeVolume, rv.sv_ml, UNIT_ML),
            m(codes.LN.RightVentricularEjectionFractionByCT, rv.ef_percent, UNIT_PERCENT),
        ], CARDIAC_STRUCTURES[RV_BLOOD_POOL], RV_BLOOD_POOL))
    for name, label, largest, smallest in (("Left atrium", LEFT_ATRIUM, result.la_max_ml, result.la_min_ml),
                                           ("Right atrium", RIGHT_ATRIUM, result.ra_max_ml, result.ra_min_ml)):
        atrial = [m(codes.SCT.Volume, v, UNIT_ML, derivation=d)
                  for v, d in ((largest, codes.SCT.Maximum), (smallest, codes.SCT.Minimum)) if v is not None]
        if atrial:
            groups.append(group(name, atrial, CARDIAC_STRUCTURES[label], label))

    aha = (aha_segment_masks(masks[LV_MYOCARDIUM], ed_volume, result.geometry)
           if outlined and masks is not None and LV_MYOCARDIUM in masks and ed_volume is not None else {})
    for s in result.wall_thickness:
        items: list[hd.sr.Measurement] = []
        if s.ed_mm is not None:
            items.append(m(codes.DCM.WallThickness, s.ed_mm, UNIT_MM, derivation=codes.SCT.Median))
        if s.es_mm is not None:
            items.append(m(VOXA_CODES["es_wall_thickness"], s.es_mm, UNIT_MM, derivation=codes.SCT.Median))
        if s.thickening_percent is not None:
            items.append(m(VOXA_CODES["wall_thickening"], s.thickening_percent, UNIT_PERCENT))
        if items:
            groups.append(measurement_group(
                f"AHA {s.segment} {s.name}", items, finding_type=myo, finding_site=AHA_SEGMENT_CODES[s.segment],
                algorithm=algorithm, seg=seg, segment_label=LV_MYOCARDIUM, source_series_uid=series_uid,
                regions=regions_of(aha.get(s.segment))))

    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device_observer()),
        procedure_reported=codes.SCT.CardiacCT, imaging_measurements=groups,
        title=codes.DCM.ImagingMeasurementReport)
    evidence = with_patient_attributes([*source_images, *([seg] if seg is not None else [])])
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence, content=report[0], series_instance_uid=series_instance_uid or hd.UID(),
        series_number=CARDIAC_SR_SERIES_NUMBER, sop_instance_uid=sop_instance_uid or hd.UID(), instance_number=1,
        manufacturer=MANUFACTURER, is_complete=True, is_final=False, is_verified=False,
        coding_schemes=[voxa_coding_scheme()])
    sr.SeriesDescription = "Cardiac function report (Voxa)"
    return sr


__all__ = [
    "AHA_SEGMENT_CODES",
    "ALGORITHM_NAME",
    "CARDIAC_SEG_SERIES_NUMBER",
    "CARDIAC_SR_SERIES_NUMBER",
    "CARDIAC_STRUCTURES",
    "LEFT_ATRIUM",
    "LV_BLOOD_POOL",
    "LV_MYOCARDIUM",
    "aha_segment_masks",
    "PRIVATE_SCHEME",
    "RIGHT_ATRIUM",
    "RV_BLOOD_POOL",
    "VOXA_CODES",
    "build_cardiac_seg",
    "build_cardiac_sr",
    "cardiac_label_masks",
    "images_in_volume_order",
    "voxa_coding_scheme",
]
