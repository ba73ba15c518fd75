"""``/patients``, ``/studies``, ``/series``, ``/instances``: lists, one resource, its relatives,
statistics, archives, and deletion -- the same routes at every level, as in Orthanc."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse, StreamingResponse

from voxa.archive.attributes import Level
from voxa.archive.index import NotFound
from voxa.security.audit import AuditAction
from voxa.security.permissions import Permission as Perm
from voxa.web.access import PrincipalDep, requires
from voxa.web.app import DomainError
from voxa.web.deps import RuntimeDep
from voxa.web.rest.archives import archive_entries, download_name, media_entries, stream_zip
from voxa.web.rest.common import (
    BY_LEVEL,
    INSTANCES,
    LEVELS,
    PATIENTS,
    SERIES,
    STUDIES,
    LevelInfo,
    flag,
    int_arg,
    resource_path,
    split_tags_arg,
)
from voxa.web.rest.resources import ResourceReader

router = APIRouter(tags=["orthanc resources"])


def get_reader(rt: RuntimeDep, principal: PrincipalDep) -> ResourceReader:
    """A reader limited to what the caller may see."""
    return ResourceReader(rt.archive.index, rt.archive.blobs, principal.access)


ReaderDep = Annotated[ResourceReader, Depends(get_reader)]
ExpandArg = Annotated[str | None, Query(description="Full objects instead of IDs (Orthanc's ?expand).")]
SinceArg = Annotated[str | None, Query(description="Skip this many resources (with limit: paging).")]
LimitArg = Annotated[str | None, Query(description="At most this many resources.")]
RequestedTagsArg = Annotated[str | None, Query(alias="requestedTags",
                                               description="Extra tags to report, separated by ';'.")]


def _json(content: Any) -> JSONResponse:
    return JSONResponse(content)


# -- route factories (one set per level) ---------------------------------------------------------


def _add_list(info: LevelInfo) -> None:
    @requires(Perm.VIEW_STUDY_LIST, audit=AuditAction.QUERY)
    def list_resources(reader: ReaderDep, expand: ExpandArg = None, since: SinceArg = None, limit: LimitArg = None,
                       requested_tags: RequestedTagsArg = None) -> JSONResponse:
        first = int_arg(since, "since", default=0) or 0
        count = int_arg(limit, "limit")
        row_ids = reader.list_row_ids(info, first, count)
        if flag(expand):
            return _json(reader.expand(info, row_ids, split_tags_arg(requested_tags)))
        return _json(reader.public_ids(info, row_ids))

    list_resources.__doc__ = (f"The {info.path}' IDs in the order they arrived; ``?expand``: Orthanc's full objects; "
                              "``?since=N&limit=M``: a page.")
    router.add_api_route(f"/{info.path}", list_resources, methods=["GET"], name=f"list_{info.path}",
                         response_model=None)


def _add_get(info: LevelInfo) -> None:
    @requires(Perm.VIEW_STUDY_LIST, audit=AuditAction.VIEW)
    def get_resource(id: str, reader: ReaderDep, requested_tags: RequestedTagsArg = None) -> JSONResponse:
        return _json(reader.get(info, id, split_tags_arg(requested_tags)))

    get_resource.__doc__ = f"One {info.name.lower()} as Orthanc describes it (404 when the ID is unknown)."
    router.add_api_route(f"/{info.path}/{{id}}", get_resource, methods=["GET"], name=f"get_{info.path}",
                         response_model=None)


def _add_delete(info: LevelInfo) -> None:
    @requires(Perm.DELETE, audit=AuditAction.DELETE)
    def delete_resource(id: str, rt: RuntimeDep, reader: ReaderDep) -> JSONResponse:
        lineage = reader.lineage(info, id)
        try:
            rt.archive.delete(info.level, lineage[info.level])
        except NotFound:
            raise DomainError(404, f"no {info.name.lower()} with ID {id}") from None
        remaining = None
        for parent in reversed([i for i in LEVELS if i.level.depth < info.level.depth]):
            public_id = lineage[parent.level]
            try:
                reader.row_id(parent, public_id)
            except DomainError:
                continue
            remaining = {"ID": public_id, "Path": resource_path(parent, public_id), "Type": parent.name}
            break
        return _json({"RemainingAncestor": remaining})

    delete_resource.__doc__ = (f"Delete a {info.name.lower()} and everything under it (stored files included); "
                               "answers Orthanc's ``RemainingAncestor``.")
    router.add_api_route(f"/{info.path}/{{id}}", delete_resource, methods=["DELETE"], name=f"delete_{info.path}",
                         response_model=None)


def _add_statistics(info: LevelInfo) -> None:
    @requires(Perm.VIEW_STUDY_LIST, audit=AuditAction.VIEW)
    def resource_statistics(id: str, reader: ReaderDep) -> JSONResponse:
        return _json(reader.statistics(info, id))

    resource_statistics.__doc__ = f"Counts and sizes of one {info.name.lower()}."
    router.add_api_route(f"/{info.path}/{{id}}/statistics", resource_statistics, methods=["GET"],
                         name=f"statistics_{info.path}", response_model=None)


def _add_children(info: LevelInfo, child: LevelInfo) -> None:
    @requires(Perm.VIEW_STUDY_LIST, audit=AuditAction.VIEW)
    def children(id: str, reader: ReaderDep, expand: ExpandArg = None,
                 requested_tags: RequestedTagsArg = None) -> JSONResponse:
        row_ids = reader.descendant_row_ids(info, reader.row_id(info, id), child)
        if expand is not None and not flag(expand):
            return _json(reader.public_ids(child, row_ids))
        return _json(reader.expand(child, row_ids, split_tags_arg(requested_tags)))

    children.__doc__ = f"The {child.path} under a {info.name.lower()}, as full objects (``?expand=false``: IDs)."
    router.add_api_route(f"/{info.path}/{{id}}/{child.path}", children, methods=["GET"],
                         name=f"{child.path}_of_{info.path}", response_model=None)


def _add_ancestor(info: LevelInfo, parent: LevelInfo) -> None:
    @requires(Perm.VIEW_STUDY_LIST, audit=AuditAction.VIEW)
    def ancestor(id: str, reader: ReaderDep) -> JSONResponse:
        return _json(reader.get(parent, reader.lineage(info, id)[parent.level]))

    singular = parent.name.lower()
    ancestor.__doc__ = f"The {singular} a {info.name.lower()} belongs to."
    router.add_api_route(f"/{info.path}/{{id}}/{singular}", ancestor, methods=["GET"],
                         name=f"{singular}_of_{info.path}", response_model=None)


def _add_archives(info: LevelInfo) -> None:
    @requires(Perm.DOWNLOAD, audit=AuditAction.EXPORT)
    def archive(id: str, rt: RuntimeDep, reader: ReaderDep) -> StreamingResponse:
        entries = archive_entries(rt.archive.index, [(info.level, reader.row_id(info, id))])
        return StreamingResponse(stream_zip(rt.archive.blobs, entries), media_type="application/zip",
                                 headers={"Content-Disposition": f'attachment; filename="{download_name(id)}"'})

    archive.__doc__ = (f"A ZIP of the {info.name.lower()}'s files, streamed, in Orthanc's folders "
                       "(PatientID Name/Accession Description/Modality Description/CT000000.dcm).")
    router.add_api_route(f"/{info.path}/{{id}}/archive", archive, methods=["GET"], name=f"archive_{info.path}",
                         response_model=None)

    @requires(Perm.DOWNLOAD, audit=AuditAction.EXPORT)
    def media(id: str, rt: RuntimeDep, reader: ReaderDep) -> StreamingResponse:
        entries = archive_entries(rt.archive.index, [(info.level, reader.row_id(info, id))])
        dicomdir, renamed = media_or_error(rt, entries)
        return StreamingResponse(stream_zip(rt.archive.blobs, renamed, {"DICOMDIR": dicomdir}),
                                 media_type="application/zip",
                                 headers={"Content-Disposition": f'attachment; filename="{download_name(id)}"'})

    media.__doc__ = f"A ZIP of the {info.name.lower()}'s files with a DICOMDIR (DICOM media, PS3.10)."
    router.add_api_route(f"/{info.path}/{{id}}/media", media, methods=["GET"], name=f"media_{info.path}",
                         response_model=None)


def media_or_error(rt: Any, entries: list[Any]) -> tuple[bytes, list[Any]]:
    try:
        return media_entries(rt.archive.index, rt.archive.blobs, entries)
    except (ValueError, KeyError, AttributeError) as e:
        raise DomainError(422, f"cannot build a DICOMDIR for these instances: {e}") from None


for _info in LEVELS:
    _add_list(_info)
    _add_get(_info)
    _add_delete(_info)
    _add_statistics(_info)
    for _other in LEVELS:
        if _other.level.depth > _info.level.depth:
            _add_children(_info, _other)
        elif _other.level.depth < _info.level.depth:
            _add_ancestor(_info, _other)
    if _info is not INSTANCES:
        _add_archives(_info)


# -- several resources at once (Orthanc's /tools/create-archive and /tools/create-media) ----------------

def resources_from_body(reader: ResourceReader, body: Any) -> list[tuple[Level, int]]:
    """(level, row id) of each public ID in ``["id", ...]`` or ``{"Resources": [...]}``."""
    ids = body.get("Resources") if isinstance(body, dict) else body
    if isinstance(ids, str):
        ids = [ids]
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise DomainError(400, 'the body is a list of resource IDs or {"Resources": [...]}')
    out: list[tuple[Level, int]] = []
    for public_id in ids:
        for info in (INSTANCES, SERIES, STUDIES, PATIENTS):
            try:
                out.append((info.level, reader.row_id(info, public_id)))
                break
            except DomainError:
                continue
        else:
            raise DomainError(404, f"no patient, study, series or instance with ID {public_id}")
    return out


__all__ = ["router", "get_reader", "ReaderDep", "resources_from_body", "BY_LEVEL"]
