"""DICOM peers over REST, under Orthanc's names (``/modalities``) so that Orthanc scripts work.

* ``GET /modalities`` (names; ``?expand``: name -> configuration), ``GET /modalities/{name}``
  (its configuration; also at ``/modalities/{name}/configuration`` as in Orthanc),
  ``PUT /modalities/{name}`` with ``["AET", "host", port]``, Orthanc's
  ``{"AET", "Host", "Port", "AllowStore", "AllowFind", "AllowMove"|"AllowGet"}`` or our
  ``{"aet", "host", "port", "allow_store", "allow_find", "allow_move"}``,
  ``DELETE /modalities/{name}`` (a peer from the configuration file comes back at the next start).
* ``POST /modalities/{name}/echo`` -> ``{"round_trip_ms": ...}``.
* ``POST /modalities/{name}/store`` with a list of Orthanc IDs (patients, studies, series or
  instances), one ID, ``{"Resources": [...]}`` or our ``{"study_uid"|"series_uid"|"sop_uid": ...}``.
* ``POST /modalities/{name}/move`` with ``{"Level": "Study", "Resources": [{"StudyInstanceUID": ...}],
  "TargetAet": ...}``; the target defaults to Voxa's own AE title (retrieve into Voxa).
* ``POST /modalities/{name}/query`` with ``{"Level": "Study", "Query": {"PatientID": "..."},
  "ReturnKeys": [...]}`` answers the matches directly, as a list of ``{keyword: value}``
  (Orthanc answers a query ID to read the answers from; Voxa skips that step).

Store and move run as jobs (``/jobs/{id}``).  As in Orthanc they answer when the job has
finished (its content, or the error) unless the body says ``"Asynchronous": true`` or
``"Synchronous": false``: then they answer ``{"ID": job_id, "Path": "/jobs/<id>"}`` at once.
With ``"Permissive": true`` instances the peer refuses do not fail the job.

Errors: a bad body is 400, an unknown modality or resource 404, a peer that cannot be reached,
refuses or fails 502, a peer that does not answer in time 504.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydicom.datadict import keyword_for_tag, tag_for_keyword

from voxa.archive.index import StoredLocation
from voxa.archive.resources import UnknownResource, locate_public_ids
from voxa.dicom.uids import InvalidIdentifier, validate_ae_title
from voxa.dimse import scu
from voxa.dimse.peers import PeerInfo, UnknownPeer
from voxa.jobs.executor import JobContext
from voxa.runtime import Runtime
from voxa.security.audit import AuditAction
from voxa.security.permissions import Permission as Perm
from voxa.web.access import check_locations, requires
from voxa.web.app import DomainError
from voxa.web.deps import RuntimeDep

router = APIRouter(tags=["modalities"])

STORE_JOB = "dicom-store"
MOVE_JOB = "dicom-move"

_LEVELS = {"PATIENT": "PATIENT", "STUDY": "STUDY", "SERIES": "SERIES", "INSTANCE": "IMAGE", "IMAGE": "IMAGE"}
_UNIQUE_KEY = {"PATIENT": "PatientID", "STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID",
               "IMAGE": "SOPInstanceUID"}
_TAG_RE = re.compile(r"^\(?([0-9A-Fa-f]{4}),?([0-9A-Fa-f]{4})\)?$")
_PUBLIC_ID_RE = re.compile(r"^[0-9a-f]{8}(-[0-9a-f]{8}){4}$")


class _Text(str):
    """A request body that is not JSON (Orthanc accepts a bare resource ID as the body of /store)."""


async def json_body(request: Request) -> Any:
    """The request body parsed as JSON; None when empty, :class:`_Text` when it is not JSON."""
    raw = await request.body()
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        try:
            return _Text(raw.decode("utf-8").strip())
        except UnicodeDecodeError:
            raise DomainError(400, "the body is neither JSON nor text") from None


Body = Annotated[Any, Depends(json_body)]


def _json_body_doc(description: str, example: Any) -> dict[str, Any]:
    """OpenAPI for a body read by :func:`json_body` (FastAPI cannot see it)."""
    return {"requestBody": {"description": description, "content": {
        "application/json": {"schema": {}, "example": example}}}}


# -- helpers ----------------------------------------------------------------------------------


def _peer(rt: Runtime, name: str) -> PeerInfo:
    try:
        return rt.peers.by_name(name)
    except UnknownPeer:
        raise DomainError(404, f"no modality named {name!r}") from None


def _object(body: Any, what: str) -> dict[str, Any]:
    if body is None:
        return {}
    if isinstance(body, _Text):
        raise DomainError(400, f"the body of {what} must be JSON")
    if not isinstance(body, dict):
        raise DomainError(400, f"the body of {what} must be a JSON object")
    return body


def _pick(body: dict[str, Any], *names: str, default: Any = None) -> Any:
    for name in names:
        if name in body:
            return body[name]
    return default


def _flag(body: dict[str, Any], *names: str, default: bool) -> bool:
    value = _pick(body, *names, default=default)
    if not isinstance(value, bool):
        raise DomainError(400, f"{names[0]} must be true or false")
    return value


def _synchronous(body: dict[str, Any]) -> bool:
    """Orthanc's rule: synchronous unless "Asynchronous": true or "Synchronous": false."""
    if _flag(body, "Asynchronous", "asynchronous", default=False):
        return False
    return _flag(body, "Synchronous", "synchronous", default=True)


def _calling_aet(rt: Runtime, body: dict[str, Any]) -> str:
    local = _pick(body, "LocalAet", "local_aet")
    if local is None:
        return rt.settings.aet
    if not isinstance(local, str):
        raise DomainError(400, "LocalAet must be a string")
    try:
        return validate_ae_title(local)
    except InvalidIdentifier as e:
        raise DomainError(400, str(e)) from None


def _level(value: Any) -> str:
    if not isinstance(value, str) or value.strip().upper() not in _LEVELS:
        raise DomainError(400, f"Level must be Patient, Study, Series or Instance, not {value!r}")
    return _LEVELS[value.strip().upper()]


def _keyword(key: Any) -> str:
    """A DICOM keyword from a keyword or a tag written as ``0010,0020``."""
    if isinstance(key, str):
        m = _TAG_RE.match(key.strip())
        if m:
            kw = keyword_for_tag(int(m.group(1) + m.group(2), 16))
            if kw:
                return kw
        elif tag_for_keyword(key.strip()) is not None:
            return key.strip()
    raise DomainError(400, f"{key!r} is not a DICOM attribute keyword or tag")


def _identifiers(value: Any, what: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise DomainError(400, f"{what} must be a JSON object of DICOM keywords and values")
    out: dict[str, str] = {}
    for key, v in value.items():
        if not isinstance(v, str | int | float) or isinstance(v, bool):
            raise DomainError(400, f"the value of {key} in {what} must be a string")
        out[_keyword(key)] = str(v)
    return out


def _peer_error(e: scu.PeerError) -> DomainError:
    return DomainError(504 if isinstance(e, scu.PeerTimeout) else 502, str(e))


def modality_json(p: PeerInfo) -> dict[str, Any]:
    """A peer as Orthanc describes a modality (``GET /modalities?expand``)."""
    return {
        "AET": p.aet, "Host": p.host, "Port": p.port, "Manufacturer": "Generic",
        "AllowEcho": True, "AllowFind": p.allow_find, "AllowFindWorklist": p.allow_find,
        "AllowGet": p.allow_move, "AllowMove": p.allow_move, "AllowStore": p.allow_store,
        "AllowNAction": False, "AllowNEventReport": False, "AllowTranscoding": True,
        "Name": p.name, "FromConfiguration": p.from_config, "Account": p.account,
    }


def _peer_from_body(name: str, body: Any) -> PeerInfo:
    allow: dict[str, Any] = {"allow_store": True, "allow_find": True, "allow_move": True}
    if isinstance(body, list):
        if len(body) not in (3, 4):
            raise DomainError(400, 'a modality as a list is ["AET", "host", port] (or with a manufacturer last)')
        aet, host, port = body[0], body[1], body[2]
    elif isinstance(body, dict):
        aet, host, port = _pick(body, "AET", "aet"), _pick(body, "Host", "host"), _pick(body, "Port", "port")
        allow["allow_store"] = _flag(body, "AllowStore", "allow_store", default=True)
        allow["allow_find"] = _flag(body, "AllowFind", "allow_find", default=True)
        allow["allow_move"] = _flag(body, "AllowMove", "allow_move", "AllowGet", default=True)
        account = _pick(body, "Account", "account") if ("Account" in body or "account" in body) else ""
        if not isinstance(account, str):
            raise DomainError(400, "the modality's Account must be a username (string)")
        allow["account"] = account.strip().lower()
    else:
        raise DomainError(400, 'a modality is ["AET", "host", port] or {"AET": ..., "Host": ..., "Port": ...}')
    if not isinstance(aet, str) or not isinstance(host, str) or not host.strip():
        raise DomainError(400, "a modality needs an AE title (AET) and a host (Host) as strings")
    if isinstance(port, str) and port.strip().isdigit():
        port = int(port)
    if not isinstance(port, int) or isinstance(port, bool):
        raise DomainError(400, "the modality's Port must be a number")
    try:
        return PeerInfo(name, validate_ae_title(aet), host.strip(), port, **allow)
    except InvalidIdentifier as e:
        raise DomainError(400, str(e)) from None


def _job_answer(rt: Runtime, job_id: str, synchronous: bool, failure: dict[str, bool]) -> dict[str, Any]:
    if not synchronous:
        return {"ID": job_id, "Path": f"/jobs/{job_id}"}
    view = rt.jobs.wait(job_id)
    if view.state == "success":
        return {"ID": job_id, "Path": f"/jobs/{job_id}", **view.result}
    if view.state == "cancelled":
        raise DomainError(409, f"job {job_id} was cancelled")
    raise DomainError(504 if failure.get("timeout") else 502, view.error or f"job {job_id} failed")


# -- the modalities resource ------------------------------------------------------------------


@router.get("/modalities", response_model=None)
@requires(Perm.MANAGE_SETTINGS, Perm.DOWNLOAD, Perm.UPLOAD)
def list_modalities(rt: RuntimeDep, expand: str | None = None) -> list[str] | dict[str, Any]:
    """Names of the known peers; with ``?expand``, each name with its configuration."""
    peers = rt.peers.all()
    if expand is not None and expand.lower() not in ("false", "0"):
        return {p.name: modality_json(p) for p in peers}
    return [p.name for p in peers]


@router.get("/modalities/{name}", response_model=None)
@requires(Perm.MANAGE_SETTINGS, Perm.DOWNLOAD, Perm.UPLOAD)
def get_modality(name: str, rt: RuntimeDep) -> dict[str, Any]:
    """One peer's configuration (Orthanc lists the sub-resources here; see ``/configuration``)."""
    return modality_json(_peer(rt, name))


@router.get("/modalities/{name}/configuration", response_model=None)
@requires(Perm.MANAGE_SETTINGS)
def get_modality_configuration(name: str, rt: RuntimeDep) -> dict[str, Any]:
    return modality_json(_peer(rt, name))


@router.put("/modalities/{name}", response_model=None, openapi_extra=_json_body_doc(
    '["AET", "host", port], {"AET", "Host", "Port", "AllowStore", "AllowFind", "AllowMove"} '
    'or {"aet", "host", "port", "allow_store", "allow_find", "allow_move"}',
    {"AET": "ORTHANC", "Host": "127.0.0.1", "Port": 4242}))
@requires(Perm.MANAGE_SETTINGS, audit=AuditAction.PEER_CHANGE)
def put_modality(name: str, rt: RuntimeDep, body: Body) -> dict[str, Any]:
    """Create or replace a peer."""
    peer = _peer_from_body(name, body)
    if peer.account:
        try:
            rt.accounts.get_user(peer.account)
        except LookupError:
            raise DomainError(400, f"the modality's Account {peer.account!r} is not a user of this server") from None
    try:
        rt.peers.put(peer)
    except ValueError as e:
        raise DomainError(400, str(e)) from None
    return modality_json(peer)


@router.delete("/modalities/{name}", response_model=None)
@requires(Perm.MANAGE_SETTINGS, audit=AuditAction.PEER_CHANGE)
def delete_modality(name: str, rt: RuntimeDep) -> dict[str, Any]:
    try:
        rt.peers.remove(name)
    except UnknownPeer:
        raise DomainError(404, f"no modality named {name!r}") from None
    return {}


@router.post("/modalities/{name}/echo", response_model=None)
@requires(Perm.MANAGE_SETTINGS, Perm.DOWNLOAD, Perm.UPLOAD)
def echo_modality(name: str, rt: RuntimeDep) -> dict[str, float]:
    """C-ECHO the peer: 200 with the round trip, 502 when it cannot be reached, 504 when it does not answer."""
    peer = _peer(rt, name)
    try:
        ms = scu.echo(peer, rt.settings.aet)
    except scu.PeerError as e:
        raise _peer_error(e) from None
    return {"round_trip_ms": round(ms, 3)}


@router.post("/modalities/{name}/query", response_model=None, openapi_extra=_json_body_doc(
    "Level (Patient, Study, Series, Instance), Query (keyword or gggg,eeee: value), optional ReturnKeys",
    {"Level": "Study", "Query": {"PatientID": "123", "StudyDate": "20200101-"}}))
@requires(Perm.UPLOAD, Perm.MANAGE_SETTINGS, audit=AuditAction.QUERY)
def query_modality(name: str, rt: RuntimeDep, body: Body) -> list[dict[str, Any]]:
    """C-FIND on the peer; the matches come back directly as ``{keyword: value}`` objects."""
    peer = _peer(rt, name)
    req = _object(body, "a query")
    level = _level(_pick(req, "Level", "level"))
    query = _identifiers(_pick(req, "Query", "query", default={}), "Query")
    keys = _pick(req, "ReturnKeys", "return_keys")
    if keys is None:
        keys = scu.DEFAULT_RETURN_KEYS[level]
    elif not isinstance(keys, list):
        raise DomainError(400, "ReturnKeys must be a list of DICOM keywords")
    return_keys = [k for k in (_keyword(k) for k in keys) if k not in query]
    try:
        return scu.find(peer, _calling_aet(rt, req), level, query, return_keys, patient_root=level == "PATIENT")
    except scu.PeerError as e:
        raise _peer_error(e) from None
    except ValueError as e:
        raise DomainError(400, str(e)) from None


def _store_locations(rt: Runtime, body: Any) -> tuple[list[StoredLocation], list[str], dict[str, Any]]:
    """(instances to send, what was asked for, the options object) from a /store body."""
    index = rt.archive.index
    options: dict[str, Any] = {}
    if isinstance(body, _Text):
        ids: Any = [body.strip()]
    elif isinstance(body, str):
        ids = [body]
    elif isinstance(body, list):
        ids = body
    elif isinstance(body, dict):
        options = body
        uids = {k: body[k] for k in ("study_uid", "series_uid", "sop_uid") if body.get(k)}
        if uids:
            if not all(isinstance(v, str) for v in uids.values()):
                raise DomainError(400, "study_uid, series_uid and sop_uid must be strings")
            locs = index.locate(**uids)
            if not locs:
                raise DomainError(404, "no stored instance matches " +
                                  ", ".join(f"{k}={v}" for k, v in uids.items()))
            return locs, [f"{k}={v}" for k, v in uids.items()], options
        ids = _pick(body, "Resources", "resources")
        if isinstance(ids, str):
            ids = [ids]
    else:
        ids = None
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i.strip() for i in ids):
        raise DomainError(400, 'the body of /store is a list of resource IDs, {"Resources": [...]} or '
                               '{"study_uid"|"series_uid"|"sop_uid": ...}')
    ids = [i.strip() for i in ids]
    bad = [i for i in ids if not _PUBLIC_ID_RE.match(i)]
    if bad:
        raise DomainError(400, f"{bad[0]!r} is not a resource ID")
    try:
        return locate_public_ids(index, ids), ids, options
    except UnknownResource as e:
        raise DomainError(404, str(e)) from None


@router.post("/modalities/{name}/store", response_model=None, openapi_extra=_json_body_doc(
    'Resource IDs as a list or {"Resources": [...]}, or {"study_uid"|"series_uid"|"sop_uid": ...}; '
    "Asynchronous/Synchronous, Permissive, LocalAet",
    {"Resources": ["6e2c0ec2-5d99c8ca-c1c21cee-79a09605-68391d12"], "Asynchronous": True}))
@requires(Perm.DOWNLOAD, audit=AuditAction.EXPORT)
def store_to_modality(name: str, rt: RuntimeDep, body: Body, request: Request) -> dict[str, Any]:
    """Send stored patients, studies, series or instances to the peer (C-STORE), as a job."""
    peer = _peer(rt, name)
    locations, resources, options = _store_locations(rt, body)
    check_locations(request, locations)
    synchronous = _synchronous(options)
    permissive = _flag(options, "Permissive", "permissive", default=False)
    calling = _calling_aet(rt, options)
    failure: dict[str, bool] = {}

    def run(ctx: JobContext) -> dict[str, Any]:
        try:
            report = scu.store(rt.archive, peer, calling, locations, progress=ctx.report)
        except scu.PeerError as e:
            failure["timeout"] = isinstance(e, scu.PeerTimeout)
            raise
        content = {
            "Description": "REST API", "LocalAet": calling, "RemoteAet": peer.aet, "ParentResources": resources,
            "InstancesCount": len(locations), "FailedInstancesCount": report.failed, **report.as_dict(),
        }
        if report.failed and not permissive:
            first = report.failures[0]
            raise scu.PeerError(f"{peer.aet} refused {report.failed} of {len(locations)} instances "
                                f"(first: {first['sop_instance_uid']} status {first['status']} {first['comment']})"
                                .strip())
        return content

    params = {"modality": peer.name, "remote_aet": peer.aet, "resources": resources, "instances": len(locations)}
    job_id = rt.jobs.submit(STORE_JOB, params, run)
    return _job_answer(rt, job_id, synchronous, failure)


@router.post("/modalities/{name}/move", response_model=None, openapi_extra=_json_body_doc(
    "Level, Resources (identifiers with the level's unique key), TargetAet (default: Voxa), "
    "Asynchronous/Synchronous, Permissive, LocalAet",
    {"Level": "Study", "Resources": [{"StudyInstanceUID": "1.2.3"}], "Asynchronous": True}))
@requires(Perm.UPLOAD, audit=AuditAction.RETRIEVE)
def move_from_modality(name: str, rt: RuntimeDep, body: Body) -> dict[str, Any]:
    """Ask the peer to C-MOVE resources to ``TargetAet`` (default: Voxa itself), as a job."""
    peer = _peer(rt, name)
    req = _object(body, "a move")
    level = _level(_pick(req, "Level", "level"))
    raw = _pick(req, "Resources", "resources")
    if not isinstance(raw, list) or not raw:
        raise DomainError(400, "Resources must be a non-empty list of objects such as "
                               '{"StudyInstanceUID": "..."}')
    resources = [_identifiers(r, "each resource") for r in raw]
    unique = _UNIQUE_KEY[level]
    if any(not r.get(unique) for r in resources):
        raise DomainError(400, f"each resource of a {level.lower()}-level move needs its {unique}")
    target = _pick(req, "TargetAet", "target_aet") or rt.settings.aet
    try:
        target = validate_ae_title(target) if isinstance(target, str) else None
    except InvalidIdentifier as e:
        raise DomainError(400, str(e)) from None
    if target is None:
        raise DomainError(400, "TargetAet must be an AE title")
    synchronous = _synchronous(req)
    permissive = _flag(req, "Permissive", "permissive", default=False)
    calling = _calling_aet(rt, req)
    failure: dict[str, bool] = {}

    def run(ctx: JobContext) -> dict[str, Any]:
        totals = {"completed": 0, "failed": 0, "warning": 0}
        n = len(resources)
        for i, ident in enumerate(resources):
            def progress(_stage: str, percent: float, i: int = i) -> None:
                ctx.report("retrieving", (i + percent / 100.0) * 100.0 / n)

            try:
                counts = scu.move(peer, calling, target, level, ident, patient_root=level == "PATIENT",
                                  progress=progress)
            except scu.PeerError as e:
                failure["timeout"] = isinstance(e, scu.PeerTimeout)
                raise
            for k in totals:
                totals[k] += counts[k]
            ctx.report("retrieving", (i + 1) * 100.0 / n)
        if totals["failed"] and not permissive:
            raise scu.PeerError(f"{peer.aet} could not send {totals['failed']} instances to {target}")
        return {"Description": "REST API", "LocalAet": calling, "RemoteAet": peer.aet, "TargetAet": target,
                "Level": level, "Query": resources, **totals}

    params = {"modality": peer.name, "remote_aet": peer.aet, "target_aet": target, "level": level,
              "resources": resources}
    job_id = rt.jobs.submit(MOVE_JOB, params, run)
    return _job_answer(rt, job_id, synchronous, failure)
