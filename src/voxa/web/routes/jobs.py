"""Jobs over REST, shaped like Orthanc's ``/jobs`` so that scripts polling Orthanc work here.

``GET /jobs`` (IDs, newest first; ``?expand``: full objects), ``GET /jobs/{id}``,
``POST /jobs/{id}/cancel``.  A job object has Orthanc's fields (``ID``, ``Type``, ``State``,
``Progress``, ``ErrorCode``, ``ErrorDescription``, ``CreationTime``, ``CompletionTime``,
``Content``...) and Voxa's own (``id``, ``kind``, ``state``, ``stage``, ``progress``, ``params``,
``result``, ``error``, ``created_at``, ``updated_at``).

States map as pending -> ``Pending``, running -> ``Running``, success -> ``Success``,
failure -> ``Failure``.  Orthanc has no cancelled state (a cancelled Orthanc job is a
``Failure`` whose description is "Canceled job"), so a cancelled job is ``Failure`` with that
description, and ``state`` says ``cancelled``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter

from voxa.jobs.executor import TERMINAL, JobView, UnknownJob
from voxa.security.permissions import Permission as Perm
from voxa.web.access import requires
from voxa.web.app import DomainError
from voxa.web.deps import RuntimeDep

router = APIRouter(tags=["jobs"])

_STATE = {"pending": "Pending", "running": "Running", "success": "Success", "failure": "Failure",
          "cancelled": "Failure"}
#: Orthanc's job types for the kinds it also has.
_TYPE = {"dicom-store": "DicomModalityStore", "dicom-move": "DicomMoveScu", "http-store": "OrthancPeerStore"}
# Orthanc's error codes: 0 success, 1 internal error, 37 "Canceled job" (ErrorCode_CanceledJob)
_CANCELED_JOB = 37


def _orthanc_time(t: dt.datetime) -> str:
    if t.tzinfo is not None:
        t = t.astimezone(dt.UTC)
    return t.strftime("%Y%m%dT%H%M%S.%f")


def job_json(view: JobView) -> dict[str, Any]:
    """A job as Orthanc describes one, plus Voxa's own fields."""
    if view.state == "failure":
        code, description = 1, view.error or "Failure"
    elif view.state == "cancelled":
        code, description = _CANCELED_JOB, "Canceled job"
    else:
        code, description = 0, "Success"
    out: dict[str, Any] = {
        "ID": view.id,
        "Type": _TYPE.get(view.kind, view.kind),
        "State": _STATE.get(view.state, view.state.capitalize()),
        "Progress": int(view.progress),
        "ErrorCode": code,
        "ErrorDescription": description,
        "Priority": 0,
        "CreationTime": _orthanc_time(view.created_at),
        "Timestamp": _orthanc_time(view.updated_at),
        "Content": {**view.params, **view.result},
    }
    if view.state in TERMINAL:
        out["CompletionTime"] = _orthanc_time(view.updated_at)
    out.update(view.as_dict())
    return out


def _get(rt: Any, job_id: str) -> JobView:
    try:
        return rt.jobs.get(job_id)  # type: ignore[no-any-return]
    except UnknownJob:
        raise DomainError(404, f"no job {job_id}") from None


@router.get("/jobs", response_model=None)
@requires(Perm.MANAGE_SETTINGS, Perm.DOWNLOAD, Perm.UPLOAD, Perm.RUN_ANALYSIS)
def list_jobs(rt: RuntimeDep, expand: str | None = None, limit: int = 100) -> list[Any]:
    """Job IDs, newest first; with ``?expand`` the job objects."""
    if not 1 <= limit <= 10_000:
        raise DomainError(400, "limit must be between 1 and 10000")
    views = rt.jobs.list(limit=limit)
    if expand is not None and expand.lower() not in ("false", "0"):
        return [job_json(v) for v in views]
    return [v.id for v in views]


@router.get("/jobs/{job_id}", response_model=None)
@requires(Perm.MANAGE_SETTINGS, Perm.DOWNLOAD, Perm.UPLOAD, Perm.RUN_ANALYSIS)
def get_job(job_id: str, rt: RuntimeDep) -> dict[str, Any]:
    return job_json(_get(rt, job_id))


@router.post("/jobs/{job_id}/cancel", response_model=None)
@requires(Perm.MANAGE_SETTINGS, Perm.DOWNLOAD, Perm.UPLOAD, Perm.RUN_ANALYSIS)
def cancel_job(job_id: str, rt: RuntimeDep) -> dict[str, Any]:
    """Ask a job to stop; it stops at its next progress report. A finished job is left as it is."""
    _get(rt, job_id)
    return job_json(rt.jobs.cancel(job_id))
