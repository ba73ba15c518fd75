"""STOW-RS (PS3.18 10.5): store instances sent as ``multipart/related; type="application/dicom"``.

The body is parsed as it arrives; each part goes through :meth:`Archive.ingest` (the one
ingest path, ``source="stow"``) in a worker thread, so memory holds about one part and the
event loop never blocks.  The answer is the Store Instances Response Module as DICOM JSON:

* 200 when every instance was stored; 202 when some were stored and others failed or
  carry a warning (an instance already held, kept as it was); 409 when none was stored;
* 400 for a body that is not a readable multipart message, 415 for another media type
  (a bare ``application/dicom`` body is accepted as one instance).

Failure reasons (0008,1197): A700 out of resources, A900 the instance belongs to another
study than ``POST /studies/{study}`` names, C000 cannot understand (not DICOM, corrupt,
missing or invalid attributes, conflicts with stored data), C122 transfer syntax not
supported, 0111 duplicate refused (``duplicate_policy=reject``), 0110 processing failure.
Warning reason (0008,1196) B000 for a duplicate that was kept, the code the DIMSE path
answers for it.  Each failure or warning also goes into a ``Warning`` header with its text.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from typing import Any

import pydicom
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from voxa.archive.ingest import IngestResult, Outcome, RefusalCode, as_part10
from voxa.security.audit import AuditAction
from voxa.security.permissions import Permission as Perm
from voxa.web.access import note_access, requires
from voxa.web.app import DomainError
from voxa.web.deps import RuntimeDep
from voxa.web.dicomweb.common import STOW_MAX_PART_MB, dicomweb_root, instance_url, setting, study_url
from voxa.web.dicomweb.media import DICOM, DICOM_JSON, MULTIPART, content_type_params
from voxa.web.dicomweb.multipart import MultipartError, MultipartReader, Part

log = logging.getLogger(__name__)
router = APIRouter()

OUT_OF_RESOURCES = 0xA700
STUDY_MISMATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000
TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122
DUPLICATE_REFUSED = 0x0111
PROCESSING_FAILURE = 0x0110
WARNING_DUPLICATE_KEPT = 0xB000

_FAILURE_OF = {
    RefusalCode.STORAGE_FULL: OUT_OF_RESOURCES,
    RefusalCode.STORAGE_ERROR: OUT_OF_RESOURCES,
    RefusalCode.SOP_MISMATCH: STUDY_MISMATCH,
    RefusalCode.UNSUPPORTED_TRANSFER_SYNTAX: TRANSFER_SYNTAX_NOT_SUPPORTED,
    RefusalCode.DUPLICATE_REJECTED: DUPLICATE_REFUSED,
}


@dataclass
class PartOutcome:
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    stored: bool
    failure: int | None = None
    warning: int | None = None
    reason: str = ""


def _peek_uids(data: bytes) -> dict[str, str]:
    """SOP class/instance and study/series UIDs, read from the header only (best effort)."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True,
                             specific_tags=["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID",
                                            "SeriesInstanceUID"])
        return {kw: str(ds.get(kw, "") or "").strip("\0 ") for kw in
                ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")}
    except Exception:  # noqa: BLE001 - ingest reports what is wrong with the part
        return {}


def store_part(rt: Any, part: Part, study: str | None) -> PartOutcome:
    """Ingest one part (runs in a worker thread)."""
    media, _params = content_type_params(part.content_type or DICOM)
    if media != DICOM:
        return PartOutcome("", "", "", "", False, CANNOT_UNDERSTAND,
                           reason=f"part of type {media!r}: only application/dicom parts are stored")
    part = Part(part.headers, as_part10(part.body))
    if study is not None:
        uids = _peek_uids(part.body)
        found = uids.get("StudyInstanceUID")
        if found and found != study:
            return PartOutcome(uids.get("SOPClassUID", ""), uids.get("SOPInstanceUID", ""), found,
                               uids.get("SeriesInstanceUID", ""), False, STUDY_MISMATCH,
                               reason=f"instance belongs to study {found}, not to {study} named in the URL")
    result: IngestResult = rt.archive.ingest(part.body, source="stow")
    if result.outcome is Outcome.REFUSED:
        uids = _peek_uids(part.body)
        code = _FAILURE_OF.get(result.code, CANNOT_UNDERSTAND) if result.code else PROCESSING_FAILURE
        return PartOutcome(uids.get("SOPClassUID", ""), uids.get("SOPInstanceUID", ""),
                           uids.get("StudyInstanceUID", ""), uids.get("SeriesInstanceUID", ""), False, code,
                           reason=result.reason)
    out = PartOutcome(result.sop_class_uid, result.sop_instance_uid, result.study_instance_uid,
                      result.series_instance_uid, True)
    if result.outcome is Outcome.DUPLICATE:
        out.warning = WARNING_DUPLICATE_KEPT
        out.reason = result.reason
    return out


def _ui(value: str) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}


def response_json(outcomes: list[PartOutcome], root: str, study: str | None) -> dict[str, Any]:
    referenced, failed = [], []
    for o in outcomes:
        item: dict[str, Any] = {"00081150": _ui(o.sop_class_uid), "00081155": _ui(o.sop_instance_uid)}
        if o.stored:
            item["00081190"] = {"vr": "UR", "Value": [instance_url(root, o.study_instance_uid,
                                                                   o.series_instance_uid, o.sop_instance_uid)]}
            if o.warning is not None:
                item["00081196"] = {"vr": "US", "Value": [o.warning]}
            referenced.append(dict(sorted(item.items())))
        else:
            item["00081197"] = {"vr": "US", "Value": [o.failure or PROCESSING_FAILURE]}
            failed.append(dict(sorted(item.items())))
    body: dict[str, Any] = {}
    studies = {o.study_instance_uid for o in outcomes if o.stored}
    target = study or (next(iter(studies)) if len(studies) == 1 else None)
    if target:
        body["00081190"] = {"vr": "UR", "Value": [study_url(root, target)]}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    if referenced:
        body["00081199"] = {"vr": "SQ", "Value": referenced}
    return body


def _warning_header(outcomes: list[PartOutcome], host: str) -> str:
    notes = []
    for n, o in enumerate(outcomes, 1):
        if o.failure is not None or o.warning is not None:
            code = o.failure if o.failure is not None else o.warning
            text = f"part {n} ({o.sop_instance_uid or 'unknown SOP Instance UID'}): {code:04X} {o.reason}"
            notes.append('299 {}: "{}"'.format(host, text.replace('"', "'").replace("\r", " ").replace("\n", " ")))
    return ", ".join(notes[:50])


async def store(request: Request, rt: Any, study: str | None) -> Response:
    media, params = content_type_params(request.headers.get("content-type"))
    outcomes: list[PartOutcome] = []
    if media == DICOM:
        body = await request.body()
        if not body:
            raise DomainError(400, "the request body is empty")
        outcomes.append(await run_in_threadpool(store_part, rt, Part({"content-type": DICOM}, body), study))
    elif media == MULTIPART:
        inner = params.get("type", "").lower()
        if inner and inner != DICOM:
            raise DomainError(415, f"STOW-RS accepts multipart/related; type=\"application/dicom\" (not {inner}: "
                                   "metadata with separate bulk data is not supported)")
        boundary = params.get("boundary")
        if not boundary:
            raise DomainError(400, "the multipart Content-Type has no boundary")
        max_part = int(setting(request, "stow_max_part_mb", STOW_MAX_PART_MB)) * 1024 * 1024
        try:
            reader = MultipartReader(boundary, max_part)
            async for chunk in request.stream():
                for part in reader.feed(chunk):
                    outcomes.append(await run_in_threadpool(store_part, rt, part, study))
            reader.finish()
        except MultipartError as e:
            if outcomes:
                log.warning("STOW-RS: %s after %d stored part(s)", e, len(outcomes))
            raise DomainError(400, f"malformed multipart body: {e}"
                                   + (f" ({len(outcomes)} part(s) before it were processed)" if outcomes else "")
                              ) from None
    else:
        what = media or "a body without Content-Type"
        raise DomainError(415, f'STOW-RS accepts multipart/related; type="application/dicom", not {what}')
    if not outcomes:
        raise DomainError(400, "the request contains no instance")
    stored = [o for o in outcomes if o.stored]
    note_access(request, study_uids=[o.study_instance_uid for o in stored],
                detail={"instances": len(outcomes), "stored": len(stored)})
    if not stored:
        status = 409
    elif len(stored) == len(outcomes) and all(o.warning is None for o in stored):
        status = 200
    else:
        status = 202
    headers: dict[str, str] = {}
    warning = _warning_header(outcomes, request.url.hostname or "voxa")
    if warning:
        headers["Warning"] = warning
    answer = response_json(outcomes, dicomweb_root(request), study)
    return Response(json.dumps(answer, separators=(",", ":")).encode(), status_code=status,
                    media_type=DICOM_JSON, headers=headers)


@router.post("/studies", summary="STOW-RS: store instances")
@requires(Perm.UPLOAD, audit=AuditAction.STORE)
async def store_instances(request: Request, rt: RuntimeDep) -> Response:
    return await store(request, rt, None)


@router.post("/studies/{study}", summary="STOW-RS: store instances of one study")
@requires(Perm.UPLOAD, audit=AuditAction.STORE)
async def store_study_instances(study: str, request: Request, rt: RuntimeDep) -> Response:
    return await store(request, rt, study)
