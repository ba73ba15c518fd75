"""Analyses over REST: run a tool on a series of a study as a job, follow it, verify its result.

* ``GET /analyses/tools`` — the tools, their parameters (type, default, unit) and outputs;
* ``POST /analyses/studies/{study}/{tool}`` — body ``{"series": "<SeriesInstanceUID>" | [...],
  "params": {...}}``; answers 202 with ``{"id", "job", "status", ...}`` (the analysis runs in the
  background: the embedded executor or Celery workers);
* ``GET /analyses/studies/{study}`` — the study's analyses, newest first (without results);
* ``GET /analyses/studies/{study}/{result_id}`` — one analysis: status, stage and percent while it
  runs, the result and the DICOM objects it stored (SEG, SR) once done;
* ``POST /analyses/studies/{study}/{result_id}/verify`` — a reader (report author or signer)
  records that they reviewed the result;
* ``POST /analyses/studies/{study}/{result_id}/cancel`` — stop a queued or running analysis.

Errors: unknown tool or analysis 404, a wrong parameter 422 naming it, a series that is not in
the study 422, verifying an unfinished analysis 409, a broker that cannot be reached 503.
Tools, parameters and result shapes: ``docs/analysis.md``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, Field
from sqlalchemy import select

from voxa.analysis import results as store
from voxa.analysis import tools as analysis_tools
from voxa.analysis.results import StoredResult
from voxa.archive.models import Study, table_of
from voxa.runtime import Runtime
from voxa.security.audit import AuditAction
from voxa.security.permissions import Permission as Perm
from voxa.web.access import PrincipalDep, authenticated, note_access, requires
from voxa.web.app import DomainError
from voxa.web.deps import RuntimeDep

router = APIRouter(tags=["analyses"])
ST = table_of(Study)
# analysis_results.id is an INTEGER (32-bit on PostgreSQL): a larger id is a 422, not a 500
ResultId = Annotated[int, Path(ge=1, le=2**31 - 1)]


class AnalysisRequest(BaseModel):
    series: str | list[str] = Field(
        description="SeriesInstanceUID of the series to analyse (or a list, for tools that take several).")
    params: dict[str, Any] = Field(default_factory=dict,
                                   description="Tool parameters by name (GET /analyses/tools lists them).")


def _require_study(rt: Runtime, study: str) -> None:
    if len(study) > 64 or "\x00" in study:
        raise DomainError(404, "no such study")
    with rt.archive.index.read() as conn:
        if conn.execute(select(ST.c.id).where(ST.c.study_instance_uid == study)).first() is None:
            raise DomainError(404, f"no study {study}")


def _result(rt: Runtime, study: str, result_id: int) -> StoredResult:
    found = store.get_result(rt.archive.index, result_id, study_instance_uid=study)
    if found is None:
        raise DomainError(404, f"no analysis {result_id} in study {study}")
    return found


def _executor_name(rt: Runtime) -> str:
    return "celery" if rt.settings.celery_broker_url else "embedded"


@router.get("/analyses/tools", response_model=None)
@authenticated
def list_tools(rt: RuntimeDep) -> dict[str, Any]:
    """The analysis tools and their parameter schemas."""
    return {"executor": _executor_name(rt), "tools": [t.as_json() for t in analysis_tools.tools().values()]}


@router.post("/analyses/studies/{study}/{tool}", status_code=202, response_model=None)
@requires(Perm.RUN_ANALYSIS, audit=AuditAction.VIEW)
def submit(study: str, tool: str, body: AnalysisRequest, request: Request, rt: RuntimeDep,
           principal: PrincipalDep) -> dict[str, Any]:
    """Run ``tool`` on a series of the study; 202 with the analysis id and its job."""
    try:
        analysis_tools.get_tool(tool)
    except analysis_tools.UnknownTool as e:
        raise DomainError(404, str(e)) from None
    _require_study(rt, study)
    try:
        result = analysis_tools.submit_analysis(rt, tool=tool, study_instance_uid=study, series=body.series,
                                                params=body.params, created_by=principal.actor)
    except analysis_tools.AnalysisError as e:
        raise DomainError(e.status, str(e)) from None
    except store.UnknownStudy:
        raise DomainError(404, f"no study {study}") from None
    note_access(request, study_uids=study, detail={"analysis": result.id, "tool": tool})
    return {**result.as_json(with_result=False), "executor": _executor_name(rt)}


@router.get("/analyses", response_model=None)
@requires(Perm.VIEW_IMAGES, Perm.VIEW_REPORT, audit=AuditAction.QUERY)
def studies_with_analyses(rt: RuntimeDep, principal: PrincipalDep, status: str | None = None,
                          review: str | None = None, tool: str | None = None) -> dict[str, Any]:
    """The studies (that the caller may see) with analyses of this ``status``
    (queued, running, done, failed, cancelled), ``review`` state (pending: done and not yet
    verified; verified) and ``tool``: ``{"studies": {StudyInstanceUID: count}}``."""
    try:
        wanted = store.ResultStatus(status) if status else None
    except ValueError:
        raise DomainError(422, f"status must be one of {', '.join(s.value for s in store.ResultStatus)}, "
                               f"got {(status or '')[:32]!r}") from None
    if review not in (None, "", "pending", "verified"):
        raise DomainError(422, f"review must be pending or verified, got {review[:32]!r}")
    if tool is not None and tool not in analysis_tools.tools():
        raise DomainError(422, f"no analysis tool {tool[:64]!r} (tools: {', '.join(analysis_tools.tools())})")
    found = store.studies_with_results(rt.archive.index, status=wanted, review=review or None, tool=tool,
                                       access=principal.access)
    return {"studies": found}


@router.get("/analyses/studies/{study}", response_model=None)
@requires(Perm.VIEW_IMAGES, Perm.VIEW_REPORT, audit=AuditAction.VIEW)
def list_analyses(study: str, rt: RuntimeDep, tool: str | None = None) -> dict[str, Any]:
    """The study's analyses, newest first, without their results (``GET .../{id}`` has them)."""
    _require_study(rt, study)
    if tool is not None and tool not in analysis_tools.tools():
        raise DomainError(422, f"no analysis tool {tool[:64]!r} (tools: {', '.join(analysis_tools.tools())})")
    found = store.list_results(rt.archive.index, study_instance_uid=study, tool=tool)
    return {"study_instance_uid": study, "analyses": [r.as_json(with_result=False) for r in found]}


@router.get("/analyses/studies/{study}/{result_id}", response_model=None)
@requires(Perm.VIEW_IMAGES, Perm.VIEW_REPORT, audit=AuditAction.VIEW)
def get_analysis(study: str, result_id: ResultId, rt: RuntimeDep) -> dict[str, Any]:
    """Status, stage and percent; once done the result and the stored SEG/SR."""
    return _result(rt, study, result_id).as_json()


@router.post("/analyses/studies/{study}/{result_id}/verify", response_model=None)
@requires(Perm.SIGN_REPORT, Perm.CREATE_REPORT, audit=AuditAction.MODIFY)
def verify(study: str, result_id: ResultId, request: Request, rt: RuntimeDep,
           principal: PrincipalDep) -> dict[str, Any]:
    """Record that the caller reviewed the (finished) result."""
    _result(rt, study, result_id)
    try:
        verified = store.verify_result(rt.archive.index, result_id, verified_by=principal.actor,
                                       study_instance_uid=study)
    except store.NotFinished as e:
        raise DomainError(409, str(e)) from None
    if verified is None:  # pragma: no cover - deleted between the two reads
        raise DomainError(404, f"no analysis {result_id} in study {study}")
    note_access(request, study_uids=study, detail={"analysis": result_id, "verified": True})
    return verified.as_json()


@router.post("/analyses/studies/{study}/{result_id}/cancel", response_model=None)
@requires(Perm.RUN_ANALYSIS, audit=AuditAction.MODIFY)
def cancel(study: str, result_id: ResultId, request: Request, rt: RuntimeDep) -> dict[str, Any]:
    """Ask a queued or running analysis to stop (at its next stage); a finished one is left as it is."""
    current = _result(rt, study, result_id)
    note_access(request, study_uids=study, detail={"analysis": result_id, "cancel": True})
    return analysis_tools.cancel_analysis(rt, current).as_json(with_result=False)
