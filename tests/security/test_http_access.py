"""Deny by default, the role × route authorisation matrix, and patient-level access through
every interface (QIDO-RS, WADO-RS, REST, C-FIND, C-MOVE)."""

from __future__ import annotations

import io
import re
from typing import Any

import httpx
import pydicom
import pytest
from fastapi.testclient import TestClient

from voxa.config import PeerSettings
from voxa.dimse import scu
from voxa.dimse.peers import PeerInfo
from voxa.security.permissions import DEFAULT_ROLES
from voxa.testing.synthetic import dataset_to_bytes, make_instance
from voxa.web.access import iter_routes, requirement_of, undeclared_routes
from voxa.web.app import create_app

PASSWORD = "Matrix-Test-Passw0rd!"


def _study(n: int, patient_id: str, patient_name: str, referring: str, instances: int = 2) -> list[bytes]:
    study_uid = f"2.25.{9000 + n}"
    return [dataset_to_bytes(make_instance(
        patient_id=patient_id, patient_name=patient_name, study_instance_uid=study_uid,
        series_instance_uid=f"{study_uid}.1", sop_instance_uid=f"{study_uid}.1.{i + 1}", instance_number=i + 1,
        referring_physician_name=referring, patient_birth_date="19600101", accession_number=f"ACC{n}"))
        for i in range(instances)]


def _store(v: Any, parts: list[bytes]) -> None:
    for data in parts:
        assert v.archive.ingest(data, source="test").ok


# --------------------------------------------------------------------------- the route table


def test_every_route_declares_a_permission(voxa_factory: Any) -> None:
    v = voxa_factory()
    app = create_app(v.runtime)
    assert undeclared_routes(app) == []
    public = sorted(f"{','.join(sorted(m))} {p}" for p, m, r in iter_routes(app) if requirement_of(r.endpoint).public)
    assert public == ["GET /auth/oidc/callback", "GET /auth/oidc/login", "GET /health", "GET /login",
                      "POST /auth/oidc/backchannel-logout", "POST /login"]


def test_an_undeclared_route_is_refused(voxa_factory: Any) -> None:
    v = voxa_factory()
    app = create_app(v.runtime)

    @app.get("/sneaky")
    def sneaky() -> dict[str, str]:
        return {"leak": "yes"}

    assert undeclared_routes(app) == ["GET /sneaky"]
    client = TestClient(app)
    r = client.get("/sneaky", auth=v.auth)
    assert r.status_code == 403 and "declares no permission" in r.text


def _concrete(path: str) -> str:
    # Identifiers nobody has: an allowed request then ends in 404/400/422, never in 401/403,
    # and nothing real is deleted or sent.
    return re.sub(r"\{[^}]+\}", lambda m: "1" if "job" in m.group(0) or "grant" in m.group(0)
                  or "token" in m.group(0) else "nothing", path)


def test_authorisation_matrix_every_role_every_route(voxa_factory: Any) -> None:
    v = voxa_factory()
    accounts = v.runtime.accounts
    for role in DEFAULT_ROLES:
        accounts.create_user(f"m_{role}", PASSWORD, role=role)
    app = create_app(v.runtime)
    client = TestClient(app, raise_server_exceptions=False)
    routes = [(p, m, r) for p, m, r in iter_routes(app) if p not in ("/login",)]
    mismatches: list[str] = []
    checked = 0
    for role, spec in DEFAULT_ROLES.items():
        for path, methods, route in routes:
            req = requirement_of(route.endpoint)
            assert req is not None
            for method in sorted(methods - {"HEAD"}):
                expected = req.public or not req.permissions or bool(req.permissions & spec.permissions)
                url = _concrete(path)
                kwargs: dict[str, Any] = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}
                r = client.request(method, url, auth=(f"m_{role}", PASSWORD), **kwargs)
                allowed = r.status_code not in (401, 403)
                checked += 1
                if r.status_code >= 500:
                    mismatches.append(f"{role} {method} {url}: {r.status_code} {r.text[:120]}")
                elif allowed != expected:
                    mismatches.append(f"{role} {method} {url}: expected {'allow' if expected else 'deny'}, "
                                      f"got {r.status_code} {r.text[:120]}")
    assert checked > 7 * 120
    assert not mismatches, "\n".join(mismatches)
    # ... and without credentials only the public routes answer
    for path, methods, route in routes:
        req = requirement_of(route.endpoint)
        for method in sorted(methods - {"HEAD"}):
            r = client.request(method, _concrete(path), follow_redirects=False)
            if req.public:
                assert r.status_code not in (401, 403), (method, path)
            else:
                assert r.status_code == 401, (method, path, r.status_code)


# Spot checks that the declarations say what a PACS administrator expects (the matrix
# above proves they are enforced as declared).
@pytest.mark.parametrize(("role", "method", "path", "allowed"), [
    ("student", "GET", "/studies", False),  # REST serves identified data: never to students
    ("student", "GET", "/dicom-web/studies", True),  # de-identified teaching cases
    ("student", "GET", "/instances/nothing/file", False),
    ("referring_physician", "DELETE", "/studies/nothing", False),
    ("referring_physician", "GET", "/dicom-web/studies", True),
    ("technologist", "GET", "/audit", False),
    ("technologist", "POST", "/dicom-web/studies", True),
    ("radiologist", "GET", "/admin/users", False),
    ("admin", "GET", "/admin/users", True),
    ("family_member", "GET", "/instances/nothing/file", False),
    ("family_member", "POST", "/instances", False),
    ("admin", "GET", "/metrics", True),
    ("radiologist", "GET", "/metrics", False),
])
def test_declarations_match_the_roles(voxa_factory: Any, role: str, method: str, path: str, allowed: bool) -> None:
    v = voxa_factory()
    v.runtime.accounts.create_user("someone", PASSWORD, role=role)
    client = TestClient(create_app(v.runtime), raise_server_exceptions=False)
    r = client.request(method, path, auth=("someone", PASSWORD), content=b"")
    assert (r.status_code not in (401, 403)) is allowed, (r.status_code, r.text[:200])


# --------------------------------------------------------------------------- patient-level access


@pytest.fixture
def clinic(voxa_factory: Any) -> Any:
    """Two referring physicians, each with a patient; a teaching case; a student; a peer
    mapped to each physician's account."""
    v = voxa_factory(http=True, accept_unknown_peers=True)
    accounts = v.runtime.accounts
    accounts.create_user("dr_a", PASSWORD, role="referring_physician")
    accounts.create_user("dr_b", PASSWORD, role="referring_physician", referring_physician_name="BEE^BARBARA")
    accounts.create_user("pupil", PASSWORD, role="student")
    accounts.assign_patient("dr_a", "PAT-A")
    _store(v, _study(1, "PAT-A", "ALPHA^ANNA", "SOMEONE^ELSE"))
    _store(v, _study(2, "PAT-B", "BRAVO^BORIS", "BEE^BARBARA"))
    _store(v, _study(3, "PAT-T", "TUTOR^TINA", "NOBODY^NO"))
    httpx.put(f"{v.base_url}/studies/{_public_id(v, '2.25.9003')}/teaching", json={"teaching": True},
              auth=v.auth).raise_for_status()
    for name, account in (("ref-a", "dr_a"), ("ref-b", "dr_b"), ("student-ws", "pupil")):
        v.runtime.peers.put(PeerInfo(name, name.upper(), "127.0.0.1", 1, account=account))
    v.runtime.peers.put(PeerInfo("self", v.aet, "127.0.0.1", v.dicom_port))
    return v


def _public_id(v: Any, study_uid: str) -> str:
    from voxa.archive.identifiers import study_public_id

    return study_public_id(*_patient_of(v, study_uid), study_uid)


def _patient_of(v: Any, study_uid: str) -> tuple[str]:
    from sqlalchemy import select

    from voxa.archive.access import ST

    with v.archive.index.read() as conn:
        return (conn.execute(select(ST.c.patient_id).where(ST.c.study_instance_uid == study_uid)).scalar_one(),)


def test_referring_physicians_see_only_their_patients_everywhere(clinic: Any) -> None:
    v = clinic
    self_peer = PeerInfo("voxa", v.aet, "127.0.0.1", v.dicom_port)
    for user, mine, other, aet in (("dr_a", "2.25.9001", "2.25.9002", "REF-A"),
                                   ("dr_b", "2.25.9002", "2.25.9001", "REF-B")):
        with httpx.Client(base_url=v.base_url, auth=(user, PASSWORD), timeout=30) as c:
            # QIDO-RS: search, and a direct search for the other physician's study
            found = c.get("/dicom-web/studies", headers={"Accept": "application/dicom+json"}).json()
            assert [s["0020000D"]["Value"][0] for s in found] == [mine]
            assert c.get(f"/dicom-web/studies?StudyInstanceUID={other}").json() == []
            assert c.get(f"/dicom-web/studies/{other}/series").status_code == 404
            # WADO-RS
            assert c.get(f"/dicom-web/studies/{mine}/metadata").status_code == 200
            for path in ("/metadata", "", "/series/{0}.1/instances/{0}.1.1/frames/1", "/thumbnail"):
                assert c.get(f"/dicom-web/studies/{other}" + path.format(other)).status_code == 404, path
            # REST
            assert c.get("/studies").json() == [_public_id(v, mine)]
            assert c.get(f"/studies/{_public_id(v, other)}").status_code == 404
            assert c.get(f"/studies/{_public_id(v, other)}/archive").status_code in (403, 404)
            found = c.post("/tools/find", json={"Level": "Study", "Query": {}}).json()
            assert found == [_public_id(v, mine)]
            assert [r["ID"] for r in c.post("/tools/lookup", content=other).json()] == []
            # WADO-URI
            r = c.get("/wado", params={"requestType": "WADO", "studyUID": other, "seriesUID": f"{other}.1",
                                       "objectUID": f"{other}.1.1"})
            assert r.status_code == 404
        # C-FIND and C-MOVE from a peer mapped to the account
        matches = scu.find(self_peer, aet, "STUDY", {"StudyInstanceUID": ""}, return_keys=["PatientID"])
        assert [m["StudyInstanceUID"] for m in matches] == [mine]
        assert scu.find(self_peer, aet, "STUDY", {"StudyInstanceUID": other}) == []
        moved = scu.move(self_peer, aet, v.aet, "STUDY", {"StudyInstanceUID": other})
        assert moved["completed"] == 0 and moved["failed"] == 0
        moved = scu.move(self_peer, aet, v.aet, "STUDY", {"StudyInstanceUID": mine})
        assert moved["completed"] + moved["warning"] == 2  # already stored here: a warning
    # a peer without an account (a modality) sees everything
    assert len(scu.find(self_peer, "CT-ROOM", "STUDY", {"StudyInstanceUID": ""})) == 3
    # a peer mapped to a teaching-only account sees nothing (DIMSE cannot de-identify)
    assert scu.find(self_peer, "STUDENT-WS", "STUDY", {"StudyInstanceUID": ""}) == []


def test_a_student_only_ever_receives_de_identified_teaching_cases(clinic: Any) -> None:
    v = clinic
    teaching = "2.25.9003"
    with httpx.Client(base_url=v.base_url, auth=("pupil", PASSWORD), timeout=30) as c:
        studies = c.get("/dicom-web/studies", headers={"Accept": "application/dicom+json"}).json()
        assert [s["0020000D"]["Value"][0] for s in studies] == [teaching]
        text = c.get("/dicom-web/studies").text + c.get(f"/dicom-web/studies/{teaching}/metadata").text
        for identifying in ("TUTOR", "TINA", "PAT-T", "19600101", "ACC3", "NOBODY"):
            assert identifying not in text, identifying
        meta = c.get(f"/dicom-web/studies/{teaching}/metadata").json()
        assert all(m["00120062"]["Value"] == ["YES"] for m in meta)  # Patient Identity Removed
        r = c.get(f"/dicom-web/studies/{teaching}/series/{teaching}.1/instances/{teaching}.1.1",
                  headers={"Accept": 'multipart/related; type="application/dicom"'})
        assert r.status_code == 200
        body = r.content
        start = body.index(b"DICM") - 128
        ds = pydicom.dcmread(io.BytesIO(body[start:]))
        assert ds.PatientIdentityRemoved == "YES"
        assert "TINA" not in str(ds.PatientName) and ds.PatientID != "PAT-T"
        assert not ds.get("PatientBirthDate") and not ds.get("AccessionNumber")
        assert ds.SOPInstanceUID == f"{teaching}.1.1"  # Retain UIDs Option
        assert ds.pixel_array.shape == (16, 16)
        # frames and rendered images are served (pixels only)
        assert c.get(f"/dicom-web/studies/{teaching}/series/{teaching}.1/instances/{teaching}.1.1/rendered",
                     headers={"Accept": "image/png"}).status_code == 200
        # everything else: not visible, or not allowed at all
        assert c.get("/dicom-web/studies/2.25.9001/metadata").status_code == 404
        assert c.get("/studies").status_code == 403
        assert c.get(f"/instances/{'x'}/file").status_code == 403
        assert c.get("/wado", params={"requestType": "WADO", "objectUID": f"{teaching}.1.1"}).status_code == 403


def test_family_grant_workflow_controls_access(clinic: Any) -> None:
    v = clinic
    v.runtime.accounts.create_user("relative", PASSWORD, role="family_member")
    with httpx.Client(base_url=v.base_url, auth=v.auth, timeout=30) as admin, \
            httpx.Client(base_url=v.base_url, auth=("relative", PASSWORD), timeout=30) as fam:
        assert fam.get("/dicom-web/studies").json() == []
        grant = admin.post("/admin/family-grants", json={
            "username": "relative", "patient_id": "PAT-B", "expires_at": "2099-01-01T00:00:00+00:00",
            "note": "daughter, ID checked at the desk"}).json()
        assert grant["status"] == "requested"
        assert fam.get("/dicom-web/studies").json() == []  # requested is not yet active
        assert admin.post(f"/admin/family-grants/{grant['id']}/verify").json()["status"] == "active"
        _forget_access(v)
        assert [s["0020000D"]["Value"][0] for s in fam.get("/dicom-web/studies").json()] == ["2.25.9002"]
        assert admin.post(f"/admin/family-grants/{grant['id']}/revoke").json()["status"] == "revoked"
        _forget_access(v)
        assert fam.get("/dicom-web/studies").json() == []


def _forget_access(v: Any) -> None:
    # the HTTP layer caches a user's patient access for a few seconds
    v._uvicorn.config.app.state.auth.forget()


def test_peer_account_must_exist(clinic: Any) -> None:
    r = httpx.put(f"{clinic.base_url}/modalities/x", json={"AET": "X", "Host": "h", "Port": 104, "Account": "ghost"},
                  auth=clinic.auth)
    assert r.status_code == 400 and "ghost" in r.text
    assert PeerSettings(name="p", aet="P", host="h", port=1, account="dr_a").account == "dr_a"
