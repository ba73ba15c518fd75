"""Property-based fuzzing of every operation in the OpenAPI document with schemathesis.

The acceptance point: a run against the document, authenticated and unauthenticated, finds no
5xx response.  Both passes load the document from a live server (``/openapi.json`` needs a
signed-in user) and send generated requests to every operation, valid ones and invalid ones
(wrong types, missing or malformed parameters and bodies):

* authenticated, as the super admin (HTTP Basic): no response may be a server error;
* unauthenticated: no server error either, and every route but the public ones (``/health``,
  ``/login``) refuses the caller (401, or 303 to the login page, or 403).

The server holds a small synthetic study, and the read-only operations are also called with its
real identifiers in their path (the other parameters generated), so that resource routes answer
with data too, not only with 404.  Generation is deterministic (a fixed seed per operation, no
example database) and bounded: a few examples per operation and kind.  The last test pins the server
errors the fuzzing found, each now a 4xx with a message.

A failure lists every operation that failed, with the (shrunk) request as a curl command and
the response; the server's traceback is in the captured log.

schemathesis's pytest loader (``schemathesis.pytest.from_fixture``) does not run under pytest 9
(it reads the removed ``Item._nodeid``), so the operations are driven here through its public
strategy API (``APIOperation.as_strategy``) and Hypothesis directly.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable
from typing import Any

import httpx
import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from voxa.testing.synthetic import dataset_to_bytes, tiny_study

# per operation and kind (generated, or valid with real identifiers); VOXA_FUZZ_EXAMPLES=100
# for a deeper run
MAX_EXAMPLES = int(os.environ.get("VOXA_FUZZ_EXAMPLES", "15"))
SEED = os.environ.get("VOXA_FUZZ_SEED", "voxa")  # another value: other (as deterministic) requests
REQUEST_TIMEOUT_S = 30
# Routes anyone may call; every other route must refuse an anonymous caller.
PUBLIC_PATHS = frozenset({"/health", "/login"})
REFUSED = frozenset({401, 403, 303})
# Operations that contact the named peer.  A generated request may name a peer that an earlier
# generated PUT created with an address where nothing listens: the honest answer is then a
# gateway error (502 cannot reach it, 504 no answer in time), from these operations only.
PEER_OPERATIONS = frozenset({
    "POST /modalities/{name}/echo", "POST /modalities/{name}/query", "POST /modalities/{name}/store",
    "POST /modalities/{name}/move", "GET /peers/{name}/system", "POST /peers/{name}/store",
})
GATEWAY_ERRORS = frozenset({502, 504})

# Bodies the document declares as DICOM files or ZIP archives go out as raw bytes.
schemathesis.serializer.alias(["application/dicom", "application/zip"], "application/octet-stream")

SETTINGS = hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    derandomize=False,  # seeded per operation instead (see _run)
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=list(HealthCheck),
    print_blob=False,
)


# --------------------------------------------------------------------------- the server


@pytest.fixture
def server(voxa_factory: Any) -> Any:
    # Generated POST /auth/password requests carry wrong current passwords; with the default of
    # 5 failures the super admin would lock itself out halfway through the run.
    voxa = voxa_factory(http=True, max_failed_logins=1_000_000)
    for ds in tiny_study(71, series=2, instances_per_series=2).datasets():
        voxa.archive.ingest(dataset_to_bytes(ds), source="test")
    return voxa


def _load(server: Any) -> tuple[Any, dict[str, Any]]:
    """The schema, loaded from the live server's document, and the real path parameters."""
    with httpx.Client(base_url=server.base_url, auth=server.auth, timeout=60) as client:
        document = client.get("/openapi.json").raise_for_status().json()
        (study_id,) = client.get("/studies").raise_for_status().json()
        study = client.get(f"/studies/{study_id}").raise_for_status().json()
        series_id = study["Series"][0]
        series = client.get(f"/series/{series_id}").raise_for_status().json()
        instance_id = series["Instances"][0]
        instance = client.get(f"/instances/{instance_id}").raise_for_status().json()
    config = schemathesis.Config.from_dict({"base-url": server.base_url, "request-timeout": REQUEST_TIMEOUT_S})
    real = {
        "/patients/": study["ParentPatient"], "/studies/": study_id, "/series/": series_id,
        "/instances/": instance_id,
        "study": study["MainDicomTags"]["StudyInstanceUID"],
        "series": series["MainDicomTags"]["SeriesInstanceUID"],
        "sop": instance["MainDicomTags"]["SOPInstanceUID"],
        "frame": "1", "frame_list": "1", "username": server.auth[0],
        # a new instance for POST /instances
        "file": dataset_to_bytes(next(iter(tiny_study(72).datasets()))),
    }
    return schemathesis.openapi.from_dict(document, config=config), real


def _real_kinds(operation: Any, real: dict[str, Any]) -> list[tuple[str, Any]]:
    """Strategies that put the stored data's real identifiers (or a real DICOM file) into
    the requests of an operation, the other parameters generated."""
    if operation.method.upper() == "POST" and operation.path == "/instances":
        return [("real file", operation.as_strategy(GenerationMode.POSITIVE, body=real["file"],
                                                    media_type="application/dicom"))]
    if operation.method.upper() != "GET":
        return []  # DELETE and the like would destroy the data halfway through the run
    names = [p.name for p in operation.path_parameters]
    values = {}
    for name in names:
        key = "/" + operation.path.split("/")[1] + "/" if name == "id" else name
        if key not in real:
            return []
        values[name] = real[key]
    if not values:
        return []
    return [("real ids", operation.as_strategy(GenerationMode.POSITIVE, path_parameters=values))]


# --------------------------------------------------------------------------- the driver

Check = Callable[[Any, requests.Session], None]


def _run(operation: Any, kind: str, strategy: Any, check: Check, session: requests.Session) -> tuple[int, str]:
    """Hypothesis over one strategy: (requests sent, the failure's description or "")."""
    sent = 0
    last = ""

    # a seed of its own for each operation and kind: the same requests on every run, but not the
    # same random choices for every operation (one shared test function would get one seed)
    @hypothesis.seed(zlib.crc32(f"{SEED} {operation.label} {kind}".encode()))
    @SETTINGS
    @hypothesis.given(case=strategy)
    def run(case: Any) -> None:
        nonlocal sent, last
        sent += 1
        try:
            check(case, session)
        except AssertionError as e:
            # the last failure Hypothesis sees is the shrunk example it reports
            last = f"{operation.label} ({kind} request):\n  {case.as_curl_command()}\n  {e}"
            raise

    try:
        run()
    except AssertionError:
        return sent, last or f"{operation.label} ({kind} request): failed"
    return sent, ""


def _fuzz(schema: Any, real: dict[str, Any], check: Check, session: requests.Session) -> tuple[int, list[str]]:
    """Run ``check(case, session)`` on generated cases of every operation: (requests, failures)."""
    failures: list[str] = []
    count = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        # valid and invalid requests mixed: an operation without anything to break (no
        # parameters, or only free strings) has no invalid request, and a purely negative
        # strategy would spend its whole budget looking for one
        generated = st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                              operation.as_strategy(GenerationMode.NEGATIVE))
        before = count
        for kind, strategy in [("generated", generated), *_real_kinds(operation, real)]:
            sent, failure = _run(operation, kind, strategy, check, session)
            count += sent
            if failure:
                failures.append(failure)
        if count == before:
            failures.append(f"{operation.label}: no request could be generated")
    return count, failures


def _describe(response: Any) -> str:
    return f"-> {response.status_code} {response.text[:400]!r}"


def _no_server_error(case: Any, response: Any) -> None:
    if case.operation.label in PEER_OPERATIONS and response.status_code in GATEWAY_ERRORS:
        assert "error" in response.json(), "a gateway error without a message " + _describe(response)
        return
    assert response.status_code < 500, _describe(response)
    case.validate_response(response, checks=[not_a_server_error])


def _report(count: int, failures: list[str]) -> str:
    return f"{len(failures)} operation(s) failed out of {count} requests:\n\n" + "\n\n".join(failures)


# --------------------------------------------------------------------------- the tests


@pytest.mark.slow
def test_authenticated_requests_never_get_a_server_error(server: Any) -> None:
    schema, real = _load(server)

    def check(case: Any, session: requests.Session) -> None:
        _no_server_error(case, case.call(session=session))

    with requests.Session() as session:
        session.auth = server.auth
        count, failures = _fuzz(schema, real, check, session)
    assert not failures, _report(count, failures)
    # sanity: the admin was signed in throughout (not locked out or demoted by a generated request)
    assert httpx.get(f"{server.base_url}/auth/me", auth=server.auth).status_code == 200


@pytest.mark.slow
def test_anonymous_requests_are_refused_and_never_get_a_server_error(server: Any) -> None:
    schema, real = _load(server)

    def check(case: Any, session: requests.Session) -> None:
        response = case.call(session=session, allow_redirects=False)
        _no_server_error(case, response)
        if case.operation.path not in PUBLIC_PATHS:
            assert response.status_code in REFUSED, "anonymous caller not refused " + _describe(response)

    with requests.Session() as session:
        count, failures = _fuzz(schema, real, check, session)
    assert not failures, _report(count, failures)


def test_requests_the_fuzzing_found_get_a_clear_4xx(server: Any) -> None:
    """The server errors the fuzzing found, pinned: each now a 4xx with a message."""
    big = str(2**63)  # one past the databases' largest integer
    base, admin = server.base_url, server.auth
    with httpx.Client(base_url=base, auth=admin, timeout=60) as client:
        instance = client.get("/instances").raise_for_status().json()[0]
        for method, url, status in [
            ("DELETE", f"/admin/tokens/{big}", 422),
            ("POST", f"/admin/family-grants/{big}/verify", 422),
            ("POST", f"/admin/family-grants/{big}/revoke", 422),
            ("GET", f"/worklist/{big}", 422),
            ("DELETE", f"/worklist/{big}", 422),
            ("GET", f"/worklist?limit={big}", 422),
            ("GET", f"/mpps?limit={big}", 422),
            ("GET", f"/audit?offset={big}", 422),
            ("GET", f"/changes?since={big}", 400),
            ("GET", f"/instances?since={big}", 400),
            ("GET", f"/studies?limit={big}", 400),
            ("GET", f"/instances/{instance}/rendered?width={big}", 400),
            ("GET", f"/instances/{instance}/rendered?height=100000", 400),
        ]:
            r = client.request(method, url)
            assert r.status_code == status, (method, url, r.status_code, r.text)
        # a password the policy refuses: 422 with the policy's reason (was a 500)
        r = client.post("/admin/users", json={"username": "weak", "password": "short", "role": "radiologist"})
        assert r.status_code == 422 and "at least" in r.text, r.text
        r = client.patch("/admin/users/admin", json={"password": "short"})
        assert r.status_code == 422 and "at least" in r.text, r.text
        r = client.post("/auth/password", json={"current_password": admin[1], "new_password": "short"})
        assert r.status_code == 422 and "at least" in r.text, r.text
        # a malformed body from a signed-in caller is still the body's error
        r = client.post("/admin/users", content=b"\x00", headers={"Content-Type": "application/json"})
        assert r.status_code == 422, r.text

    # A malformed body (not JSON, not UTF-8) is decoded before the route's dependencies run:
    # anyone else must hear 401 all the same, and a wrong password counts once.
    server.runtime.accounts.create_user("mallory", "Test-Passw0rd-1234", role="radiologist")
    for body in (b"\x00", b"\xff\xfe", b"{"):
        for auth in (None, ("mallory", "wrong")):
            r = httpx.post(f"{base}/admin/users", content=body, auth=auth,
                           headers={"Content-Type": "application/json"})
            assert r.status_code == 401, (body, auth, r.status_code, r.text)
    assert server.runtime.accounts.get_user("mallory").failed_logins == 3
    # a signed-in user without the permission hears 403, not the body's error
    r = httpx.post(f"{base}/admin/users", content=b"\xff", auth=("mallory", "Test-Passw0rd-1234"),
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 403, r.text
