"""WADO-RS (PS3.18 10.4): instances, metadata, frames and bulk data.

* Instances stream as ``multipart/related; type="application/dicom"``, byte for byte as
  stored unless the client names another transfer syntax; then pydicom transcodes, or the
  answer is 406 with the reason.
* Metadata is the per-instance DICOM JSON the index keeps (zlib-compressed): decompressed,
  joined, and the ``voxa-bulk:`` sentinel replaced by this server's URL, without parsing JSON.
* Frames are cut from the stored file at their offsets; compressed frames go as stored when
  the client accepts their media type, else decoded (or re-encoded).
* Bulk data honours single byte ranges.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
from collections.abc import Iterable, Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from pydicom import Dataset
from sqlalchemy import select

from voxa.archive.blobstore import BlobNotFound
from voxa.dicom.json import BULK_PREFIX, unpack_json_bytes
from voxa.security.audit import AuditAction
from voxa.security.permissions import Permission as Perm
from voxa.web.access import current_principal, requires
from voxa.web.app import DomainError
from voxa.web.deps import RuntimeDep
from voxa.web.dicomweb import multipart
from voxa.web.dicomweb.common import (
    IN,
    METADATA_GZIP_MIN_BYTES,
    SE,
    ST,
    InstanceRow,
    dicomweb_root,
    hierarchy_order,
    instance_url,
    instances,
    not_found_message,
    one_instance,
)
from voxa.web.dicomweb.media import (
    DICOM,
    DICOM_JSON,
    ELE,
    ILE,
    OCTET_STREAM,
    PIXEL_MEDIA_TYPES,
    MediaRange,
    RangeNotSatisfiable,
    accepts_gzip,
    is_native,
    parse_accept,
    parse_range,
    pixel_media_type,
)
from voxa.web.dicomweb.pixels import (
    InstanceFile,
    TranscodeError,
    trailing_native_frames,
    transcode,
    transcode_problem,
    ts_name,
)
from voxa.web.teaching import teaching_bytes, teaching_json

log = logging.getLogger(__name__)
router = APIRouter()

# -- retrieve instances ------------------------------------------------------------------------


def _dicom_ranges(request: Request) -> list[MediaRange]:
    """Accept ranges that allow application/dicom, best first; 406 when there are none."""
    ranges = [r for r in parse_accept(request.headers.get("accept")) if r.matches(DICOM)]
    if not ranges:
        raise DomainError(406, 'instances are available as multipart/related; type="application/dicom" '
                               "(bulk data and rendered representations of a whole study are not)")
    return ranges


def choose_syntax(row: InstanceRow, ranges: list[MediaRange]) -> tuple[str | None, list[str]]:
    """The transfer syntax to send ``row`` in (None: as stored), or the reasons none fits."""
    reasons = []
    for r in ranges:
        ts = r.transfer_syntax
        if ts is None or ts == "*" or ts == row.transfer_syntax_uid:
            return None, []
        problem = transcode_problem(row.transfer_syntax_uid, ts, has_pixels=row.is_image)
        if problem is None:
            return ts, []
        reasons.append(problem)
    return None, reasons or ["no acceptable media type"]


def _plan(rows: list[InstanceRow], ranges: list[MediaRange]) -> list[tuple[InstanceRow, str | None]]:
    plan = []
    for row in rows:
        target, reasons = choose_syntax(row, ranges)
        if reasons:
            raise DomainError(406, f"instance {row.sop_instance_uid} is stored in {ts_name(row.transfer_syntax_uid)} "
                                   f"and cannot be sent as asked: {'; '.join(dict.fromkeys(reasons))}")
        plan.append((row, target))
    return plan


def _file_chunks(rt: Any, row: InstanceRow) -> Iterator[bytes]:
    with rt.archive.blobs.open(row.blob_key) as f:
        while chunk := f.read(multipart.CHUNK_BYTES):
            yield chunk


def retrieve(request: Request, rt: Any, rows: list[InstanceRow]) -> Response:
    ranges = _dicom_ranges(request)
    plan = _plan(rows, ranges)
    if current_principal(request).teaching_only:
        return _retrieve_teaching(request, rt, plan, ranges)
    # Transcode the first instance of each (stored syntax, target) pair now, so that an
    # encoder that refuses these images gives a 406 rather than a broken stream.
    ready: dict[int, bytes] = {}
    tried: set[tuple[str, str]] = set()
    for row, target in plan:
        if target is not None and (row.transfer_syntax_uid, target) not in tried:
            tried.add((row.transfer_syntax_uid, target))
            ready[row.id] = _transcoded(rt, row, target)
    wants_multipart = any(r.multipart or r.type in ("*/*", "*") for r in ranges)
    if not wants_multipart:  # the client asked for a bare application/dicom
        if len(plan) > 1:
            raise DomainError(406, 'several instances need multipart/related; type="application/dicom"')
        row, target = plan[0]
        data = ready.get(row.id) if target else rt.archive.blobs.read(row.blob_key)
        return Response(data, media_type=f"{DICOM}; transfer-syntax={target or row.transfer_syntax_uid}")
    root = dicomweb_root(request)
    boundary = multipart.new_boundary()

    def parts() -> Iterator[tuple[dict[str, str], Iterator[bytes]]]:
        for row, target in plan:
            headers = {"Content-Type": f"{DICOM}; transfer-syntax={target or row.transfer_syntax_uid}",
                       "Content-Location": instance_url(root, row.study_instance_uid, row.series_instance_uid,
                                                        row.sop_instance_uid)}
            if target is None:
                headers["Content-Length"] = str(row.size_bytes)
                yield headers, _file_chunks(rt, row)
            else:
                data = ready.pop(row.id, None)
                if data is None:
                    data = _transcoded(rt, row, target, streaming=True)
                headers["Content-Length"] = str(len(data))
                yield headers, iter((data,))

    return StreamingResponse(multipart.encode(parts(), boundary),
                             media_type=multipart.content_type(DICOM, boundary))


def _retrieve_teaching(request: Request, rt: Any, plan: list[tuple[InstanceRow, str | None]],
                       ranges: list[MediaRange]) -> Response:
    """Instances for a teaching-only user: each de-identified (so never streamed as stored)."""
    def body(row: InstanceRow, target: str | None) -> bytes:
        data = _transcoded(rt, row, target) if target else rt.archive.blobs.read(row.blob_key)
        return teaching_bytes(request, data)

    if not any(r.multipart or r.type in ("*/*", "*") for r in ranges):
        if len(plan) > 1:
            raise DomainError(406, 'several instances need multipart/related; type="application/dicom"')
        row, target = plan[0]
        return Response(body(row, target), media_type=f"{DICOM}; transfer-syntax={target or row.transfer_syntax_uid}")
    root = dicomweb_root(request)
    boundary = multipart.new_boundary()

    def parts() -> Iterator[tuple[dict[str, str], Iterator[bytes]]]:
        for row, target in plan:
            data = body(row, target)
            yield {"Content-Type": f"{DICOM}; transfer-syntax={target or row.transfer_syntax_uid}",
                   "Content-Location": instance_url(root, row.study_instance_uid, row.series_instance_uid,
                                                    row.sop_instance_uid),
                   "Content-Length": str(len(data))}, iter((data,))

    return StreamingResponse(multipart.encode(parts(), boundary), media_type=multipart.content_type(DICOM, boundary))


def _transcoded(rt: Any, row: InstanceRow, target: str, streaming: bool = False) -> bytes:
    try:
        return transcode(rt.archive.blobs.read(row.blob_key), row.transfer_syntax_uid, target)
    except TranscodeError as e:
        if streaming:
            log.error("WADO-RS: %s (instance %s); the response is cut short", e, row.sop_instance_uid)
            raise
        raise DomainError(406, str(e)) from None


@router.get("/studies/{study}", summary="WADO-RS: retrieve a study")
@requires(Perm.VIEW_IMAGES, Perm.TEACHING_VIEW, audit=AuditAction.RETRIEVE)
def retrieve_study(study: str, request: Request, rt: RuntimeDep) -> Response:
    return retrieve(request, rt, instances(rt.archive.index, study))


@router.get("/studies/{study}/series/{series}", summary="WADO-RS: retrieve a series")
@requires(Perm.VIEW_IMAGES, Perm.TEACHING_VIEW, audit=AuditAction.RETRIEVE)
def retrieve_series(study: str, series: str, request: Request, rt: RuntimeDep) -> Response:
    return retrieve(request, rt, instances(rt.archive.index, study, series))


@router.get("/studies/{study}/series/{series}/instances/{sop}", summary="WADO-RS: retrieve an instance")
@requires(Perm.VIEW_IMAGES, Perm.TEACHING_VIEW, audit=AuditAction.RETRIEVE)
def retrieve_instance(study: str, series: str, sop: str, request: Request, rt: RuntimeDep) -> Response:
    return retrieve(request, rt, [one_instance(rt.archive.index, study, series, sop)])


# -- metadata ----------------------------------------------------------------------------------

_BULK_MARK = b'"BulkDataURI":"' + BULK_PREFIX.encode()


def metadata_bytes(rt: Any, root: str, study: str, series: str | None = None, sop: str | None = None) -> bytes:
    """The DICOM JSON array of the instances under a resource, in display order."""
    q = (select(IN.c.metadata_json).join(SE, SE.c.id == IN.c.series_fk).join(ST, ST.c.id == SE.c.study_fk)
         .where(ST.c.study_instance_uid == study))
    if series is not None:
        q = q.where(SE.c.series_instance_uid == series)
    if sop is not None:
        q = q.where(IN.c.sop_instance_uid == sop)
    q = q.order_by(*hierarchy_order())
    with rt.archive.index.read() as conn:
        blobs = conn.execute(q).scalars().all()
    if not blobs:
        raise DomainError(404, not_found_message(study, series, sop))
    body = b"[" + b",".join(unpack_json_bytes(b) if b else b"{}" for b in blobs) + b"]"
    return body.replace(_BULK_MARK, b'"BulkDataURI":"' + root.encode() + b"/")


def metadata_response(request: Request, rt: Any, study: str, series: str | None = None,
                      sop: str | None = None) -> Response:
    ranges = parse_accept(request.headers.get("accept"))
    if not any(not r.multipart and (r.matches(DICOM_JSON) or r.matches("application/json")) for r in ranges):
        raise DomainError(406, "metadata is available as application/dicom+json only")
    body = metadata_bytes(rt, dicomweb_root(request), study, series, sop)
    if current_principal(request).teaching_only:
        body = json.dumps([teaching_json(request, a) for a in json.loads(body)], separators=(",", ":"),
                          ensure_ascii=False).encode("utf-8")
    headers = {"Vary": "Accept-Encoding"}
    if len(body) >= METADATA_GZIP_MIN_BYTES and accepts_gzip(request.headers.get("accept-encoding")):
        body = gzip.compress(body, compresslevel=1, mtime=0)
        headers["Content-Encoding"] = "gzip"
    return Response(body, media_type=DICOM_JSON, headers=headers)


@router.get("/studies/{study}/metadata", summary="WADO-RS: study metadata")
@requires(Perm.VIEW_IMAGES, Perm.TEACHING_VIEW, audit=AuditAction.VIEW)
def study_metadata(study: str, request: Request, rt: RuntimeDep) -> Response:
    return metadata_response(request, rt, study)


@router.get("/studies/{study}/series/{series}/metadata", summary="WADO-RS: series metadata")
@requires(Perm.VIEW_IMAGES, Perm.TEACHING_VIEW, audit=AuditAction.VIEW)
def series_metadata(study: str, series: str, request: Request, rt: RuntimeDep) -> Response:
    return metadata_response(request, rt, study, series)


@router.get("/studies/{study}/series/{series}/instances/{sop}/metadata", summary="WADO-RS: instance metadata")
@requires(Perm.VIEW_IMAGES, Perm.TEACHING_VIEW, audit=AuditAction.VIEW)
def instance_metadata(study: str, series: str, sop: str, request: Request, rt: RuntimeDep) -> Response:
    return metadata_response(request, rt, study, series, sop)


# -- frames ------------------------------------------------------------------------------------


def parse_frame_list(text: str) -> list[int]:
    """1-based frame numbers of ``1,3,5`` (URL-encoded commas accepted)."""
    numbers = []
    for item in re.split(r",|%2[cC]", text):
        item = item.strip()
        if not item:
            continue
        if not item.isdigit() or int(item) < 1:
            raise DomainError(400, f"frame list {text!r}: frame numbers are integers from 1")
        numbers.append(int(item))
    if not numbers:
        raise DomainError(400, "the frame list is empty")
    return numbers


# (mode, target syntax, media type of the parts)
#   mode "stored": the stored bitstream; "native": uncompressed bytes; "encode": re-encoded in target
FramePlan = tuple[str, str, str]


def choose_frame_encoding(stored_ts: str, ranges: list[MediaRange]) -> tuple[FramePlan | None, list[str]]:
    stored_native = is_native(stored_ts)
    stored_media = pixel_media_type(stored_ts)
    reasons: list[str] = []
    for r in ranges:
        ts = r.transfer_syntax
        if r.type == "application/*":
            r = MediaRange(OCTET_STREAM, r.multipart, ts, r.q)
        if r.type in ("*/*", "*", "image/*", "video/*") or r.type == "":
            if r.type in ("image/*", "video/*") and not r.matches(stored_media):
                reasons.append(f"the stored {ts_name(stored_ts)} is not {r.type}")
                continue
            if stored_native:
                return ("native", ELE, OCTET_STREAM), []
            return ("stored", stored_ts, stored_media), []
        allowed = PIXEL_MEDIA_TYPES.get(r.type)
        if allowed is None:
            reasons.append(f"{r.type} is not a media type for frames")
            continue
        if r.type == OCTET_STREAM:
            if ts == "*" or (ts is None and stored_native):
                if stored_native:
                    return ("native", ELE, OCTET_STREAM), []
                # a single part says its syntax in its own Content-Type; parts keep the image type
                return ("stored", stored_ts, stored_media if r.multipart else OCTET_STREAM), []
            if ts in (None, ELE, ILE):
                return ("native", ELE, OCTET_STREAM), []
            if ts == stored_ts:
                return ("stored", stored_ts, OCTET_STREAM), []
            if ts in allowed:
                return ("encode", ts, OCTET_STREAM), []
            reasons.append(f"{ts} is not a transfer syntax of application/octet-stream")
            continue
        if ts == "*" and stored_ts in allowed:
            return ("stored", stored_ts, r.type), []
        if ts in (None, "*") and stored_ts in allowed:
            return ("stored", stored_ts, r.type), []
        target = allowed[0] if ts in (None, "*") else ts
        if target not in allowed:
            reasons.append(f"{target} is not a transfer syntax of {r.type}")
            continue
        if target == stored_ts:
            return ("stored", stored_ts, r.type), []
        return ("encode", target, r.type), []
    return None, reasons or ["no acceptable media type"]


def _frame_bytes(f: InstanceFile, index: int, plan: FramePlan) -> bytes:
    mode, target, _media = plan
    if mode == "stored":
        return f.encoded_frame(index)
    if mode == "native":
        return f.decoded_frame_bytes(index)
    return f.frame_in(index, target)


def frames_response(request: Request, rt: Any, row: InstanceRow, numbers: list[int] | None) -> Response:
    ranges = parse_accept(request.headers.get("accept"))
    plan, reasons = choose_frame_encoding(row.transfer_syntax_uid, ranges)
    if plan is None:
        raise DomainError(406, f"frames of {ts_name(row.transfer_syntax_uid)} cannot be sent as asked: "
                               f"{'; '.join(dict.fromkeys(reasons))}")
    payloads = _trailing_frames(rt, row, numbers, plan) if numbers is not None else None
    if payloads is None:
        payloads = _parsed_frames(rt, row, numbers, plan)
    if numbers is None:
        numbers = list(range(1, len(payloads) + 1))
    mode, target, media = plan
    part_type = f"{media}; transfer-syntax={target}"
    # the first range that could be served is the one the plan answers: one frame asked for
    # without multipart comes as the bare body (no boundary for the client to search for)
    chosen = next(r for r in ranges if choose_frame_encoding(row.transfer_syntax_uid, [r])[0] is not None)
    if len(payloads) == 1 and not chosen.multipart and chosen.type not in ("*/*", "*") and chosen.matches(media):
        return Response(payloads[0], media_type=part_type)
    boundary = multipart.new_boundary()
    root = dicomweb_root(request)
    base = instance_url(root, row.study_instance_uid, row.series_instance_uid, row.sop_instance_uid)
    parts = [({"Content-Type": part_type, "Content-Location": f"{base}/frames/{n}",
               "Content-Length": str(len(p))}, (p,)) for n, p in zip(numbers, payloads, strict=True)]
    body = b"".join(multipart.encode(parts, boundary))
    return Response(body, media_type=multipart.content_type(media, boundary, transfer_syntax=target))


def _trailing_frames(rt: Any, row: InstanceRow, numbers: list[int], plan: FramePlan) -> list[bytes] | None:
    """The frames read without parsing the file, where its layout allows (see trailing_native_frames)."""
    if plan[0] not in ("stored", "native") or not row.rows or not row.columns:
        return None
    try:
        with rt.archive.blobs.open(row.blob_key) as fp:
            return trailing_native_frames(fp, row.size_bytes, row.transfer_syntax_uid, row.rows, row.columns,
                                          row.frames, [n - 1 for n in numbers])
    except (BlobNotFound, OSError):
        return None  # the parsing path says what is wrong


def _parsed_frames(rt: Any, row: InstanceRow, numbers: list[int] | None, plan: FramePlan) -> list[bytes]:
    try:
        f = InstanceFile(rt.archive.blobs, row.blob_key, row.transfer_syntax_uid)
    except BlobNotFound:
        raise DomainError(404, f"the stored file of instance {row.sop_instance_uid} is missing") from None
    with f:
        if not f.has_pixels:
            raise DomainError(404, f"instance {row.sop_instance_uid} has no pixel data")
        if numbers is None:
            numbers = list(range(1, f.number_of_frames + 1))
        try:
            for n in numbers:
                f.check_frame(n - 1)
        except LookupError as e:
            raise DomainError(404, str(e)) from None
        try:
            return [_frame_bytes(f, n - 1, plan) for n in numbers]
        except TranscodeError as e:
            raise DomainError(406, str(e)) from None


@router.get("/studies/{study}/series/{series}/instances/{sop}/frames/{frame_list}",
            summary="WADO-RS: frames of an instance")
@requires(Perm.VIEW_IMAGES, Perm.TEACHING_VIEW, audit=AuditAction.VIEW)
def retrieve_frames(study: str, series: str, sop: str, frame_list: str, request: Request,
                    rt: RuntimeDep) -> Response:
    numbers = parse_frame_list(frame_list)
    return frames_response(request, rt, one_instance(rt.archive.index, study, series, sop), numbers)


@router.get("/studies/{study}/series/{series}/instances/{sop}/frames",
            summary="WADO-RS: all frames of an instance (the pixel data's BulkDataURI)")
@requires(Perm.VIEW_IMAGES, Perm.TEACHING_VIEW, audit=AuditAction.VIEW)
def retrieve_all_frames(study: str, series: str, sop: str, request: Request, rt: RuntimeDep) -> Response:
    return frames_response(request, rt, one_instance(rt.archive.index, study, series, sop), None)


@router.get("/studies/{study}/pixeldata", summary="WADO-RS: the frames of every image of a study")
@requires(Perm.VIEW_IMAGES, Perm.TEACHING_VIEW, audit=AuditAction.VIEW)
def study_pixel_data(study: str, request: Request, rt: RuntimeDep) -> Response:
    return pixel_data_response(request, rt, instances(rt.archive.index, study))


@router.get("/studies/{study}/series/{series}/pixeldata", summary="WADO-RS: the frames of every image of a series")
@requires(Perm.VIEW_IMAGES, Perm.TEACHING_VIEW, audit=AuditAction.VIEW)
def series_pixel_data(study: str, series: str, request: Request, rt: RuntimeDep) -> Response:
    return pixel_data_response(request, rt, instances(rt.archive.index, study, series))


@router.get("/studies/{study}/series/{series}/instances/{sop}/pixeldata",
            summary="WADO-RS: the frames of an instance")
@requires(Perm.VIEW_IMAGES, Perm.TEACHING_VIEW, audit=AuditAction.VIEW)
def instance_pixel_data(study: str, series: str, sop: str, request: Request, rt: RuntimeDep) -> Response:
    return pixel_data_response(request, rt, [one_instance(rt.archive.index, study, series, sop)])


def pixel_data_response(request: Request, rt: Any, rows: list[InstanceRow]) -> StreamingResponse:
    """PS3.18 Pixel Data resources: every frame of the images, one part each, in display order.

    One request for a whole series instead of one per frame: a viewer building a volume
    spends most of its time on the requests, not the pixels. Each part carries the frame's
    URL (Content-Location) and its length, so a client can split the stream without searching
    it; the media types and transfer syntaxes are negotiated as for frames."""
    ranges = parse_accept(request.headers.get("accept"))
    if not any(r.multipart or r.type in ("*/*", "*") for r in ranges):
        raise DomainError(406, 'the pixel data of several frames is sent as multipart/related; '
                               'type="application/octet-stream"')
    images = [r for r in rows if r.is_image]
    if not images:
        raise DomainError(404, "no image here: nothing has pixel data")
    plans: dict[str, FramePlan] = {}
    for ts in dict.fromkeys(r.transfer_syntax_uid for r in images):
        plan, reasons = choose_frame_encoding(ts, [r for r in ranges if r.multipart or r.type in ("*/*", "*")])
        if plan is None:
            raise DomainError(406, f"frames of {ts_name(ts)} cannot be sent as asked: "
                                   f"{'; '.join(dict.fromkeys(reasons))}")
        plans[ts] = plan
    media = {plan[2] for plan in plans.values()}
    inner = media.pop() if len(media) == 1 else OCTET_STREAM
    root = dicomweb_root(request)

    def frames_of(row: InstanceRow) -> list[bytes]:
        numbers = list(range(1, row.frames + 1))
        plan = plans[row.transfer_syntax_uid]
        return _trailing_frames(rt, row, numbers, plan) or _parsed_frames(rt, row, numbers, plan)

    # the first image of each stored syntax now: an encoder that refuses them is a 406, not a cut stream
    ready = {row.id: frames_of(row) for row in {r.transfer_syntax_uid: r for r in reversed(images)}.values()}

    def parts() -> Iterator[tuple[dict[str, str], Iterable[bytes]]]:
        for row in images:
            plan = plans[row.transfer_syntax_uid]
            numbers = list(range(1, row.frames + 1))
            try:
                payloads = ready.pop(row.id, None) or frames_of(row)
            except DomainError as e:  # the status is sent: leave the instance out, the client asks for it alone
                log.warning("pixel data of instance %s left out: %s", row.sop_instance_uid, e.message)
                continue
            base = instance_url(root, row.study_instance_uid, row.series_instance_uid, row.sop_instance_uid)
            for n, payload in zip(numbers, payloads, strict=True):
                yield ({"Content-Type": f"{plan[2]}; transfer-syntax={plan[1]}",
                        "Content-Location": f"{base}/frames/{n}", "Content-Length": str(len(payload))}, (payload,))

    boundary = multipart.new_boundary()
    return StreamingResponse(multipart.encode(parts(), boundary), media_type=multipart.content_type(inner, boundary))


# -- bulk data ---------------------------------------------------------------------------------

_TAG_PATH_RE = re.compile(r"^[0-9A-Fa-f]{8}(/\d+/[0-9A-Fa-f]{8})*$")


def _find_bulk(ds: Dataset, tags: list[int]) -> Any:
    """The element a BulkDataURI names: the top-level tag, a ``seq/item/tag`` path, or, as
    Voxa's URIs for nested values carry only the tag, the first such element found depth-first."""
    if len(tags) > 1:
        node: Any = ds
        for i in range(0, len(tags) - 1, 2):
            seq = node.get(tags[i])
            item = int(tags[i + 1])
            if seq is None or seq.VR != "SQ" or item >= len(seq.value):
                return None
            node = seq.value[item]
        return node.get_item(tags[-1], keep_deferred=True) if tags[-1] in node else None
    tag = tags[0]
    if tag in ds:
        return ds.get_item(tag, keep_deferred=True)
    for elem in ds.elements():  # raw elements: deferred values stay unread
        if elem.VR == "SQ":
            for item in ds[elem.tag].value:
                found = _find_bulk(item, [tag])
                if found is not None:
                    return found
    return None


@router.get("/studies/{study}/series/{series}/instances/{sop}/bulk/{tag_path:path}",
            summary="WADO-RS: bulk data of an instance (honours Range)")
@requires(Perm.VIEW_IMAGES, Perm.TEACHING_VIEW, audit=AuditAction.VIEW)
def retrieve_bulk(study: str, series: str, sop: str, tag_path: str, request: Request, rt: RuntimeDep) -> Response:
    tag_path = tag_path.strip("/")
    if not _TAG_PATH_RE.match(tag_path):
        raise DomainError(400, f"bulk data path {tag_path!r}: expected TAG or TAG/ITEM/TAG... (8 hex digits)")
    parts = tag_path.split("/")
    tags = [int(p, 16) if i % 2 == 0 else int(p) for i, p in enumerate(parts)]
    ranges = parse_accept(request.headers.get("accept"))
    row = one_instance(rt.archive.index, study, series, sop)
    if tags == [0x7FE00010] and row.is_image:
        return frames_response(request, rt, row, None)
    if current_principal(request).teaching_only:
        # Other bulk data may hold identifying content the profile would remove (overlays,
        # encapsulated documents): teaching users get pixel data only.
        raise DomainError(404, f"instance {sop} has no element {tag_path} for teaching access")
    try:
        f = InstanceFile(rt.archive.blobs, row.blob_key, row.transfer_syntax_uid)
    except BlobNotFound:
        raise DomainError(404, f"the stored file of instance {row.sop_instance_uid} is missing") from None
    if not any(r.matches(OCTET_STREAM) for r in ranges):
        f.close()
        raise DomainError(406, "bulk data is available as application/octet-stream")
    with f:
        elem = _find_bulk(f.ds, tags)
        if elem is None:
            raise DomainError(404, f"instance {sop} has no element {tag_path}")
        data = f.element_bytes(elem)
        if data is None:
            raise DomainError(404, f"element {tag_path} of instance {sop} holds no bulk data")
    try:
        rng = parse_range(request.headers.get("range"), len(data))
    except RangeNotSatisfiable as e:
        return Response(str(e).encode(), status_code=416, headers={"Content-Range": f"bytes */{len(data)}"},
                        media_type="text/plain")
    status, headers = 200, {"Accept-Ranges": "bytes"}
    if rng is not None:
        start, end = rng
        headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        data = data[start:end + 1]
        status = 206
    if any(r.multipart for r in ranges) or not any(not r.multipart and r.type == OCTET_STREAM for r in ranges):
        boundary = multipart.new_boundary()
        part_headers = {"Content-Type": OCTET_STREAM, "Content-Length": str(len(data))}
        if "Content-Range" in headers:
            part_headers["Content-Range"] = headers["Content-Range"]
        body = b"".join(multipart.encode([(part_headers, (data,))], boundary))
        return Response(body, status_code=status, headers=headers,
                        media_type=multipart.content_type(OCTET_STREAM, boundary))
    return Response(data, status_code=status, headers=headers, media_type=OCTET_STREAM)
