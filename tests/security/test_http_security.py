"""The audit trail as HTTP and DIMSE users produce it, and the security properties of the
web login: lockout, CSRF, session expiry, token revocation, no patient names in the log."""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
import sys
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from voxa.dimse import scu
from voxa.dimse.peers import PeerInfo
from voxa.security import audit
from voxa.testing.synthetic import dataset_to_bytes, make_instance

PASSWORD = "Security-Test-Passw0rd!"
NAMES = ("ZEBRA^ZELDA", "YAK^YURI")


def _study(n: int, patient_id: str, name: str) -> list[bytes]:
    uid = f"2.25.{7700 + n}"
    return [dataset_to_bytes(make_instance(
        patient_id=patient_id, patient_name=name, study_instance_uid=uid, series_instance_uid=f"{uid}.1",
        sop_instance_uid=f"{uid}.1.{i + 1}", instance_number=i + 1)) for i in range(2)]


@pytest.fixture
def site(voxa_factory: Any) -> Any:
    v = voxa_factory(http=True, accept_unknown_peers=True)
    v.runtime.accounts.create_user("rad", PASSWORD, role="radiologist")
    for n, (pid, name) in enumerate((("P-ZED", NAMES[0]), ("P-YAK", NAMES[1])), start=1):
        for data in _study(n, pid, name):
            assert v.archive.ingest(data, source="test").ok
    return v


def _records(v: Any, after: int) -> list[tuple[str, str, str, str, str]]:
    return [(r.actor, r.action, r.outcome, "\\".join(r.patient_ids), "\\".join(r.study_instance_uids))
            for r in audit.search(v.archive.index, limit=None) if r.seq > after]


def _last_seq(v: Any) -> int:
    rows = audit.search(v.archive.index, limit=1, newest_first=True)
    return rows[0].seq if rows else 0


def test_a_scripted_session_produces_exactly_the_expected_audit_records(site: Any, tmp_path: Any) -> None:
    v = site
    start = _last_seq(v)
    one, two = "2.25.7701", "2.25.7702"
    with httpx.Client(base_url=v.base_url, timeout=30) as web:
        assert web.post("/login", json={"username": "rad", "password": "wrong"}).status_code == 401
        login = web.post("/login", json={"username": "rad", "password": PASSWORD})
        assert login.status_code == 200
        csrf = login.json()["csrf_token"]
        assert web.get("/dicom-web/studies").status_code == 200                      # query
        assert web.get(f"/dicom-web/studies/{one}/metadata").status_code == 200     # view
        assert web.get(f"/dicom-web/studies/{one}/metadata").status_code == 200     # same view: coalesced
        assert web.get(f"/dicom-web/studies/{one}/series/{one}.1/instances/{one}.1.1/frames/1",
                       headers={"Accept": "multipart/related; type=application/octet-stream"}).status_code == 200
        lookup = web.post("/tools/lookup", content=f"{one}.1.1", headers={"X-CSRF-Token": csrf})  # query
        instance_id = lookup.json()[0]["ID"]
        assert web.get(f"/instances/{instance_id}/file").status_code == 200          # download
        assert web.get("/audit").status_code == 403                                  # denied: not an auditor
        assert web.post("/logout", headers={"X-CSRF-Token": csrf}).status_code == 200
    with httpx.Client(base_url=v.base_url, timeout=30, auth=v.auth) as admin:
        study_two = admin.post("/tools/lookup", content=two).json()[0]["ID"]         # login (basic) + query
        assert admin.delete(f"/studies/{study_two}").status_code == 200              # delete
    peer = PeerInfo("voxa", v.aet, "127.0.0.1", v.dicom_port)
    assert len(scu.find(peer, "CT-ROOM", "STUDY", {"StudyInstanceUID": one}, return_keys=["PatientID"])) == 1

    both = "P-YAK\\P-ZED"
    assert _records(v, start) == [
        ("rad", "login_failed", "failure", "", ""),
        ("rad", "login", "success", "", ""),
        ("rad", "query", "success", both, f"{one}\\{two}"),
        ("rad", "view", "success", "P-ZED", one),
        ("rad", "query", "success", "", ""),
        ("rad", "download", "success", "P-ZED", one),
        ("rad", "audit_query", "denied", "", ""),
        ("rad", "logout", "success", "", ""),
        ("admin", "login", "success", "", ""),
        ("admin", "query", "success", "", ""),
        ("admin", "delete", "success", "P-YAK", two),
        ("AE:CT-ROOM", "query", "success", "P-ZED", one),
    ]
    details = audit.search(v.archive.index, limit=None)[-12:]
    assert {r.source.split("@")[-1] for r in details} == {"127.0.0.1"}
    assert details[-1].interface == "dimse" and details[-1].source.startswith("CT-ROOM@")

    # altering one stored record breaks the chain, and `voxa audit verify` names it
    target = details[5].seq
    ok = _verify(v)
    assert ok.returncode == 0, ok.stdout
    with v.archive.index.write() as conn:
        conn.execute(text("UPDATE audit_records SET patient_ids = 'P-OTHER' WHERE seq = :s"), {"s": target})
    bad = _verify(v)
    assert bad.returncode == 1
    assert f"record {target} was altered" in bad.stdout


def _verify(v: Any) -> subprocess.CompletedProcess[str]:
    url = str(v.archive.index.engine.url.render_as_string(hide_password=False))
    return subprocess.run([sys.executable, "-m", "voxa", "audit", "verify", "--data-dir", str(v.data_dir),
                           "--database-url", url], capture_output=True, text=True, timeout=120)


def test_audit_search_and_export_over_rest(site: Any) -> None:
    v = site
    with httpx.Client(base_url=v.base_url, timeout=30, auth=v.auth) as admin:
        admin.get("/dicom-web/studies/2.25.7701/metadata").raise_for_status()
        found = admin.get("/audit", params={"study_uid": "2.25.7701", "action": "view"}).json()
        assert [(r["actor"], r["action"]) for r in found] == [("admin", "view")]
        csv = admin.get("/audit/export", params={"format": "csv", "patient_id": "P-ZED"})
        assert csv.headers["content-type"].startswith("text/csv") and "P-ZED" in csv.text
        fhir = admin.get("/audit/export", params={"format": "fhir"}).json()
        assert fhir["resourceType"] == "Bundle" and fhir["entry"][0]["resource"]["resourceType"] == "AuditEvent"
        xml = admin.get("/audit/export", params={"format": "dicom"})
        assert xml.text.lstrip().startswith("<") and "AuditMessage" in xml.text
        assert admin.get("/audit/export", params={"format": "pdf"}).status_code == 422
        assert admin.get("/audit", params={"since": "yesterday"}).status_code == 422
        assert admin.get("/audit/verify").json()["ok"] is True
        # searching and exporting are themselves audited
        actions = [r["action"] for r in admin.get("/audit", params={"actor": "admin", "limit": 50}).json()]
        assert "audit_export" in actions and "audit_query" in actions


def test_brute_force_locks_the_account(site: Any) -> None:
    v = site
    with httpx.Client(base_url=v.base_url, timeout=30) as web:
        for _ in range(5):
            assert web.post("/login", json={"username": "rad", "password": "guess"}).status_code == 401
        r = web.post("/login", json={"username": "rad", "password": PASSWORD})
        assert r.status_code == 403 and r.json()["reason"] == "locked"
        # Basic credentials are refused too while locked
        assert web.get("/dicom-web/studies", auth=("rad", PASSWORD)).status_code == 401
        # an administrator unlocks
        assert web.post("/admin/users/rad/unlock", auth=v.auth).status_code == 200
        assert web.post("/login", json={"username": "rad", "password": PASSWORD}).status_code == 200
    failures = audit.search(v.archive.index, actor="rad", action="login_failed", limit=None)
    assert len(failures) >= 6


def test_csrf_is_required_for_changes_made_with_the_session_cookie(site: Any) -> None:
    v = site
    with httpx.Client(base_url=v.base_url, timeout=30) as web:
        csrf = web.post("/login", json={"username": "rad", "password": PASSWORD}).json()["csrf_token"]
        assert web.post("/auth/tokens", json={"name": "no header"}).status_code == 403
        assert web.post("/auth/tokens", json={"name": "wrong"}, headers={"X-CSRF-Token": "x" * 43}).status_code == 403
        ok = web.post("/auth/tokens", json={"name": "right"}, headers={"X-CSRF-Token": csrf})
        assert ok.status_code == 201
        # another site's page cannot post, even with the token
        evil = web.post("/auth/tokens", json={"name": "evil"},
                        headers={"X-CSRF-Token": csrf, "Origin": "https://evil.example"})
        assert evil.status_code == 403 and "cross-site" in evil.text
        # safe methods need no token
        assert web.get("/auth/me").json()["csrf_token"] == csrf
        # the login form itself refuses cross-site posts
        assert web.post("/login", data={"username": "rad", "password": PASSWORD},
                        headers={"Origin": "https://evil.example"}).status_code == 403
    # the cookie is HTTP-only and SameSite
    with httpx.Client(base_url=v.base_url, timeout=30) as web:
        cookie = web.post("/login", json={"username": "rad", "password": PASSWORD}).headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie and "path=/" in cookie


def test_sessions_expire(site: Any) -> None:
    v = site
    accounts = v.runtime.accounts
    real = accounts._clock
    with httpx.Client(base_url=v.base_url, timeout=30) as web:
        web.post("/login", json={"username": "rad", "password": PASSWORD}).raise_for_status()
        assert web.get("/auth/me").status_code == 200
        try:
            accounts._clock = lambda: real() + accounts.session_idle + dt.timedelta(seconds=5)
            r = web.get("/auth/me")
            assert r.status_code == 401 and "expired" in r.text
            # a browser is sent to the login page instead
            page = web.get("/ohif/", headers={"Accept": "text/html"}, follow_redirects=False)
            assert page.status_code == 303 and page.headers["location"].startswith("/login?next=")
        finally:
            accounts._clock = real
    # a session used within the idle time still ends at the absolute maximum
    with httpx.Client(base_url=v.base_url, timeout=30) as web:
        web.post("/login", json={"username": "rad", "password": PASSWORD}).raise_for_status()
        try:
            accounts._clock = lambda: real() + accounts.session_max + dt.timedelta(seconds=5)
            assert web.get("/auth/me").status_code == 401
        finally:
            accounts._clock = real


def test_revoked_tokens_stop_working(site: Any) -> None:
    v = site
    with httpx.Client(base_url=v.base_url, timeout=30, auth=("rad", PASSWORD)) as rad:
        token = rad.post("/auth/tokens", json={"name": "script", "expires_days": 30}).json()
        assert token["token"].startswith("vx_")
        bearer = {"Authorization": f"Bearer {token['token']}"}
        assert httpx.get(f"{v.base_url}/dicom-web/studies", headers=bearer).status_code == 200
        assert token["token"] not in rad.get("/auth/tokens").text  # never shown again
        assert rad.delete(f"/auth/tokens/{token['id']}").status_code == 200
    r = httpx.get(f"{v.base_url}/dicom-web/studies", headers=bearer)
    assert r.status_code == 401 and "revoked" in r.text
    assert httpx.get(f"{v.base_url}/dicom-web/studies", headers={"Authorization": "Bearer vx_nope_nope"}) \
        .status_code == 401
    assert httpx.get(f"{v.base_url}/dicom-web/studies", headers={"Authorization": "Digest x"}).status_code == 401


def test_no_patient_names_in_the_application_log(site: Any, caplog: pytest.LogCaptureFixture) -> None:
    v = site
    caplog.set_level(logging.DEBUG)
    with httpx.Client(base_url=v.base_url, timeout=30, auth=v.auth) as admin:
        admin.get("/dicom-web/studies", params={"PatientName": "ZEBRA*"}).raise_for_status()
        admin.get("/dicom-web/studies/2.25.7701/metadata").raise_for_status()
        admin.get("/studies?expand").raise_for_status()
        admin.post("/tools/find", json={"Level": "Patient", "Query": {"PatientName": "YAK*"}}).raise_for_status()
        admin.get("/dicom-web/studies", params={"StudyDate": "not-a-date"})
        admin.post("/instances", content=b"garbage")
    peer = PeerInfo("voxa", v.aet, "127.0.0.1", v.dicom_port)
    scu.find(peer, "CT-ROOM", "PATIENT", {"PatientName": "Z*"}, return_keys=["PatientName"], patient_root=True)
    # the application's loggers (the test's own HTTP client logs its URLs: not the server's)
    logged = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith(("httpx", "httpcore")))
    assert logged  # the run did log something
    for name in NAMES:
        for part in name.split("^"):
            assert part not in logged, f"{part} appears in the application log"


def test_patient_data_is_refused_when_the_audit_trail_cannot_be_written(site: Any,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    v = site
    trail = v.runtime.audit

    def broken(_event: Any) -> int:
        raise audit.AuditUnavailable("audit trail cannot be written (OperationalError)")

    with httpx.Client(base_url=v.base_url, timeout=30, auth=v.auth) as admin:
        admin.get("/auth/me").raise_for_status()  # signed in (and that login audited) first
        monkeypatch.setattr(trail, "record", broken)
        r = admin.get("/dicom-web/studies/2.25.7701/metadata")
        assert r.status_code == 503 and "audit" in r.text and "P-ZED" not in r.text
        r = admin.get("/dicom-web/studies")
        assert r.status_code == 503 and "ZEBRA" not in r.text
        # routes that touch no patient data keep working
        assert admin.get("/health").status_code == 200
        monkeypatch.undo()
        assert admin.get("/dicom-web/studies/2.25.7701/metadata").status_code == 200
