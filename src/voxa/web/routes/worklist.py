"""Modality worklist items (what modalities are offered) and the performed steps they report.

Routes are sync ``def``: FastAPI runs them in its thread pool, so index work never
blocks the event loop.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from voxa.dimse import worklist
from voxa.security.audit import AuditAction
from voxa.security.permissions import Permission as Perm
from voxa.web.access import requires
from voxa.web.app import DomainError
from voxa.web.deps import MAX_DB_INT, RowId, RuntimeDep

router = APIRouter(tags=["worklist"])


class WorklistItemIn(BaseModel):
    """A scheduled procedure step.  Dates are YYYYMMDD (or YYYY-MM-DD), times HHMMSS (or HH:MM)."""

    model_config = ConfigDict(extra="forbid")

    patient_id: str
    patient_name: str = Field(description="DICOM PN, e.g. 'Doe^Jane'.")
    patient_birth_date: str = ""
    patient_sex: str = ""
    accession_number: str = Field("", description="Generated when empty.")
    requested_procedure_id: str = Field("", description="Generated when empty.")
    requested_procedure_description: str = ""
    study_instance_uid: str = Field("", description="Generated when empty.")
    referring_physician_name: str = ""
    modality: str = ""
    scheduled_station_aet: str = ""
    scheduled_station_name: str = ""
    scheduled_start_date: str = ""
    scheduled_start_time: str = ""
    scheduled_performing_physician_name: str = ""
    scheduled_procedure_step_id: str = Field("", description="Generated when empty.")
    scheduled_procedure_step_description: str = ""


class WorklistItemOut(BaseModel):
    id: int
    patient_id: str
    patient_name: str
    patient_birth_date: str
    patient_sex: str
    accession_number: str
    requested_procedure_id: str
    requested_procedure_description: str
    study_instance_uid: str
    referring_physician_name: str
    modality: str
    scheduled_station_aet: str
    scheduled_station_name: str
    scheduled_start_date: str
    scheduled_start_time: str
    scheduled_performing_physician_name: str
    scheduled_procedure_step_id: str
    scheduled_procedure_step_description: str
    status: str = Field(description="SCHEDULED, IN PROGRESS, COMPLETED or DISCONTINUED.")
    created_at: str
    updated_at: str


class PerformedStepOut(BaseModel):
    sop_instance_uid: str
    status: str
    calling_aet: str
    study_instance_uid: str
    accession_number: str
    patient_id: str
    worklist_item_id: int | None
    worklist_item: WorklistItemOut | None
    created_at: str
    updated_at: str
    dataset: dict[str, Any] | None = Field(None, description="The MPPS dataset as DICOM JSON (detail view only).")


@router.post("/worklist", status_code=201, response_model=WorklistItemOut)
@requires(Perm.UPLOAD, Perm.MANAGE_SETTINGS, audit=AuditAction.STORE)
def create_worklist_item(body: WorklistItemIn, rt: RuntimeDep) -> dict[str, Any]:
    """Schedule a procedure step; missing identifiers (UIDs, accession, step IDs) are generated."""
    try:
        return worklist.create_item(rt.archive.index, **body.model_dump())
    except ValueError as e:
        raise DomainError(400, str(e)) from None


@router.get("/worklist", response_model=list[WorklistItemOut])
@requires(Perm.UPLOAD, Perm.MANAGE_SETTINGS, audit=AuditAction.QUERY)
def list_worklist_items(
    rt: RuntimeDep,
    patient_id: str | None = None,
    patient_name: str | None = Query(None, description="Case-insensitive; * and ? wildcards."),
    accession_number: str | None = None,
    modality: str | None = None,
    station_aet: str | None = None,
    date: str | None = Query(None, description="YYYYMMDD or a range YYYYMMDD-YYYYMMDD."),
    date_from: str | None = None,
    date_to: str | None = None,
    status: str | None = Query(None, description="Any status when absent."),
    limit: int | None = Query(None, ge=1, le=MAX_DB_INT),
) -> list[dict[str, Any]]:
    if date_from or date_to:
        if date:
            raise DomainError(400, "give either date or date_from/date_to")
        date = f"{_compact(date_from)}-{_compact(date_to)}"
    try:
        return worklist.list_items(rt.archive.index, patient_id=patient_id, patient_name=patient_name,
                                   accession_number=accession_number, modality=modality,
                                   station_aet=station_aet, date=date, status=status, limit=limit)
    except ValueError as e:
        raise DomainError(400, str(e)) from None


def _compact(date: str | None) -> str:
    return (date or "").strip().replace("-", "")


@router.get("/worklist/{item_id}", response_model=WorklistItemOut)
@requires(Perm.UPLOAD, Perm.MANAGE_SETTINGS, audit=AuditAction.VIEW)
def get_worklist_item(item_id: RowId, rt: RuntimeDep) -> dict[str, Any]:
    try:
        return worklist.get_item(rt.archive.index, item_id)
    except LookupError as e:
        raise DomainError(404, str(e)) from None


@router.delete("/worklist/{item_id}", status_code=204, response_class=Response)
@requires(Perm.UPLOAD, Perm.MANAGE_SETTINGS, audit=AuditAction.DELETE)
def delete_worklist_item(item_id: RowId, rt: RuntimeDep) -> Response:
    try:
        worklist.delete_item(rt.archive.index, item_id)
    except LookupError as e:
        raise DomainError(404, str(e)) from None
    return Response(status_code=204)


@router.get("/mpps", response_model=list[PerformedStepOut])
@requires(Perm.UPLOAD, Perm.MANAGE_SETTINGS, audit=AuditAction.QUERY)
def list_performed_steps(rt: RuntimeDep, status: str | None = None,
                         limit: int | None = Query(None, ge=1, le=MAX_DB_INT)) -> list[dict[str, Any]]:
    """Modality Performed Procedure Steps, newest first, each with the worklist item it performed."""
    return worklist.list_performed_steps(rt.archive.index, status=status, limit=limit)


@router.get("/mpps/{sop_instance_uid}", response_model=PerformedStepOut)
@requires(Perm.UPLOAD, Perm.MANAGE_SETTINGS, audit=AuditAction.VIEW)
def get_performed_step(sop_instance_uid: str, rt: RuntimeDep) -> dict[str, Any]:
    try:
        return worklist.get_performed_step(rt.archive.index, sop_instance_uid)
    except LookupError as e:
        raise DomainError(404, str(e)) from None
