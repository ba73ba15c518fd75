"""QIDO-RS (PS3.18 10.6): search for studies, series and instances, answered from the index.

Matching is :mod:`voxa.archive.query`'s (the same as C-FIND).  Parameters name attributes by
keyword or tag (``PatientName=...``, ``00100010=...``); ``includefield`` is repeated or a
comma-separated list (OHIF) of keywords or tags, or ``all``; ``fuzzymatching=true`` widens
person-name matching; ``limit``/``offset`` page through results, with a server maximum.
Attributes the index does not keep are not matched (a ``Warning`` header says so) and not
returned; an unknown parameter name or a malformed value is answered with 400.
"""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydicom.datadict import keyword_for_tag, tag_for_keyword

from voxa.archive.attributes import ATTRIBUTES, BY_KEYWORD, PATIENT_KEYWORDS_ON_STUDY, Attribute, Kind, Level
from voxa.archive.query import Match, Query, QueryError, run_query
from voxa.security.audit import AuditAction
from voxa.security.permissions import Permission as Perm
from voxa.web.access import current_principal, note_access, requires
from voxa.web.app import DomainError
from voxa.web.deps import RuntimeDep
from voxa.web.dicomweb.common import (
    QIDO_MAX_RESULTS,
    dicomweb_root,
    instance_url,
    series_url,
    setting,
    study_url,
)
from voxa.web.dicomweb.media import DICOM_JSON, parse_accept
from voxa.web.teaching import teaching_json

router = APIRouter()

_TAG_RE = re.compile(r"^[0-9A-Fa-f]{8}$")
_CONTROL = frozenset({"limit", "offset", "fuzzymatching", "includefield", "accept", "charset"})

# PS3.18 Table 10.6.3-3/-4/-5 defaults that the index keeps (plus StudyDescription, which
# every study browser shows).  Higher-level defaults are added when the URL does not fix them.
_DEFAULTS: dict[Level, tuple[str, ...]] = {
    Level.STUDY: ("StudyDate", "StudyTime", "AccessionNumber", "ModalitiesInStudy", "ReferringPhysicianName",
                  "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID",
                  "StudyDescription", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"),
    Level.SERIES: ("Modality", "SeriesDescription", "SeriesInstanceUID", "SeriesNumber",
                   "NumberOfSeriesRelatedInstances", "PerformedProcedureStepStartDate",
                   "PerformedProcedureStepStartTime", "StudyInstanceUID"),
    Level.IMAGE: ("SOPClassUID", "SOPInstanceUID", "InstanceNumber", "Rows", "Columns", "NumberOfFrames",
                  "StudyInstanceUID", "SeriesInstanceUID"),
}
_TAG_OF: dict[str, str] = {a.keyword: f"{a.tag:08X}" for a in ATTRIBUTES}
_RETRIEVE_URL, _AVAILABILITY = "00081190", "00080056"


def _keyword(name: str) -> str | None:
    """The DICOM keyword a parameter or includefield names (keyword, tag, or tag path: its
    first element), or None when it names no attribute."""
    head = name.split(".", 1)[0].strip()
    if _TAG_RE.match(head):
        return keyword_for_tag(int(head, 16)) or None
    return head if tag_for_keyword(head) is not None else None


# Series-level keys a study search may name: the studies with at least one matching series.
SERIES_KEYS_FOR_STUDIES = frozenset({"BodyPartExamined", "SeriesDescription", "ProtocolName"})


def _indexed(keyword: str, level: Level) -> Attribute | None:
    if level is Level.STUDY and keyword == "Modality":
        return BY_KEYWORD["ModalitiesInStudy"]
    attr = BY_KEYWORD.get(keyword)
    if attr is None or attr.level.depth > level.depth:
        return None
    if attr.level is Level.PATIENT and attr.keyword not in PATIENT_KEYWORDS_ON_STUDY:
        return None  # NumberOfPatientRelated*: PATIENT level only, which QIDO-RS does not have
    return attr


def _parse_bool(name: str, value: str) -> bool:
    v = value.strip().lower()
    if v in ("true", "1", "yes", ""):
        return True
    if v in ("false", "0", "no"):
        return False
    raise DomainError(400, f"{name}={value!r}: expected true or false")


def _parse_int(name: str, value: str, minimum: int) -> int:
    try:
        n = int(value.strip())
    except ValueError:
        raise DomainError(400, f"{name}={value!r} is not an integer") from None
    if n < minimum:
        raise DomainError(400, f"{name}={value!r} must be at least {minimum}")
    return n


def build_query(request: Request, level: Level, fixed: dict[str, str],
                extra_defaults: tuple[Level, ...] = ()) -> tuple[Query, list[str], list[str], int | None]:
    """The :class:`Query` a QIDO-RS request asks for, the keywords to return, the ignored
    attributes, and the client's own limit (None when not given)."""
    filters: dict[str, str] = {}
    include: set[str] = set(_DEFAULTS[level])
    for lvl in extra_defaults:
        include.update(_DEFAULTS[lvl])
    ignored: list[str] = []
    fuzzy = False
    limit: int | None = None
    offset = 0
    seen: set[str] = set()
    for name, value in request.query_params.multi_items():
        lname = name.lower()
        if lname in _CONTROL:
            if lname == "limit":
                limit = _parse_int("limit", value, 1)
            elif lname == "offset":
                offset = _parse_int("offset", value, 0)
            elif lname == "fuzzymatching":
                fuzzy = _parse_bool("fuzzymatching", value)
            elif lname == "includefield":
                for item in value.split(","):
                    item = item.strip()
                    if not item:
                        continue
                    if item.lower() == "all":
                        include.update(a.keyword for a in ATTRIBUTES if _indexed(a.keyword, level))
                        continue
                    kw = _keyword(item)
                    if kw is None:
                        raise DomainError(400, f"includefield={item!r} is not a DICOM keyword or tag")
                    include.add(kw)
            continue  # accept / charset: the answer is always UTF-8 DICOM JSON
        if name.startswith("_"):
            continue  # cache busters (`_=1700000000`) some browsers' clients add
        kw = _keyword(name)
        if kw is None:
            raise DomainError(400, f"unknown query parameter {name!r}: not a DICOM keyword or tag, nor one of "
                                   f"{', '.join(sorted(_CONTROL))}")
        if "." in name:
            ignored.append(name)  # sequence matching is not supported
            continue
        if kw in seen:
            raise DomainError(400, f"{name} is given more than once")
        seen.add(kw)
        if kw in fixed:
            continue  # the URL names it already
        attr = _indexed(kw, level)
        if attr is None and level is Level.STUDY and kw in SERIES_KEYS_FOR_STUDIES:
            filters[kw] = value  # matched against the study's series, not returned
            continue
        if attr is None:
            ignored.append(kw)
            continue
        if attr.kind is Kind.COUNT:
            ignored.append(kw)
            continue
        filters[kw] = value
        include.add(kw)
    filters.update(fixed)
    return_keys = sorted(k for k in include if _indexed(k, level) is not None)
    return (Query(level=level, filters=filters, return_keys=return_keys, fuzzy=fuzzy, offset=offset,
                  match_series=level is Level.STUDY), return_keys, ignored, limit)


def _element(attr: Attribute, value: Any) -> dict[str, Any]:
    vr = attr.vr
    if value is None or value == "":
        return {"vr": vr}
    if attr.kind in (Kind.INT, Kind.COUNT):
        return {"vr": vr, "Value": [int(value)]}
    text = str(value)
    if vr == "PN":
        out: list[Any] = []
        for v in text.split("\\"):
            groups = v.split("=")
            item = {"Alphabetic": groups[0]} if groups[0] else {}
            if len(groups) > 1 and groups[1]:
                item["Ideographic"] = groups[1]
            if len(groups) > 2 and groups[2]:
                item["Phonetic"] = groups[2]
            out.append(item or None)
        return {"vr": vr, "Value": out}
    return {"vr": vr, "Value": text.split("\\")}


def match_json(m: Match, level: Level, root: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kw, value in m.values.items():
        attr = BY_KEYWORD.get(kw)
        if attr is None:
            continue
        out[_TAG_OF[kw]] = _element(attr, value)
    v = m.values
    study, series, sop = v.get("StudyInstanceUID"), v.get("SeriesInstanceUID"), v.get("SOPInstanceUID")
    url = None
    if level is Level.STUDY and study:
        url = study_url(root, study)
    elif level is Level.SERIES and study and series:
        url = series_url(root, study, series)
    elif level is Level.IMAGE and study and series and sop:
        url = instance_url(root, study, series, sop)
    if url:
        out[_RETRIEVE_URL] = {"vr": "UR", "Value": [url]}
    out[_AVAILABILITY] = {"vr": "CS", "Value": ["ONLINE"]}
    return dict(sorted(out.items()))


def _check_accept(request: Request) -> None:
    for r in parse_accept(request.headers.get("accept")):
        if not r.multipart and (r.matches(DICOM_JSON) or r.matches("application/json")):
            return
    raise DomainError(406, "search results are available as application/dicom+json only")


def search(request: Request, rt: Any, level: Level, fixed: dict[str, str],
           extra_defaults: tuple[Level, ...] = ()) -> Response:
    _check_accept(request)
    q, _keys, ignored, client_limit = build_query(request, level, fixed, extra_defaults)
    cap = int(setting(request, "qido_max_results", QIDO_MAX_RESULTS))
    limit = min(client_limit, cap) if client_limit is not None else cap
    q.limit = limit + 1  # one more tells whether results were cut
    principal = current_principal(request)
    q.access = principal.access
    try:
        matches = run_query(rt.archive.index, q)
    except QueryError as e:
        raise DomainError(400, str(e)) from None
    headers: dict[str, str] = {}
    warnings: list[str] = []
    host = request.url.hostname or "voxa"
    if len(matches) > limit:
        matches = matches[:limit]
        if client_limit is None or client_limit > cap:
            warnings.append(f'299 {host}: "The number of results exceeded the maximum supported by the server '
                            f'({cap}). Additional results can be requested."')
    if ignored:
        names = ", ".join(sorted(set(ignored)))
        warnings.append(f'299 {host}: "The following attributes are not supported for matching and were '
                        f'ignored: {names}"')
    if warnings:
        headers["Warning"] = ", ".join(warnings)
    note_access(request, patient_ids=[str(m.values.get("PatientID") or "") for m in matches],
                study_uids=[str(m.values.get("StudyInstanceUID") or "") for m in matches],
                detail={"keys": sorted(q.filters), "matches": len(matches)})
    root = dicomweb_root(request)
    results = [match_json(m, level, root) for m in matches]
    if principal.teaching_only:
        results = [teaching_json(request, r) for r in results]
    body = json.dumps(results, separators=(",", ":"), ensure_ascii=False)
    return Response(body.encode("utf-8"), media_type=DICOM_JSON, headers=headers)


@router.get("/studies", summary="QIDO-RS: search for studies")
@requires(Perm.VIEW_STUDY_LIST, Perm.VIEW_IMAGES, Perm.TEACHING_VIEW, audit=AuditAction.QUERY)
def search_studies(request: Request, rt: RuntimeDep) -> Response:
    return search(request, rt, Level.STUDY, {})


@router.get("/series", summary="QIDO-RS: search for series in all studies")
@requires(Perm.VIEW_STUDY_LIST, Perm.VIEW_IMAGES, Perm.TEACHING_VIEW, audit=AuditAction.QUERY)
def search_all_series(request: Request, rt: RuntimeDep) -> Response:
    return search(request, rt, Level.SERIES, {}, (Level.STUDY,))


@router.get("/instances", summary="QIDO-RS: search for instances in all studies")
@requires(Perm.VIEW_STUDY_LIST, Perm.VIEW_IMAGES, Perm.TEACHING_VIEW, audit=AuditAction.QUERY)
def search_all_instances(request: Request, rt: RuntimeDep) -> Response:
    return search(request, rt, Level.IMAGE, {}, (Level.STUDY, Level.SERIES))


@router.get("/studies/{study}/series", summary="QIDO-RS: search for series in a study")
@requires(Perm.VIEW_STUDY_LIST, Perm.VIEW_IMAGES, Perm.TEACHING_VIEW, audit=AuditAction.QUERY)
def search_series(study: str, request: Request, rt: RuntimeDep) -> Response:
    return search(request, rt, Level.SERIES, {"StudyInstanceUID": study})


@router.get("/studies/{study}/instances", summary="QIDO-RS: search for instances in a study")
@requires(Perm.VIEW_STUDY_LIST, Perm.VIEW_IMAGES, Perm.TEACHING_VIEW, audit=AuditAction.QUERY)
def search_study_instances(study: str, request: Request, rt: RuntimeDep) -> Response:
    return search(request, rt, Level.IMAGE, {"StudyInstanceUID": study}, (Level.SERIES,))


@router.get("/studies/{study}/series/{series}/instances", summary="QIDO-RS: search for instances in a series")
@requires(Perm.VIEW_STUDY_LIST, Perm.VIEW_IMAGES, Perm.TEACHING_VIEW, audit=AuditAction.QUERY)
def search_series_instances(study: str, series: str, request: Request, rt: RuntimeDep) -> Response:
    return search(request, rt, Level.IMAGE, {"StudyInstanceUID": study, "SeriesInstanceUID": series})


__all__ = ["router", "build_query", "match_json"]
