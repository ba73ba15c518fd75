"""Measurements and annotations over REST, stored per study and user; export as DICOM SR.

* ``GET /measurements/studies/{study}`` — the caller's measurements of the study
  (``?all_users=true``: everyone's);
* ``POST /measurements/studies/{study}`` — create one: the server computes its values from
  the graphic data and the referenced image (pixel spacing, rescale, and for ROI statistics
  and probes the pixel values of the referenced frame);
* ``PUT`` / ``DELETE /measurements/studies/{study}/{measurement_id}`` — replace or delete one
  of the caller's own (404 for anyone else's);
* ``POST /measurements/studies/{study}/export-sr`` — the caller's measurements of the study
  as a TID 1500 Measurement Report (Comprehensive 3D SR), stored in the archive through the
  one ingest path, so that any viewer reading the study (OHIF) shows them.

Graphic data, kinds and the SR structure: ``docs/measurements.md``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import pydicom
from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, Field
from pydicom.dataset import Dataset
from sqlalchemy import select

from voxa.archive.ingest import Outcome, RefusalCode
from voxa.archive.models import Study, table_of
from voxa.measurements import MeasurementKind
from voxa.measurements import store as measurement_store
from voxa.measurements.geometry import (
    MAX_POINTS,
    PATIENT_COORDINATE_KINDS,
    PIXEL_KINDS,
    FrameImage,
    MeasurementError,
    Quantity,
    contour_volume_ml,
    frame_count,
    frame_image,
    measure_image,
    measure_patient,
    polygon_area_mm2,
    segment_volume_ml,
    volume_quantity,
)
from voxa.measurements.sr import ReportError, build_measurement_report, sr_to_bytes
from voxa.runtime import Runtime
from voxa.security.audit import AuditAction
from voxa.security.permissions import Permission as Perm
from voxa.web.access import Principal, PrincipalDep, note_access, requires
from voxa.web.app import DomainError
from voxa.web.deps import RuntimeDep

router = APIRouter(tags=["measurements"])
ST = table_of(Study)

_MAX_CONTOURS = 2000
_UID = r"^[0-9]+(\.[0-9]+)*$"
_MAX_INT = 2**31 - 1
MeasurementId = Annotated[int, Path(ge=1, le=_MAX_INT)]
_POSITION_TOLERANCE_MM = 0.01


class Contour(BaseModel):
    sop_instance_uid: str = Field(max_length=64, pattern=_UID)
    frame_number: int | None = Field(None, ge=1, le=_MAX_INT)
    points: list[tuple[float, float]] = Field(min_length=3, max_length=MAX_POINTS,
                                              description="(column, row) image coordinates of the outline.")


class SegmentReference(BaseModel):
    sop_instance_uid: str = Field(max_length=64, pattern=_UID,
                                  description="SOP Instance UID of a DICOM SEG of the study.")
    segment_number: int = Field(ge=1, le=65535)


class MeasurementIn(BaseModel):
    kind: MeasurementKind
    label: str = Field("", max_length=1024, description="Free text; the text of a text annotation.")
    sop_instance_uid: str | None = Field(None, max_length=64, pattern=_UID, description="The image it was drawn on.")
    frame_number: int | None = Field(None, ge=1, le=_MAX_INT, description="1-based frame of a multi-frame image.")
    points: list[tuple[float, float]] | None = Field(
        None, max_length=MAX_POINTS,
        description="Image coordinates: (column, row), (0, 0) the top-left corner of the top-left pixel.")
    points_mm: list[tuple[float, float, float]] | None = Field(
        None, max_length=MAX_POINTS, description="Patient coordinates (LPS, mm): distance, angle, Cobb angle, "
                                                 "arrow and text drawn on a reformat or in 3-D.")
    contours: list[Contour] | None = Field(None, max_length=_MAX_CONTOURS,
                                           description="Volume: outlines on parallel slices.")
    segment: SegmentReference | None = Field(None, description="Volume: a segment of a DICOM SEG.")


@dataclass(frozen=True)
class _Evaluated:
    """A drawing checked against its image(s), with the values computed from it."""

    series_instance_uid: str
    sop_instance_uid: str
    frame_number: int | None
    graphic: dict[str, Any]
    values: dict[str, dict[str, Any]]


# --------------------------------------------------------------------------- helpers


def _username(principal: Principal) -> str:
    if principal.user is None:  # pragma: no cover - the routes require a signed-in user
        raise DomainError(401, "sign in first")
    return principal.user.username


def _require_study(rt: Runtime, study: str) -> None:
    if len(study) > 64 or "\x00" in study:
        raise DomainError(404, "no such study")
    with rt.archive.index.read() as conn:
        if conn.execute(select(ST.c.id).where(ST.c.study_instance_uid == study)).first() is None:
            raise DomainError(404, f"no study {study}")


class _Images:
    """Instances of one study read from the archive, once per request."""

    def __init__(self, rt: Runtime, study: str):
        self.rt = rt
        self.study = study
        self._headers: dict[str, tuple[str, Dataset]] = {}

    def read(self, sop_instance_uid: str, *, pixels: bool = False) -> tuple[str, Dataset]:
        """(Series Instance UID, dataset) of an instance of the study; 422 when it is not there."""
        if not pixels and sop_instance_uid in self._headers:
            return self._headers[sop_instance_uid]
        found = self.rt.archive.index.locate(study_uid=self.study, sop_uid=sop_instance_uid)
        if not found:
            raise DomainError(422, f"no instance {sop_instance_uid} in study {self.study}")
        loc = found[0]
        try:
            data = self.rt.archive.read_instance(loc.blob_key)
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=not pixels)
        except Exception as e:  # noqa: BLE001 - pydicom raises many kinds; say which instance and why
            raise DomainError(422, f"instance {sop_instance_uid} cannot be read: {type(e).__name__}: {e}") from None
        result = (loc.series_instance_uid, ds)
        if not pixels:
            self._headers[sop_instance_uid] = result
        return result


def _label(text: str) -> str:
    """The label as stored: without NUL characters (PostgreSQL text refuses them)."""
    return text.replace("\x00", "")


def _json_values(values: dict[str, Quantity]) -> dict[str, dict[str, Any]]:
    for name, q in values.items():
        if not math.isfinite(q.value):
            raise MeasurementError(f"the {name} is not a finite number: check the coordinates")
    return {name: q.as_json() for name, q in values.items()}


def _frame(ds: Dataset, frame_number: int | None, *, pixels: bool) -> tuple[FrameImage, int | None]:
    """The frame's image, and the frame number to store (None for a single-frame image)."""
    single = frame_count(ds) <= 1
    if single and frame_number not in (None, 1):
        raise MeasurementError(f"the image has one frame; frame_number {frame_number} does not exist")
    image = frame_image(ds, None if single else frame_number, with_pixels=pixels)
    return image, (None if single else frame_number)


def _evaluate(rt: Runtime, study: str, body: MeasurementIn) -> _Evaluated:
    """Check the graphic data against the referenced image(s) and compute the values."""
    try:
        return _evaluate_drawing(_Images(rt, study), body)
    except MeasurementError as e:
        raise DomainError(422, str(e)) from None


def _evaluate_drawing(images: _Images, body: MeasurementIn) -> _Evaluated:
    kind = body.kind
    if kind is MeasurementKind.VOLUME:
        return _evaluate_volume(images, body)
    if body.contours is not None or body.segment is not None:
        raise MeasurementError("contours and segment are for volume measurements only")
    if not body.sop_instance_uid:
        raise MeasurementError("sop_instance_uid is required: the image the measurement was drawn on")
    if kind is MeasurementKind.TEXT and not body.label.strip():
        raise MeasurementError("a text annotation needs its text in label")
    if body.points is None and body.points_mm is None:
        raise MeasurementError("points (image coordinates) or points_mm (patient coordinates) are required")
    pixels = kind in PIXEL_KINDS and body.points is not None
    series_uid, ds = images.read(body.sop_instance_uid, pixels=pixels)
    image, frame_number = _frame(ds, body.frame_number, pixels=pixels)
    graphic: dict[str, Any] = {}
    if body.points_mm is not None:
        if kind not in PATIENT_COORDINATE_KINDS:
            raise MeasurementError(f"a {kind.value} must be drawn on the image (points), not in patient "
                                   "coordinates")
        if not image.frame_of_reference_uid:
            raise MeasurementError("the image has no Frame of Reference UID: patient coordinates cannot "
                                   "be referenced")
        values = measure_patient(kind, body.points_mm)
        graphic["points_mm"] = [list(p) for p in body.points_mm]
    if body.points is not None:
        values = measure_image(kind, body.points, image)
        graphic["points"] = [list(p) for p in body.points]
    return _Evaluated(series_instance_uid=series_uid, sop_instance_uid=body.sop_instance_uid,
                      frame_number=frame_number, graphic=graphic, values=_json_values(values))


def _evaluate_volume(images: _Images, body: MeasurementIn) -> _Evaluated:
    if (body.contours is None) == (body.segment is None):
        raise MeasurementError("a volume needs either contours or a segment")
    if body.points is not None or body.points_mm is not None:
        raise MeasurementError("a volume takes contours or a segment, not points")
    if body.segment is not None:
        uid = body.segment.sop_instance_uid
        series_uid, seg = images.read(uid, pixels=True)
        volume = segment_volume_ml(seg, body.segment.segment_number)
        return _Evaluated(series_instance_uid=series_uid, sop_instance_uid=uid, frame_number=None,
                          graphic={"segment": body.segment.model_dump()}, values=_json_values(volume_quantity(volume)))
    contours = body.contours or []
    if not contours:
        raise MeasurementError("a volume needs at least one contour")
    areas: list[float] = []
    positions: list[float] = []
    normals: list[np.ndarray] = []
    stored: list[dict[str, Any]] = []
    first_series = ""
    first_frame: int | None = None
    for i, contour in enumerate(contours):
        series_uid, ds = images.read(contour.sop_instance_uid)
        image, frame_number = _frame(ds, contour.frame_number, pixels=False)
        if image.pixel_spacing_mm is None:
            raise MeasurementError(f"contour {i + 1}: the image has no pixel spacing")
        normal = image.normal()
        if normal is None or image.position_mm is None:
            raise MeasurementError(f"contour {i + 1}: the image has no position/orientation in the patient")
        if normals and abs(float(np.dot(normal, normals[0]))) < 0.9999:
            raise MeasurementError(f"contour {i + 1} is not parallel to the first: a volume needs parallel slices")
        if i == 0:
            first_series, first_frame = series_uid, frame_number
        normals.append(normal)
        positions.append(float(np.dot(normals[0], np.asarray(image.position_mm))))
        areas.append(polygon_area_mm2(contour.points, image.pixel_spacing_mm))
        stored.append({"sop_instance_uid": contour.sop_instance_uid, "frame_number": frame_number,
                       "points": [list(p) for p in contour.points]})
    distinct = sorted(set(round(p / _POSITION_TOLERANCE_MM) * _POSITION_TOLERANCE_MM for p in positions))
    if len(distinct) > 1:
        slice_spacing = float(np.median(np.diff(distinct)))
    else:
        _, ds = images.read(contours[0].sop_instance_uid)
        spacing = ds.get("SpacingBetweenSlices") or ds.get("SliceThickness")
        if spacing in (None, ""):
            raise MeasurementError("one contour only, and the image has no slice thickness: outline the "
                                   "structure on every slice it spans")
        try:
            slice_spacing = float(spacing)
        except (TypeError, ValueError):
            raise MeasurementError("the image's slice thickness is not a number") from None
    volume = contour_volume_ml(areas, slice_spacing)
    return _Evaluated(series_instance_uid=first_series, sop_instance_uid=contours[0].sop_instance_uid,
                      frame_number=first_frame, graphic={"contours": stored},
                      values=_json_values(volume_quantity(volume)))


def _referenced_uids(m: measurement_store.StoredMeasurement) -> list[str]:
    uids = [m.sop_instance_uid]
    uids += [str(c["sop_instance_uid"]) for c in m.graphic.get("contours", [])]
    return list(dict.fromkeys(u for u in uids if u))


# --------------------------------------------------------------------------- routes


@router.get("/measurements/studies/{study}")
@requires(Perm.VIEW_IMAGES, audit=AuditAction.VIEW)
def list_measurements(study: str, rt: RuntimeDep, principal: PrincipalDep,
                      all_users: bool = False) -> list[dict[str, Any]]:
    _require_study(rt, study)
    found = measurement_store.list_measurements(rt.archive.index, study_instance_uid=study,
                                                username=None if all_users else _username(principal))
    return [m.as_json() for m in found]


@router.post("/measurements/studies/{study}", status_code=201)
@requires(Perm.VIEW_IMAGES, audit=AuditAction.MODIFY)
def create_measurement(study: str, body: MeasurementIn, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    _require_study(rt, study)
    done = _evaluate(rt, study, body)
    try:
        created = measurement_store.create_measurement(
            rt.archive.index, study_instance_uid=study, series_instance_uid=done.series_instance_uid,
            sop_instance_uid=done.sop_instance_uid, frame_number=done.frame_number, username=_username(principal),
            kind=body.kind.value, label=_label(body.label), graphic=done.graphic, values=done.values)
    except measurement_store.UnknownStudy:
        raise DomainError(404, f"no study {study}") from None
    return created.as_json()


@router.put("/measurements/studies/{study}/{measurement_id}")
@requires(Perm.VIEW_IMAGES, audit=AuditAction.MODIFY)
def update_measurement(study: str, measurement_id: MeasurementId, body: MeasurementIn, rt: RuntimeDep,
                       principal: PrincipalDep) -> dict[str, Any]:
    username = _username(principal)
    if measurement_store.get_measurement(rt.archive.index, measurement_id, study_instance_uid=study,
                                         username=username) is None:
        raise DomainError(404, f"you have no measurement {measurement_id} in study {study}")
    done = _evaluate(rt, study, body)
    updated = measurement_store.update_measurement(
        rt.archive.index, measurement_id, study_instance_uid=study, username=username,
        series_instance_uid=done.series_instance_uid, sop_instance_uid=done.sop_instance_uid,
        frame_number=done.frame_number, kind=body.kind.value, label=_label(body.label), graphic=done.graphic,
        values=done.values)
    if updated is None:
        raise DomainError(404, f"you have no measurement {measurement_id} in study {study}")
    return updated.as_json()


@router.delete("/measurements/studies/{study}/{measurement_id}")
@requires(Perm.VIEW_IMAGES, audit=AuditAction.MODIFY)
def delete_measurement(study: str, measurement_id: MeasurementId, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    if not measurement_store.delete_measurement(rt.archive.index, measurement_id, study_instance_uid=study,
                                                username=_username(principal)):
        raise DomainError(404, f"you have no measurement {measurement_id} in study {study}")
    return {"deleted": measurement_id}


@router.post("/measurements/studies/{study}/export-sr", status_code=201)
@requires(Perm.CREATE_REPORT, Perm.VIEW_IMAGES, audit=AuditAction.STORE)
def export_sr(study: str, request: Request, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    _require_study(rt, study)
    username = _username(principal)
    measurements = measurement_store.list_measurements(rt.archive.index, study_instance_uid=study, username=username)
    if not measurements:
        raise DomainError(422, f"you have no measurements in study {study} to export")
    images = _Images(rt, study)
    evidence: dict[str, Dataset] = {}
    missing: list[int] = []
    for m in measurements:
        for uid in _referenced_uids(m):
            if uid in evidence:
                continue
            if not rt.archive.index.locate(study_uid=study, sop_uid=uid):
                missing.append(m.id)
                break
            evidence[uid] = images.read(uid)[1]
    if missing:
        raise DomainError(409, "measurements " + ", ".join(str(i) for i in sorted(set(missing)))
                          + " reference images no longer in the archive; delete or redraw them first")
    display_name = principal.user.display_name if principal.user is not None else ""
    try:
        sr = build_measurement_report(measurements, evidence=_images_first(list(evidence.values())),
                                      username=username, display_name=display_name)
    except (ReportError, ValueError) as e:
        raise DomainError(422, f"the measurements cannot be written as DICOM SR: {e}") from None
    result = rt.archive.ingest(sr_to_bytes(sr), source="measurements")
    if not result.ok:
        status = 507 if result.code is RefusalCode.STORAGE_FULL else 500
        raise DomainError(status, f"the archive refused the SR: {result.reason}")
    note_access(request, study_uids=study, detail={"sr_sop_instance_uid": result.sop_instance_uid,
                                                   "measurements": len(measurements)})
    return {"study_instance_uid": study, "series_instance_uid": result.series_instance_uid,
            "sop_instance_uid": result.sop_instance_uid, "measurements": len(measurements),
            "stored": result.outcome is not Outcome.DUPLICATE}


def _images_first(datasets: Sequence[Dataset]) -> list[Dataset]:
    """Evidence with an image first: the SR copies its patient and study from the first."""
    seg = "1.2.840.10008.5.1.4.1.1.66."
    return sorted(datasets, key=lambda ds: str(ds.get("SOPClassUID", "")).startswith(seg))
