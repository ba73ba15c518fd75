"""``voxa analyze`` (and ``voxa worker``'s checks) as an administrator runs them on a data folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from analysis.phantom_series import ingest_series, phantom_series, quadrant_phantom
from click.testing import CliRunner

from voxa.analysis import results as store
from voxa.analysis.calcium import score_calcium
from voxa.archive import open_archive
from voxa.cli import main
from voxa.config import Settings
from voxa.security.audit import search

STUDY = "1.2.826.0.1.3680043.10.511.80.1"
SERIES = STUDY + ".3"


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("VOXA_CONFIG", "VOXA_DATA_DIR", "VOXA_DATABASE_URL", "VOXA_CELERY_BROKER_URL"):
        monkeypatch.delenv(name, raising=False)
    folder = tmp_path / "data"
    archive = open_archive(Settings(data_dir=folder, fsync=False))
    try:
        ingest_series(archive, phantom_series(quadrant_phantom(mass_calibration=0.8), study_uid=STUDY,
                                              series_uid=SERIES))
    finally:
        archive.close()
    return folder


def _run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_analyze_prints_the_result(data_dir: Path) -> None:
    r = _run("analyze", "calcium", "--series", SERIES, "--param", "mass_calibration=0.8", "--data-dir", str(data_dir))
    assert r.exit_code == 0, r.output
    body = json.loads(r.stdout)
    assert body["status"] == "done" and body["tool"] == "calcium" and body["study_instance_uid"] == STUDY
    assert body["requires_review"] is True and body["verified"] is False
    assert body["parameters"]["mass_calibration"] == 0.8
    phantom = quadrant_phantom(mass_calibration=0.8)
    expected = score_calcium(phantom.hu, pixel_spacing_mm=(0.5, 0.5), slice_thickness_mm=3.0, slice_increment_mm=3.0,
                             kvp=120.0, mass_calibration_mg_per_ml_per_hu=0.8, max_lesion_volume_mm3=3000.0)
    assert body["result"]["agatston_total"] == pytest.approx(expected.agatston_total, rel=1e-12)
    assert body["result"]["mass_mg_total"] == pytest.approx(expected.mass_mg_total, rel=1e-12)
    assert [o["kind"] for o in body["outputs"]] == ["SEG", "SR", "SR"]
    assert "%" in r.stderr  # progress lines go to stderr
    archive = open_archive(Settings(data_dir=data_dir, fsync=False))
    try:
        stored = store.get_result(archive.index, body["id"])
        assert stored is not None and stored.created_by.startswith("os:")
        for output in body["outputs"]:
            assert archive.index.locate(sop_uid=output["sop_instance_uid"])
        records = search(archive.index, study_uid=STUDY, interface="cli")
        assert any(rec.action == "view" and rec.detail.get("analysis") == body["id"] for rec in records)
    finally:
        archive.close()


def test_analyze_measure_with_a_box(data_dir: Path) -> None:
    r = _run("analyze", "measure", "--series", SERIES, "--param", "roi_mm=-35,-20,3,-20.5,-0.5,12",
             "--param", "threshold=130", "--data-dir", str(data_dir))
    assert r.exit_code == 0, r.output
    body = json.loads(r.stdout)
    assert body["result"]["roi"]["voxel_count"] == 4 * 40 * 30
    assert body["result"]["threshold"]["voxel_count"] > 0


def test_analyze_errors(data_dir: Path) -> None:
    d = str(data_dir)
    r = _run("analyze", "agatston", "--series", SERIES, "--data-dir", d)
    assert r.exit_code == 1 and "no analysis tool 'agatston'" in r.output
    r = _run("analyze", "calcium", "--series", SERIES, "--param", "kvp=high", "--data-dir", d)
    assert r.exit_code == 1 and "parameter 'kvp'" in r.output
    r = _run("analyze", "calcium", "--series", SERIES, "--param", "kvp", "--data-dir", d)
    assert r.exit_code == 2 and "key=value" in r.output
    r = _run("analyze", "calcium", "--series", "1.2.3", "--data-dir", d)
    assert r.exit_code == 1 and "no series 1.2.3" in r.output
    r = _run("analyze", "calcium", "--series", SERIES, "--no-wait", "--data-dir", d)
    assert r.exit_code == 2 and "Celery" in r.output
    # the analysis itself fails: its JSON is printed, and the exit status says so
    r = _run("analyze", "calcium", "--series", SERIES, "--param", "kvp=90", "--data-dir", d)
    assert r.exit_code == 1
    body = json.loads(r.stdout)
    assert body["status"] == "failed" and "90" in body["error"]


def test_worker_needs_a_broker(data_dir: Path) -> None:
    r = _run("worker", "--data-dir", str(data_dir))
    assert r.exit_code == 2 and "no broker" in r.output
