"""Orthanc peers over REST (``/peers``): other HTTP servers that Voxa sends instances to.

``GET /peers[?expand]``, ``GET /peers/{name}`` (its operations), ``GET /peers/{name}/configuration``,
``PUT /peers/{name}`` with ``{"Url", "Username", "Password"}`` or Orthanc's ``["url"]`` /
``["url", "username", "password"]``, ``DELETE /peers/{name}``, ``GET /peers/{name}/system``
(the peer's own ``/system``), and ``POST /peers/{name}/store`` with resource IDs (a list,
one ID, or ``{"Resources": [...]}``): each instance goes to ``POST {Url}/instances``, in a job;
synchronous unless ``"Asynchronous": true``.  Passwords are never returned.
"""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import APIRouter, Request

from voxa.archive.http_peers import HttpPeerInfo, HttpPeerRegistry, HttpPeersUnavailable, UnknownHttpPeer
from voxa.archive.index import StoredLocation
from voxa.archive.resources import UnknownResource, locate_public_ids
from voxa.jobs.executor import JobContext
from voxa.runtime import Runtime
from voxa.security.audit import AuditAction
from voxa.security.permissions import Permission as Perm
from voxa.web.access import check_locations, requires
from voxa.web.app import DomainError
from voxa.web.deps import RuntimeDep
from voxa.web.rest.common import flag
from voxa.web.routes.peers import Body

router = APIRouter(tags=["orthanc peers"])

STORE_JOB = "http-store"
TIMEOUT_S = 60.0


def _registry(rt: Runtime) -> HttpPeerRegistry:
    return HttpPeerRegistry(rt.archive.index)


def _call(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except HttpPeersUnavailable as e:
        raise DomainError(503, str(e)) from None
    except UnknownHttpPeer as e:
        raise DomainError(404, str(e)) from None


def peer_json(p: HttpPeerInfo) -> dict[str, Any]:
    """A peer as Orthanc's ``/peers?expand`` shows one (without the password)."""
    return {"Url": p.url, "Username": p.username or None, "HttpHeaders": [], "Pkcs11": False}


def _peer_from_body(name: str, body: Any) -> HttpPeerInfo:
    if isinstance(body, list) and body and all(isinstance(v, str) for v in body) and len(body) in (1, 3):
        url, user, password = (body + ["", ""])[:3] if len(body) == 1 else body
    elif isinstance(body, dict):
        url = body.get("Url", body.get("url"))
        user = body.get("Username", body.get("username")) or ""
        password = body.get("Password", body.get("password")) or ""
    else:
        raise DomainError(400, 'a peer is {"Url": ..., "Username": ..., "Password": ...} or ["url"] / '
                               '["url", "username", "password"]')
    if not isinstance(url, str) or not isinstance(user, str) or not isinstance(password, str):
        raise DomainError(400, "Url, Username and Password must be strings")
    try:
        return HttpPeerInfo(name, url.strip(), user, password)
    except ValueError as e:
        raise DomainError(400, str(e)) from None


def _client(peer: HttpPeerInfo) -> httpx.Client:
    auth = (peer.username, peer.password) if peer.username else None
    return httpx.Client(base_url=peer.base_url, auth=auth, timeout=TIMEOUT_S)


@router.get("/peers", response_model=None)
@requires(Perm.MANAGE_SETTINGS, Perm.DOWNLOAD)
def list_peers(rt: RuntimeDep, expand: str | None = None) -> Any:
    """Peer names; ``?expand``: name -> configuration."""
    peers = _call(_registry(rt).all)
    return {p.name: peer_json(p) for p in peers} if flag(expand) else [p.name for p in peers]


@router.get("/peers/{name}", response_model=None)
@requires(Perm.MANAGE_SETTINGS, Perm.DOWNLOAD)
def get_peer(name: str, rt: RuntimeDep) -> list[str]:
    """What can be done with the peer (as Orthanc lists it)."""
    _call(_registry(rt).by_name, name)
    return ["configuration", "store", "system"]


@router.get("/peers/{name}/configuration", response_model=None)
@requires(Perm.MANAGE_SETTINGS)
def get_peer_configuration(name: str, rt: RuntimeDep) -> dict[str, Any]:
    return peer_json(_call(_registry(rt).by_name, name))


@router.put("/peers/{name}", response_model=None)
@requires(Perm.MANAGE_SETTINGS, audit=AuditAction.PEER_CHANGE)
def put_peer(name: str, rt: RuntimeDep, body: Body) -> dict[str, Any]:
    """Create or replace a peer."""
    peer = _peer_from_body(name, body)
    _call(_registry(rt).put, peer)
    return peer_json(peer)


@router.delete("/peers/{name}", response_model=None)
@requires(Perm.MANAGE_SETTINGS, audit=AuditAction.PEER_CHANGE)
def delete_peer(name: str, rt: RuntimeDep) -> dict[str, Any]:
    _call(_registry(rt).remove, name)
    return {}


@router.get("/peers/{name}/system", response_model=None)
@requires(Perm.MANAGE_SETTINGS)
def peer_system(name: str, rt: RuntimeDep) -> Any:
    """The peer's ``/system`` (checks that it answers and that the credentials work)."""
    peer = _call(_registry(rt).by_name, name)
    try:
        with _client(peer) as client:
            r = client.get("/system")
    except httpx.TimeoutException:
        raise DomainError(504, f"peer {name} did not answer within {TIMEOUT_S:.0f} s") from None
    except httpx.HTTPError as e:
        raise DomainError(502, f"peer {name} cannot be reached: {e}") from None
    if r.status_code != 200:
        raise DomainError(502, f"peer {name} answered {r.status_code} to GET /system")
    return r.json()


def _resources(body: Any) -> tuple[list[str], dict[str, Any]]:
    options: dict[str, Any] = {}
    ids: Any = body
    if isinstance(body, dict):
        options = body
        ids = body.get("Resources", body.get("resources"))
    if isinstance(ids, str):
        ids = [ids]
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i.strip() for i in ids):
        raise DomainError(400, 'the body of /store is a list of resource IDs or {"Resources": [...]}')
    return [i.strip() for i in ids], options


def send_instances(rt: Runtime, peer: HttpPeerInfo, locations: list[StoredLocation], ctx: JobContext | None = None
                   ) -> dict[str, int]:
    """``POST`` every instance to the peer's ``/instances``; raises at the first refusal."""
    total = 0
    with _client(peer) as client:
        for n, loc in enumerate(locations):
            data = rt.archive.blobs.read(loc.blob_key)
            try:
                r = client.post("/instances", content=data, headers={"Content-Type": "application/dicom"})
            except httpx.HTTPError as e:
                raise RuntimeError(f"peer {peer.name} cannot be reached: {e}") from None
            if r.status_code != 200:
                raise RuntimeError(f"peer {peer.name} refused instance {loc.sop_instance_uid}: "
                                   f"HTTP {r.status_code} {r.text[:200]}")
            total += len(data)
            if ctx is not None:
                ctx.report("sending", (n + 1) * 100.0 / len(locations))
    return {"InstancesCount": len(locations), "FailedInstancesCount": 0, "Size": total}


@router.post("/peers/{name}/store", response_model=None)
@requires(Perm.DOWNLOAD, audit=AuditAction.EXPORT)
def store_to_peer(name: str, rt: RuntimeDep, body: Body, request: Request) -> dict[str, Any]:
    """Send patients, studies, series or instances to the peer, as a job."""
    peer = _call(_registry(rt).by_name, name)
    ids, options = _resources(body)
    try:
        locations = locate_public_ids(rt.archive.index, ids)
    except UnknownResource as e:
        raise DomainError(404, str(e)) from None
    check_locations(request, locations)
    asynchronous = options.get("Asynchronous") is True or options.get("Synchronous") is False

    def run(ctx: JobContext) -> dict[str, Any]:
        sent = send_instances(rt, peer, locations, ctx)
        return {"Description": "REST API", "Peer": [peer.name], "ParentResources": ids, **sent,
                "Size": str(sent["Size"])}

    job_id = rt.jobs.submit(STORE_JOB, {"peer": peer.name, "url": peer.url, "resources": ids,
                                        "instances": len(locations)}, run)
    if asynchronous:
        return {"ID": job_id, "Path": f"/jobs/{job_id}"}
    view = rt.jobs.wait(job_id)
    if view.state == "success":
        return {"ID": job_id, "Path": f"/jobs/{job_id}", **view.result}
    if view.state == "cancelled":
        raise DomainError(409, f"job {job_id} was cancelled")
    raise DomainError(502, view.error or f"job {job_id} failed")
