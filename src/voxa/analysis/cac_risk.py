"""What a calcium score means for a patient: its percentile among people of the same age, sex
and race/ethnicity, and the MESA 10-year coronary heart disease risk.

Both are decision support, shown beside the score, never instead of a physician's judgement.

* **Percentile** needs a reference table: Voxa ships none (the published MESA table may not be
  redistributed without permission).  A site that has licensed one configures its path; the
  format is documented in :func:`load_percentile_table` and ``docs/analysis-calcium.md``.
* **MESA risk with CAC**: McClelland RL, Jorgensen NW, Budoff M, et al.  10-Year Coronary Heart
  Disease Risk Prediction Using Coronary Artery Calcium and Traditional Risk Factors.  J Am Coll
  Cardiol 2015;66(15):1643-1653, doi:10.1016/j.jacc.2015.08.035.  Risk =
  ``1 - S0 ** exp(sum(beta * x))`` with the coefficients below; the values agree with the
  independent CVrisk R package (``chd_10y_mesa_cac``) on its published test case.  The model
  was derived for ages 45-85 without known cardiovascular disease; outside that, the result
  carries a note.
"""

from __future__ import annotations

import csv
import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path


class Race(StrEnum):
    WHITE = "white"
    CHINESE = "chinese"
    BLACK = "black"  # African American in MESA
    HISPANIC = "hispanic"


#: McClelland et al. 2015, model with CAC (10-year hard CHD).
MESA_CAC_COEFFICIENTS: dict[str, float] = {
    "age_years": 0.0172,
    "male": 0.4079,
    "chinese": -0.3475,
    "black": 0.0353,
    "hispanic": -0.0222,
    "diabetes": 0.3892,
    "current_smoker": 0.3717,
    "total_cholesterol_mg_dl": 0.0043,
    "hdl_cholesterol_mg_dl": -0.0114,
    "lipid_lowering_medication": 0.1206,
    "systolic_bp_mm_hg": 0.0066,
    "antihypertensive_medication": 0.2278,
    "family_history_of_mi": 0.3239,
    "ln_cac_plus_1": 0.2743,
}
MESA_CAC_BASELINE_SURVIVAL = 0.99833
MESA_REFERENCE = "McClelland RL et al. J Am Coll Cardiol 2015;66:1643-1653 (MESA 10-year CHD risk with CAC)"


@dataclass(frozen=True)
class RiskFactors:
    age_years: float
    sex: str  # "M" | "F"
    race: Race | str
    total_cholesterol_mg_dl: float
    hdl_cholesterol_mg_dl: float
    systolic_bp_mm_hg: float
    diabetes: bool = False
    current_smoker: bool = False
    lipid_lowering_medication: bool = False
    antihypertensive_medication: bool = False
    family_history_of_mi: bool = False


@dataclass(frozen=True)
class MesaRisk:
    ten_year_chd_risk_percent: float
    reference: str = MESA_REFERENCE
    notes: tuple[str, ...] = field(default_factory=tuple)
    requires_review: bool = True


def _check(value: float, name: str, low: float, high: float) -> float:
    value = float(value)
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{name} must be between {low:g} and {high:g}, got {value}")
    return value


def mesa_chd_risk(agatston: float, factors: RiskFactors) -> MesaRisk:
    """10-year hard CHD risk (percent) from the Agatston score and the risk factors."""
    agatston = _check(agatston, "Agatston score", 0.0, 1e5)
    age = _check(factors.age_years, "age", 18.0, 120.0)
    sex = str(factors.sex).strip().upper()[:1]
    if sex not in ("M", "F"):
        raise ValueError(f"sex must be M or F, got {factors.sex!r}")
    try:
        race = Race(str(factors.race).strip().lower())
    except ValueError:
        raise ValueError(f"race must be one of {', '.join(r.value for r in Race)} (the MESA groups), "
                         f"got {factors.race!r}") from None
    x = {
        "age_years": age,
        "male": 1.0 if sex == "M" else 0.0,
        "chinese": float(race is Race.CHINESE),
        "black": float(race is Race.BLACK),
        "hispanic": float(race is Race.HISPANIC),
        "diabetes": float(factors.diabetes),
        "current_smoker": float(factors.current_smoker),
        "total_cholesterol_mg_dl": _check(factors.total_cholesterol_mg_dl, "total cholesterol (mg/dL)", 50, 1000),
        "hdl_cholesterol_mg_dl": _check(factors.hdl_cholesterol_mg_dl, "HDL cholesterol (mg/dL)", 5, 300),
        "lipid_lowering_medication": float(factors.lipid_lowering_medication),
        "systolic_bp_mm_hg": _check(factors.systolic_bp_mm_hg, "systolic blood pressure (mm Hg)", 50, 300),
        "antihypertensive_medication": float(factors.antihypertensive_medication),
        "family_history_of_mi": float(factors.family_history_of_mi),
        "ln_cac_plus_1": math.log1p(agatston),
    }
    linear = sum(MESA_CAC_COEFFICIENTS[k] * v for k, v in x.items())
    risk = 100.0 * (1.0 - MESA_CAC_BASELINE_SURVIVAL ** math.exp(linear))
    notes = []
    if not 45 <= age <= 85:
        notes.append("the MESA model was derived for ages 45-85: this estimate extrapolates")
    return MesaRisk(ten_year_chd_risk_percent=risk, notes=tuple(notes))


# --------------------------------------------------------------------------- percentiles


@dataclass(frozen=True)
class PercentileTable:
    """Agatston scores at given percentiles, per (sex, race, age band)."""

    source: str
    # (sex, race, age_min, age_max) -> sorted [(agatston, percentile)]
    rows: dict[tuple[str, str, float, float], list[tuple[float, float]]]


def load_percentile_table(path: Path | str, source: str = "") -> PercentileTable:
    """A CSV with the header ``sex,race,age_min,age_max,percentile,agatston`` (one row per
    point of each group's curve; ``race`` may be ``any``).  ``source`` names the publication
    and licence; it is reported with every percentile."""
    rows: dict[tuple[str, str, float, float], list[tuple[float, float]]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        needed = {"sex", "race", "age_min", "age_max", "percentile", "agatston"}
        if not reader.fieldnames or not needed <= set(reader.fieldnames):
            raise ValueError(f"{path}: the header must name {', '.join(sorted(needed))}")
        for n, r in enumerate(reader, start=2):
            try:
                key = (r["sex"].strip().upper()[:1], r["race"].strip().lower(), float(r["age_min"]), float(r["age_max"]))
                point = (float(r["agatston"]), float(r["percentile"]))
            except (ValueError, AttributeError):
                raise ValueError(f"{path}, line {n}: not a valid row") from None
            if not 0 <= point[1] <= 100 or point[0] < 0:
                raise ValueError(f"{path}, line {n}: percentile must be 0-100 and Agatston >= 0")
            rows.setdefault(key, []).append(point)
    if not rows:
        raise ValueError(f"{path}: no rows")
    for points in rows.values():
        points.sort()
    return PercentileTable(source=source or str(path), rows=rows)


def calcium_percentile(agatston: float, *, age_years: float, sex: str, race: str,
                       table: PercentileTable) -> float | None:
    """The percentile of ``agatston`` in the table's group for this person (linear between the
    table's points), or None when the table has no group for them."""
    sex_key = sex.strip().upper()[:1]
    race_key = race.strip().lower()
    candidates: Sequence[str] = (race_key, "any")
    for r in candidates:
        for (s, rr, lo, hi), points in table.rows.items():
            if s == sex_key and rr == r and lo <= age_years <= hi:
                return _interpolate(points, agatston)
    return None


def _interpolate(points: list[tuple[float, float]], agatston: float) -> float:
    scores = [p[0] for p in points]
    i = bisect_left(scores, agatston)
    if i < len(scores) and scores[i] == agatston:
        # several percentiles share a score (many zeros): the highest one it reaches
        j = i
        while j + 1 < len(scores) and scores[j + 1] == agatston:
            j += 1
        return points[j][1]
    if i == 0:
        return points[0][1] if agatston >= scores[0] else 0.0
    if i == len(points):
        return points[-1][1]
    (s0, p0), (s1, p1) = points[i - 1], points[i]
    return p0 + (p1 - p0) * (agatston - s0) / (s1 - s0)
