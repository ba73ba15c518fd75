"""Sex-specific normal ranges for cardiac CT function values, with their sources.

Every range names its reference and how the limits were derived. **These numbers are
approximate and must be checked against the primary papers before clinical use**: where a paper
reports mean ± SD we use mean ± 2 SD (≈ 2.5th-97.5th percentile under normality), which is our
derivation, not the authors'; one table was transcribed from a review, not from the paper; the
RV and LA absolute ranges come from cardiac MR, not CT. Ranges depend on the segmentation
convention (papillary muscles in the blood pool or in the mass), age, body size and ethnicity.
See ``docs/analysis-cardiac.md``.

Pass your own ``reference_ranges=`` to :func:`voxa.analysis.cardiac.analyse_cardiac_function`
to use a site-specific table.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

#: Kang et al. 2017, cardiac CT, 172 patients (papillary muscles and trabeculae in the LV mass),
#: as tabulated (mean ± SD by sex) in Table 3 of the review in Cardiovasc Diagn Ther
#: 2020;10(6):1918-1945, doi:10.21037/cdt-20-530. Transcribed from the review, not the paper.
KANG_2017 = ("Kang et al. 2017, cardiac CT (n=172), via Cardiovasc Diagn Ther 2020;10(6):1918-1945 "
             "Table 3 (doi:10.21037/cdt-20-530); mean ± 2 SD")
#: Gebhard C et al., Impact of age and sex on left ventricular function determined by coronary
#: computed tomographic angiography: results from the prospective multicentre CONFIRM study.
#: Eur Heart J Cardiovasc Imaging 2017;18(9):990-1000. LVEF 64.6 ± 8.1 % (men), 66.6 ± 7.7 % (women).
CONFIRM_2017 = ("Gebhard et al., CONFIRM, Eur Heart J Cardiovasc Imaging 2017;18:990-1000 "
                "(cardiac CT, n=1155); mean ± 2 SD")
#: Fuchs A et al., Normal values of left ventricular mass and cardiac chamber volumes assessed by
#: 320-detector computed tomography angiography in the Copenhagen General Population Study.
#: Eur Heart J Cardiovasc Imaging 2016;17(9):1009-1017. BSA-indexed 97.5th percentile upper limits.
FUCHS_2016 = ("Fuchs et al., Copenhagen General Population Study, Eur Heart J Cardiovasc Imaging "
              "2016;17:1009-1017 (320-detector CT, n=569); 97.5th percentile, BSA-indexed")
#: Hudsmith LE et al., Normal human left and right ventricular and left atrial dimensions using
#: steady state free precession magnetic resonance imaging. J Cardiovasc Magn Reson 2005;7:775-782.
HUDSMITH_2005 = ("Hudsmith et al., J Cardiovasc Magn Reson 2005;7:775-782 (cardiac MR, not CT, n=108); "
                 "mean ± 2 SD")
#: Elliott PM et al., 2014 ESC Guidelines on diagnosis and management of hypertrophic
#: cardiomyopathy. Eur Heart J 2014;35:2733-2779: LV wall thickness >= 15 mm in any segment.
ESC_HCM_2014 = "Elliott et al., 2014 ESC guidelines on hypertrophic cardiomyopathy, Eur Heart J 2014;35:2733-2779"


@dataclass(frozen=True)
class ReferenceRange:
    """Normal range of one quantity for one sex: normal when ``lower <= value <= upper``
    (``value < upper`` when ``upper_exclusive``); ``None`` means no limit on that side."""

    quantity: str  # a key of CardiacFunctionResult.values(), e.g. "lv_ef_percent"
    sex: str  # "M" or "F"
    lower: float | None
    upper: float | None
    unit: str
    reference: str
    derivation: str = ""
    upper_exclusive: bool = False

    def status(self, value: float) -> str | None:
        """``"low"``, ``"high"`` or None (within the range)."""
        if self.lower is not None and value < self.lower:
            return "low"
        if self.upper is not None and (value >= self.upper if self.upper_exclusive else value > self.upper):
            return "high"
        return None


@dataclass(frozen=True)
class RangeFlag:
    """A value outside a normal range."""

    quantity: str
    value: float
    status: str  # "low" or "high"
    lower: float | None
    upper: float | None
    unit: str
    sex: str
    reference: str
    derivation: str

    def __str__(self) -> str:
        lo = "-" if self.lower is None else f"{self.lower:g}"
        hi = "-" if self.upper is None else f"{self.upper:g}"
        return (f"{self.quantity} = {self.value:.1f} {self.unit} is {self.status} "
                f"(normal {lo} to {hi} {self.unit}, sex {self.sex}; {self.reference})")


def _mean_2sd(quantity: str, unit: str, reference: str, by_sex: Mapping[str, tuple[float, float]],
              floor: float | None = 0.0) -> list[ReferenceRange]:
    out = []
    for sex, (mean, sd) in by_sex.items():
        lower = mean - 2 * sd
        out.append(ReferenceRange(
            quantity=quantity, sex=sex,
            lower=round(max(lower, floor) if floor is not None else lower, 1),
            upper=round(mean + 2 * sd, 1), unit=unit, reference=reference,
            derivation=f"mean ± 2 SD of {mean:g} ± {sd:g} {unit}",
        ))
    return out


def _upper(quantity: str, unit: str, reference: str, by_sex: Mapping[str, float],
           derivation: str) -> list[ReferenceRange]:
    return [ReferenceRange(quantity=quantity, sex=sex, lower=None, upper=value, unit=unit,
                           reference=reference, derivation=derivation) for sex, value in by_sex.items()]


#: The default table. Quantities are the keys of ``CardiacFunctionResult.values()``.
REFERENCE_RANGES: tuple[ReferenceRange, ...] = tuple(
    # LV (absolute): Kang 2017 via the 2020 review
    _mean_2sd("lv_edv_ml", "mL", KANG_2017, {"M": (112.9, 26.1), "F": (98.2, 21.0)})
    + _mean_2sd("lv_esv_ml", "mL", KANG_2017, {"M": (41.7, 14.7), "F": (33.7, 12.2)})
    + _mean_2sd("lv_sv_ml", "mL", KANG_2017, {"M": (71.4, 18.2), "F": (64.9, 15.1)})
    + _mean_2sd("lv_mass_g", "g", KANG_2017, {"M": (145.0, 29.1), "F": (107.9, 20.0)})
    + _mean_2sd("cardiac_output_l_min", "L/min", KANG_2017, {"M": (4.3, 1.0), "F": (4.2, 0.9)})
    # LVEF: CONFIRM
    + _mean_2sd("lv_ef_percent", "%", CONFIRM_2017, {"M": (64.6, 8.1), "F": (66.6, 7.7)})
    # RV and LA (absolute): cardiac MR, an approximation for CT
    + _mean_2sd("rv_edv_ml", "mL", HUDSMITH_2005, {"M": (190.0, 33.0), "F": (148.0, 35.0)})
    + _mean_2sd("rv_esv_ml", "mL", HUDSMITH_2005, {"M": (78.0, 20.0), "F": (56.0, 18.0)})
    + _mean_2sd("la_max_ml", "mL", HUDSMITH_2005, {"M": (103.0, 30.0), "F": (89.0, 21.0)})
    # BSA-indexed upper limits (only evaluated when a body surface area is given)
    + _upper("lv_edv_ml_m2", "mL/m²", FUCHS_2016, {"M": 97.0, "F": 83.0}, "97.5th percentile")
    + _upper("rv_edv_ml_m2", "mL/m²", FUCHS_2016, {"M": 120.0, "F": 102.0}, "97.5th percentile")
    + _upper("la_max_ml_m2", "mL/m²", FUCHS_2016, {"M": 60.0, "F": 57.0}, "97.5th percentile")
    + _upper("ra_max_ml_m2", "mL/m²", FUCHS_2016, {"M": 85.0, "F": 73.0}, "97.5th percentile")
    + _upper("lv_mass_g_m2", "g/m²", FUCHS_2016, {"M": 80.0, "F": 65.0}, "97.5th percentile")
    # maximal LV wall thickness: the HCM diagnostic threshold, both sexes
    + [ReferenceRange("lv_max_wall_thickness_mm", sex, None, 15.0, "mm", ESC_HCM_2014,
                      "diagnostic threshold >= 15 mm in any segment", upper_exclusive=True)
       for sex in ("M", "F")]
)

_SEXES = {"m": "M", "male": "M", "man": "M", "f": "F", "female": "F", "woman": "F",
          "o": None, "other": None, "u": None, "unknown": None, "": None}


def normalise_sex(sex: str | None) -> str | None:
    """``"M"``, ``"F"`` or None (unknown/other: no sex-specific range applies). Accepts DICOM
    PatientSex (M, F, O) and the words male/female; anything else raises ValueError."""
    if sex is None:
        return None
    key = sex.strip().lower()
    if key not in _SEXES:
        raise ValueError(f"sex must be 'M', 'F', 'O' or None, got {sex!r}")
    return _SEXES[key]


def evaluate_ranges(values: Mapping[str, float | None], sex: str | None,
                    ranges: Iterable[ReferenceRange] = REFERENCE_RANGES) -> tuple[RangeFlag, ...]:
    """Flags for every value outside a range of its quantity for ``sex`` (none when sex is None)."""
    if sex is None:
        return ()
    flags = []
    for r in ranges:
        value = values.get(r.quantity)
        if r.sex != sex or value is None or not math.isfinite(value):
            continue
        status = r.status(value)
        if status is not None:
            flags.append(RangeFlag(quantity=r.quantity, value=float(value), status=status, lower=r.lower,
                                   upper=r.upper, unit=r.unit, sex=sex, reference=r.reference,
                                   derivation=r.derivation))
    return tuple(flags)


__all__ = [
    "CONFIRM_2017",
    "ESC_HCM_2014",
    "FUCHS_2016",
    "HUDSMITH_2005",
    "KANG_2017",
    "REFERENCE_RANGES",
    "RangeFlag",
    "ReferenceRange",
    "evaluate_ranges",
    "normalise_sex",
]
