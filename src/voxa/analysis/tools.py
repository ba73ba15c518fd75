"""The analysis tools as jobs: a registry, parameter checking, submission, and the run itself.

A :class:`Tool` names its parameters (type, default, unit) and a run function::

    run(runtime, series_uids, params, progress, cancelled) -> (result_json, [pydicom.Dataset, ...])

``progress(stage, percent)`` records how far it got (and raises
:class:`~voxa.jobs.executor.JobCancelled` once a cancel was asked for); ``cancelled()`` says so
without raising, for loops.  The datasets returned (SEG, SR) are written back to the archive
through the one ingest path (``source="analysis"``) after the last cancellation point.

Tools (parameters and result shapes in ``docs/analysis.md``):

* ``calcium`` — coronary calcium scoring of a non-contrast CT series (Agatston, volume, mass per
  artery) in the heart region (:mod:`voxa.analysis.calcium_region`), with a SEG of the lesions, a
  TID 1500 SR of the scores per artery and a TID 1500 SR of one outlined region per lesion;
* ``cardiac`` — LV/RV/atrial function of a multi-phase cardiac CT series;
* ``vessels`` — lumen segmentation, centreline, diameters and stenosis between two points of a
  CTA series, with a SEG of the lumen;
* ``measure`` — HU statistics of a box and/or the volume of a threshold region.

Submission (:func:`submit_analysis`) creates the ``analysis_results`` row and hands the run to
an executor: the embedded :class:`~voxa.jobs.executor.JobManager` by default, Celery workers on
Redis when ``celery_broker_url`` is set (:mod:`voxa.jobs.celery_app`).  Both run
:func:`run_analysis` and keep stage and percent in the ``jobs`` row.
"""

from __future__ import annotations

import dataclasses
import enum
import io
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import pydicom
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from scipy import ndimage

from voxa.analysis import results as store
from voxa.analysis.results import FINISHED, ResultStatus, StoredResult
from voxa.jobs.executor import JobCancelled

if TYPE_CHECKING:
    from voxa.analysis.calcium import CalciumScore
    from voxa.analysis.calcium_region import HeartCentre
    from voxa.archive.index import StoredLocation
    from voxa.config import Settings
    from voxa.imaging.volume import Volume
    from voxa.runtime import Runtime

log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]
Cancelled = Callable[[], bool]
ToolOutput = tuple[dict[str, Any], list[Dataset]]
RunFunction = Callable[["Runtime", Sequence[str], dict[str, Any], Progress, Cancelled], ToolOutput]


# --------------------------------------------------------------------------- errors


class AnalysisError(Exception):
    """A request the caller can correct; ``status`` is the HTTP status that fits."""

    status = 400


class UnknownTool(AnalysisError, LookupError):
    status = 404


class ParameterError(AnalysisError, ValueError):
    """A parameter is wrong: names it."""

    status = 422

    def __init__(self, name: str, message: str):
        super().__init__(f"parameter {name!r}: {message}")
        self.name = name


class SeriesError(AnalysisError, ValueError):
    """The series given do not fit the tool or the study."""

    status = 422


class ExecutorUnavailable(AnalysisError, RuntimeError):
    """The job could not be handed to the executor (the broker is down)."""

    status = 503


# --------------------------------------------------------------------------- parameters


class ParamType(enum.StrEnum):
    NUMBER = "number"
    INTEGER = "integer"
    CHOICE = "choice"
    POINT = "point"  # patient (LPS) coordinates in mm: "x,y,z" or [x, y, z]
    BOX = "box"  # two opposite corners in patient mm: "x0,y0,z0,x1,y1,z1" or [[x,y,z], [x,y,z]]
    BOOLEAN = "boolean"  # true/false, yes/no, 1/0


@dataclass(frozen=True)
class Parameter:
    name: str
    type: ParamType
    description: str
    unit: str = ""
    default: Any = None  # None: optional (or, where the description says so, taken from the series)
    required: bool = False
    choices: tuple[str, ...] = ()
    minimum: float | None = None  # inclusive
    maximum: float | None = None  # inclusive
    positive: bool = False  # > 0

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type.value, "description": self.description,
                               "unit": self.unit, "default": self.default, "required": self.required}
        if self.choices:
            out["choices"] = list(self.choices)
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        if self.positive:
            out["exclusive_minimum"] = 0
        return out

    def _number(self, value: Any, *, integer: bool = False) -> float:
        if isinstance(value, bool):
            raise ParameterError(self.name, f"expected a number, got {value!r}")
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise ParameterError(self.name, f"expected a number, got {value!r}") from None
        if not isinstance(value, int | float):
            raise ParameterError(self.name, f"expected a number, got {type(value).__name__}")
        try:
            number = float(value)
        except OverflowError:
            raise ParameterError(self.name, "must be a finite number") from None
        if not math.isfinite(number):
            raise ParameterError(self.name, "must be a finite number")
        if integer and number != int(number):
            raise ParameterError(self.name, f"expected a whole number, got {value!r}")
        return number

    def _numbers(self, value: Any, count: int, what: str) -> tuple[float, ...]:
        if isinstance(value, str):
            parts: list[Any] = [p for p in value.replace(";", ",").split(",") if p.strip()]
        elif isinstance(value, list | tuple):
            parts = [x for item in value for x in (item if isinstance(item, list | tuple) else [item])]
        else:
            raise ParameterError(self.name, f"expected {what}, got {type(value).__name__}")
        if len(parts) != count:
            raise ParameterError(self.name, f"expected {what} ({count} numbers), got {len(parts)}")
        return tuple(self._number(p) for p in parts)

    def parse(self, value: Any) -> Any:
        """The checked value; raises :class:`ParameterError` naming the parameter."""
        if value is None or (isinstance(value, str) and not value.strip()):
            if self.required:
                raise ParameterError(self.name, "is required")
            return self.default
        if self.type is ParamType.CHOICE:
            text = str(value).strip()
            for choice in self.choices:
                if text.lower() == choice.lower():
                    return choice
            raise ParameterError(self.name, f"must be one of {', '.join(self.choices)}, got {text!r}")
        if self.type is ParamType.BOOLEAN:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("true", "yes", "1", "y"):
                return True
            if text in ("false", "no", "0", "n"):
                return False
            raise ParameterError(self.name, f"expected true or false, got {value!r}")
        if self.type is ParamType.POINT:
            return self._numbers(value, 3, "a point x,y,z in mm")
        if self.type is ParamType.BOX:
            return self._numbers(value, 6, "a box x0,y0,z0,x1,y1,z1 in mm")
        number = self._number(value, integer=self.type is ParamType.INTEGER)
        if self.positive and not number > 0:
            raise ParameterError(self.name, f"must be greater than 0, got {number:g}")
        if self.minimum is not None and number < self.minimum:
            raise ParameterError(self.name, f"must be at least {self.minimum:g}, got {number:g}")
        if self.maximum is not None and number > self.maximum:
            raise ParameterError(self.name, f"must be at most {self.maximum:g}, got {number:g}")
        return int(number) if self.type is ParamType.INTEGER else number


@dataclass(frozen=True)
class Tool:
    name: str
    title: str
    description: str
    modality: str
    parameters: tuple[Parameter, ...]
    run: RunFunction
    algorithm_version: str
    outputs: tuple[str, ...] = ()  # DICOM objects written back ("SEG", "SR")
    max_series: int = 1

    def validate(self, raw: Mapping[str, Any] | None) -> dict[str, Any]:
        """Every parameter, checked, with defaults filled in; raises :class:`ParameterError`."""
        raw = dict(raw or {})
        known = {p.name: p for p in self.parameters}
        for name in raw:
            if name not in known:
                raise ParameterError(str(name), f"unknown parameter of tool {self.name!r} (known: "
                                                f"{', '.join(known) or 'none'})")
        return {p.name: p.parse(raw.get(p.name)) for p in self.parameters}

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "description": self.description, "modality": self.modality,
                "series": "one" if self.max_series == 1 else f"1-{self.max_series}",
                "algorithm_version": self.algorithm_version, "outputs": list(self.outputs),
                "parameters": [p.as_json() for p in self.parameters]}


# --------------------------------------------------------------------------- loading series


def _locations(runtime: Runtime, series_uid: str) -> list[StoredLocation]:
    locations = runtime.archive.index.locate(series_uid=series_uid)
    if not locations:
        raise SeriesError(f"series {series_uid} has no stored instances")
    return locations


def _read(runtime: Runtime, loc: StoredLocation, *, pixels: bool) -> Dataset:
    from voxa.archive.ingest import as_part10

    data = as_part10(runtime.archive.read_instance(loc.blob_key))
    return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=not pixels)


@dataclass
class _Series:
    volume: Volume
    headers: list[Dataset]  # one per volume slice, in slice order, when the slices are the stored images
    first: Dataset
    notes: list[str] = field(default_factory=list)


def _load_volume(runtime: Runtime, series_uid: str, progress: Progress) -> _Series:
    from voxa.imaging.series import load_series_volume

    progress("loading series", 2.0)
    locations = _locations(runtime, series_uid)
    volume = load_series_volume(runtime.archive, series_uid, max_cache_bytes=runtime.settings.volume_cache_max_bytes)
    progress("reading headers", 15.0)
    by_uid = {loc.sop_instance_uid: loc for loc in locations}
    uids = volume.sop_instance_uids
    notes: list[str] = []
    one_image_per_slice = (not volume.notes and len(uids) == volume.shape[0] and len(set(uids)) == len(uids)
                           and all(u in by_uid for u in uids))
    if one_image_per_slice:
        headers = [_read(runtime, by_uid[u], pixels=False) for u in uids]
        first = headers[0]
    else:
        headers = []
        first = _read(runtime, locations[0], pixels=False)
        notes.append("the volume is not one stored image per slice (" + ("; ".join(volume.notes) or "multi-frame")
                     + "): no SEG is written")
    return _Series(volume=volume, headers=headers, first=first, notes=notes)


def _require_ct(series: _Series, tool: str) -> None:
    modality = str(series.first.get("Modality", "") or series.volume.modality)
    if modality != "CT" or series.volume.units != "HU":
        raise SeriesError(f"{tool} needs a CT series in Hounsfield units; this series is {modality or 'unknown'} "
                          f"({series.volume.units or 'no units'})")


def _attr_float(ds: Dataset, keyword: str) -> float | None:
    value = ds.get(keyword)
    if value in (None, ""):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _jsonable(value: Any) -> Any:
    """Analysis dataclasses as JSON: enums by value, numpy to Python, NaN/inf as null."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(_jsonable(k)): _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, slice):
        return [value.start, value.stop]
    return value


def _patient_mm(volume: Volume, index: Sequence[float]) -> list[float]:
    return [float(v) for v in volume.index_to_patient(np.asarray(index, dtype=np.float64))]


# --------------------------------------------------------------------------- calcium


def calcium_json(score: CalciumScore, volume: Volume | None = None) -> dict[str, Any]:
    """A :class:`~voxa.analysis.calcium.CalciumScore` as the calcium tool's result JSON."""
    lesions = []
    for lesion in score.lesions:
        item = {
            "label": lesion.label, "artery": lesion.artery.value, "artery_source": lesion.artery_source,
            "agatston": lesion.agatston, "volume_mm3": lesion.volume_mm3, "mass_mg": lesion.mass_mg,
            "peak_hu": lesion.peak_hu, "mean_hu": lesion.mean_hu, "slice_indices": list(lesion.slice_indices),
            "area_mm2_by_slice": {str(k): v for k, v in lesion.area_mm2_by_slice.items()},
            "centroid_voxel": list(lesion.centroid_voxel),
        }
        if volume is not None:
            item["centroid_patient_mm"] = _patient_mm(volume, lesion.centroid_voxel)
        lesions.append(item)
    return _jsonable({
        "tool": "calcium",
        "algorithm_version": score.algorithm_version,
        "requires_review": score.requires_review,
        "agatston_total": score.agatston_total,
        "volume_mm3_total": score.volume_mm3_total,
        "mass_mg_total": score.mass_mg_total,
        "cac_drs": score.cac_drs,
        "classic_grade": score.classic_grade,
        "per_artery": {a.value: {"agatston": s.agatston, "volume_mm3": s.volume_mm3, "mass_mg": s.mass_mg,
                                 "lesion_count": s.lesion_count} for a, s in score.per_artery.items()},
        "lesions": lesions,
        "threshold_hu": score.threshold_hu,
        "kvp": score.kvp,
        "slice_thickness_mm": score.slice_thickness_mm,
        "slice_increment_mm": score.slice_increment_mm,
        "pixel_spacing_mm": list(score.pixel_spacing_mm),
        "min_area_mm2": score.min_area_mm2,
        "notes": list(score.notes),
    })  # type: ignore[no-any-return]


def calcium_lesion_labels(hu: NDArray[np.floating], score: CalciumScore,
                          roi: NDArray[np.bool_] | None = None) -> NDArray[np.int32]:
    """Each scored voxel's lesion label (0 elsewhere), numbered as ``score.lesions`` are.

    The voxels :func:`~voxa.analysis.calcium.score_calcium` scored are found again the same
    way: at or above its threshold (inside ``roi``), in in-plane 8-connected components of at
    least ``min_area_mm2``; lesions are their 26-connected 3-D components, labelled by
    ``scipy.ndimage.label`` in the same order."""
    calcium = np.asarray(hu) >= score.threshold_hu
    if roi is not None:
        calcium &= np.asarray(roi, dtype=bool)
    in_plane = np.zeros((3, 3, 3), dtype=bool)
    in_plane[1] = True
    lab2d, n2d = ndimage.label(calcium, structure=in_plane)
    pixel_area = score.pixel_spacing_mm[0] * score.pixel_spacing_mm[1]
    areas = np.bincount(lab2d.ravel(), minlength=n2d + 1) * pixel_area
    keep = areas >= score.min_area_mm2 * (1.0 - 1e-9)
    keep[0] = False
    lab3d, _ = ndimage.label(keep[lab2d], structure=np.ones((3, 3, 3), dtype=bool))
    return np.asarray(lab3d, dtype=np.int32)


def _heart_arteries(score: CalciumScore, volume: Volume, heart: HeartCentre) -> CalciumScore:
    """``score`` with each position-suggested lesion's artery suggested relative to the heart
    (:func:`~voxa.analysis.calcium_region.suggest_artery_in_heart`) instead of the image
    centre; ``artery_source`` says ``heart-position``."""
    from voxa.analysis.calcium import reassign
    from voxa.analysis.calcium_region import suggest_artery_in_heart

    suggested = [lesion.label for lesion in score.lesions if lesion.artery_source == "position"]
    for lesion in score.lesions:
        if lesion.label in suggested:
            artery = suggest_artery_in_heart(volume.index_to_patient(np.asarray(lesion.centroid_voxel)), heart)
            if artery is not lesion.artery:
                score = reassign(score, lesion.label, artery)
    lesions = tuple(dataclasses.replace(lesion, artery_source="heart-position") if lesion.label in suggested
                    else lesion for lesion in score.lesions)
    return dataclasses.replace(score, lesions=lesions)


def _run_calcium(runtime: Runtime, series_uids: Sequence[str], params: dict[str, Any], progress: Progress,
                 cancelled: Cancelled) -> ToolOutput:
    from voxa.analysis.calcium import score_calcium, thresholds_for_kvp
    from voxa.analysis.calcium_region import heart_centre, heart_region
    from voxa.analysis.dicom_outputs import build_calcium_lesion_sr, build_calcium_seg, build_calcium_sr

    series = _load_volume(runtime, series_uids[0], progress)
    _require_ct(series, "calcium scoring")
    volume = series.volume
    kvp = params["kvp"]
    if kvp is None:
        kvp = _attr_float(series.first, "KVP")
        if kvp is None:
            raise ParameterError("kvp", "the series has no KVP (0018,0060): give the tube voltage")
    try:
        band = thresholds_for_kvp(kvp)
    except ValueError as e:
        raise ParameterError("kvp", str(e)) from None
    increment_mm = float(volume.spacing_mm[0])
    thickness_mm = _attr_float(series.first, "SliceThickness") or increment_mm

    roi: NDArray[np.bool_] | None = None
    heart = None
    region_notes: list[str] = []
    if params["region"] == "auto":
        progress("finding the heart region", 20.0)
        mask, found = heart_region(volume, calcium_threshold_hu=band.threshold_hu)
        region_notes = list(found)
        if mask.any():
            roi = mask
            heart = heart_centre(volume, mask)
        else:
            region_notes.append("no heart region: the whole series was scored (the table and bone may be in the "
                                "scores); check the lesions or give region=none")
    else:
        region_notes.append("region=none: the whole series was scored (the table and bone may be in the scores)")
    progress("scoring", 30.0)
    score = score_calcium(
        volume.voxels, pixel_spacing_mm=(float(volume.spacing_mm[1]), float(volume.spacing_mm[2])),
        slice_thickness_mm=thickness_mm, slice_increment_mm=increment_mm, kvp=kvp, thresholds=band,
        mass_calibration_mg_per_ml_per_hu=params["mass_calibration"], min_area_mm2=params["min_area_mm2"],
        max_lesion_volume_mm3=params["max_lesion_volume_mm3"], roi=roi)
    if heart is not None:
        score = _heart_arteries(score, volume, heart)
    result = calcium_json(score, volume)
    result["series_instance_uid"] = series_uids[0]
    result["region"] = {
        "mode": params["region"],
        "applied": roi is not None,
        "volume_ml": float(np.count_nonzero(roi)) * volume.voxel_volume_ml if roi is not None else None,
        "heart_centre_mm": list(heart.centre_mm) if heart is not None else None,
    }
    outputs: list[Dataset] = []
    seg = None
    notes = [*region_notes, *series.notes]
    labels = None
    if score.lesions and series.headers:
        progress("building SEG", 60.0)
        labels = calcium_lesion_labels(volume.voxels, score, roi)
        seg = build_calcium_seg(series.headers, score, labels)
        outputs.append(seg)
    elif not score.lesions:
        notes.append("no calcified lesion: no SEG and no lesion SR are written")
    progress("building SR", 75.0)
    evidence = series.headers or [series.first]
    outputs.append(build_calcium_sr(score, source_images=evidence, seg=seg, lesion_labels=labels))
    if labels is not None:
        outputs.append(build_calcium_lesion_sr(score, source_images=series.headers, lesion_labels=labels))
    elif score.lesions:
        notes.append("no lesion SR: its outlines need one stored image per slice")
    result["notes"] = [*result["notes"], *notes]
    result.update(_calcium_risk(runtime, score.agatston_total, params, series.first, result["notes"]))
    return result, outputs


_MESA_INPUTS = ("total_cholesterol_mg_dl", "hdl_cholesterol_mg_dl", "systolic_bp_mm_hg")
_MESA_FLAGS = ("diabetes", "current_smoker", "lipid_lowering_medication", "antihypertensive_medication",
               "family_history_of_mi")


def _age_years(ds: Dataset) -> float | None:
    """Patient's Age (0010,1010, e.g. 064Y), else from the birth date to the study date."""
    age = str(ds.get("PatientAge", "") or "").strip().upper()
    m = re.fullmatch(r"(\d{1,3})([DWMY])", age)
    if m:
        return int(m.group(1)) / {"D": 365.25, "W": 52.18, "M": 12.0, "Y": 1.0}[m.group(2)]
    born, seen = str(ds.get("PatientBirthDate", "") or ""), str(ds.get("StudyDate", "") or "")
    if re.fullmatch(r"\d{8}", born) and re.fullmatch(r"\d{8}", seen):
        b, s = (int(x[:4]) + (int(x[4:6]) - 1) / 12.0 + (int(x[6:8]) - 1) / 365.25 for x in (born, seen))
        return s - b if s >= b else None
    return None


def _calcium_risk(runtime: Runtime, agatston: float, params: dict[str, Any], first: Dataset,
                  notes: list[str]) -> dict[str, Any]:
    """The score's percentile (with a configured reference table) and the MESA 10-year CHD risk
    (with the risk factors), both decision support; what is missing goes to ``notes``."""
    from voxa.analysis.cac_risk import RiskFactors, calcium_percentile, load_percentile_table, mesa_chd_risk

    age = params["age_years"] if params["age_years"] is not None else _age_years(first)
    sex = params["sex"]
    if sex is None and str(first.get("PatientSex", "")).upper() in ("M", "F"):
        sex = str(first.PatientSex).upper()
    race = params["race"]
    out: dict[str, Any] = {"percentile": None, "mesa_risk": None,
                           "patient": {"age_years": age, "sex": sex, "race": race}}
    table_path = runtime.settings.calcium_percentile_table
    if table_path is not None:
        if age is None or sex is None or race is None:
            notes.append("no percentile: it needs the patient's age, sex and race (parameters age_years, sex, race)")
        else:
            try:
                table = load_percentile_table(table_path, runtime.settings.calcium_percentile_source)
            except (OSError, ValueError) as e:
                raise AnalysisError(f"the calcium percentile table cannot be read: {e}") from None
            value = calcium_percentile(agatston, age_years=age, sex=sex, race=race, table=table)
            if value is None:
                notes.append(f"no percentile: the reference table has no group for sex {sex}, race {race}, "
                             f"age {age:.0f}")
            else:
                out["percentile"] = {"value": value, "source": table.source, "requires_review": True}
    given = [k for k in _MESA_INPUTS if params[k] is not None]
    if given:
        missing = [k for k in _MESA_INPUTS if params[k] is None]
        missing += [k for k, v in (("age_years", age), ("sex", sex), ("race", race)) if v is None]
        if missing:
            notes.append(f"no MESA risk: missing {', '.join(missing)}")
        else:
            factors = RiskFactors(age_years=float(age or 0.0), sex=str(sex), race=str(race),
                                  **{k: params[k] for k in _MESA_INPUTS}, **{k: bool(params[k]) for k in _MESA_FLAGS})
            try:
                risk = mesa_chd_risk(agatston, factors)
            except ValueError as e:
                raise AnalysisError(f"MESA risk: {e}") from None
            out["mesa_risk"] = {"ten_year_chd_risk_percent": risk.ten_year_chd_risk_percent,
                                "reference": risk.reference, "notes": list(risk.notes), "requires_review": True,
                                "inputs": dataclasses.asdict(factors)}
    return out


# --------------------------------------------------------------------------- cardiac


def _phase_percentages(keys: Sequence[Any], heart_rate_bpm: float | None) -> tuple[list[float], list[str]]:
    """Nominal R-R percentages of phases keyed by :class:`~voxa.imaging.assemble.PhaseKey`."""
    attribute = keys[0].attribute
    values = [float(k.value) for k in keys]
    if attribute == "NominalPercentageOfCardiacPhase":
        return values, []
    if attribute == "TriggerTime" and heart_rate_bpm:
        rr_ms = 60_000.0 / heart_rate_bpm
        percentages = [100.0 * v / rr_ms for v in values]
        if all(0.0 <= p < 100.0 for p in percentages):
            return percentages, [f"phases placed in the R-R interval from TriggerTime at {heart_rate_bpm:g} bpm"]
    n = len(values)
    return [100.0 * i / n for i in range(n)], [
        f"phases told apart by {attribute}: taken as evenly spaced over the R-R interval"]


def _run_cardiac(runtime: Runtime, series_uids: Sequence[str], params: dict[str, Any], progress: Progress,
                 cancelled: Cancelled) -> ToolOutput:
    from voxa.analysis.cardiac import analyse_cardiac_function
    from voxa.imaging.assemble import split_phases, volume_from_datasets

    progress("loading series", 2.0)
    locations = _locations(runtime, series_uids[0])
    datasets = []
    for i, loc in enumerate(locations):
        datasets.append(_read(runtime, loc, pixels=True))
        if i % 50 == 0:
            progress("loading series", 2.0 + 28.0 * i / len(locations))
    first = datasets[0]
    if str(first.get("Modality", "")) != "CT":
        raise SeriesError(f"cardiac function needs a CT series; this series is {first.get('Modality', 'unknown')}")
    phases = split_phases(datasets)
    keys = sorted(phases)
    if len(keys) < 2:
        raise SeriesError("cardiac function needs a multi-phase series (several images per position, told apart "
                          "by NominalPercentageOfCardiacPhase, TriggerTime, TemporalPositionIdentifier or "
                          "AcquisitionTime)")
    heart_rate = params["heart_rate_bpm"]
    if heart_rate is None:
        heart_rate = _attr_float(first, "HeartRate")
    sex = params["sex"]
    if sex is None and str(first.get("PatientSex", "")).upper() in ("M", "F"):
        sex = str(first.PatientSex).upper()
    percentages, notes = _phase_percentages(keys, heart_rate)
    volumes = {}
    headers: dict[float, list[Dataset]] = {}
    for n, (key, pct) in enumerate(zip(keys, percentages, strict=True)):
        progress("assembling phases", 30.0 + 30.0 * n / len(keys))
        volumes[pct] = volume_from_datasets(phases[key])
        headers[pct] = [_without_pixels(ds) for ds in phases[key]]
    del datasets, phases
    progress("analysing function", 60.0)
    analysis = analyse_cardiac_function(volumes, heart_rate_bpm=heart_rate, sex=sex)
    result = _jsonable(analysis)
    result.update({"tool": "cardiac", "series_instance_uid": series_uids[0], "values": _jsonable(analysis.values()),
                   "heart_rate_bpm": heart_rate, "sex": sex, "phase_percentages": percentages})
    progress("building SEG and SR", 85.0)
    outputs, output_notes = _cardiac_outputs(volumes, headers, analysis)
    result["notes"] = [*result.get("notes", []), *notes, *output_notes]
    return result, outputs


def _without_pixels(ds: Dataset) -> Dataset:
    """A header copy: the SEG and SR need the source images' attributes, not their pixels."""
    header = Dataset()
    for elem in ds:
        if elem.tag < 0x7FE00000:
            header.add(elem)
    if hasattr(ds, "file_meta"):
        header.file_meta = ds.file_meta
    return header


def _cardiac_outputs(volumes: Mapping[float, Volume], headers: Mapping[float, list[Dataset]],
                     analysis: Any) -> tuple[list[Dataset], list[str]]:
    """The end-diastolic SEG of the chambers and myocardium, and the TID 1500 SR."""
    from voxa.analysis.dicom_outputs import OutputError
    from voxa.analysis.outputs_cardiac import (
        build_cardiac_seg,
        build_cardiac_sr,
        cardiac_label_masks,
        images_in_volume_order,
    )

    ed = analysis.ed_phase_percent
    seg = None
    masks = None
    notes: list[str] = []
    try:
        ed_images = images_in_volume_order(headers[ed], volumes[ed])
        masks = cardiac_label_masks(volumes, analysis)
        seg = build_cardiac_seg(ed_images, masks)
    except OutputError as e:
        ed_images = headers[ed]
        masks = None
        notes.append(f"no SEG, and the SR's groups are not outlined: {e}")
    sr = build_cardiac_sr(analysis, ed_images, seg, masks=masks, ed_volume=volumes[ed])
    return [*([seg] if seg is not None else []), sr], notes


# --------------------------------------------------------------------------- vessels


def _run_vessels(runtime: Runtime, series_uids: Sequence[str], params: dict[str, Any], progress: Progress,
                 cancelled: Cancelled) -> ToolOutput:
    from voxa.analysis.outputs_vessels import build_vessel_seg, build_vessel_sr
    from voxa.analysis.vessels import PatientPoint, analyse_vessel

    series = _load_volume(runtime, series_uids[0], progress)
    _require_ct(series, "vessel analysis")
    volume = series.volume
    if params["hu_min"] >= params["hu_max"]:
        raise ParameterError("hu_min", f"must be below hu_max ({params['hu_max']:g})")
    start = PatientPoint(*params["start"])
    end = PatientPoint(*params["end"]) if params["end"] is not None else None
    progress("segmenting and tracing", 30.0)
    analysis = analyse_vessel(volume, start, end, hu_window=(params["hu_min"], params["hu_max"]),
                              reference_diameter_mm=params["reference_diameter_mm"])
    progress("measuring", 60.0)
    seg_ = analysis.segmentation
    line = analysis.centerline
    profile = analysis.profile
    result: dict[str, Any] = {
        "tool": "vessels",
        "algorithm_version": analysis.algorithm_version,
        "requires_review": analysis.requires_review,
        "series_instance_uid": series_uids[0],
        "start_mm": list(params["start"]),
        "end_mm": list(params["end"]) if params["end"] is not None else None,
        "segmentation": _jsonable({
            "voxel_count": seg_.voxel_count, "volume_mm3": seg_.volume_mm3, "seed_voxel": seg_.seed_voxel,
            "hu_window": seg_.hu_window, "lumen_hu": seg_.lumen_hu, "surround_hu": seg_.surround_hu,
            "boundary_hu": seg_.boundary_hu}),
        "centerline": _jsonable({"length_mm": line.length_mm, "step_mm": line.step_mm,
                                 "points_patient_mm": line.points_patient_mm}),
        "profile": _jsonable({"arc_length_mm": profile.arc_length_mm, "area_mm2": profile.area_mm2,
                              "diameter_mm": profile.diameter_mm, "min_diameter_mm": profile.min_diameter_mm,
                              "max_diameter_mm": profile.max_diameter_mm, "valid": profile.valid}),
        "stenosis": _jsonable(analysis.stenosis),
        "notes": [*analysis.notes, *series.notes],
    }
    outputs: list[Dataset] = []
    seg = None
    if series.headers and seg_.voxel_count:
        progress("building SEG", 75.0)
        seg = build_vessel_seg(series.headers, seg_.mask, algorithm_version=analysis.algorithm_version)
        outputs.append(seg)
    progress("building SR", 85.0)
    outputs.append(build_vessel_sr(analysis, series.headers or [series.first], seg))
    return result, outputs


# --------------------------------------------------------------------------- measure

MEASURE_ALGORITHM_VERSION = "voxa-measure-1.0"


def _box_indices(volume: Volume, box_mm: Sequence[float]) -> tuple[slice, slice, slice]:
    """The voxels whose centres lie inside the patient-space box (corners ``x0,y0,z0`` and
    ``x1,y1,z1``), as index slices (z, y, x); the box's faces are aligned with the patient
    axes, so for an oblique volume the voxel box is the smallest one holding its corners."""
    lo = np.minimum(box_mm[:3], box_mm[3:])
    hi = np.maximum(box_mm[:3], box_mm[3:])
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    index = volume.patient_to_index(corners)
    first = np.ceil(index.min(axis=0) - 1e-6).astype(int)
    last = np.floor(index.max(axis=0) + 1e-6).astype(int)
    shape = np.array(volume.shape)
    first = np.clip(first, 0, shape)
    last = np.clip(last + 1, 0, shape)
    if np.any(last <= first):
        raise ParameterError("roi_mm", "the box holds no voxel of the series (check the coordinates: patient "
                                       "LPS mm)")
    return slice(int(first[0]), int(last[0])), slice(int(first[1]), int(last[1])), slice(int(first[2]), int(last[2]))


def _stats(values: NDArray[np.floating]) -> dict[str, float | None]:
    if values.size == 0:
        return {"mean": None, "sd": None, "min": None, "max": None, "median": None}
    v = values.astype(np.float64)
    return {"mean": float(v.mean()), "sd": float(v.std()), "min": float(v.min()), "max": float(v.max()),
            "median": float(np.median(v))}


def _run_measure(runtime: Runtime, series_uids: Sequence[str], params: dict[str, Any], progress: Progress,
                 cancelled: Cancelled) -> ToolOutput:
    from voxa.imaging.series import load_series_volume

    roi, low, high = params["roi_mm"], params["threshold"], params["threshold_max"]
    if roi is None and low is None:
        raise ParameterError("roi_mm", "give roi_mm (a box), threshold (a region), or both")
    if high is not None and low is None:
        raise ParameterError("threshold", "threshold_max needs threshold (the lower bound)")
    if high is not None and low is not None and high < low:
        raise ParameterError("threshold_max", f"must not be below threshold ({low:g})")
    progress("loading series", 5.0)
    volume = load_series_volume(runtime.archive, series_uids[0],
                                max_cache_bytes=runtime.settings.volume_cache_max_bytes)
    progress("measuring", 60.0)
    box = _box_indices(volume, roi) if roi is not None else (slice(0, volume.shape[0]), slice(0, volume.shape[1]),
                                                              slice(0, volume.shape[2]))
    region = np.asarray(volume.voxels[box])
    units = volume.units or "pixel value"
    voxel_ml = volume.voxel_volume_ml
    result: dict[str, Any] = {
        "tool": "measure", "algorithm_version": MEASURE_ALGORITHM_VERSION, "requires_review": True,
        "series_instance_uid": series_uids[0], "units": units, "voxel_volume_mm3": voxel_ml * 1000.0,
        "notes": list(volume.notes),
    }
    if roi is not None:
        result["roi"] = {
            "box_mm": list(roi),
            "voxel_box": [[s.start, s.stop] for s in box],  # (z, y, x), stop exclusive
            "voxel_count": int(region.size),
            "volume_ml": region.size * voxel_ml,
            **_stats(region),
        }
    if low is not None:
        mask = region >= low
        if high is not None:
            mask &= region <= high
        inside = region[mask]
        count = int(mask.sum())
        labelled, components = ndimage.label(mask) if count else (None, 0)
        result["threshold"] = {
            "low": low, "high": high, "within": "roi_mm" if roi is not None else "series",
            "voxel_count": count, "volume_ml": count * voxel_ml, "volume_mm3": count * voxel_ml * 1000.0,
            "components": int(components), **_stats(inside),
        }
    return _jsonable(result), []  # type: ignore[return-value]


# --------------------------------------------------------------------------- the registry


def _registry() -> dict[str, Tool]:
    from voxa.analysis.calcium import ALGORITHM_VERSION as CALCIUM_VERSION
    from voxa.analysis.cardiac import ALGORITHM_VERSION as CARDIAC_VERSION
    from voxa.analysis.vessels import ALGORITHM_VERSION as VESSELS_VERSION

    P, T = Parameter, ParamType
    tools = [
        Tool("calcium", "Coronary calcium score",
             "Agatston, volume and mass scores per coronary artery on a non-contrast ECG-gated CT series, in the "
             "heart region; writes a DICOM SEG of the lesions (one segment per artery), a TID 1500 SR of the scores "
             "per artery and a TID 1500 SR with one outlined region per lesion.",
             "CT", (
                 P("kvp", T.NUMBER, "Tube voltage; selects the calcium threshold (130 HU at 120 kV). Default: the "
                   "series' KVP (0018,0060).", unit="kV", positive=True),
                 P("mass_calibration", T.NUMBER, "Calibration factor for the mass score (from a calcium "
                   "hydroxyapatite phantom); no mass score without it.", unit="mg/mL/HU", positive=True),
                 P("max_lesion_volume_mm3", T.NUMBER, "Structures larger than this are left out (bone).",
                   unit="mm3", default=3000.0, positive=True),
                 P("min_area_mm2", T.NUMBER, "Smallest in-plane area of a lesion on one image.", unit="mm2",
                   default=1.0, minimum=0.0),
                 P("region", T.CHOICE, "Where lesions are looked for: auto, the heart region (the mediastinum "
                   "between the lungs, in front of the spine; it leaves out the table, ribs, sternum and spine); "
                   "none, the whole series.", default="auto", choices=("auto", "none")),
                 P("age_years", T.NUMBER, "Patient's age, for the percentile and the MESA risk. Default: the "
                   "series' PatientAge, or from PatientBirthDate to StudyDate.", unit="a", minimum=18.0,
                   maximum=120.0),
                 P("sex", T.CHOICE, "For the percentile and the MESA risk. Default: the series' PatientSex when M "
                   "or F.", choices=("M", "F")),
                 P("race", T.CHOICE, "Race/ethnicity group of the MESA cohort, for the percentile and the MESA "
                   "risk.", choices=("white", "chinese", "black", "hispanic")),
                 P("total_cholesterol_mg_dl", T.NUMBER, "For the MESA 10-year CHD risk (McClelland 2015).",
                   unit="mg/dL", minimum=50.0, maximum=1000.0),
                 P("hdl_cholesterol_mg_dl", T.NUMBER, "For the MESA risk.", unit="mg/dL", minimum=5.0,
                   maximum=300.0),
                 P("systolic_bp_mm_hg", T.NUMBER, "For the MESA risk.", unit="mm[Hg]", minimum=50.0, maximum=300.0),
                 P("diabetes", T.BOOLEAN, "For the MESA risk.", default=False),
                 P("current_smoker", T.BOOLEAN, "For the MESA risk.", default=False),
                 P("lipid_lowering_medication", T.BOOLEAN, "For the MESA risk.", default=False),
                 P("antihypertensive_medication", T.BOOLEAN, "For the MESA risk.", default=False),
                 P("family_history_of_mi", T.BOOLEAN, "Myocardial infarction in a parent, sibling or child; for "
                   "the MESA risk.", default=False),
             ), _run_calcium, CALCIUM_VERSION, outputs=("SEG", "SR", "SR")),
        Tool("cardiac", "Cardiac function",
             "LV/RV volumes, ejection fraction, cardiac output, LV mass, AHA wall thickness and atrial volumes from "
             "a multi-phase (ECG-gated, contrast) cardiac CT series; writes a DICOM SEG of the chambers at end-diastole "
             "and a TID 1500 SR.",
             "CT", (
                 P("heart_rate_bpm", T.NUMBER, "Heart rate, for cardiac output. Default: the series' HeartRate "
                   "(0018,1088) when present.", unit="bpm", minimum=20.0, maximum=300.0),
                 P("sex", T.CHOICE, "Selects the normal ranges. Default: the series' PatientSex when M or F.",
                   choices=("M", "F")),
             ), _run_cardiac, CARDIAC_VERSION, outputs=("SEG", "SR")),
        Tool("vessels", "Vessel analysis",
             "Lumen segmentation from a start point, centreline to an end point, cross-section diameters and "
             "NASCET-style stenosis on a CTA series; writes a DICOM SEG of the lumen and a TID 1500 SR.",
             "CT", (
                 P("start", T.POINT, "Start point inside the lumen, patient coordinates (LPS).", unit="mm",
                   required=True),
                 P("end", T.POINT, "End point inside the lumen, patient coordinates (LPS).", unit="mm"),
                 P("hu_min", T.NUMBER, "Lowest HU of contrast-filled lumen.", unit="HU", default=150.0),
                 P("hu_max", T.NUMBER, "Highest HU of contrast-filled lumen.", unit="HU", default=1000.0),
                 P("reference_diameter_mm", T.NUMBER, "Healthy diameter for the stenosis grade; default: measured "
                   "proximal and distal to the narrowing.", unit="mm", positive=True),
             ), _run_vessels, VESSELS_VERSION, outputs=("SEG", "SR")),
        Tool("measure", "Region measurement",
             "HU statistics of a box and/or the volume of the voxels within a threshold range (in the box, or the "
             "whole series).",
             "any", (
                 P("roi_mm", T.BOX, "Box given by two opposite corners in patient coordinates (LPS): "
                   "x0,y0,z0,x1,y1,z1.", unit="mm"),
                 P("threshold", T.NUMBER, "Lower bound of the region (inclusive).", unit="HU"),
                 P("threshold_max", T.NUMBER, "Upper bound of the region (inclusive); none: no upper bound.",
                   unit="HU"),
             ), _run_measure, MEASURE_ALGORITHM_VERSION),
    ]
    return {t.name: t for t in tools}


_TOOLS: dict[str, Tool] | None = None


def tools() -> dict[str, Tool]:
    """Every tool by name."""
    global _TOOLS
    if _TOOLS is None:
        _TOOLS = _registry()
    return _TOOLS


def get_tool(name: str) -> Tool:
    try:
        return tools()[name]
    except KeyError:
        raise UnknownTool(f"no analysis tool {name!r} (tools: {', '.join(tools())})") from None


# --------------------------------------------------------------------------- executors


@runtime_checkable
class AnalysisExecutor(Protocol):
    """Runs :func:`run_analysis` for a result somewhere, keeping progress in a ``jobs`` row."""

    name: str

    def submit(self, runtime: Runtime, result_id: int, tool: str) -> str:
        """Queue the run; returns the job id."""
        ...

    def cancel(self, runtime: Runtime, job_id: str) -> None:
        """Ask the job to stop (at its next stage)."""
        ...


class EmbeddedExecutor:
    """The server's own thread pool (:class:`~voxa.jobs.executor.JobManager`)."""

    name = "embedded"

    def submit(self, runtime: Runtime, result_id: int, tool: str) -> str:
        def job(ctx: Any) -> dict[str, Any]:
            return run_analysis(runtime, result_id, ctx.report, lambda: bool(ctx.cancelled))

        return runtime.jobs.submit(f"analysis-{tool}", {"analysis_id": result_id, "tool": tool}, job)

    def cancel(self, runtime: Runtime, job_id: str) -> None:
        runtime.jobs.cancel(job_id)


def executor_for(settings: Settings) -> AnalysisExecutor:
    """Celery when ``celery_broker_url`` is set, else the embedded executor."""
    if settings.celery_broker_url:
        from voxa.jobs.celery_app import celery_executor

        return celery_executor(settings.celery_broker_url)
    return EmbeddedExecutor()


# --------------------------------------------------------------------------- submit / run / cancel


_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


def _check_series(runtime: Runtime, tool: Tool, study_instance_uid: str, series: Sequence[str]) -> list[str]:
    uids = [str(s).strip() for s in series]
    if not uids or any(not u for u in uids):
        raise SeriesError("give the series to analyse: a SeriesInstanceUID or a list of them")
    if len(uids) > tool.max_series:
        raise SeriesError(f"tool {tool.name!r} analyses {'one series' if tool.max_series == 1 else f'at most {tool.max_series} series'}, "
                          f"got {len(uids)}")
    if len(set(uids)) != len(uids):
        raise SeriesError("a series is given twice")
    for uid in uids:
        if len(uid) > 64 or not _UID.fullmatch(uid):
            raise SeriesError(f"{uid[:70]!r} is not a SeriesInstanceUID")
        found = runtime.archive.index.locate(series_uid=uid)
        if not found or found[0].study_instance_uid != study_instance_uid:
            raise SeriesError(f"no series {uid} in study {study_instance_uid}")
    return uids


def study_of_series(runtime: Runtime, series_instance_uid: str) -> str:
    """The study of a stored series; raises :class:`SeriesError` when it is not stored."""
    found = runtime.archive.index.locate(series_uid=series_instance_uid)
    if not found:
        raise SeriesError(f"no series {series_instance_uid} in the archive")
    return found[0].study_instance_uid


def submit_analysis(runtime: Runtime, *, tool: str, study_instance_uid: str, series: str | Sequence[str],
                    params: Mapping[str, Any] | None, created_by: str,
                    executor: AnalysisExecutor | None = None) -> StoredResult:
    """Check the request, record a ``queued`` result and hand it to the executor.

    Raises :class:`UnknownTool` (404), :class:`ParameterError` / :class:`SeriesError` (422),
    :class:`~voxa.analysis.results.UnknownStudy`, or :class:`ExecutorUnavailable` (503)."""
    t = get_tool(tool)
    values = t.validate(params)
    uids = _check_series(runtime, t, study_instance_uid, [series] if isinstance(series, str) else list(series))
    result = store.create_result(runtime.archive.index, tool=t.name, study_instance_uid=study_instance_uid,
                                 series_instance_uids=uids, parameters=values,
                                 algorithm_version=t.algorithm_version, created_by=created_by)
    chosen = executor or executor_for(runtime.settings)
    try:
        job_id = chosen.submit(runtime, result.id, t.name)
    except Exception as e:  # noqa: BLE001 - a broker that cannot be reached: fail the result, tell the caller
        log.warning("analysis %s could not be queued on the %s executor: %s", result.id, chosen.name, e)
        store.update_result(runtime.archive.index, result.id, status=ResultStatus.FAILED,
                            error=f"could not be queued ({chosen.name} executor): {e}")
        raise ExecutorUnavailable(f"the analysis could not be queued on the {chosen.name} executor: {e}") from e
    store.update_result(runtime.archive.index, result.id, job_id=job_id)
    stored = store.get_result(runtime.archive.index, result.id)
    assert stored is not None
    return stored


def cancel_analysis(runtime: Runtime, result: StoredResult) -> StoredResult:
    """Ask a queued or running analysis to stop; a finished one is left as it is."""
    if result.status not in FINISHED and result.job_id:
        executor_for(runtime.settings).cancel(runtime, result.job_id)
    fresh = store.get_result(runtime.archive.index, result.id)
    assert fresh is not None
    return fresh


def _ingest(runtime: Runtime, ds: Dataset) -> dict[str, str]:
    from voxa.analysis.dicom_outputs import to_bytes

    kind = {"1.2.840.10008.5.1.4.1.1.66.4": "SEG"}.get(str(ds.SOPClassUID), "SR" if ds.Modality == "SR" else
                                                       str(ds.Modality))
    outcome = runtime.archive.ingest(to_bytes(ds), source="analysis")
    if not outcome.ok:
        raise RuntimeError(f"the archive refused the {kind}: {outcome.reason}")
    return {"kind": kind, "sop_class_uid": outcome.sop_class_uid or str(ds.SOPClassUID),
            "series_instance_uid": outcome.series_instance_uid, "sop_instance_uid": outcome.sop_instance_uid,
            "series_description": str(ds.get("SeriesDescription", ""))}


def run_analysis(runtime: Runtime, result_id: int, progress: Progress, cancelled: Cancelled) -> dict[str, Any]:
    """Run the analysis of a stored result, store its outputs, record the outcome.

    Called by both executors.  Returns what the job records as its result; raises
    :class:`~voxa.jobs.executor.JobCancelled` when cancelled (the result says ``cancelled``)
    and the tool's exception when it fails (the result says ``failed`` with the message)."""
    index = runtime.archive.index
    stored = store.get_result(index, result_id)
    if stored is None:
        raise LookupError(f"no analysis result {result_id}")
    if stored.status in FINISHED:
        return {"analysis_id": result_id, "tool": stored.tool, "status": stored.status.value}
    tool = get_tool(stored.tool)
    store.update_result(index, result_id, status=ResultStatus.RUNNING, only_if_unfinished=True)
    try:
        params = tool.validate(stored.parameters)
        progress("starting", 1.0)
        result, datasets = tool.run(runtime, stored.series_instance_uids, params, progress, cancelled)
        progress("storing outputs", 90.0)  # the last point where a cancel is honoured
        outputs = [_ingest(runtime, ds) for ds in datasets]
    except JobCancelled:
        store.update_result(index, result_id, status=ResultStatus.CANCELLED, error="cancelled",
                            only_if_unfinished=True)
        raise
    except Exception as e:
        message = str(e) or type(e).__name__
        store.update_result(index, result_id, status=ResultStatus.FAILED, error=message, only_if_unfinished=True)
        raise
    result["parameters"] = _jsonable(params)
    store.update_result(index, result_id, status=ResultStatus.DONE, result=result, outputs=outputs, error="",
                        algorithm_version=str(result.get("algorithm_version") or tool.algorithm_version))
    return {"analysis_id": result_id, "tool": tool.name, "status": ResultStatus.DONE.value,
            "outputs": [o["sop_instance_uid"] for o in outputs]}


__all__ = [
    "AnalysisError",
    "AnalysisExecutor",
    "EmbeddedExecutor",
    "ExecutorUnavailable",
    "ParamType",
    "Parameter",
    "ParameterError",
    "SeriesError",
    "Tool",
    "UnknownTool",
    "calcium_json",
    "calcium_lesion_labels",
    "cancel_analysis",
    "executor_for",
    "get_tool",
    "run_analysis",
    "study_of_series",
    "submit_analysis",
    "tools",
]
