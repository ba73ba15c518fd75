"""The analyses API (voxa.web.routes.analyses) over HTTP against an in-process Voxa: submit a
calcium score, follow its progress to the result, verify it as a radiologist (a technologist may
not), cancel, and the 4xx answers."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from analysis.phantom_series import ingest_series, phantom_series, quadrant_phantom

from voxa.analysis import results as store

PASSWORD = "Some-Long-Passw0rd!"
STUDY = "1.2.826.0.1.3680043.10.511.78.1"
SERIES = STUDY + ".3"
OTHER_STUDY = "1.2.826.0.1.3680043.10.511.78.2"
OTHER_SERIES = OTHER_STUDY + ".3"


@pytest.fixture
def server(voxa_factory: Any) -> Any:
    v = voxa_factory(http=True)
    ingest_series(v.archive, phantom_series(quadrant_phantom(mass_calibration=0.8), study_uid=STUDY,
                                            series_uid=SERIES))
    ingest_series(v.archive, phantom_series(quadrant_phantom(z_extent_mm=9.0), study_uid=OTHER_STUDY,
                                            series_uid=OTHER_SERIES, patient_id="OTHER"))
    v.runtime.accounts.create_user("rad", PASSWORD, role="radiologist")
    v.runtime.accounts.create_user("tech", PASSWORD, role="technologist")
    return v


def _client(v: Any, user: str | None = None) -> httpx.Client:
    auth = (user, PASSWORD) if user else v.auth
    return httpx.Client(base_url=v.base_url, auth=auth, timeout=30)


def _wait(c: httpx.Client, study: str, result_id: int, timeout_s: float = 60.0) -> tuple[dict[str, Any],
                                                                                          list[tuple[str, float]]]:
    seen: list[tuple[str, float]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        r = c.get(f"/analyses/studies/{study}/{result_id}")
        assert r.status_code == 200, r.text
        body = r.json()
        seen.append((body["status"], body["progress"]))
        if body["status"] in ("done", "failed", "cancelled"):
            return body, seen
        time.sleep(0.02)
    raise AssertionError(f"analysis {result_id} did not finish: {seen[-5:]}")


def _job(c: httpx.Client, job_id: str) -> dict[str, Any]:
    """The job once it ended (it ends just after its analysis result says so)."""
    deadline = time.monotonic() + 30
    while True:
        r = c.get(f"/jobs/{job_id}")
        assert r.status_code == 200, r.text
        if r.json()["state"] not in ("pending", "running") or time.monotonic() > deadline:
            return r.json()  # type: ignore[no-any-return]
        time.sleep(0.02)


def test_submit_follow_and_verify(server: Any) -> None:
    v = server
    with _client(v, "tech") as tech, _client(v, "rad") as rad:
        tools = tech.get("/analyses/tools")
        assert tools.status_code == 200
        by_name = {t["name"]: t for t in tools.json()["tools"]}
        assert set(by_name) == {"calcium", "cardiac", "vessels", "measure"}
        assert tools.json()["executor"] == "embedded"
        kvp = next(p for p in by_name["calcium"]["parameters"] if p["name"] == "kvp")
        assert kvp["unit"] == "kV" and kvp["type"] == "number" and kvp["default"] is None
        limit = next(p for p in by_name["calcium"]["parameters"] if p["name"] == "max_lesion_volume_mm3")
        assert limit["default"] == 3000.0 and limit["unit"] == "mm3"
        assert by_name["calcium"]["outputs"] == ["SEG", "SR", "SR"]

        r = tech.post(f"/analyses/studies/{STUDY}/calcium", json={"series": SERIES, "params": {"mass_calibration": 0.8}})
        assert r.status_code == 202, r.text
        submitted = r.json()
        assert {"id", "job", "status"} <= set(submitted)
        assert submitted["status"] in ("queued", "running") and submitted["requires_review"] is True
        assert submitted["created_by"] == "tech" and submitted["verified"] is False
        done, seen = _wait(tech, STUDY, submitted["id"])
        assert done["status"] == "done", done["error"]
        assert done["stage"] == "done" and done["progress"] == 100.0
        progress = [p for _, p in seen]
        assert progress == sorted(progress)  # never goes back
        result = done["result"]
        assert result["per_artery"]["RCA"]["lesion_count"] == 1 and result["agatston_total"] > 0
        assert result["mass_mg_total"] > 0
        assert [o["kind"] for o in done["outputs"]] == ["SEG", "SR", "SR"]
        # the SEG and SR are in the study (QIDO-RS sees them)
        series = tech.get(f"/dicom-web/studies/{STUDY}/series", headers={"Accept": "application/dicom+json"})
        assert series.status_code == 200, series.text
        modalities = {s["00080060"]["Value"][0] for s in series.json()}
        assert {"SEG", "SR", "CT"} <= modalities
        # the job is visible through the jobs API as well
        job = _job(tech, submitted["job"])
        assert job["state"] == "success"
        assert job["result"]["analysis_id"] == submitted["id"]

        # the study is listed among those with a result to review, then among the verified ones
        pending = tech.get("/analyses", params={"review": "pending"})
        assert pending.status_code == 200, pending.text
        assert pending.json() == {"studies": {STUDY: 1}}
        assert tech.get("/analyses", params={"status": "failed"}).json() == {"studies": {}}
        assert tech.get("/analyses", params={"status": "sideways"}).status_code == 422

        listed = tech.get(f"/analyses/studies/{STUDY}")
        assert listed.status_code == 200
        assert [a["id"] for a in listed.json()["analyses"]] == [submitted["id"]]
        assert "result" not in listed.json()["analyses"][0]

        denied = tech.post(f"/analyses/studies/{STUDY}/{submitted['id']}/verify")
        assert denied.status_code == 403, denied.text
        assert "sign_report" in denied.json()["detail"] or "create_report" in denied.json()["detail"]
        verified = rad.post(f"/analyses/studies/{STUDY}/{submitted['id']}/verify")
        assert verified.status_code == 200, verified.text
        body = verified.json()
        assert body["verified"] is True and body["verified_by"] == "rad" and body["verified_at"]
        assert body["requires_review"] is True  # the record that it needed review stays
        again = tech.get(f"/analyses/studies/{STUDY}/{submitted['id']}").json()
        assert again["verified_by"] == "rad"
        assert tech.get("/analyses", params={"review": "pending"}).json() == {"studies": {}}
        assert tech.get("/analyses", params={"review": "verified", "tool": "calcium"}).json() == {"studies": {STUDY: 1}}
        # verifying is audited with the study
        from voxa.security.audit import search

        records = search(v.runtime.archive.index, actor="rad", study_uid=STUDY)
        assert any(rec.action == "modify" for rec in records)


def test_cancel(server: Any) -> None:
    v = server
    with _client(v, "tech") as tech:
        r = tech.post(f"/analyses/studies/{STUDY}/calcium", json={"series": [SERIES]})
        assert r.status_code == 202, r.text
        submitted = r.json()
        cancel = tech.post(f"/analyses/studies/{STUDY}/{submitted['id']}/cancel")
        assert cancel.status_code == 200, cancel.text
        done, _ = _wait(tech, STUDY, submitted["id"])
        assert done["status"] == "cancelled", done
        assert done["outputs"] == [] and done["result"] == {}
        assert _job(tech, submitted["job"])["state"] == "cancelled"
        # a cancelled analysis cannot be verified, and cancelling it again changes nothing
        with _client(v, "rad") as rad:
            conflict = rad.post(f"/analyses/studies/{STUDY}/{submitted['id']}/verify")
        assert conflict.status_code == 409 and "cancelled" in conflict.json()["error"]
        assert tech.post(f"/analyses/studies/{STUDY}/{submitted['id']}/cancel").json()["status"] == "cancelled"
    rows = store.list_results(v.runtime.archive.index, study_instance_uid=STUDY)
    assert [r.status for r in rows] == [store.ResultStatus.CANCELLED]


def test_errors(server: Any) -> None:
    v = server
    with _client(v, "tech") as tech:
        def post(path: str, body: Any) -> httpx.Response:
            return tech.post(path, json=body)

        r = post(f"/analyses/studies/{STUDY}/agatston", {"series": SERIES})
        assert r.status_code == 404 and "no analysis tool 'agatston'" in r.json()["error"]
        r = post(f"/analyses/studies/{STUDY}/calcium", {"series": SERIES, "params": {"kvp": "high"}})
        assert r.status_code == 422 and "'kvp'" in r.json()["error"]
        r = post(f"/analyses/studies/{STUDY}/calcium", {"series": SERIES, "params": {"mass": 1}})
        assert r.status_code == 422 and "'mass'" in r.json()["error"] and "unknown parameter" in r.json()["error"]
        r = post(f"/analyses/studies/{STUDY}/vessels", {"series": SERIES, "params": {"start": [1, 2]}})
        assert r.status_code == 422 and "'start'" in r.json()["error"]
        r = post(f"/analyses/studies/{STUDY}/calcium", {"series": OTHER_SERIES})
        assert r.status_code == 422 and f"no series {OTHER_SERIES} in study {STUDY}" in r.json()["error"]
        r = post(f"/analyses/studies/{STUDY}/calcium", {"series": [SERIES, OTHER_SERIES]})
        assert r.status_code == 422 and "one series" in r.json()["error"]
        r = post(f"/analyses/studies/{STUDY}/calcium", {"params": {}})
        assert r.status_code == 422  # no series (request body validation)
        r = post("/analyses/studies/1.2.3.4/calcium", {"series": SERIES})
        assert r.status_code == 404
        assert tech.get(f"/analyses/studies/{STUDY}/999").status_code == 404
        assert tech.post(f"/analyses/studies/{STUDY}/999/cancel").status_code == 404
        assert tech.get(f"/analyses/studies/{STUDY}/0").status_code == 422
        assert store.list_results(v.runtime.archive.index) == []  # nothing was queued
        # an analysis is found only under its own study
        ok = post(f"/analyses/studies/{OTHER_STUDY}/measure", {"series": OTHER_SERIES, "params": {"threshold": 130}})
        assert ok.status_code == 202, ok.text
        _wait(tech, OTHER_STUDY, ok.json()["id"])
        assert tech.get(f"/analyses/studies/{STUDY}/{ok.json()['id']}").status_code == 404
    with httpx.Client(base_url=v.base_url, timeout=30) as anonymous:
        assert anonymous.get("/analyses/tools").status_code == 401
        assert anonymous.post(f"/analyses/studies/{STUDY}/calcium", json={"series": SERIES}).status_code == 401
