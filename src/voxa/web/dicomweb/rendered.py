"""Rendered resources and thumbnails (PS3.18 10.4.1.1.3, 10.4.1.1.4).

``/rendered`` of an instance or frame is that image; of a series or study it is the middle
image of the (first) series, or every image as ``multipart/related`` when the client asks
for multipart.  ``/thumbnail`` is a small rendering (``THUMBNAIL_SIZE`` unless a viewport
is given) of the same middle image.  Parameters: ``window=center,width[,function]``,
``viewport=vw,vh[,sx,sy,sw,sh]`` (URL-encoded commas too), ``quality``; ``annotation`` is
accepted and ignored.  Renderings of single images go through the on-disk
:class:`~voxa.web.dicomweb.cache.RenderedCache`.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from voxa.archive.blobstore import BlobNotFound
from voxa.archive.ingest import IngestResult, Outcome
from voxa.security.audit import AuditAction
from voxa.security.permissions import Permission as Perm
from voxa.web.access import requires
from voxa.web.app import DomainError
from voxa.web.deps import RuntimeDep
from voxa.web.dicomweb import multipart
from voxa.web.dicomweb.cache import RenderedCache
from voxa.web.dicomweb.common import (
    RENDERED_CACHE_MB,
    RENDERED_JPEG_QUALITY,
    THUMBNAIL_SIZE,
    InstanceRow,
    dicomweb_root,
    instance_url,
    instances,
    middle,
    one_instance,
    setting,
)
from voxa.web.dicomweb.media import parse_accept
from voxa.web.dicomweb.pixels import InstanceFile, TranscodeError
from voxa.web.dicomweb.render import (
    PNG,
    RENDERED_MEDIA_TYPES,
    RenderParamError,
    RenderParams,
    Viewport,
    parse_quality,
    parse_viewport,
    parse_window,
    render,
)

log = logging.getLogger(__name__)
router = APIRouter()
_cache_lock = threading.Lock()


def rendered_cache(request: Request) -> RenderedCache:
    """The app's rendered cache, created at first use (kept on ``app.state``, not a global)."""
    state = request.app.state
    cache = getattr(state, "dicomweb_rendered_cache", None)
    if cache is not None:
        return cache  # type: ignore[no-any-return]
    with _cache_lock:
        cache = getattr(state, "dicomweb_rendered_cache", None)
        if cache is None:
            rt = state.runtime
            mb = int(setting(request, "rendered_cache_mb", RENDERED_CACHE_MB))
            cache = RenderedCache(rt.settings.data_dir / "cache" / "rendered", mb * 1024 * 1024, rt.archive.index)

            def forget_replaced(result: IngestResult, cache: RenderedCache = cache) -> None:
                if result.outcome is Outcome.REPLACED:
                    cache.purge_instance(result.sop_instance_uid)

            rt.archive.add_listener(forget_replaced)
            state.dicomweb_rendered_cache = cache
    return cache


def render_params(request: Request, *, thumbnail: bool = False) -> RenderParams:
    qp = request.query_params
    media = _media_type(request)
    try:
        window = parse_window(qp.get("window"))
        viewport = parse_viewport(qp.get("viewport"))
        quality = parse_quality(qp.get("quality"), int(setting(request, "rendered_jpeg_quality",
                                                               RENDERED_JPEG_QUALITY)))
    except RenderParamError as e:
        raise DomainError(400, str(e)) from None
    if thumbnail and viewport is None:
        size = int(setting(request, "thumbnail_size", THUMBNAIL_SIZE))
        viewport = Viewport(size, size)
    return RenderParams(media_type=media, quality=quality, window=window, viewport=viewport)


def _media_type(request: Request) -> str:
    ranges = parse_accept(request.headers.get("accept"))
    for r in ranges:
        for media in RENDERED_MEDIA_TYPES:
            if r.matches(media):
                return media
    raise DomainError(406, "rendered images are available as image/jpeg or image/png")


def rendered_frame_bytes(request: Request, rt: Any, row: InstanceRow, frame: int, params: RenderParams,
                         kind: str = "rendered") -> tuple[bytes, str]:
    """One rendered frame (0-based) and its ETag, through the cache."""
    cache = rendered_cache(request)
    cache.sync_deletions()
    ext = "png" if params.media_type == PNG else "jpg"
    path = cache.path_for(row.sop_instance_uid, row.id, row.blob_key, f"{kind}:{frame}", params.token(), ext)
    etag = cache.etag(path)
    data = cache.get(path)
    if data is not None:
        return data, etag
    if not row.is_image:
        raise DomainError(406, f"instance {row.sop_instance_uid} has no image to render")
    try:
        with InstanceFile(rt.archive.blobs, row.blob_key, row.transfer_syntax_uid) as f:
            try:
                f.check_frame(frame)
            except LookupError as e:
                raise DomainError(404, str(e)) from None
            data = render(f, frame, params)
    except BlobNotFound:
        raise DomainError(404, f"the stored file of instance {row.sop_instance_uid} is missing") from None
    except TranscodeError as e:
        raise DomainError(406, f"instance {row.sop_instance_uid} cannot be rendered: {e}") from None
    except RenderParamError as e:
        raise DomainError(400, str(e)) from None
    cache.put(path, data)
    return data, etag


def image_response(request: Request, data: bytes, etag: str, media_type: str) -> Response:
    headers = {"ETag": etag, "Cache-Control": "private, max-age=3600"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=media_type, headers=headers)


def _one(request: Request, rt: Any, row: InstanceRow, frame: int, *, thumbnail: bool = False) -> Response:
    params = render_params(request, thumbnail=thumbnail)
    data, etag = rendered_frame_bytes(request, rt, row, frame, params, "thumbnail" if thumbnail else "rendered")
    return image_response(request, data, etag, params.media_type)


def _wants_multipart(request: Request) -> bool:
    return any(r.multipart for r in parse_accept(request.headers.get("accept")))


def _many(request: Request, rt: Any, rows: list[InstanceRow]) -> Response:
    """Every image of a series or study, first frame each, as multipart/related."""
    params = render_params(request)
    root = dicomweb_root(request)
    parts = []
    for row in rows:
        if not row.is_image:
            continue
        data, _ = rendered_frame_bytes(request, rt, row, 0, params)
        url = instance_url(root, row.study_instance_uid, row.series_instance_uid, row.sop_instance_uid)
        parts.append(({"Content-Type": params.media_type, "Content-Location": f"{url}/rendered",
                       "Content-Length": str(len(data))}, (data,)))
    if not parts:
        raise DomainError(406, "no image in this resource: nothing to render")
    boundary = multipart.new_boundary()
    return Response(b"".join(multipart.encode(parts, boundary)),
                    media_type=multipart.content_type(params.media_type, boundary))


def _middle_frame(row: InstanceRow) -> int:
    return row.frames // 2


@router.get("/studies/{study}/rendered", summary="WADO-RS: rendered study")
@requires(Perm.VIEW_IMAGES, Perm.TEACHING_VIEW, audit=AuditAction.VIEW)
def study_rendered(study: str, request: Request, rt: RuntimeDep) -> Response:
    rows = instances(rt.archive.index, study)
    if _wants_multipart(request):
        return _many(request, rt, rows)
    row = middle(rows)
    return _one(request, rt, row, _middle_frame(row))


@router.get("/studies/{study}/series/{series}/rendered", summary="WADO-RS: rendered series")
@requires(Perm.VIEW_IMAGES, Perm.TEACHING_VIEW, audit=AuditAction.VIEW)
def series_rendered(study: str, series: str, request: Request, rt: RuntimeDep) -> Response:
    rows = instances(rt.archive.index, study, series)
    if _wants_multipart(request):
        return _many(request, rt, rows)
    row = middle(rows)
    return _one(request, rt, row, _middle_frame(row))


@router.get("/studies/{study}/series/{series}/instances/{sop}/rendered", summary="WADO-RS: rendered instance")
@requires(Perm.VIEW_IMAGES, Perm.TEACHING_VIEW, audit=AuditAction.VIEW)
def instance_rendered(study: str, series: str, sop: str, request: Request, rt: RuntimeDep) -> Response:
    return _one(request, rt, one_instance(rt.archive.index, study, series, sop), 0)


def _frame_number(text: str) -> int:
    text = text.strip()
    if not text.isdigit() or int(text) < 1:
        raise DomainError(400, f"frame {text!r}: rendered frames are named by one number from 1")
    return int(text) - 1


@router.get("/studies/{study}/series/{series}/instances/{sop}/frames/{frame}/rendered",
            summary="WADO-RS: rendered frame")
@requires(Perm.VIEW_IMAGES, Perm.TEACHING_VIEW, audit=AuditAction.VIEW)
def frame_rendered(study: str, series: str, sop: str, frame: str, request: Request, rt: RuntimeDep) -> Response:
    return _one(request, rt, one_instance(rt.archive.index, study, series, sop), _frame_number(frame))


@router.get("/studies/{study}/thumbnail", summary="WADO-RS: study thumbnail")
@requires(Perm.VIEW_IMAGES, Perm.TEACHING_VIEW, audit=AuditAction.VIEW)
def study_thumbnail(study: str, request: Request, rt: RuntimeDep) -> Response:
    row = middle(instances(rt.archive.index, study))
    return _one(request, rt, row, _middle_frame(row), thumbnail=True)


@router.get("/studies/{study}/series/{series}/thumbnail", summary="WADO-RS: series thumbnail")
@requires(Perm.VIEW_IMAGES, Perm.TEACHING_VIEW, audit=AuditAction.VIEW)
def series_thumbnail(study: str, series: str, request: Request, rt: RuntimeDep) -> Response:
    row = middle(instances(rt.archive.index, study, series))
    return _one(request, rt, row, _middle_frame(row), thumbnail=True)


@router.get("/studies/{study}/series/{series}/instances/{sop}/thumbnail", summary="WADO-RS: instance thumbnail")
@requires(Perm.VIEW_IMAGES, Perm.TEACHING_VIEW, audit=AuditAction.VIEW)
def instance_thumbnail(study: str, series: str, sop: str, request: Request, rt: RuntimeDep) -> Response:
    row = one_instance(rt.archive.index, study, series, sop)
    return _one(request, rt, row, _middle_frame(row), thumbnail=True)


@router.get("/studies/{study}/series/{series}/instances/{sop}/frames/{frame}/thumbnail",
            summary="WADO-RS: frame thumbnail")
@requires(Perm.VIEW_IMAGES, Perm.TEACHING_VIEW, audit=AuditAction.VIEW)
def frame_thumbnail(study: str, series: str, sop: str, frame: str, request: Request, rt: RuntimeDep) -> Response:
    return _one(request, rt, one_instance(rt.archive.index, study, series, sop), _frame_number(frame),
                thumbnail=True)


__all__ = ["router", "rendered_cache", "rendered_frame_bytes", "render_params", "image_response"]
