"""WADO-URI (PS3.18 9): ``GET /wado?requestType=WADO&studyUID=...&seriesUID=...&objectUID=...``.

* ``contentType=application/dicom`` gives the stored file, as stored, or transcoded when
  ``transferSyntax`` names another syntax (``*`` or absent: as stored);
* ``image/jpeg`` (the default for images) or ``image/png``: a rendering, with
  ``windowCenter``/``windowWidth``, ``rows``/``columns`` (a box the image is fitted into),
  ``region`` (x1,y1,x2,y2 as fractions of the image), ``frameNumber`` and ``imageQuality``,
  through the same renderer and cache as DICOMweb ``/rendered``.

``contentType`` may list several types (the first one Voxa can produce wins).
``anonymize=yes`` is refused (400): Voxa does not de-identify on the fly yet.
``studyUID`` and ``seriesUID`` are checked against the instance when given.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import select

from voxa.security.audit import AuditAction
from voxa.security.permissions import Permission as Perm
from voxa.web.access import check_locations, requires
from voxa.web.app import DomainError
from voxa.web.deps import RuntimeDep
from voxa.web.dicomweb.common import IN, RENDERED_JPEG_QUALITY, SE, ST, InstanceRow, one_instance, setting
from voxa.web.dicomweb.media import DICOM
from voxa.web.dicomweb.pixels import TranscodeError, transcode, transcode_problem, ts_name
from voxa.web.dicomweb.render import (
    JPEG,
    PNG,
    RenderParamError,
    RenderParams,
    Viewport,
    Window,
    parse_quality,
)
from voxa.web.dicomweb.rendered import image_response, rendered_frame_bytes

router = APIRouter(tags=["dicomweb"])


def _instance_by_uid(rt: Any, study: str | None, series: str | None, sop: str) -> InstanceRow:
    """The instance; the study and series are looked up when the request omits them."""
    if study and series:
        return one_instance(rt.archive.index, study, series, sop)
    q = (select(ST.c.study_instance_uid, SE.c.series_instance_uid).select_from(IN)
         .join(SE, SE.c.id == IN.c.series_fk).join(ST, ST.c.id == SE.c.study_fk)
         .where(IN.c.sop_instance_uid == sop))
    with rt.archive.index.read() as conn:
        row = conn.execute(q).first()
    if row is None or (study and row.study_instance_uid != study) or (series and row.series_instance_uid != series):
        raise DomainError(404, f"no instance {sop}" + (f" in study {study}" if study else ""))
    return one_instance(rt.archive.index, row.study_instance_uid, row.series_instance_uid, sop)


def _float(name: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise DomainError(400, f"{name}={value!r} is not a number") from None


def _int(name: str, value: str, minimum: int = 1) -> int:
    try:
        n = int(value)
    except ValueError:
        raise DomainError(400, f"{name}={value!r} is not an integer") from None
    if n < minimum:
        raise DomainError(400, f"{name}={value!r} must be at least {minimum}")
    return n


def _render_params(request: Request, media: str, row: InstanceRow) -> RenderParams:
    qp = request.query_params
    center, width = qp.get("windowCenter"), qp.get("windowWidth")
    window = None
    if (center is None) != (width is None):
        raise DomainError(400, "windowCenter and windowWidth go together")
    if center is not None and width is not None:
        w = _float("windowWidth", width)
        if w < 1:
            raise DomainError(400, "windowWidth must be at least 1")
        window = Window(_float("windowCenter", center), w)
    rows_, cols_ = qp.get("rows"), qp.get("columns")
    viewport = None
    if rows_ is not None or cols_ is not None:
        # One of the two alone fixes the other through the aspect ratio.
        h = _int("rows", rows_) if rows_ is not None else 8192
        w_ = _int("columns", cols_) if cols_ is not None else 8192
        viewport = Viewport(min(w_, 8192), min(h, 8192))
    region = qp.get("region")
    if region:
        try:
            x1, y1, x2, y2 = (float(v) for v in region.split(","))
        except ValueError:
            raise DomainError(400, f"region={region!r}: expected x1,y1,x2,y2 between 0 and 1") from None
        if not (0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1):
            raise DomainError(400, f"region={region!r}: expected 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1")
        rw, rh = row.columns or 1, row.rows or 1
        src = (int(x1 * rw), int(y1 * rh), max(1, round((x2 - x1) * rw)), max(1, round((y2 - y1) * rh)))
        vp = viewport or Viewport(src[2], src[3])
        viewport = Viewport(vp.width, vp.height, src)
    try:
        quality = parse_quality(qp.get("imageQuality"), int(setting(request, "rendered_jpeg_quality",
                                                                    RENDERED_JPEG_QUALITY)))
    except RenderParamError as e:
        raise DomainError(400, str(e)) from None
    return RenderParams(media_type=media, quality=quality, window=window, viewport=viewport)


@router.get("/wado", summary="WADO-URI: retrieve an instance or a rendering of it")
@requires(Perm.VIEW_IMAGES, audit=AuditAction.VIEW)
def wado(request: Request, rt: RuntimeDep) -> Response:
    qp = request.query_params
    if (qp.get("requestType") or "").upper() != "WADO":
        raise DomainError(400, "requestType=WADO is required")
    sop = qp.get("objectUID")
    if not sop:
        raise DomainError(400, "objectUID is required")
    if (qp.get("anonymize") or "").lower() == "yes":
        raise DomainError(400, "anonymize=yes is not supported")
    row = _instance_by_uid(rt, qp.get("studyUID"), qp.get("seriesUID"), sop)
    check_locations(request, [row])
    requested = [t.strip().split(";")[0].strip().lower() for t in (qp.get("contentType") or "").split(",")
                 if t.strip()]
    if not requested:
        requested = [JPEG] if row.is_image else [DICOM]
    media = next((t for t in requested if t in (DICOM, JPEG, PNG, "image/*", "*/*")), None)
    if media is None:
        raise DomainError(406, f"contentType {qp.get('contentType')!r}: Voxa answers application/dicom, "
                               "image/jpeg or image/png")
    if media in ("image/*", "*/*"):
        media = JPEG if row.is_image else DICOM
    if media == DICOM:
        target = (qp.get("transferSyntax") or "").strip()
        if not target or target == "*" or target == row.transfer_syntax_uid:
            data = rt.archive.blobs.read(row.blob_key)
            target = row.transfer_syntax_uid
        else:
            problem = transcode_problem(row.transfer_syntax_uid, target, has_pixels=row.is_image)
            if problem:
                raise DomainError(406, f"instance is stored in {ts_name(row.transfer_syntax_uid)}: {problem}")
            try:
                data = transcode(rt.archive.blobs.read(row.blob_key), row.transfer_syntax_uid, target)
            except TranscodeError as e:
                raise DomainError(406, str(e)) from None
        return Response(data, media_type=DICOM, headers={
            "Content-Disposition": f'attachment; filename="{row.sop_instance_uid}.dcm"'})
    frame = _int("frameNumber", qp["frameNumber"]) - 1 if qp.get("frameNumber") else 0
    params = _render_params(request, media, row)
    data, etag = rendered_frame_bytes(request, rt, row, frame, params)
    return image_response(request, data, etag, media)
