"""One instance: its file, tags, header, metadata, frames and previews; and ``POST /instances``.

``POST /instances`` takes one DICOM file, or a ZIP of them (walked by the same helper as
``voxa import``), and sends every file through :meth:`Archive.ingest`.  The body is spooled
to a temporary file under the data folder while it arrives, so a large ZIP is never held in
memory.  Answers are Orthanc's: ``{"ID", "Path", "Status": "Success"|"AlreadyStored",
"ParentPatient", "ParentStudy", "ParentSeries"}``, a list of those for a ZIP (files in the
ZIP that are not DICOM are skipped, as Orthanc skips them).  A refused file answers
``{"error": reason}``: 400 for a file that is not acceptable, 409 for a conflict with stored
data or a duplicate the configuration rejects, 507 when storage is full.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import tempfile
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import anyio
import pydicom
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydicom.errors import InvalidDicomError
from sqlalchemy import select

from voxa.archive import identifiers
from voxa.archive.ingest import IngestResult, Outcome, RefusalCode
from voxa.archive.resources import UnknownResource, resolve_public_id
from voxa.runtime import Runtime
from voxa.security.audit import AuditAction
from voxa.security.permissions import Permission as Perm
from voxa.web.access import note_access, requires
from voxa.web.app import DomainError
from voxa.web.deps import RuntimeDep
from voxa.web.rest.archives import CHUNK_BYTES
from voxa.web.rest.common import IN, INSTANCES, flag, orthanc_time, unknown
from voxa.web.rest.rendering import (
    MAX_RENDERED_SIZE,
    RenderError,
    Window,
    encode,
    preview_frame,
    read_frame,
    rendered_frame,
)
from voxa.web.rest.tags import orthanc_tags, shorten, tag_key
from voxa.web.rest.tags import simplify as simplify_tags

router = APIRouter(tags=["orthanc instances"])

#: Orthanc's names for where an instance came from ("Origin" metadata).
_ORIGIN = {"dimse": "DicomProtocol", "rest": "RestApi", "upload": "RestApi", "stow": "RestApi",
           "dicomweb": "RestApi", "plugin": "Plugins"}


# -- the instance row -------------------------------------------------------------------------------


def _instance(rt: Runtime, public_id: str, *, metadata: bool = False) -> Any:
    cols = [IN.c.id, IN.c.public_id, IN.c.blob_key, IN.c.size_bytes, IN.c.sop_class_uid, IN.c.sop_instance_uid,
            IN.c.transfer_syntax_uid, IN.c.number_of_frames, IN.c.rows, IN.c.instance_number, IN.c.received_at,
            IN.c.calling_aet, IN.c.source, IN.c.dataset_offset]
    if metadata:
        cols.append(IN.c.metadata_json)
    with rt.archive.index.read() as conn:
        row = conn.execute(select(*cols).where(IN.c.public_id == public_id.strip())).first()
    if row is None:
        raise unknown(INSTANCES, public_id)
    return row


def _open(rt: Runtime, row: Any) -> Any:
    try:
        return rt.archive.blobs.open(row.blob_key)
    except FileNotFoundError:
        raise DomainError(500, f"the stored file of instance {row.public_id} is missing (run voxa check)") from None


def _dataset(rt: Runtime, row: Any) -> pydicom.Dataset:
    with _open(rt, row) as fp:
        try:
            return pydicom.dcmread(fp, stop_before_pixels=True)
        except (InvalidDicomError, ValueError, EOFError) as e:
            raise DomainError(500, f"the stored file of instance {row.public_id} cannot be read: {e}") from None


_PIXEL_TAGS = ((0x7FE00008, "FloatPixelData"), (0x7FE00009, "DoubleFloatPixelData"), (0x7FE00010, "PixelData"))


def _pixel_tags(row: Any) -> list[tuple[int, str]]:
    """The pixel data elements of the instance (read from the index's DICOM JSON, not the file)."""
    try:
        metadata = json.loads(zlib.decompress(row.metadata_json)) if row.metadata_json else {}
    except (zlib.error, ValueError):
        metadata = {}
    if not metadata:
        return [_PIXEL_TAGS[2]] if row.rows is not None else []
    return [(tag, name) for tag, name in _PIXEL_TAGS if f"{tag:08X}" in metadata]


def _tags_response(full: dict[str, Any], simplify_arg: str | None, short_arg: str | None) -> JSONResponse:
    if flag(simplify_arg):
        return JSONResponse(simplify_tags(full))
    if flag(short_arg):
        return JSONResponse(shorten(full))
    return JSONResponse(full)


# -- the file and its attributes ----------------------------------------------------------------------


@router.get("/instances/{id}/file", response_model=None)
@requires(Perm.DOWNLOAD, audit=AuditAction.DOWNLOAD)
def instance_file(id: str, rt: RuntimeDep) -> Response:
    """The stored file, byte for byte (``application/dicom``)."""
    row = _instance(rt, id)
    headers = {"Content-Disposition": f'attachment; filename="{row.public_id}.dcm"'}
    path_of = getattr(rt.archive.blobs, "path", None)
    if path_of is not None:
        path = Path(path_of(row.blob_key))
        if not path.is_file():
            raise DomainError(500, f"the stored file of instance {row.public_id} is missing (run voxa check)")
        return FileResponse(path, media_type="application/dicom", headers=headers)

    def chunks() -> Any:
        with _open(rt, row) as fp:
            while chunk := fp.read(CHUNK_BYTES):
                yield chunk

    return StreamingResponse(chunks(), media_type="application/dicom",
                             headers={**headers, "Content-Length": str(row.size_bytes)})


@router.get("/instances/{id}/tags", response_model=None)
@requires(Perm.VIEW_IMAGES, audit=AuditAction.VIEW)
def instance_tags(id: str, rt: RuntimeDep, simplify: str | None = None, short: str | None = None) -> JSONResponse:
    """All attributes in Orthanc's format (``{"0010,0010": {"Name", "Type", "Value"}}``);
    ``?simplify``: ``{"PatientName": ...}``; ``?short``: ``{"0010,0010": ...}``."""
    row = _instance(rt, id, metadata=True)
    full = orthanc_tags(_dataset(rt, row))
    for tag, name in _pixel_tags(row):  # read up to the pixel data only; it is reported as Null
        full[tag_key(tag)] = {"Name": name, "Type": "Null", "Value": None}
    return _tags_response(full, simplify, short)


@router.get("/instances/{id}/simplified-tags", response_model=None)
@requires(Perm.VIEW_IMAGES, audit=AuditAction.VIEW)
def instance_simplified_tags(id: str, rt: RuntimeDep) -> JSONResponse:
    """All attributes as ``{"PatientName": "DOE^JANE", ...}`` (Orthanc's simplified form)."""
    return instance_tags(id, rt, simplify="true")


@router.get("/instances/{id}/header", response_model=None)
@requires(Perm.VIEW_IMAGES, audit=AuditAction.VIEW)
def instance_header(id: str, rt: RuntimeDep, simplify: str | None = None, short: str | None = None) -> JSONResponse:
    """The file meta information (group 0002) in Orthanc's format (binary elements left out)."""
    ds = _dataset(rt, _instance(rt, id))
    full = {k: v for k, v in orthanc_tags(ds.file_meta, file_meta=True).items() if v["Type"] != "Null"}
    return _tags_response(full, simplify, short)


@router.get("/instances/{id}/frames", response_model=None)
@requires(Perm.VIEW_IMAGES, audit=AuditAction.VIEW)
def instance_frames(id: str, rt: RuntimeDep) -> list[int]:
    """The frame numbers, from 0 (an instance without pixel data has none)."""
    row = _instance(rt, id, metadata=True)
    if not _pixel_tags(row):
        return []
    return list(range(int(row.number_of_frames or 1)))


@router.get("/instances/{id}/metadata", response_model=None)
@requires(Perm.VIEW_IMAGES, audit=AuditAction.VIEW)
def instance_metadata(id: str, rt: RuntimeDep, expand: str | None = None) -> Any:
    """Orthanc's instance metadata names (``?expand``: names and values)."""
    values = _metadata_values(_instance(rt, id))
    return values if flag(expand) else list(values)


@router.get("/instances/{id}/metadata/{name}", response_model=None)
@requires(Perm.VIEW_IMAGES, audit=AuditAction.VIEW)
def instance_metadata_item(id: str, name: str, rt: RuntimeDep) -> PlainTextResponse:
    values = _metadata_values(_instance(rt, id))
    if name not in values:
        raise DomainError(404, f"instance {id} has no metadata {name!r}")
    return PlainTextResponse(values[name])


def _metadata_values(row: Any) -> dict[str, str]:
    received = row.received_at
    return {
        "IndexInSeries": "" if row.instance_number is None else str(row.instance_number),
        "ReceptionDate": orthanc_time(received if isinstance(received, dt.datetime) else None),
        "RemoteAET": row.calling_aet or "",
        "Origin": _ORIGIN.get(row.source, "Unknown"),
        "TransferSyntax": row.transfer_syntax_uid or "",
        "SopClassUid": row.sop_class_uid or "",
    }


# -- images ---------------------------------------------------------------------------------------------


def _render(rt: Runtime, id: str, frame: int, *, rendered: bool, accept: str | None,
            window: Window | None = None, size: tuple[int | None, int | None] = (None, None),
            quality: int = 90) -> Response:
    row = _instance(rt, id, metadata=True)
    if not _pixel_tags(row):
        raise DomainError(400, f"instance {id} has no pixel data")
    frames = int(row.number_of_frames or 1)
    if not 0 <= frame < frames:
        raise DomainError(404, f"instance {id} has no frame {frame} (it has {frames})")
    with _open(rt, row) as fp:
        try:
            array, header = read_frame(fp, frame)
        except RenderError as e:
            raise DomainError(415, str(e)) from None
    if array.ndim == 4 or (array.ndim == 3 and int(header.get("SamplesPerPixel", 1) or 1) == 1):
        array = array[0]
    pixels = rendered_frame(array, header, window) if rendered else preview_frame(array, header)
    jpeg = accept is not None and "image/jpeg" in accept and "image/png" not in accept
    data, media_type = encode(pixels, jpeg=jpeg, quality=quality, max_size=size)
    return Response(data, media_type=media_type)


AcceptHeader = Annotated[str | None, Header()]


@router.get("/instances/{id}/preview", response_class=Response, responses={200: {"content": {"image/png": {}}}})
@requires(Perm.VIEW_IMAGES, audit=AuditAction.VIEW)
def instance_preview(id: str, rt: RuntimeDep, accept: AcceptHeader = None) -> Response:
    """The first frame as Orthanc's preview: a PNG (JPEG with ``Accept: image/jpeg``), min-max stretched."""
    return _render(rt, id, 0, rendered=False, accept=accept)


@router.get("/instances/{id}/frames/{frame}/preview", response_class=Response,
            responses={200: {"content": {"image/png": {}}}})
@requires(Perm.VIEW_IMAGES, audit=AuditAction.VIEW)
def frame_preview(id: str, frame: int, rt: RuntimeDep, accept: AcceptHeader = None) -> Response:
    """One frame (from 0) as Orthanc's preview."""
    return _render(rt, id, frame, rendered=False, accept=accept)


def _window(center: float | None, width: float | None) -> Window | None:
    if center is None and width is None:
        return None
    if center is None or width is None or width <= 0:
        raise DomainError(400, "window-center and window-width go together, with a positive width")
    return Window(center, width)


def _rendered(id: str, frame: int, rt: Runtime, accept: str | None, center: float | None, width: float | None,
              w: int | None, h: int | None, quality: int) -> Response:
    if any(v is not None and not 1 <= v <= MAX_RENDERED_SIZE for v in (w, h)) or not 1 <= quality <= 100:
        raise DomainError(400, f"width and height must be between 1 and {MAX_RENDERED_SIZE}, "
                               "quality between 1 and 100")
    return _render(rt, id, frame, rendered=True, accept=accept, window=_window(center, width), size=(w, h),
                   quality=quality)


@router.get("/instances/{id}/rendered", response_class=Response, responses={200: {"content": {"image/png": {}}}})
@requires(Perm.VIEW_IMAGES, audit=AuditAction.VIEW)
def instance_rendered(id: str, rt: RuntimeDep, accept: AcceptHeader = None,
                      window_center: Annotated[float | None, Query(alias="window-center")] = None,
                      window_width: Annotated[float | None, Query(alias="window-width")] = None,
                      width: int | None = None, height: int | None = None, quality: int = 90) -> Response:
    """The first frame rendered: rescale, then the window asked for or the file's first one."""
    return _rendered(id, 0, rt, accept, window_center, window_width, width, height, quality)


@router.get("/instances/{id}/frames/{frame}/rendered", response_class=Response,
            responses={200: {"content": {"image/png": {}}}})
@requires(Perm.VIEW_IMAGES, audit=AuditAction.VIEW)
def frame_rendered(id: str, frame: int, rt: RuntimeDep, accept: AcceptHeader = None,
                   window_center: Annotated[float | None, Query(alias="window-center")] = None,
                   window_width: Annotated[float | None, Query(alias="window-width")] = None,
                   width: int | None = None, height: int | None = None, quality: int = 90) -> Response:
    """One frame rendered (see ``/instances/{id}/rendered``)."""
    return _rendered(id, frame, rt, accept, window_center, window_width, width, height, quality)


# -- upload ---------------------------------------------------------------------------------------------


async def spooled_body(request: Request) -> AsyncIterator[Path]:
    """The request body in a temporary file under the data folder (removed after the response)."""
    rt: Runtime = request.app.state.runtime
    folder = rt.settings.data_dir / "tmp"
    folder.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=folder, prefix="upload-", suffix=".part", delete=False)
    path = Path(handle.name)
    try:
        pending: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            pending.append(chunk)
            size += len(chunk)
            if size >= CHUNK_BYTES:
                await anyio.to_thread.run_sync(handle.write, b"".join(pending))
                pending, size = [], 0
        if pending:
            await anyio.to_thread.run_sync(handle.write, b"".join(pending))
        handle.close()
        yield path
    finally:
        handle.close()
        with contextlib.suppress(OSError):
            path.unlink()


SpooledBody = Annotated[Path, Depends(spooled_body)]

_STATUS = {Outcome.STORED: "Success", Outcome.REPLACED: "Success", Outcome.DUPLICATE: "AlreadyStored"}
_HTTP_STATUS = {RefusalCode.DUPLICATE_REJECTED: 409, RefusalCode.CONFLICT: 409, RefusalCode.STORAGE_FULL: 507,
                RefusalCode.STORAGE_ERROR: 500}


def _answer(rt: Runtime, result: IngestResult) -> dict[str, Any]:
    ids = result.public_ids
    if not ids:
        # A duplicate: name the stored copy.
        stored = rt.archive.index.existing_instance(result.sop_instance_uid)
        try:
            ref = resolve_public_id(rt.archive.index, stored.public_id) if stored else None
        except UnknownResource:
            ref = None
        if ref is not None:
            pid, study, series = ref.patient_id, ref.study_instance_uid, ref.series_instance_uid
            ids = {"patient": identifiers.patient_public_id(pid),
                   "study": identifiers.study_public_id(pid, study),
                   "series": identifiers.series_public_id(pid, study, series),
                   "instance": ref.public_id}
    return {
        "ID": ids.get("instance", ""), "Path": f"/instances/{ids.get('instance', '')}",
        "Status": _STATUS.get(result.outcome, "Failure"),
        "ParentPatient": ids.get("patient", ""), "ParentStudy": ids.get("study", ""),
        "ParentSeries": ids.get("series", ""),
    }


@router.post("/instances", response_model=None, openapi_extra={"requestBody": {
    "description": "One DICOM Part 10 file, or a ZIP of DICOM files.",
    "content": {"application/dicom": {"schema": {"type": "string", "format": "binary"}},
                "application/zip": {"schema": {"type": "string", "format": "binary"}}}}})
@requires(Perm.UPLOAD, audit=AuditAction.STORE)
def upload_instances(rt: RuntimeDep, body: SpooledBody, request: Request) -> Any:
    """Store one DICOM file or a ZIP of them, through the archive's one ingest path."""
    from voxa.cli.archive import iter_import_items

    with open(body, "rb") as f:
        head = f.read(132)
    if not head:
        raise DomainError(400, "the body is empty: send a DICOM file or a ZIP of DICOM files")
    if len(head) == 132 and head[128:132] == b"DICM":
        result = rt.archive.ingest(body.read_bytes(), source="rest")
        if result.outcome is Outcome.REFUSED:
            raise DomainError(_HTTP_STATUS.get(result.code, 400) if result.code else 400, result.reason)
        note_access(request, study_uids=result.study_instance_uid)
        return _answer(rt, result)

    answers: list[dict[str, Any]] = []
    refused: list[dict[str, str]] = []
    is_zip = False
    prefix = f"{body}!"
    for name, data in iter_import_items((body,)):
        is_zip = is_zip or name.startswith(prefix)
        member = name[len(prefix):] if name.startswith(prefix) else ""
        if isinstance(data, Exception):
            raise DomainError(400, f"the body is not a readable ZIP: {data}")
        result = rt.archive.ingest(data, source="rest")
        if result.ok:
            note_access(request, study_uids=result.study_instance_uid)
        if result.outcome is Outcome.REFUSED:
            if not is_zip:
                raise DomainError(_HTTP_STATUS.get(result.code, 400) if result.code else 400, result.reason)
            if result.code is not RefusalCode.NOT_DICOM:
                refused.append({"File": member, "Error": result.reason,
                                "Code": result.code.value if result.code else ""})
            continue
        answers.append(_answer(rt, result))
    if refused:
        first = refused[0]
        return JSONResponse({"error": f"{len(refused)} file(s) of the ZIP refused; first: {first['File']}: "
                                      f"{first['Error']}", "Refused": refused, "Stored": answers}, status_code=400)
    return answers
