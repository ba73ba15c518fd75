"""MESA 10-year CHD risk with CAC and configurable calcium percentiles."""

from __future__ import annotations

from pathlib import Path

import pytest

from voxa.analysis.cac_risk import RiskFactors, calcium_percentile, load_percentile_table, mesa_chd_risk

HISPANIC_MAN_70 = RiskFactors(age_years=70, sex="M", race="hispanic", total_cholesterol_mg_dl=190,
                              hdl_cholesterol_mg_dl=50, systolic_bp_mm_hg=130, antihypertensive_medication=True)


def test_mesa_risk_matches_an_independent_implementation() -> None:
    # CVrisk (R, vcastro/CVrisk) tests chd_10y_mesa_cac on this person with CAC 0: 3.06 %.
    assert round(mesa_chd_risk(0, HISPANIC_MAN_70).ten_year_chd_risk_percent, 2) == 3.06


def test_mesa_risk_rises_with_calcium_and_notes_extrapolation() -> None:
    risks = [mesa_chd_risk(a, HISPANIC_MAN_70).ten_year_chd_risk_percent for a in (0, 10, 100, 400, 1000)]
    assert risks == sorted(risks) and risks[-1] > 3 * risks[0]
    young = RiskFactors(age_years=40, sex="F", race="white", total_cholesterol_mg_dl=180,
                        hdl_cholesterol_mg_dl=60, systolic_bp_mm_hg=115)
    result = mesa_chd_risk(0, young)
    assert result.requires_review and "45-85" in result.notes[0] and "McClelland" in result.reference


@pytest.mark.parametrize(("field", "value", "message"), [
    ("race", "martian", "race must be one of"), ("sex", "X", "sex must be"),
    ("total_cholesterol_mg_dl", 5, "total cholesterol"), ("systolic_bp_mm_hg", float("nan"), "systolic"),
])
def test_mesa_risk_refuses_bad_input(field: str, value: object, message: str) -> None:
    import dataclasses

    with pytest.raises(ValueError, match=message):
        mesa_chd_risk(10, dataclasses.replace(HISPANIC_MAN_70, **{field: value}))
    with pytest.raises(ValueError, match="Agatston"):
        mesa_chd_risk(-1, HISPANIC_MAN_70)


def test_percentiles_from_a_configured_table(tmp_path: Path) -> None:
    # A made-up table (Voxa ships none): two groups, zero scores shared by the lower percentiles.
    path = tmp_path / "cac.csv"
    path.write_text("sex,race,age_min,age_max,percentile,agatston\n"
                    "M,white,60,64,25,0\nM,white,60,64,50,10\nM,white,60,64,75,100\nM,white,60,64,90,400\n"
                    "F,any,45,84,50,0\nF,any,45,84,75,5\nF,any,45,84,90,60\n")
    table = load_percentile_table(path, source="test table")
    assert calcium_percentile(0, age_years=62, sex="M", race="white", table=table) == 25
    assert calcium_percentile(55, age_years=62, sex="M", race="White", table=table) == pytest.approx(62.5)
    assert calcium_percentile(1000, age_years=62, sex="M", race="white", table=table) == 90
    assert calcium_percentile(0, age_years=50, sex="F", race="chinese", table=table) == 50  # "any" race row
    assert calcium_percentile(10, age_years=70, sex="M", race="white", table=table) is None  # no group
    bad = tmp_path / "bad.csv"
    bad.write_text("sex,age,agatston\nM,60,0\n")
    with pytest.raises(ValueError, match="header"):
        load_percentile_table(bad)
