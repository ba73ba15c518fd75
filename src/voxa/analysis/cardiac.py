"""Cardiac function on multi-phase (ECG-gated, retrospectively reconstructed) contrast CT.

A pure analysis engine: one :class:`~voxa.imaging.volume.Volume` per phase in, a typed
:class:`CardiacFunctionResult` out; no database, no I/O. Results are decision support and always
carry ``requires_review=True``: a reader must check the chamber segmentation, the end-diastolic
and end-systolic phases and the AHA segment orientation before a value is reported.

Method (details, units and accuracy in ``docs/analysis-cardiac.md``):

1. **Blood pool.** Voxels with ``blood_window_hu[0] <= HU <= blood_window_hu[1]`` (contrast
   blood, default 200-1200 HU); 6-connected components (``scipy.ndimage.label``).
2. **Chamber identification** on one reference phase (the one with most blood), on a grid
   sub-sampled to about 2 mm:

   * *cores*: blood voxels deeper than 6 mm inside the pool (Euclidean distance transform);
     two cores of one component stay apart when the neck between them is narrower than 75 % of
     the smaller core's depth (valve planes, a narrow mitral or tricuspid inflow), otherwise they
     are merged; every blood voxel joins its nearest core: a partition of the blood pool into
     candidate regions.
   * *vessels and bone* are set aside: regions smaller than 5 mL, or elongated (principal-axis
     length ratio above 3: descending aorta, vertebral column, pulmonary veins).
   * the **LV** is the candidate (>= 20 mL) most completely wrapped in myocardium: the largest
     fraction of the 6 mm shell around it in ``myocardium_window_hu`` (at least half).
   * **RV, LA, RA** are the assignment of the remaining candidates to anatomical directions
     from the LV centroid in patient (LPS) coordinates that maximises the summed cosine: RV
     right-anterior, LA posterior-superior, RA right-superior (cosine >= 0.3, within 150 mm).
     This assumes normal situs and a supine patient; seeds (``lv_seed_mm`` etc., LPS mm inside
     the chamber's blood) override it chamber by chamber.
3. **Every phase** (full resolution, in a box around the chambers): each blood component takes
   the chamber it overlaps at the reference phase; a component spanning several chambers (an
   open valve) is split by nearest reference chamber. Volume = voxel count x voxel volume.
   Papillary muscles and trabeculae below the blood window are therefore *not* blood volume.
4. **ED / ES** are the phases of largest / smallest LV blood volume. SV = EDV - ESV,
   EF = SV / EDV, cardiac output = SV x heart rate. RV values are taken at the LV's ED/ES
   phases; atrial volumes are reported as maximum and minimum over the cycle.
5. **LV myocardium** (at ED and ES), on a grid of about 0.8 mm (block means): voxels in
   ``myocardium_window_hu`` that are not blood, cleaned by a majority vote among non-blood
   neighbours (Gaussian weights, one voxel), kept within ``wall_search_mm`` of the LV
   blood pool and connected to it; the epicardial boundary is the outline of LV blood plus that
   tissue, holes filled; myocardium = inside the epicardium, not LV blood (papillary muscles
   therefore count as mass). Mass = volume x 1.05 g/mL.
6. **Long axis** = principal axis of the LV blood pool, apex towards the end away from the
   atria (or the skewed end when no atrium is found). Base = most basal level where the pool's
   cross-section reaches half its maximum (a narrow outflow tract or valve opening does not
   count), apex = most apical blood voxel; basal, mid and apical rings are thirds of that length (AHA, Cerqueira et al.,
   Circulation 2002;105:539-542), the apex (segment 17) is the myocardium beyond the cavity tip.
   Angles are measured about the axis from the **septal direction** (towards the RV centroid)
   towards anterior (``septal x axis``): basal/mid 60° sectors (2 anteroseptal, 1 anterior,
   6 anterolateral, 5 inferolateral, 4 inferior, 3 inferoseptal), apical 90° sectors (14
   septal, 13 anterior, 16 lateral, 15 inferior). The RV insertion points are not detected; the
   RV centroid approximates the septal centre.
7. **Wall thickness**: for every myocardial voxel, distance to the LV blood pool plus distance
   to the outside of the epicardium, minus one voxel along the wall normal (both Euclidean
   distance transforms run voxel centre to voxel centre), kept where the two nearest points lie
   on opposite sides (cosine >= 0.5, which drops voxels whose nearest outside is the cut base);
   the segment's value is the median over its voxels, each voxel placed at its nearest LV blood
   point.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import numbers
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from voxa.analysis.cardiac_reference import (
    REFERENCE_RANGES,
    RangeFlag,
    ReferenceRange,
    evaluate_ranges,
    normalise_sex,
)
from voxa.imaging.volume import Volume

_T = TypeVar("_T")
_A = TypeVar("_A")

ALGORITHM_VERSION = "voxa-cardiac-1.0"

#: Density of myocardium used for LV mass (g/mL), the usual convention in CT and MR.
MYOCARDIAL_DENSITY_G_PER_ML = 1.05

DEFAULT_BLOOD_WINDOW_HU: tuple[float, float] = (200.0, 1200.0)
DEFAULT_MYOCARDIUM_WINDOW_HU: tuple[float, float] = (70.0, 200.0)

#: AHA 17-segment model (Cerqueira MD et al., Circulation 2002;105:539-542).
AHA_SEGMENT_NAMES: dict[int, str] = {
    1: "basal anterior", 2: "basal anteroseptal", 3: "basal inferoseptal", 4: "basal inferior",
    5: "basal inferolateral", 6: "basal anterolateral", 7: "mid anterior", 8: "mid anteroseptal",
    9: "mid inferoseptal", 10: "mid inferior", 11: "mid inferolateral", 12: "mid anterolateral",
    13: "apical anterior", 14: "apical septal", 15: "apical inferior", 16: "apical lateral", 17: "apex",
}

_COARSE_MM = 2.0  # grid for chamber identification
_MYOCARDIUM_GRID_MM = 0.8  # grid for myocardium and wall thickness
_CORE_DEPTH_MM = 6.0
_NECK_RATIO = 0.75
_SHELL_MM = 6.0
_MIN_CHAMBER_ML = 5.0
_MIN_LV_ML = 20.0
_MIN_LV_MYOCARDIAL_SHELL = 0.5
_MAX_ELONGATION = 3.0
_MAX_CHAMBER_DISTANCE_MM = 150.0
_MIN_DIRECTION_COSINE = 0.3
_ROI_MARGIN_MM = 15.0  # chambers grow between phases: atria at ES, ventricles at ED
_OPPOSITE_COSINE = 0.5
_MIN_SEGMENT_VOXELS = 5

# Typical direction from the LV centroid to each chamber's centroid, patient LPS (x to the
# patient's left, y posterior, z superior), for a supine patient with normal situs.
_TEMPLATE_DIRECTIONS: dict[str, tuple[float, float, float]] = {
    "RV": (-0.7, -0.7, 0.1),
    "LA": (-0.1, 0.75, 0.65),
    "RA": (-0.8, 0.2, 0.55),
}

I64 = NDArray[np.int64]
F64 = NDArray[np.float64]
Mask = NDArray[np.bool_]


class Chamber(StrEnum):
    LV = "LV"
    RV = "RV"
    LA = "LA"
    RA = "RA"


_CODES: dict[Chamber, int] = {Chamber.LV: 1, Chamber.RV: 2, Chamber.LA: 3, Chamber.RA: 4}
_OTHER = 5  # blood regions that are not a chamber (vessels, bone in the window)


@dataclass(frozen=True)
class PhaseVolumes:
    """Blood-pool volumes (mL) of one phase; None where the chamber was not found."""

    phase_percent: float
    lv_ml: float
    rv_ml: float | None
    la_ml: float | None
    ra_ml: float | None


@dataclass(frozen=True)
class VentricularFunction:
    edv_ml: float
    esv_ml: float
    sv_ml: float
    ef_percent: float
    cardiac_output_l_min: float | None  # SV x heart rate; None without a heart rate


@dataclass(frozen=True)
class SegmentThickness:
    """Wall thickness of one AHA segment (mm); None where too few voxels were measured."""

    segment: int
    name: str
    ed_mm: float | None
    es_mm: float | None
    thickening_percent: float | None  # (ES - ED) / ED x 100
    ed_voxels: int  # myocardial voxels measured at ED


@dataclass(frozen=True)
class LvGeometry:
    """LV long axis and AHA orientation at end-diastole, patient coordinates (LPS, mm)."""

    long_axis_lps: tuple[float, float, float]  # unit vector, base -> apex
    base_centre_lps: tuple[float, float, float]
    apex_lps: tuple[float, float, float]  # tip of the blood pool
    length_mm: float  # base to apex of the blood pool
    septal_direction_lps: tuple[float, float, float]  # unit, across the axis towards the RV
    anterior_direction_lps: tuple[float, float, float]  # unit, septal x axis


@dataclass(frozen=True)
class CardiacFunctionResult:
    phases: tuple[PhaseVolumes, ...]
    ed_phase_percent: float
    es_phase_percent: float
    lv: VentricularFunction
    rv: VentricularFunction | None
    lv_mass_g: float  # at end-diastole, 1.05 g/mL
    lv_mass_es_g: float  # the same at end-systole: a consistency check (myocardium is incompressible)
    lv_myocardial_volume_ml: float  # at end-diastole
    la_max_ml: float | None
    la_min_ml: float | None
    ra_max_ml: float | None
    ra_min_ml: float | None
    wall_thickness: tuple[SegmentThickness, ...]  # AHA segments 1-17
    max_wall_thickness_mm: float | None  # largest ED segment value
    geometry: LvGeometry
    heart_rate_bpm: float | None
    body_surface_area_m2: float | None
    sex: str | None  # "M", "F" or None
    flags: tuple[RangeFlag, ...]
    blood_window_hu: tuple[float, float]
    myocardium_window_hu: tuple[float, float]
    myocardium_grid_mm: tuple[float, float, float]  # (z, y, x) grid of steps 5-7
    requires_review: bool = True
    algorithm_version: str = ALGORITHM_VERSION
    notes: tuple[str, ...] = field(default_factory=tuple)

    def values(self) -> dict[str, float | None]:
        """The scalar results by name (the quantities of the reference ranges)."""
        out: dict[str, float | None] = {
            "lv_edv_ml": self.lv.edv_ml,
            "lv_esv_ml": self.lv.esv_ml,
            "lv_sv_ml": self.lv.sv_ml,
            "lv_ef_percent": self.lv.ef_percent,
            "cardiac_output_l_min": self.lv.cardiac_output_l_min,
            "lv_mass_g": self.lv_mass_g,
            "rv_edv_ml": self.rv.edv_ml if self.rv else None,
            "rv_esv_ml": self.rv.esv_ml if self.rv else None,
            "rv_sv_ml": self.rv.sv_ml if self.rv else None,
            "rv_ef_percent": self.rv.ef_percent if self.rv else None,
            "la_max_ml": self.la_max_ml,
            "la_min_ml": self.la_min_ml,
            "ra_max_ml": self.ra_max_ml,
            "ra_min_ml": self.ra_min_ml,
            "lv_max_wall_thickness_mm": self.max_wall_thickness_mm,
        }
        bsa = self.body_surface_area_m2
        if bsa:
            for key in ("lv_edv_ml", "lv_esv_ml", "lv_sv_ml", "lv_mass_g", "rv_edv_ml", "rv_esv_ml",
                        "la_max_ml", "ra_max_ml"):
                v = out[key]
                out[f"{key}_m2"] = None if v is None else v / bsa
            co = self.lv.cardiac_output_l_min
            out["cardiac_index_l_min_m2"] = None if co is None else co / bsa
        return out

    def segment(self, number: int) -> SegmentThickness:
        return self.wall_thickness[number - 1]


# --------------------------------------------------------------------------------------------
# input


def _phase_list(phases: Mapping[float, Volume] | Sequence[tuple[float, Volume]]) -> list[tuple[float, Volume]]:
    items = list(phases.items()) if isinstance(phases, Mapping) else list(phases)
    out: list[tuple[float, Volume]] = []
    for item in items:
        try:
            key, volume = item
        except (TypeError, ValueError):
            raise ValueError("phases must map a nominal R-R percentage to a Volume") from None
        if isinstance(key, bool) or not isinstance(key, numbers.Real) or not math.isfinite(float(key)):
            raise ValueError(f"phase key {key!r} is not a number: use the nominal percentage of the "
                             "R-R interval (e.g. 0, 10, ... 90)")
        if not isinstance(volume, Volume):
            raise ValueError(f"phase {key}: expected a Volume, got {type(volume).__name__}")
        if not 0.0 <= float(key) < 100.0:
            raise ValueError(f"phase {key} is outside 0-100 % of the R-R interval")
        out.append((float(key), volume))
    if len(out) < 2:
        raise ValueError(f"cardiac function needs at least 2 phases (end-diastole and end-systole), got {len(out)}")
    keys = [k for k, _ in out]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate phase percentages: {sorted(keys)}")
    out.sort(key=lambda kv: kv[0])
    first_key, first = out[0]
    for key, v in out:
        if v.units != "HU" or (v.modality and v.modality != "CT"):
            raise ValueError(f"phase {key:g}%: units {v.units!r}, modality {v.modality!r}; cardiac "
                             "function needs CT in Hounsfield units (units 'HU')")
        if v.shape != first.shape:
            raise ValueError(f"phase {key:g}% has shape {v.shape}, phase {first_key:g}% {first.shape}: "
                             "all phases must share one grid")
        if not np.allclose(v.spacing_mm, first.spacing_mm, rtol=1e-4, atol=1e-4):
            raise ValueError(f"phase {key:g}% has spacing {v.spacing_mm} mm, phase {first_key:g}% "
                             f"{first.spacing_mm} mm: all phases must share one grid")
        if not np.allclose(v.origin_mm, first.origin_mm, atol=1e-3) or not np.allclose(
            v.direction, first.direction, atol=1e-5
        ):
            raise ValueError(f"phase {key:g}% has a different origin or orientation from phase "
                             f"{first_key:g}%: all phases must share one grid")
    if any(s <= 0 or not math.isfinite(s) for s in first.spacing_mm):
        raise ValueError(f"spacing must be positive, got {first.spacing_mm}")
    if min(first.shape) < 3:
        raise ValueError(f"volume {first.shape} is too small for a heart")
    return out


def _window(name: str, window: tuple[float, float]) -> tuple[float, float]:
    lo, hi = (float(w) for w in window)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"{name} must be (low, high) HU with low < high, got {window}")
    return lo, hi


# --------------------------------------------------------------------------------------------
# small helpers


def _factors(spacing: Sequence[float], target_mm: float) -> tuple[int, int, int]:
    f = [max(1, int(round(target_mm / s))) for s in spacing]
    return f[0], f[1], f[2]


def _in_window(a: NDArray[np.floating], window: tuple[float, float]) -> Mask:
    return np.asarray((a >= window[0]) & (a <= window[1]))


def _unit(v: F64) -> F64:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def _tuple3(v: F64) -> tuple[float, float, float]:
    return float(v[0]), float(v[1]), float(v[2])


def _pairwise_max(keys: I64, values: F64) -> dict[int, float]:
    if keys.size == 0:
        return {}
    uniq, inverse = np.unique(keys, return_inverse=True)
    best = np.full(uniq.size, -np.inf)
    np.maximum.at(best, inverse, values)
    return {int(k): float(v) for k, v in zip(uniq, best, strict=True)}


def _principal_axes(points_mm: F64) -> tuple[F64, F64, F64]:
    """Centroid, eigenvalues (descending) and eigenvectors (columns) of a point cloud."""
    centre = points_mm.mean(axis=0)
    cov = np.cov((points_mm - centre).T)
    w, v = np.linalg.eigh(cov)
    order = np.argsort(w)[::-1]
    return centre, w[order], v[:, order]


def _subsample(idx: I64, limit: int = 200_000) -> I64:
    step = max(1, idx.shape[0] // limit)
    return idx[::step]


# --------------------------------------------------------------------------------------------
# step 2: candidate regions at the reference phase


@dataclass
class _Region:
    label: int
    volume_ml: float
    centroid_lps: F64
    elongation: float
    myocardial_shell: float

    @property
    def candidate(self) -> bool:
        return self.volume_ml >= _MIN_CHAMBER_ML and self.elongation <= _MAX_ELONGATION


def _partition(blood: Mask, spacing: tuple[float, float, float]) -> tuple[NDArray[np.int32], int]:
    """Split the blood pool into core regions (step 2): labels 1..n, 0 for blood without a core."""
    components, _ = ndimage.label(blood)
    depth = np.asarray(ndimage.distance_transform_edt(blood, sampling=spacing))
    cores, n_cores = ndimage.label(depth > _CORE_DEPTH_MM)
    if n_cores == 0:
        return np.zeros(blood.shape, dtype=np.int32), 0
    # every blood voxel joins its nearest core of the same component
    _, nearest = ndimage.distance_transform_edt(cores == 0, sampling=spacing, return_indices=True)
    near = tuple(nearest)
    region = np.where(blood & (components[near] == components), cores[near], 0).astype(np.int32)
    # merge cores whose neck is wide compared with their depth
    peaks = np.asarray(ndimage.maximum(depth, region, np.arange(1, n_cores + 1)), dtype=np.float64)
    keys_list: list[I64] = []
    vals_list: list[F64] = []
    for axis in range(3):
        a = [slice(None)] * 3
        b = [slice(None)] * 3
        a[axis] = slice(0, -1)
        b[axis] = slice(1, None)
        ra, rb = region[tuple(a)], region[tuple(b)]
        touching = (ra > 0) & (rb > 0) & (ra != rb)
        lo = np.minimum(ra[touching], rb[touching]).astype(np.int64)
        hi = np.maximum(ra[touching], rb[touching]).astype(np.int64)
        keys_list.append(lo * (n_cores + 1) + hi)
        vals_list.append(np.minimum(depth[tuple(a)][touching], depth[tuple(b)][touching]))
    saddles = _pairwise_max(np.concatenate(keys_list), np.concatenate(vals_list))
    parent = list(range(n_cores + 1))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for key, saddle in saddles.items():
        i, j = divmod(key, n_cores + 1)
        if saddle >= _NECK_RATIO * min(peaks[i - 1], peaks[j - 1]):
            parent[root(i)] = root(j)
    roots = np.array([root(i) for i in range(n_cores + 1)])
    _, compact = np.unique(roots, return_inverse=True)  # root 0 stays 0
    return compact.astype(np.int32)[region], int(compact.max())


def _regions(
    volume: Volume, factors: tuple[int, int, int], blood_window: tuple[float, float],
    myocardium_window: tuple[float, float],
) -> tuple[NDArray[np.int32], list[_Region]]:
    fz, fy, fx = factors
    hu = volume.voxels[::fz, ::fy, ::fx]
    spacing = (volume.spacing_mm[0] * fz, volume.spacing_mm[1] * fy, volume.spacing_mm[2] * fx)
    blood = _in_window(hu, blood_window)
    labels, n = _partition(blood, spacing)
    if n == 0:
        return labels, []
    index = np.arange(1, n + 1)
    counts = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    voxel_ml = float(np.prod(spacing)) / 1000.0
    # myocardial shell: tissue within _SHELL_MM of a region, attributed to the nearest blood voxel
    outside, nearest = ndimage.distance_transform_edt(~blood, sampling=spacing, return_indices=True)
    shell = (~blood) & (np.asarray(outside) <= _SHELL_MM)
    owner = labels[tuple(nearest)][shell]
    in_myo = _in_window(hu[shell], (myocardium_window[0], myocardium_window[1]))
    shell_total = np.bincount(owner, minlength=n + 1)[1:]
    shell_myo = np.bincount(owner[in_myo], minlength=n + 1)[1:]
    objects = ndimage.find_objects(labels)
    regions: list[_Region] = []
    for k in index:
        box = objects[k - 1]
        if box is None:
            continue
        local = np.argwhere(labels[box] == k)
        local += np.array([s.start for s in box])
        pts = volume.index_to_patient(_subsample(local).astype(np.float64) * np.array(factors))
        centre, eig, _ = _principal_axes(pts) if pts.shape[0] > 3 else (pts.mean(axis=0), np.ones(3), None)
        elongation = float(math.sqrt(max(eig[0], 1e-9) / max(eig[1], 1e-9)))
        regions.append(_Region(
            label=int(k),
            volume_ml=float(counts[k - 1]) * voxel_ml,
            centroid_lps=centre,
            elongation=elongation,
            myocardial_shell=float(shell_myo[k - 1] / shell_total[k - 1]) if shell_total[k - 1] else 0.0,
        ))
    return labels, regions


def _seed_region(volume: Volume, labels: NDArray[np.int32], factors: tuple[int, int, int],
                 seed_mm: Sequence[float], name: str) -> int:
    seed = np.asarray(seed_mm, dtype=np.float64)
    if seed.shape != (3,) or not np.all(np.isfinite(seed)):
        raise ValueError(f"{name} must be a patient (LPS) point (x, y, z) in mm, got {seed_mm!r}")
    index = volume.patient_to_index(seed)
    if np.any(index < -0.5) or np.any(index > np.array(volume.shape) - 0.5):
        raise ValueError(f"{name} {tuple(seed)} mm lies outside the volume")
    coarse = np.clip(np.round(index / np.array(factors)).astype(int), 0, np.array(labels.shape) - 1)
    label = int(labels[tuple(coarse)])
    if label == 0:
        raise ValueError(f"{name} {tuple(seed)} mm is not inside a contrast blood pool at the reference "
                         "phase (check the point and blood_window_hu)")
    return label


def _identify(
    volume: Volume, labels: NDArray[np.int32], regions: list[_Region], factors: tuple[int, int, int],
    seeds: Mapping[Chamber, Sequence[float] | None], notes: list[str],
) -> dict[Chamber, _Region]:
    by_label = {r.label: r for r in regions}
    chosen: dict[Chamber, _Region] = {}
    for chamber, seed in seeds.items():
        if seed is None:
            continue
        label = _seed_region(volume, labels, factors, seed, f"{chamber.value.lower()}_seed_mm")
        for other, region in chosen.items():
            if region.label == label:
                raise ValueError(f"the {chamber.value} and {other.value} seeds fall in one blood-pool "
                                 "region that could not be split (a wide connection between the chambers)")
        chosen[chamber] = by_label[label]
    if Chamber.LV not in chosen:
        lv_candidates = [r for r in regions if r.candidate and r.volume_ml >= _MIN_LV_ML
                         and r.myocardial_shell >= _MIN_LV_MYOCARDIAL_SHELL
                         and r.label not in {c.label for c in chosen.values()}]
        if not lv_candidates:
            raise ValueError("could not identify the left ventricle (no blood-pool region of at least "
                             f"{_MIN_LV_ML:g} mL wrapped in myocardium); pass lv_seed_mm or check the HU windows")
        chosen[Chamber.LV] = max(lv_candidates, key=lambda r: r.myocardial_shell)
    lv = chosen[Chamber.LV]
    open_chambers = [c for c in (Chamber.RV, Chamber.LA, Chamber.RA) if c not in chosen]
    used = {r.label for r in chosen.values()}
    pool = [r for r in regions if r.candidate and r.label not in used
            and float(np.linalg.norm(r.centroid_lps - lv.centroid_lps)) <= _MAX_CHAMBER_DISTANCE_MM]
    cos = {}
    for r in pool:
        d = _unit(r.centroid_lps - lv.centroid_lps)
        for c in open_chambers:
            cos[(c, r.label)] = float(d @ _unit(np.asarray(_TEMPLATE_DIRECTIONS[c.value])))
    best: tuple[float, dict[Chamber, _Region]] = (0.0, {})
    options: list[_Region | None] = [*pool, None]
    for combo in itertools.product(options, repeat=len(open_chambers)):
        labels_used = [r.label for r in combo if r is not None]
        if len(labels_used) != len(set(labels_used)):
            continue
        score, pick = 0.0, {}
        for c, option in zip(open_chambers, combo, strict=True):
            if option is None:
                continue
            value = cos[(c, option.label)]
            if value < _MIN_DIRECTION_COSINE:
                break
            score += value
            pick[c] = option
        else:
            if score > best[0]:
                best = (score, pick)
    chosen.update(best[1])
    for c in open_chambers:
        if c not in chosen:
            notes.append(f"{c.value} not found (no blood-pool region in the expected direction from the LV)")
    return chosen


# --------------------------------------------------------------------------------------------
# step 3: per-phase segmentation


@dataclass
class _Reference:
    roi: tuple[slice, slice, slice]  # full-resolution box analysed
    coarse: NDArray[np.uint8]  # chamber codes of the reference partition, coarse grid (whole volume)
    nearest: NDArray[np.uint8]  # nearest non-zero code of ``coarse`` at every coarse voxel
    factors: tuple[int, int, int]


@dataclass
class _PhaseSegmentation:
    counts: dict[Chamber, int]
    lv_box: tuple[slice, slice, slice]  # full-resolution indices
    lv_mask: Mask  # inside lv_box
    edge: set[tuple[Chamber, int, int, bool]]  # chamber on a box face: (chamber, axis, side 0/1, face is the FOV's)
    centroids: dict[Chamber, F64]  # full-resolution index (z, y, x)


def _segment_phase(volume: Volume, ref: _Reference, blood_window: tuple[float, float]) -> _PhaseSegmentation:
    roi = ref.roi
    start = np.array([s.start for s in roi])
    f = np.array(ref.factors)
    lab, n = ndimage.label(_in_window(volume.voxels[roi], blood_window))
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    # the coarse sample positions inside the box (full index c*f) against the reference codes
    offset = (-start) % f
    c0 = (start + offset) // f
    sampled = lab[offset[0]::f[0], offset[1]::f[1], offset[2]::f[2]]
    ref_box = tuple(slice(int(c0[i]), int(c0[i]) + sampled.shape[i]) for i in range(3))
    ref_codes, ref_nearest = ref.coarse[ref_box], ref.nearest[ref_box]
    sampled = sampled[tuple(slice(0, s) for s in ref_codes.shape)]
    both = (sampled > 0) & (ref_codes > 0)
    overlap = np.bincount(sampled[both].astype(np.int64) * 6 + ref_codes[both], minlength=(n + 1) * 6)
    overlap = overlap.reshape(n + 1, 6)
    total = overlap.sum(axis=1)
    dominant = overlap.argmax(axis=1)
    clear = (total > 0) & (overlap[np.arange(n + 1), dominant] >= 0.9 * total)
    lut = np.where(clear, dominant, 0).astype(np.uint8)
    mixed = np.flatnonzero((total > 0) & ~clear)

    def codes_at(block: tuple[slice, slice, slice]) -> NDArray[np.uint8]:
        """Chamber code of every voxel of ``block`` (ROI indices): the component's code, or the
        nearest reference chamber for components that span several."""
        labels = lab[block]
        codes = lut[labels]
        if mixed.size:
            split = np.isin(labels, mixed)
            if split.any():
                idx = np.argwhere(split) + np.array([s.start for s in block]) + start
                c = np.minimum(np.round(idx / f).astype(np.int64), np.array(ref.nearest.shape) - 1)
                codes[split] = ref.nearest[c[:, 0], c[:, 1], c[:, 2]]
        return codes

    counts_all = np.bincount(lut[1:], weights=sizes[1:], minlength=6)
    if mixed.size:
        objects = ndimage.find_objects(lab)
        for k in mixed:
            box = objects[k - 1]
            if box is not None:
                counts_all += np.bincount(codes_at(box)[lab[box] == k], minlength=6)
    counts = {c: int(round(counts_all[_CODES[c]])) for c in Chamber}
    # centroids and a rough LV box from the coarse sample
    coarse_codes = lut[sampled]
    split = np.isin(sampled, mixed)
    coarse_codes[split] = ref_nearest[split]
    centroids: dict[Chamber, F64] = {}
    for c in Chamber:
        at = np.argwhere(coarse_codes == _CODES[c])
        if at.shape[0]:
            centroids[c] = at.mean(axis=0) * f + offset + start
    lv_at = np.argwhere(coarse_codes == _CODES[Chamber.LV]) * f + offset
    shape = lab.shape
    if lv_at.shape[0]:
        rough = tuple(slice(int(max(lv_at[:, i].min() - f[i], 0)), int(min(lv_at[:, i].max() + f[i] + 1, shape[i])))
                      for i in range(3))
    else:
        rough = tuple(slice(0, s) for s in shape)
    lv = codes_at((rough[0], rough[1], rough[2])) == _CODES[Chamber.LV]
    spans = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero(lv.any(axis=other))
        spans.append(slice(int(present[0]), int(present[-1]) + 1) if present.size else slice(0, 0))
    lv_mask = lv[tuple(spans)]
    lv_box = tuple(slice(sp.start + rough[i].start + int(start[i]), sp.stop + rough[i].start + int(start[i]))
                   for i, sp in enumerate(spans))
    # chambers on the faces of the box: truncated by the field of view or by the box
    edge: set[tuple[Chamber, int, int, bool]] = set()
    for axis in range(3):
        for side in (0, 1):
            face = [slice(0, s) for s in shape]
            face[axis] = slice(0, 1) if side == 0 else slice(shape[axis] - 1, shape[axis])
            present_codes = set(np.unique(codes_at((face[0], face[1], face[2]))).tolist())
            at_fov = roi[axis].start == 0 if side == 0 else roi[axis].stop == volume.shape[axis]
            for c in Chamber:
                if _CODES[c] in present_codes:
                    edge.add((c, axis, side, at_fov))
    return _PhaseSegmentation(counts, (lv_box[0], lv_box[1], lv_box[2]), lv_mask, edge, centroids)


# --------------------------------------------------------------------------------------------
# steps 5-7: myocardium, axis, thickness


@dataclass
class _Myocardium:
    volume_ml: float
    thickness: dict[int, tuple[float | None, int]]  # segment -> (median mm, voxels)
    axis: F64
    base_centre: F64
    apex: F64
    length_mm: float
    septal: F64
    anterior: F64


def _block_mean(a: NDArray[np.floating], g: tuple[int, int, int]) -> NDArray[np.float32]:
    if g == (1, 1, 1):
        return np.asarray(a, dtype=np.float32)
    nz, ny, nx = (s // k for s, k in zip(a.shape, g, strict=True))
    trimmed = np.asarray(a[: nz * g[0], : ny * g[1], : nx * g[2]], dtype=np.float32)
    return trimmed.reshape(nz, g[0], ny, g[1], nx, g[2]).mean(axis=(1, 3, 5), dtype=np.float32)


def _base_level(s: F64, bin_mm: float) -> float:
    """Most basal level of the LV blood pool along the axis: the first level (from the base
    side) whose cross-section is at least half the largest one, so that a narrow protrusion (an
    outflow tract, a valve opening) does not move the base. ``s`` are voxel positions along the
    axis (mm); the result is within half a bin of a plane base."""
    edges = np.arange(float(s.min()), float(s.max()) + bin_mm, bin_mm)
    counts, edges = np.histogram(s, bins=edges)
    i = int(np.flatnonzero(counts >= 0.5 * counts.max())[0])
    previous = counts[i - 1] / counts[i] if i > 0 else 0.0
    return float(edges[i] - bin_mm * min(1.0, previous))


def _segments(axial_fraction: F64, theta: F64) -> I64:
    """AHA segment 1-16 from the fraction of the base-apex length and the angle (radians) from
    the septal direction towards anterior."""
    deg = np.degrees(theta)
    six = np.array([2, 1, 6, 5, 4, 3])  # sectors of 60° from the septal direction
    four = np.array([14, 13, 16, 15])  # sectors of 90° centred on the septal direction
    s6 = six[np.floor(np.mod(deg, 360.0) / 60.0).astype(np.int64) % 6]
    s4 = four[np.floor(np.mod(deg + 45.0, 360.0) / 90.0).astype(np.int64) % 4]
    ring = np.clip((axial_fraction * 3.0).astype(np.int64), 0, 2)
    return np.where(ring == 0, s6, np.where(ring == 1, s6 + 6, s4))


def _myocardium(
    volume: Volume,
    seg: _PhaseSegmentation,
    *,
    blood_window: tuple[float, float],
    myocardium_window: tuple[float, float],
    max_wall_mm: float,
    atria_centroid_lps: F64 | None,
    rv_centroid_lps: F64 | None,
    notes: list[str],
    label: str,
) -> tuple[_Myocardium, tuple[float, float, float]]:
    spacing = np.array(volume.spacing_mm, dtype=np.float64)
    g = _factors(volume.spacing_mm, _MYOCARDIUM_GRID_MM)
    gv = np.array(g)
    grid_mm = spacing * gv
    pad = np.ceil((max_wall_mm + 3 * grid_mm) / spacing).astype(int)
    lo = np.maximum(np.array([s.start for s in seg.lv_box]) - pad, 0)
    hi = np.minimum(np.array([s.stop for s in seg.lv_box]) + pad, np.array(volume.shape))
    hi = lo + (hi - lo) // gv * gv  # whole blocks
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    lv_full = np.zeros(tuple(int(v) for v in hi - lo), dtype=np.float32)
    box_lo = np.array([s.start for s in seg.lv_box])
    a0 = np.maximum(box_lo, lo)
    a1 = np.minimum(np.array([s.stop for s in seg.lv_box]), hi)
    lv_full[tuple(slice(int(x - o), int(y - o)) for x, y, o in zip(a0, a1, lo, strict=True))] = seg.lv_mask[
        tuple(slice(int(x - b), int(y - b)) for x, y, b in zip(a0, a1, box_lo, strict=True))
    ]
    hu = _block_mean(volume.voxels[box], g)
    cavity = _block_mean(lv_full, g) >= 0.5
    blood = _in_window(hu, blood_window) | cavity
    window = (hu >= myocardium_window[0]) & (hu < myocardium_window[1]) & ~blood
    # majority vote among non-blood neighbours: planar edges stay put whatever the contrast
    w_myo = ndimage.gaussian_filter(window.astype(np.float32), 1.0, mode="nearest")
    w_all = ndimage.gaussian_filter((~blood).astype(np.float32), 1.0, mode="nearest")
    myo = (w_myo >= 0.5 * w_all) & ~blood
    d_in, idx_in = ndimage.distance_transform_edt(~cavity, sampling=grid_mm, return_indices=True)
    myo &= np.asarray(d_in) <= max_wall_mm
    parts, n_parts = ndimage.label(myo)
    touching = np.unique(parts[ndimage.binary_dilation(cavity) & myo])
    myo = np.isin(parts, touching[touching > 0]) if n_parts else myo
    epi = ndimage.binary_fill_holes(cavity | myo)
    myo = epi & ~cavity
    voxel_ml = float(np.prod(grid_mm)) / 1000.0
    myo_ml = float(myo.sum()) * voxel_ml
    if myo_ml == 0.0:
        notes.append(f"no LV myocardium found at {label} (check myocardium_window_hu)")

    # grid index -> patient coordinates (block centres)
    def to_patient(idx: F64) -> F64:
        return volume.index_to_patient(lo + idx * gv + (gv - 1) / 2.0)

    # long axis from the blood pool
    cav_idx = _subsample(np.argwhere(cavity)).astype(np.float64)
    pts = to_patient(cav_idx)
    centre, _, vecs = _principal_axes(pts)
    axis = vecs[:, 0]
    s = (pts - centre) @ axis
    if atria_centroid_lps is not None:
        if float((atria_centroid_lps - centre) @ axis) > 0:
            axis = -axis
    elif float(np.mean(s**3)) < 0:
        axis = -axis
    s = (pts - centre) @ axis
    s_base, s_apex = _base_level(s, float(grid_mm.min())), float(s.max())
    length = s_apex - s_base
    # septal direction: towards the RV centroid, across the axis
    if rv_centroid_lps is not None:
        sep = rv_centroid_lps - centre
    else:
        sep = np.array([-1.0, 0.0, 0.0])  # the patient's right
        notes.append(f"RV not found at {label}: septal direction assumed towards the patient's right")
    sep = _unit(sep - float(sep @ axis) * axis)
    anterior = _unit(np.cross(sep, axis))
    if float(anterior @ _unit(np.array([0.0, -1.0, 1.0]))) < 0:
        notes.append(f"AHA orientation at {label}: the 'anterior' side points posterior-inferior; "
                     "check patient orientation and situs")

    thickness: dict[int, tuple[float | None, int]] = {k: (None, 0) for k in range(1, 18)}
    p_idx = np.argwhere(myo)
    if p_idx.shape[0]:
        d_out, idx_out = ndimage.distance_transform_edt(epi, sampling=grid_mm, return_indices=True)
        q_in = np.stack([np.asarray(idx_in)[i][myo] for i in range(3)], axis=1).astype(np.float64)
        q_out = np.stack([np.asarray(idx_out)[i][myo] for i in range(3)], axis=1).astype(np.float64)
        p = p_idx.astype(np.float64)
        v_in = (p - q_in) * grid_mm
        v_out = (q_out - p) * grid_mm
        n_in = np.linalg.norm(v_in, axis=1)
        n_out = np.linalg.norm(v_out, axis=1)
        opposite = np.einsum("ij,ij->i", v_in, v_out) >= _OPPOSITE_COSINE * n_in * n_out
        span = (q_out - q_in) * grid_mm
        normal = span / np.maximum(np.linalg.norm(span, axis=1), 1e-9)[:, None]
        h_normal = np.sqrt(((normal * grid_mm) ** 2).sum(axis=1))
        # both distances run to the nearest voxel centre beyond the boundary: each overshoots the
        # boundary by 0 to one voxel along the normal (h_n), about h_n/4 for a generic oblique
        # wall; subtracting h_n/2 for the pair bounds the bias by about ±h_n/2 (docs)
        local = n_in + n_out - 0.5 * h_normal
        foot = to_patient(q_in)
        rel = foot - centre
        axial = (rel @ axis - s_base) / max(length, 1e-9)
        radial = rel - np.outer(rel @ axis, axis)
        theta = np.arctan2(radial @ anterior, radial @ sep)
        segment = _segments(axial, theta)
        beyond = (to_patient(p) - centre) @ axis > s_apex
        segment = np.where(beyond, 17, segment)
        for k in range(1, 18):
            sel = opposite & (segment == k)
            count = int(sel.sum())
            thickness[k] = (float(np.median(local[sel])) if count >= _MIN_SEGMENT_VOXELS else None, count)
    base_centre = centre + s_base * axis
    apex = centre + s_apex * axis
    return (
        _Myocardium(myo_ml, thickness, axis, base_centre, apex, length, sep, anterior),
        (float(grid_mm[0]), float(grid_mm[1]), float(grid_mm[2])),
    )


# --------------------------------------------------------------------------------------------
# the engine


def _map_phases(fn: Callable[[_A], _T], args: Sequence[_A]) -> list[_T]:
    """``fn`` over the phases (in order), two at a time where there are cores for it: the
    per-phase work is NumPy and SciPy, which release the GIL, and the phases are independent."""
    workers = min(2, os.cpu_count() or 1, len(args))
    if workers < 2:
        return [fn(a) for a in args]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="voxa-cardiac") as pool:
        return list(pool.map(fn, args))


@dataclass
class _Cycle:
    """Steps 1 to 3 over the whole cycle: the chambers found and every phase's segmentation."""

    reference_phase: float  # the phase the chambers were identified at (most contrast blood)
    chosen: dict[Chamber, _Region]
    reference: _Reference
    segmentations: list[_PhaseSegmentation]


def _segment_cycle(
    items: Sequence[tuple[float, Volume]],
    blood_window: tuple[float, float],
    myo_window: tuple[float, float],
    seeds: Mapping[Chamber, Sequence[float] | None],
    notes: list[str],
) -> _Cycle:
    """The chambers of the reference phase and their segmentation at every phase (shared by the
    analysis and by the SEG writer, which must count exactly the analysis's voxels)."""
    first = items[0][1]
    spacing = first.spacing_mm
    factors = _factors(spacing, _COARSE_MM)

    # reference phase: the most contrast blood (largest chambers, usually end-diastole)
    fz, fy, fx = factors
    blood_counts = [int(_in_window(v.voxels[::fz, ::fy, ::fx], blood_window).sum()) for _, v in items]
    ref_phase, ref_volume = items[int(np.argmax(blood_counts))]
    labels, regions = _regions(ref_volume, factors, blood_window, myo_window)
    chosen = _identify(ref_volume, labels, regions, factors, seeds, notes)

    # reference codes, nearest-code map and the box analysed at full resolution
    code_of = np.zeros(int(labels.max()) + 1, dtype=np.uint8)
    for r in regions:
        code_of[r.label] = _OTHER
    for c, r in chosen.items():
        code_of[r.label] = _CODES[c]
    coarse = code_of[labels]
    coarse_mm = tuple(s * k for s, k in zip(spacing, factors, strict=True))
    _, nearest_idx = ndimage.distance_transform_edt(coarse == 0, sampling=coarse_mm, return_indices=True)
    nearest = coarse[tuple(nearest_idx)]
    chamber_mask = np.isin(coarse, [_CODES[c] for c in chosen])
    present = [np.flatnonzero(chamber_mask.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    margin = np.ceil(_ROI_MARGIN_MM / np.array(spacing)).astype(int)
    f = np.array(factors)
    lo = [int(max(0, present[i][0] * f[i] - margin[i])) for i in range(3)]
    hi = [int(min(first.shape[i], present[i][-1] * f[i] + f[i] + margin[i])) for i in range(3)]

    # step 3: every phase; the box grows where a chamber reaches one of its faces
    for _ in range(4):
        ref = _Reference((slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2])), coarse, nearest, factors)
        segs = _map_phases(functools.partial(_segment_phase, ref=ref, blood_window=blood_window),
                           [v for _, v in items])
        inner = {(axis, side) for sg in segs for (c, axis, side, at_fov) in sg.edge if c in chosen and not at_fov}
        if not inner:
            break
        for axis, side in inner:
            if side == 0:
                lo[axis] = max(0, lo[axis] - 2 * int(margin[axis]))
            else:
                hi[axis] = min(first.shape[axis], hi[axis] + 2 * int(margin[axis]))
    return _Cycle(ref_phase, chosen, ref, segs)


def analyse_cardiac_function(
    phases: Mapping[float, Volume] | Sequence[tuple[float, Volume]],
    *,
    heart_rate_bpm: float | None = None,
    sex: str | None = None,
    body_surface_area_m2: float | None = None,
    lv_seed_mm: Sequence[float] | None = None,
    rv_seed_mm: Sequence[float] | None = None,
    la_seed_mm: Sequence[float] | None = None,
    ra_seed_mm: Sequence[float] | None = None,
    blood_window_hu: tuple[float, float] = DEFAULT_BLOOD_WINDOW_HU,
    myocardium_window_hu: tuple[float, float] = DEFAULT_MYOCARDIUM_WINDOW_HU,
    wall_search_mm: float = 30.0,
    reference_ranges: Sequence[ReferenceRange] = REFERENCE_RANGES,
) -> CardiacFunctionResult:
    """LV and RV function, LV mass, AHA wall thickness and atrial volumes from a cardiac cycle.

    ``phases`` maps the nominal percentage of the R-R interval (0 <= p < 100) to a CT
    :class:`Volume` in HU; every phase must share one grid (at least 2 phases; 10 or 20 for
    function). ``heart_rate_bpm`` gives cardiac output; ``sex`` ("M"/"F", DICOM PatientSex
    accepted) selects the normal ranges (no flags without it); ``body_surface_area_m2`` adds
    indexed values and the BSA-indexed ranges. Seeds are patient (LPS) points in mm inside a
    chamber's contrast blood at the reference phase (the phase with most blood, usually ED).
    ``wall_search_mm`` bounds how far from the LV blood pool myocardium is looked for (raise it
    for walls thicker than 30 mm). See the module docstring for the method. Phases from
    :func:`voxa.imaging.assemble.split_phases` keyed by NominalPercentageOfCardiacPhase convert
    with ``{key.value: volume ...}``; TriggerTime keys need the R-R interval first. Raises
    ValueError on bad input or when no LV is found.
    """
    items = _phase_list(phases)
    blood_window = _window("blood_window_hu", blood_window_hu)
    myo_window = _window("myocardium_window_hu", myocardium_window_hu)
    if myo_window[1] > blood_window[0]:
        raise ValueError(f"myocardium_window_hu {myo_window} overlaps blood_window_hu {blood_window}")
    if heart_rate_bpm is not None and not (math.isfinite(heart_rate_bpm) and 20.0 <= heart_rate_bpm <= 300.0):
        raise ValueError(f"heart_rate_bpm must be between 20 and 300, got {heart_rate_bpm}")
    if body_surface_area_m2 is not None and not (math.isfinite(body_surface_area_m2)
                                                 and 0.2 <= body_surface_area_m2 <= 4.0):
        raise ValueError(f"body_surface_area_m2 must be between 0.2 and 4 m², got {body_surface_area_m2}")
    if not (math.isfinite(wall_search_mm) and wall_search_mm > 0):
        raise ValueError(f"wall_search_mm must be positive, got {wall_search_mm}")
    sex_code = normalise_sex(sex)
    notes: list[str] = []
    first = items[0][1]
    seeds = {Chamber.LV: lv_seed_mm, Chamber.RV: rv_seed_mm, Chamber.LA: la_seed_mm, Chamber.RA: ra_seed_mm}
    cycle = _segment_cycle(items, blood_window, myo_window, seeds, notes)
    chosen, segs = cycle.chosen, cycle.segmentations
    voxel_ml = first.voxel_volume_ml
    for (p, _), sg in zip(items, segs, strict=True):
        if sg.counts[Chamber.LV] == 0:
            raise ValueError(f"no LV blood pool found at phase {p:g}%")
        for c in sorted({c for (c, _, _, at_fov) in sg.edge if c in chosen and at_fov}):
            notes.append(f"{c.value} reaches the edge of the field of view at phase {p:g}%: its volume is truncated")
    rows = []
    for (p, _), sg in zip(items, segs, strict=True):
        def ml(c: Chamber, sg: _PhaseSegmentation = sg) -> float | None:
            return sg.counts[c] * voxel_ml if c in chosen else None
        lv_ml = ml(Chamber.LV)
        assert lv_ml is not None
        rows.append(PhaseVolumes(p, lv_ml, ml(Chamber.RV), ml(Chamber.LA), ml(Chamber.RA)))
    ed_i = int(np.argmax([r.lv_ml for r in rows]))
    es_i = int(np.argmin([r.lv_ml for r in rows]))
    ed, es = rows[ed_i], rows[es_i]

    def function(edv: float, esv: float) -> VentricularFunction:
        sv = edv - esv
        co = sv * heart_rate_bpm / 1000.0 if heart_rate_bpm is not None else None
        return VentricularFunction(edv, esv, sv, 100.0 * sv / edv if edv > 0 else 0.0, co)

    lv_fn = function(ed.lv_ml, es.lv_ml)
    rv_fn = function(ed.rv_ml, es.rv_ml) if ed.rv_ml is not None and es.rv_ml is not None and ed.rv_ml > 0 else None

    # steps 5-7 at ED and ES
    def centroid_lps(sg: _PhaseSegmentation, chambers: Sequence[Chamber]) -> F64 | None:
        pts = [sg.centroids[c] for c in chambers if c in sg.centroids]
        if not pts:
            return None
        weights = np.array([sg.counts[c] for c in chambers if c in sg.centroids], dtype=np.float64)
        return first.index_to_patient(np.average(np.stack(pts), axis=0, weights=weights))

    def wall(name_and_index: tuple[str, int]) -> tuple[_Myocardium, tuple[float, float, float], list[str]]:
        name, i = name_and_index
        sg = segs[i]
        own_notes: list[str] = []  # kept apart: ED's and ES's run side by side
        found, grid = _myocardium(
            items[i][1], sg,
            blood_window=blood_window,
            myocardium_window=myo_window,
            max_wall_mm=wall_search_mm,
            atria_centroid_lps=centroid_lps(sg, (Chamber.LA, Chamber.RA)),
            rv_centroid_lps=centroid_lps(sg, (Chamber.RV,)),
            notes=own_notes,
            label=f"{name} ({items[i][0]:g}%)",
        )
        return found, grid, own_notes

    myo: dict[str, _Myocardium] = {}
    grid_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    for (name, _), (found, grid, own_notes) in zip(
            (("ED", ed_i), ("ES", es_i)), _map_phases(wall, [("ED", ed_i), ("ES", es_i)]), strict=True):
        myo[name], grid_mm = found, grid
        notes.extend(own_notes)
    mass_ed = myo["ED"].volume_ml * MYOCARDIAL_DENSITY_G_PER_ML
    mass_es = myo["ES"].volume_ml * MYOCARDIAL_DENSITY_G_PER_ML
    if mass_ed > 0 and abs(mass_es - mass_ed) > 0.1 * mass_ed:
        notes.append(f"LV mass differs by more than 10 % between ED ({mass_ed:.0f} g) and ES "
                     f"({mass_es:.0f} g): check the myocardium segmentation")
    segments = []
    for k in range(1, 18):
        t_ed, n_ed = myo["ED"].thickness[k]
        t_es, _ = myo["ES"].thickness[k]
        thickening = 100.0 * (t_es - t_ed) / t_ed if t_ed and t_es is not None else None
        segments.append(SegmentThickness(k, AHA_SEGMENT_NAMES[k], t_ed, t_es, thickening, n_ed))
    measured = [s.ed_mm for s in segments if s.ed_mm is not None]
    m = myo["ED"]
    lv_geometry = LvGeometry(_tuple3(m.axis), _tuple3(m.base_centre), _tuple3(m.apex), m.length_mm,
                             _tuple3(m.septal), _tuple3(m.anterior))

    def extreme(values: list[float | None], largest: bool) -> float | None:
        present_values = [v for v in values if v is not None]
        if not present_values:
            return None
        return max(present_values) if largest else min(present_values)

    if cycle.reference_phase != ed.phase_percent:
        notes.append(f"identification used phase {cycle.reference_phase:g}% (most blood), end-diastole is {ed.phase_percent:g}%")
    if sex_code is None:
        notes.append("sex not given: values were not compared with the sex-specific normal ranges")
    result = CardiacFunctionResult(
        phases=tuple(rows),
        ed_phase_percent=ed.phase_percent,
        es_phase_percent=es.phase_percent,
        lv=lv_fn,
        rv=rv_fn,
        lv_mass_g=mass_ed,
        lv_mass_es_g=mass_es,
        lv_myocardial_volume_ml=myo["ED"].volume_ml,
        la_max_ml=extreme([r.la_ml for r in rows], True),
        la_min_ml=extreme([r.la_ml for r in rows], False),
        ra_max_ml=extreme([r.ra_ml for r in rows], True),
        ra_min_ml=extreme([r.ra_ml for r in rows], False),
        wall_thickness=tuple(segments),
        max_wall_thickness_mm=max(measured) if measured else None,
        geometry=lv_geometry,
        heart_rate_bpm=heart_rate_bpm,
        body_surface_area_m2=body_surface_area_m2,
        sex=sex_code,
        flags=(),
        blood_window_hu=blood_window,
        myocardium_window_hu=myo_window,
        myocardium_grid_mm=grid_mm,
        notes=tuple(dict.fromkeys(notes)),
    )
    flags = evaluate_ranges(result.values(), sex_code, reference_ranges)
    return dataclasses.replace(result, flags=flags)


__all__ = [
    "AHA_SEGMENT_NAMES",
    "ALGORITHM_VERSION",
    "DEFAULT_BLOOD_WINDOW_HU",
    "DEFAULT_MYOCARDIUM_WINDOW_HU",
    "MYOCARDIAL_DENSITY_G_PER_ML",
    "CardiacFunctionResult",
    "Chamber",
    "LvGeometry",
    "PhaseVolumes",
    "RangeFlag",
    "ReferenceRange",
    "SegmentThickness",
    "VentricularFunction",
    "analyse_cardiac_function",
]
