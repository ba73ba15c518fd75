"""Coronary artery calcium scoring on non-contrast, ECG-gated CT: Agatston, volume and mass scores.

A pure analysis engine (DESIGN.md decision 7): HU arrays and geometry in, a typed
:class:`CalciumScore` out; no database, no I/O. Results are decision support and always carry
``requires_review=True``: a reader must confirm which calcifications are coronary and which
artery each belongs to.

Definitions (all documented in ``docs/analysis-calcium.md``):

* **Threshold.** A voxel is calcium when ``hu >= threshold_hu``; 130 HU at 120 kV (Agatston et
  al., J Am Coll Cardiol 1990;15:827-832). For other tube voltages the threshold and the weight
  bands come from :data:`KV_THRESHOLDS` (see its comment for the source and its status).
* **Agatston.** On each axial image, 8-connected components of calcium pixels whose area is
  ``>= min_area_mm2`` (1 mm\u00b2 by default; a component of exactly 1 mm\u00b2 counts) are scored as
  ``area_mm2 x weight``, the weight being 1-4 from the component's peak HU (120 kV: 130-199,
  200-299, 300-399, >=400). The sum over images is normalised to Agatston's 3 mm contiguous
  images: multiplied by ``slice_increment_mm / 3``. For overlapping reconstructions (increment <
  thickness) each slab of tissue is seen by ``thickness / increment`` images, so the increment,
  not the thickness, is the z extent each image stands for.
* **Volume.** Number of scored voxels x pixel area x slice increment (mm\u00b3).
* **Mass.** ``calibration (mg/mL/HU) x mean HU x volume_mm3 / 1000`` (mg), McCollough et al.,
  Radiology 2007;243:527-538.
* **Lesions.** 26-connected 3D components of the scored voxels (the same voxels for all three
  scores); each image component's Agatston contribution is added to the 3D lesion it lies in.
* **Arteries.** Majority of the non-zero ``artery_labels`` voxels in a lesion (1 LM, 2 LAD,
  3 LCX, 4 RCA by default), or a crude position suggestion (see :func:`suggest_artery`);
  :func:`reassign` lets the reader correct it.
* **CAC-DRS** (Hecht et al., J Cardiovasc Comput Tomogr 2018;12:185-191): A0 (0), A1 (1-99),
  A2 (100-299), A3 (>=300), with ``/N`` the number of the four vessels (LM, LAD, LCX, RCA) with
  calcium, written ``A2/N3`` as in Dzaye et al., J Cardiovasc Comput Tomogr 2019 (CAC-DRS
  validation, "A3/N4"). Classic grades: 0 none, 1-10 minimal, 11-100 mild, 101-400 moderate,
  >400 severe.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

ALGORITHM_VERSION = "voxa-calcium-1.0"

#: Agatston's reference image: 3 mm contiguous slices.
REFERENCE_INCREMENT_MM = 3.0


class Artery(StrEnum):
    LM = "LM"
    LAD = "LAD"
    LCX = "LCX"
    RCA = "RCA"
    UNASSIGNED = "unassigned"


CORONARY_ARTERIES: tuple[Artery, ...] = (Artery.LM, Artery.LAD, Artery.LCX, Artery.RCA)

#: Default meaning of the integer values of ``artery_labels``; 0 and unknown values are ignored.
DEFAULT_ARTERY_LABELS: Mapping[int, Artery] = {1: Artery.LM, 2: Artery.LAD, 3: Artery.LCX, 4: Artery.RCA}


@dataclass(frozen=True)
class KvThresholds:
    """Calcium threshold and lower edges of weights 2, 3 and 4 (all HU, inclusive) at one kV."""

    threshold_hu: float
    weight2_hu: float
    weight3_hu: float
    weight4_hu: float

    def weight(self, peak_hu: float) -> int:
        """Agatston density weight (0 below the threshold, else 1-4) for a component's peak HU."""
        if peak_hu >= self.weight4_hu:
            return 4
        if peak_hu >= self.weight3_hu:
            return 3
        if peak_hu >= self.weight2_hu:
            return 2
        if peak_hu >= self.threshold_hu:
            return 1
        return 0


# kV-specific thresholds. 120 kV is Agatston's definition (130 HU; weights from 200, 300, 400 HU).
# The other rows are the low/high-kV thresholds used by the open-source CalciumScoring.jl
# (MolloiLab, src/agatston.jl), which attributes them to Gräni C et al., "Ultra-low-dose coronary
# artery calcium scoring using novel scoring thresholds for low tube voltage protocols - a pilot
# study", Eur Heart J Cardiovasc Imaging 2018;19(12):1362-1371, doi:10.1093/ehjci/jey019. We could
# NOT check these numbers against the paper itself: treat them as a configurable table (pass
# ``thresholds=`` to :func:`score_calcium`) and verify before clinical use. Their weight bands are
# the 120 kV bands scaled by threshold/130 (e.g. 70 kV: 207 x 200/130 = 318), rounded down.
KV_THRESHOLDS: Mapping[int, KvThresholds] = {
    70: KvThresholds(207.0, 318.0, 477.0, 636.0),
    80: KvThresholds(177.0, 271.0, 408.0, 544.0),
    100: KvThresholds(145.0, 222.0, 334.0, 446.0),
    120: KvThresholds(130.0, 200.0, 300.0, 400.0),
    135: KvThresholds(119.0, 183.0, 274.0, 364.0),
}


def thresholds_for_kvp(kvp: float, table: Mapping[int, KvThresholds] = KV_THRESHOLDS) -> KvThresholds:
    """The table row for ``kvp`` (matched to the nearest integer kV); ValueError when absent."""
    key = round(kvp)
    if abs(kvp - key) > 0.5 or key not in table:
        raise ValueError(f"no calcium threshold for {kvp} kV; known: {sorted(table)} kV")
    return table[key]


@dataclass(frozen=True)
class CalciumLesion:
    """One 3D calcified lesion (26-connected scored voxels)."""

    label: int
    artery: Artery
    artery_source: str  # "labels", "position" or "user"
    area_mm2_by_slice: dict[int, float]  # slice index -> scored area on that image (mm²)
    peak_hu: float
    mean_hu: float
    agatston: float  # normalised to 3 mm
    volume_mm3: float
    mass_mg: float | None
    slice_indices: tuple[int, ...]
    centroid_voxel: tuple[float, float, float]  # (z, row, col)


@dataclass(frozen=True)
class ArteryScore:
    agatston: float
    volume_mm3: float
    mass_mg: float | None
    lesion_count: int


@dataclass(frozen=True)
class CalciumScore:
    agatston_total: float
    volume_mm3_total: float
    mass_mg_total: float | None
    per_artery: dict[Artery, ArteryScore]
    lesions: tuple[CalciumLesion, ...]
    threshold_hu: float
    kvp: float
    slice_thickness_mm: float
    slice_increment_mm: float
    pixel_spacing_mm: tuple[float, float]
    min_area_mm2: float
    cac_drs: str
    classic_grade: str
    requires_review: bool = True
    algorithm_version: str = ALGORITHM_VERSION
    notes: tuple[str, ...] = field(default_factory=tuple)


def cac_drs_category(agatston: float) -> str:
    """CAC-DRS Agatston category: A0 (0), A1 (>0 to <100), A2 (100 to <300), A3 (>=300)."""
    if agatston <= 0:
        return "A0"
    if agatston < 100:
        return "A1"
    if agatston < 300:
        return "A2"
    return "A3"


def cac_drs(agatston: float, vessel_count: int) -> str:
    """``A0``, or ``A{k}/N{n}`` with ``n`` the number of calcified vessels (LM, LAD, LCX, RCA)."""
    category = cac_drs_category(agatston)
    return category if category == "A0" else f"{category}/N{vessel_count}"


def classic_grade(agatston: float) -> str:
    """Classic grades: 0 none, (0, 10] minimal, (10, 100] mild, (100, 400] moderate, >400 severe."""
    if agatston <= 0:
        return "none"
    if agatston <= 10:
        return "minimal"
    if agatston <= 100:
        return "mild"
    if agatston <= 400:
        return "moderate"
    return "severe"


def suggest_artery(centroid_voxel: tuple[float, float, float], image_shape: tuple[int, int]) -> Artery:
    """Crude position-based suggestion, relative to the image centre (always needs review).

    Assumes a standard axial orientation (ImageOrientationPatient 1\\0\\0\\0\\1\\0: columns run
    towards the patient's left, rows towards posterior): calcium on the patient's right half is
    suggested RCA; on the left half, anterior is LAD and posterior LCX. LM is never suggested.
    """
    _, row, col = centroid_voxel
    centre_row, centre_col = (image_shape[0] - 1) / 2.0, (image_shape[1] - 1) / 2.0
    if col < centre_col:
        return Artery.RCA
    return Artery.LAD if row < centre_row else Artery.LCX


def score_calcium(
    hu: NDArray[np.floating],
    *,
    pixel_spacing_mm: tuple[float, float],
    slice_thickness_mm: float,
    slice_increment_mm: float,
    kvp: float,
    artery_labels: NDArray[np.integer] | None = None,
    mass_calibration_mg_per_ml_per_hu: float | None = None,
    min_area_mm2: float = 1.0,
    thresholds: KvThresholds | None = None,
    artery_label_values: Mapping[int, Artery] = DEFAULT_ARTERY_LABELS,
    roi: NDArray[np.bool_] | None = None,
    max_lesion_volume_mm3: float | None = None,
) -> CalciumScore:
    """Agatston, volume and mass scores of ``hu`` (z, row, col), per lesion and per artery.

    ``slice_increment_mm`` is the spacing of slice centres (smaller than ``slice_thickness_mm``
    for overlapping reconstructions). ``thresholds`` overrides the kV table row. ``roi`` (a
    boolean array of ``hu``'s shape) limits scoring to a region, typically the heart; lesions
    larger than ``max_lesion_volume_mm3`` (bone that reaches into the region) are left out and
    named in the notes.
    """
    hu = np.asarray(hu)
    if hu.ndim != 3:
        raise ValueError(f"hu must be 3D (z, row, col), got shape {hu.shape}")
    if not np.issubdtype(hu.dtype, np.floating) and not np.issubdtype(hu.dtype, np.integer):
        raise ValueError(f"hu must hold numbers, got {hu.dtype}")
    row_mm, col_mm = (float(v) for v in pixel_spacing_mm)
    for name, value in (
        ("pixel spacing", row_mm),
        ("pixel spacing", col_mm),
        ("slice_thickness_mm", slice_thickness_mm),
        ("slice_increment_mm", slice_increment_mm),
    ):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number, got {value}")
    if artery_labels is not None and np.shape(artery_labels) != hu.shape:
        raise ValueError(f"artery_labels shape {np.shape(artery_labels)} differs from hu {hu.shape}")
    if roi is not None and np.shape(roi) != hu.shape:
        raise ValueError(f"roi shape {np.shape(roi)} differs from hu {hu.shape}")
    if mass_calibration_mg_per_ml_per_hu is not None and not mass_calibration_mg_per_ml_per_hu > 0:
        raise ValueError("mass calibration factor must be positive")
    band = thresholds if thresholds is not None else thresholds_for_kvp(kvp)

    notes: list[str] = []
    if slice_increment_mm > slice_thickness_mm:
        notes.append("slice increment exceeds thickness: gaps between images are not scored")

    pixel_area_mm2 = row_mm * col_mm
    voxel_volume_mm3 = pixel_area_mm2 * slice_increment_mm
    z_factor = slice_increment_mm / REFERENCE_INCREMENT_MM

    # Everything below works on the (few) voxels at or above the threshold, as flat arrays:
    # whole-volume label statistics (ndimage.maximum sorts the entire volume) cost tens of
    # seconds on a 512x512x300 CT.
    full_shape = hu.shape
    calcium = hu >= band.threshold_hu
    if roi is not None:
        calcium &= np.asarray(roi, dtype=bool)
    # Label only the box that holds calcium (a heart region is a small part of a chest CT);
    # voxel indices are mapped back to the full volume at the end.
    box = _bounding_box(calcium)
    calcium = calcium[box]
    hu = hu[box]
    if artery_labels is not None:
        artery_labels = np.asarray(artery_labels)[box]
    offset = tuple(b.start for b in box)

    # 1. Per-image 8-connected components of calcium pixels.
    in_plane = np.zeros((3, 3, 3), dtype=bool)
    in_plane[1] = True
    lab2d, n2d = ndimage.label(calcium, structure=in_plane)
    flat = np.flatnonzero(lab2d)
    l2 = lab2d.ravel()[flat]
    values = hu.ravel()[flat].astype(np.float64)
    counts2d = np.bincount(l2, minlength=n2d + 1)
    areas2d = counts2d * pixel_area_mm2
    # Tolerance so that a component of exactly min_area_mm2 is not lost to rounding of spacing².
    keep2d = areas2d >= min_area_mm2 * (1.0 - 1e-9)
    keep2d[0] = False
    peaks2d = np.full(n2d + 1, -np.inf)
    np.maximum.at(peaks2d, l2, values)

    scored_flat = keep2d[l2]
    flat, l2, values = flat[scored_flat], l2[scored_flat], values[scored_flat]
    scored = np.zeros(hu.shape, dtype=bool)
    scored.ravel()[flat] = True
    del lab2d, calcium

    # 2. 3D lesions (26-connected) of the scored voxels.
    lab3d, n3d = ndimage.label(scored, structure=np.ones((3, 3, 3), dtype=bool))
    l3 = lab3d.ravel()[flat]
    del lab3d, scored
    lesions: list[CalciumLesion] = []
    if n3d:
        counts3d = np.bincount(l3, minlength=n3d + 1)
        sums3d = np.bincount(l3, weights=values, minlength=n3d + 1)
        peaks3d = np.full(n3d + 1, -np.inf)
        np.maximum.at(peaks3d, l3, values)
        z, r, c = np.unravel_index(flat, hu.shape)
        centroid_sums = [np.bincount(l3, weights=axis.astype(np.float64), minlength=n3d + 1) for axis in (z, r, c)]

        # Each image component lies in exactly one lesion and on one image.
        lesion_of_2d = np.zeros(n2d + 1, dtype=np.int64)
        lesion_of_2d[l2] = l3
        slice_of_2d = np.zeros(n2d + 1, dtype=np.int64)
        slice_of_2d[l2] = z
        kept = np.flatnonzero(keep2d)
        peaks = peaks2d[kept]
        weights = (1 + (peaks >= band.weight2_hu) + (peaks >= band.weight3_hu) + (peaks >= band.weight4_hu))
        agatston3d = np.bincount(lesion_of_2d[kept], weights=areas2d[kept] * weights * z_factor, minlength=n3d + 1)
        area_by_slice: list[dict[int, float]] = [{} for _ in range(n3d + 1)]
        for lesion, zi, area in zip(lesion_of_2d[kept].tolist(), slice_of_2d[kept].tolist(),
                                    areas2d[kept].tolist(), strict=True):
            area_by_slice[lesion][zi] = area_by_slice[lesion].get(zi, 0.0) + area

        label_votes: dict[int, dict[Artery, int]] = {}
        if artery_labels is not None:
            named = np.asarray(artery_labels).ravel()[flat].astype(np.int64)
            for value, artery_name in artery_label_values.items():
                hits = np.bincount(l3[named == value], minlength=n3d + 1)
                for lesion in np.flatnonzero(hits):
                    label_votes.setdefault(int(lesion), {})[artery_name] = int(hits[lesion])

        too_big = 0
        for label in range(1, n3d + 1):
            volume = float(counts3d[label]) * voxel_volume_mm3
            if max_lesion_volume_mm3 is not None and volume > max_lesion_volume_mm3:
                too_big += 1
                continue
            mean_hu = float(sums3d[label] / counts3d[label])
            mass = (
                mass_calibration_mg_per_ml_per_hu * mean_hu * volume / 1000.0
                if mass_calibration_mg_per_ml_per_hu is not None
                else None
            )
            centroid = tuple(float(axis[label] / counts3d[label]) + offset[i] for i, axis in enumerate(centroid_sums))
            artery, source = Artery.UNASSIGNED, "position"
            if artery_labels is not None:
                votes = label_votes.get(label, {})
                if votes:
                    # Ties break towards the order LM, LAD, LCX, RCA.
                    artery = max(CORONARY_ARTERIES, key=lambda a: votes.get(a, 0))
                source = "labels"
            else:
                artery = suggest_artery((centroid[0], centroid[1], centroid[2]), (full_shape[1], full_shape[2]))
            slices = tuple(sorted(z + offset[0] for z in area_by_slice[label]))
            lesions.append(
                CalciumLesion(
                    label=label,
                    artery=artery,
                    artery_source=source,
                    area_mm2_by_slice={zi: area_by_slice[label][zi - offset[0]] for zi in slices},
                    peak_hu=float(peaks3d[label]),
                    mean_hu=mean_hu,
                    agatston=float(agatston3d[label]),
                    volume_mm3=volume,
                    mass_mg=mass,
                    slice_indices=slices,
                    centroid_voxel=(centroid[0], centroid[1], centroid[2]),
                )
            )
        if too_big:
            notes.append(f"{too_big} structure(s) larger than {max_lesion_volume_mm3:g} mm³ left out (bone)")

    return _summarise(
        tuple(lesions),
        has_mass=mass_calibration_mg_per_ml_per_hu is not None,
        threshold_hu=band.threshold_hu,
        kvp=float(kvp),
        slice_thickness_mm=float(slice_thickness_mm),
        slice_increment_mm=float(slice_increment_mm),
        pixel_spacing_mm=(row_mm, col_mm),
        min_area_mm2=float(min_area_mm2),
        notes=tuple(notes),
    )


def _bounding_box(mask: NDArray[np.bool_]) -> tuple[slice, slice, slice]:
    """The smallest box holding every True voxel (an empty first slice when there is none)."""
    spans = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        spans.append(slice(int(hits[0]), int(hits[-1]) + 1) if hits.size else slice(0, 0))
    return spans[0], spans[1], spans[2]


def _summarise(
    lesions: tuple[CalciumLesion, ...],
    *,
    has_mass: bool,
    threshold_hu: float,
    kvp: float,
    slice_thickness_mm: float,
    slice_increment_mm: float,
    pixel_spacing_mm: tuple[float, float],
    min_area_mm2: float,
    notes: tuple[str, ...],
) -> CalciumScore:
    per_artery: dict[Artery, ArteryScore] = {}
    arteries = list(CORONARY_ARTERIES)
    if any(lesion.artery is Artery.UNASSIGNED for lesion in lesions):
        arteries.append(Artery.UNASSIGNED)
    for artery in arteries:
        mine = [lesion for lesion in lesions if lesion.artery is artery]
        per_artery[artery] = ArteryScore(
            agatston=sum(lesion.agatston for lesion in mine),
            volume_mm3=sum(lesion.volume_mm3 for lesion in mine),
            mass_mg=sum(lesion.mass_mg or 0.0 for lesion in mine) if has_mass else None,
            lesion_count=len(mine),
        )
    agatston_total = sum(lesion.agatston for lesion in lesions)
    vessels = sum(1 for artery in CORONARY_ARTERIES if per_artery[artery].lesion_count > 0)
    all_notes = [n for n in notes if not n.startswith("unassigned")]
    if Artery.UNASSIGNED in per_artery:
        all_notes.append("unassigned lesions are not counted in the CAC-DRS vessel number")
    return CalciumScore(
        agatston_total=agatston_total,
        volume_mm3_total=sum(lesion.volume_mm3 for lesion in lesions),
        mass_mg_total=sum(lesion.mass_mg or 0.0 for lesion in lesions) if has_mass else None,
        per_artery=per_artery,
        lesions=lesions,
        threshold_hu=threshold_hu,
        kvp=kvp,
        slice_thickness_mm=slice_thickness_mm,
        slice_increment_mm=slice_increment_mm,
        pixel_spacing_mm=pixel_spacing_mm,
        min_area_mm2=min_area_mm2,
        cac_drs=cac_drs(agatston_total, vessels),
        classic_grade=classic_grade(agatston_total),
        notes=tuple(all_notes),
    )


def reassign(score: CalciumScore, lesion_label: int, artery: Artery | str) -> CalciumScore:
    """A new score with lesion ``lesion_label`` assigned to ``artery`` by the user.

    Per-artery totals, CAC-DRS and grades are recomputed; the input is left unchanged.
    """
    target = Artery(artery)
    if not any(lesion.label == lesion_label for lesion in score.lesions):
        raise KeyError(f"no lesion with label {lesion_label}")
    lesions = tuple(
        dataclasses.replace(lesion, artery=target, artery_source="user")
        if lesion.label == lesion_label
        else lesion
        for lesion in score.lesions
    )
    return _summarise(
        lesions,
        has_mass=score.mass_mg_total is not None,
        threshold_hu=score.threshold_hu,
        kvp=score.kvp,
        slice_thickness_mm=score.slice_thickness_mm,
        slice_increment_mm=score.slice_increment_mm,
        pixel_spacing_mm=score.pixel_spacing_mm,
        min_area_mm2=score.min_area_mm2,
        notes=score.notes,
    )
