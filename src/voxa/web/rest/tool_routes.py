"""Orthanc's ``/tools``: ``find``, ``lookup``, ``create-archive``, ``create-media``, ``now``.

``POST /tools/find`` takes Orthanc's body (``Level``, ``Query``, ``Expand``, ``Limit``,
``Since``, ``CaseSensitive``, ``RequestedTags``) and matches in one SQL statement through the
archive's shared matcher (:mod:`voxa.archive.query`), in arrival order so that
``Since``/``Limit`` page as in Orthanc.  Matching is case-insensitive unless
``"CaseSensitive": true`` (Orthanc's default); keys the index does not hold are matched
against the resource's first instance, as Orthanc matches them against a stored file.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydicom.datadict import dictionary_VR, keyword_for_tag
from sqlalchemy import func, select

from voxa.archive.attributes import BY_KEYWORD, PATIENT_KEYWORDS_ON_STUDY, Attribute, Kind, Level
from voxa.archive.query import Query, QueryError, build_select, has_wildcard
from voxa.security.audit import AuditAction
from voxa.security.permissions import Permission as Perm
from voxa.web.access import authenticated, requires
from voxa.web.app import DomainError
from voxa.web.deps import RuntimeDep
from voxa.web.rest.archives import archive_entries, stream_zip
from voxa.web.rest.common import BY_LEVEL, IN, SE, ST, LevelInfo, P, level_from_name, resource_path
from voxa.web.rest.resource_routes import ReaderDep, media_or_error, resources_from_body
from voxa.web.rest.resources import ResourceReader
from voxa.web.rest.tags import json_string, parse_tag
from voxa.web.routes.peers import Body

router = APIRouter(tags=["orthanc tools"])

_TABLES = {Level.PATIENT: P, Level.STUDY: ST, Level.SERIES: SE, Level.IMAGE: IN}


async def raw_text(request: Request) -> str:
    raw = await request.body()
    try:
        return raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise DomainError(400, "the body must be UTF-8 text") from None


RawText = Annotated[str, Depends(raw_text)]


# -- matching ------------------------------------------------------------------------------------------


def _wildcard_regex(pattern: str, case_sensitive: bool) -> re.Pattern[str]:
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(body, 0 if case_sensitive else re.IGNORECASE | re.DOTALL)


def value_matches(value: str, pattern: str, *, vr: str = "", case_sensitive: bool = False) -> bool:
    """DICOM matching of one stored value (``\\``-separated values: any) against one constraint."""
    stored = value.split("\\") if value else [""]
    for p in pattern.split("\\"):
        if vr in ("DA", "TM", "DT") and "-" in p:
            lo, _, hi = p.partition("-")
            if any(v and (not lo or v >= lo) and (not hi or v[:len(hi)] <= hi) for v in stored):
                return True
        elif has_wildcard(p):
            regex = _wildcard_regex(p, case_sensitive)
            if any(regex.fullmatch(v) for v in stored):
                return True
        elif any((v == p) if case_sensitive else (v.lower() == p.lower()) for v in stored):
            return True
    return False


def _column(attr: Attribute, level: Level) -> Any:
    table = _TABLES[attr.level]
    if attr.level is Level.PATIENT and attr.keyword in PATIENT_KEYWORDS_ON_STUDY and level is not Level.PATIENT:
        table = ST
    return table.c[attr.column]


def _constraints(query: Any) -> dict[str, tuple[str, str]]:
    """keyword -> (value, VR) of the non-universal constraints of Orthanc's ``Query`` object."""
    if not isinstance(query, dict):
        raise DomainError(400, 'Field "Query" is missing, or should be a JSON object')
    out: dict[str, tuple[str, str]] = {}
    for key, value in query.items():
        tag = parse_tag(str(key))
        keyword = keyword_for_tag(tag) if tag is not None else None
        if tag is None or not keyword:
            raise DomainError(400, f"{key!r} is not a DICOM keyword or tag")
        if isinstance(value, list):
            value = "\\".join(str(v) for v in value)
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise DomainError(400, f"the constraint on {key} must be a string")
        text = str(value)
        if text.strip() in ("", "*"):
            continue
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            vr = ""
        out[keyword] = (text, vr)
    return out


def find_row_ids(reader: ResourceReader, info: LevelInfo, query: Any, *, case_sensitive: bool = False,
                 since: int = 0, limit: int = 0) -> list[int]:
    """Row ids of the resources at ``info``'s level matching Orthanc's ``Query``, in arrival order."""
    level = info.level
    indexed: dict[str, str] = {}
    checked: dict[str, tuple[str, str]] = {}  # re-checked case-sensitively on the values returned
    by_file: dict[str, tuple[str, str]] = {}  # matched against the first instance's DICOM JSON
    conditions: list[Any] = []
    for keyword, (value, vr) in _constraints(query).items():
        attr = BY_KEYWORD.get(keyword)
        if keyword == "Modality" and level is Level.STUDY:
            attr = BY_KEYWORD["ModalitiesInStudy"]
        if attr is not None and attr.kind is Kind.COUNT:
            continue
        if attr is None or attr.level.depth > level.depth:
            by_file[keyword] = (value, vr)
            continue
        across_studies = level is Level.PATIENT and attr.level is not Level.PATIENT
        if attr.kind is Kind.TEXT and not has_wildcard(value) and not case_sensitive and not across_studies:
            # the shared matcher compares text exactly; Orthanc's default is case-insensitive
            conditions.append(func.lower(_column(attr, level)).in_([v.lower() for v in value.split("\\")]))
            continue
        indexed[keyword] = value
        if case_sensitive and attr.kind in (Kind.TEXT, Kind.PN) and not across_studies:
            checked[keyword] = (value, vr)
    try:
        stmt = build_select(Query(level, indexed, return_keys=list(checked), access=reader.access))
    except QueryError as e:
        raise DomainError(400, str(e)) from None
    table = info.table
    stmt = stmt.where(*conditions) if conditions else stmt
    stmt = stmt.order_by(None).order_by(table.c.id)
    post = bool(checked or by_file)
    if not post:
        if since:
            stmt = stmt.offset(since)
        if limit:
            stmt = stmt.limit(limit)
    with reader.index.read() as conn:
        rows = conn.execute(stmt).all()
    ids: list[int] = []
    for r in rows:
        m = r._mapping
        if all(value_matches(str(m.get(k) or ""), v, vr=vr, case_sensitive=True) for k, (v, vr) in checked.items()):
            ids.append(int(m["_row_id"]))
    if by_file and ids:
        metadata = reader.first_instance_metadata(info, ids)
        kept = []
        for rid in ids:
            meta = metadata.get(rid, {})
            ok = True
            for keyword, (value, vr) in by_file.items():
                tag = parse_tag(keyword)
                element = meta.get(f"{tag:08X}") if tag is not None else None
                text = json_string(element) if element is not None else None
                if text is None or not value_matches(text, value, vr=vr, case_sensitive=case_sensitive):
                    ok = False
                    break
            if ok:
                kept.append(rid)
        ids = kept
    if post:
        ids = ids[since:]
        if limit:
            ids = ids[:limit]
    return ids


def _int(body: dict[str, Any], name: str) -> int:
    value = body.get(name, 0)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).strip().isdigit():
        raise DomainError(400, f"{name} must be a non-negative integer")
    return int(value)


@router.post("/tools/find", response_model=None, openapi_extra={"requestBody": {"content": {"application/json": {
    "schema": {}, "example": {"Level": "Study", "Query": {"PatientName": "DOE*", "StudyDate": "20240101-"},
                              "Expand": True, "Limit": 100}}}}})
@requires(Perm.VIEW_STUDY_LIST, audit=AuditAction.QUERY)
def tools_find(reader: ReaderDep, body: Body) -> JSONResponse:
    """Orthanc's find: resource IDs matching ``Query`` at ``Level`` (``Expand``: full objects)."""
    if not isinstance(body, dict):
        raise DomainError(400, "the body of /tools/find must be a JSON object")
    info = level_from_name(body.get("Level"))
    case_sensitive = body.get("CaseSensitive", False)
    if not isinstance(case_sensitive, bool):
        raise DomainError(400, "CaseSensitive must be true or false")
    requested = body.get("RequestedTags") or []
    if not isinstance(requested, list) or not all(isinstance(t, str) for t in requested):
        raise DomainError(400, "RequestedTags must be a list of DICOM keywords or tags")
    labels = body.get("Labels") or []
    if labels and str(body.get("LabelsConstraint", "All")) != "None":
        return JSONResponse([])  # Voxa has no labels: no resource carries the ones asked for
    ids = find_row_ids(reader, info, body.get("Query"), case_sensitive=case_sensitive,
                       since=_int(body, "Since"), limit=_int(body, "Limit"))
    if body.get("Expand"):
        return JSONResponse(reader.expand(info, ids, requested))
    return JSONResponse(reader.public_ids(info, ids))


@router.post("/tools/lookup", response_model=None, openapi_extra={"requestBody": {"content": {"text/plain": {
    "schema": {"type": "string"}, "example": "1.2.840.113619.2.1.1"}}}})
@requires(Perm.VIEW_STUDY_LIST, audit=AuditAction.QUERY)
def tools_lookup(reader: ReaderDep, text: RawText) -> list[dict[str, str]]:
    """Resources whose PatientID, StudyInstanceUID, AccessionNumber, SeriesInstanceUID or
    SOPInstanceUID is the body."""
    if not text:
        raise DomainError(400, "the body is the identifier to look up")
    found: list[tuple[LevelInfo, str]] = []
    with reader.index.read() as conn:
        for level, condition in ((Level.PATIENT, P.c.patient_id == text),
                                 (Level.STUDY, (ST.c.study_instance_uid == text) | (ST.c.accession_number == text)),
                                 (Level.SERIES, SE.c.series_instance_uid == text),
                                 (Level.IMAGE, IN.c.sop_instance_uid == text)):
            info = BY_LEVEL[level]
            visible = reader.visible(info)
            q = select(info.table.c.public_id).where(condition)
            if visible is not None:
                q = q.where(visible)
            for public_id in conn.execute(q.order_by(info.table.c.id)).scalars():
                found.append((info, public_id))
    return [{"ID": pid, "Path": resource_path(info, pid), "Type": info.name} for info, pid in found]


def _zip_response(reader: ResourceReader, rt: Any, body: Any, *, media: bool) -> StreamingResponse:
    if isinstance(body, dict) and (body.get("Asynchronous") or body.get("Synchronous") is False):
        raise DomainError(400, "Voxa streams archives synchronously; leave out Asynchronous")
    entries = archive_entries(rt.archive.index, resources_from_body(reader, body))
    extra: dict[str, bytes] = {}
    if media:
        dicomdir, entries = media_or_error(rt, entries)
        extra["DICOMDIR"] = dicomdir
    return StreamingResponse(stream_zip(rt.archive.blobs, entries, extra), media_type="application/zip",
                             headers={"Content-Disposition": 'attachment; filename="Archive.zip"'})


@router.post("/tools/create-archive", response_model=None)
@requires(Perm.DOWNLOAD, audit=AuditAction.EXPORT)
def create_archive(rt: RuntimeDep, reader: ReaderDep, body: Body) -> StreamingResponse:
    """A ZIP of several resources: ``{"Resources": [IDs]}`` or a list of IDs (streamed)."""
    return _zip_response(reader, rt, body, media=False)


@router.post("/tools/create-media", response_model=None)
@requires(Perm.DOWNLOAD, audit=AuditAction.EXPORT)
def create_media(rt: RuntimeDep, reader: ReaderDep, body: Body) -> StreamingResponse:
    """A ZIP with a DICOMDIR of several resources (streamed)."""
    return _zip_response(reader, rt, body, media=True)


@router.get("/tools/now", response_class=PlainTextResponse)
@authenticated
def tools_now() -> str:
    """The server's time in UTC, Orthanc's format (``20240131T235959``)."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")


@router.get("/tools/now-local", response_class=PlainTextResponse)
@authenticated
def tools_now_local() -> str:
    return dt.datetime.now().strftime("%Y%m%dT%H%M%S")
