"""The ``analysis_results`` table: one row per analysis run (calcium, cardiac, vessels, measure).

A row is created when an analysis is submitted (``status`` ``queued``, ``requires_review``
true) and follows its job: ``running`` -> ``done`` | ``failed`` | ``cancelled``.  Stage and
percent live in the ``jobs`` row named by ``job_id`` (the one progress record both executors
write); :func:`get_result` and :func:`list_results` read them from there, and bring the
result's status in line with a job that ended without the analysis code running (a job
cancelled while queued, a server stopped mid-run).

``result_json`` holds the tool's result (shapes in ``docs/analysis.md``), ``outputs_json`` the
DICOM objects written back to the archive (SEG, SR): ``[{"kind", "sop_class_uid",
"series_instance_uid", "sop_instance_uid"}]``.  A result is decision support until a reader
verifies it: ``verified_by`` / ``verified_at`` record who and when; ``requires_review`` stays
true as the record that it needed that review.  Rows hang off the study (``ON DELETE
CASCADE``).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import Boolean, DateTime, ForeignKey, Index, Integer, String, Text, func, select, update
from sqlalchemy.engine import Connection, Row
from sqlalchemy.orm import Mapped, mapped_column

from voxa.archive.index import Index as ArchiveIndex
from voxa.archive.models import Base, Job, Study, table_of


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class ToolName(StrEnum):
    CALCIUM = "calcium"
    CARDIAC = "cardiac"
    VESSELS = "vessels"
    MEASURE = "measure"


class ResultStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED: frozenset[ResultStatus] = frozenset({ResultStatus.DONE, ResultStatus.FAILED, ResultStatus.CANCELLED})

#: job state (voxa.jobs.executor) -> result status
_FROM_JOB_STATE = {"pending": ResultStatus.QUEUED, "running": ResultStatus.RUNNING, "success": ResultStatus.DONE,
                   "failure": ResultStatus.FAILED, "cancelled": ResultStatus.CANCELLED}


class AnalysisResult(Base):
    __tablename__ = "analysis_results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(String(36), default="", index=True)
    tool: Mapped[str] = mapped_column(String(32))
    study_fk: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64))
    series_instance_uid: Mapped[str] = mapped_column(String(64), default="")  # the first analysed series
    series_json: Mapped[str] = mapped_column(Text, default="[]")  # every analysed series, in order
    parameters_json: Mapped[str] = mapped_column(Text, default="{}")
    algorithm_version: Mapped[str] = mapped_column(String(64), default="")
    status: Mapped[str] = mapped_column(String(16), default=ResultStatus.QUEUED.value)
    result_json: Mapped[str] = mapped_column(Text, default="{}")
    error: Mapped[str] = mapped_column(Text, default="")
    requires_review: Mapped[bool] = mapped_column(Boolean, default=True)
    verified_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    verified_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    outputs_json: Mapped[str] = mapped_column(Text, default="[]")

    __table_args__ = (Index("ix_analysis_results_study", "study_instance_uid", "created_at"),)


R = table_of(AnalysisResult)
ST = table_of(Study)
J = table_of(Job)


class UnknownStudy(LookupError):
    """The study is not in the archive."""


class NotFinished(ValueError):
    """The analysis has not finished successfully: there is nothing to verify yet."""


@dataclass(frozen=True)
class StoredResult:
    id: int
    job_id: str
    tool: str
    study_instance_uid: str
    series_instance_uids: tuple[str, ...]
    parameters: dict[str, Any]
    algorithm_version: str
    status: ResultStatus
    stage: str
    progress: float
    result: dict[str, Any]
    error: str
    requires_review: bool
    verified_by: str | None
    verified_at: dt.datetime | None
    created_by: str
    created_at: dt.datetime
    updated_at: dt.datetime
    outputs: tuple[dict[str, str], ...]

    @property
    def verified(self) -> bool:
        return self.verified_at is not None

    @property
    def output_sop_instance_uids(self) -> tuple[str, ...]:
        return tuple(o["sop_instance_uid"] for o in self.outputs)

    def as_json(self, *, with_result: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id, "job": self.job_id, "tool": self.tool, "study_instance_uid": self.study_instance_uid,
            "series_instance_uids": list(self.series_instance_uids), "parameters": self.parameters,
            "algorithm_version": self.algorithm_version, "status": self.status.value, "stage": self.stage,
            "progress": round(self.progress, 1), "error": self.error, "requires_review": self.requires_review,
            "verified": self.verified, "verified_by": self.verified_by,
            "verified_at": self.verified_at.isoformat() if self.verified_at else None,
            "created_by": self.created_by, "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(), "outputs": [dict(o) for o in self.outputs],
        }
        if with_result:
            out["result"] = self.result
        return out


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _select() -> Any:
    """Result rows with their job's live state (outer join: a row may not have its job yet)."""
    return select(R, J.c.state.label("job_state"), J.c.stage.label("job_stage"),
                  J.c.progress.label("job_progress"), J.c.error.label("job_error")).select_from(
        R.outerjoin(J, J.c.id == R.c.job_id))


def _from_row(row: Row[Any]) -> StoredResult:
    r = row._mapping
    status = ResultStatus(r["status"])
    stage, progress = "", 0.0
    if r["job_state"] is not None:
        stage, progress = str(r["job_stage"] or ""), float(r["job_progress"] or 0.0)
    if status is ResultStatus.DONE:
        stage, progress = "done", 100.0
    elif status in FINISHED:
        stage = status.value
    created_at = _utc(r["created_at"])
    updated_at = _utc(r["updated_at"])
    assert created_at is not None and updated_at is not None
    return StoredResult(
        id=int(r["id"]), job_id=r["job_id"], tool=r["tool"], study_instance_uid=r["study_instance_uid"],
        series_instance_uids=tuple(json.loads(r["series_json"] or "[]")),
        parameters=json.loads(r["parameters_json"] or "{}"), algorithm_version=r["algorithm_version"],
        status=status, stage=stage, progress=progress, result=json.loads(r["result_json"] or "{}"),
        error=r["error"], requires_review=bool(r["requires_review"]), verified_by=r["verified_by"],
        verified_at=_utc(r["verified_at"]), created_by=r["created_by"], created_at=created_at,
        updated_at=updated_at, outputs=tuple(json.loads(r["outputs_json"] or "[]")))


def _reconcile(index: ArchiveIndex, rows: list[Row[Any]]) -> list[Row[Any]]:
    """Results whose job ended without the analysis saying so (cancelled while queued, failed
    because the server stopped) take the job's outcome; the rows are read again."""
    stale: list[tuple[int, ResultStatus, str]] = []
    for row in rows:
        r = row._mapping
        job_state = r["job_state"]
        if job_state is None or ResultStatus(r["status"]) in FINISHED:
            continue
        status = _FROM_JOB_STATE.get(job_state)
        if status in FINISHED:
            assert status is not None
            stale.append((int(r["id"]), status, str(r["job_error"] or "")))
    if not stale:
        return rows
    with index.write() as conn:
        for result_id, status, error in stale:
            conn.execute(update(R).where(R.c.id == result_id, R.c.status.not_in([s.value for s in FINISHED]))
                         .values(status=status.value, error=error, updated_at=_now()))
        ids = [r._mapping["id"] for r in rows]
        order = {i: n for n, i in enumerate(ids)}
        fresh = list(conn.execute(_select().where(R.c.id.in_(ids))))
    return sorted(fresh, key=lambda r: order[r._mapping["id"]])


# --------------------------------------------------------------------------- functions


def create_result(index: ArchiveIndex, *, tool: str, study_instance_uid: str, series_instance_uids: Sequence[str],
                  parameters: dict[str, Any], algorithm_version: str, created_by: str,
                  job_id: str = "") -> StoredResult:
    """A new ``queued`` result (``requires_review`` true); raises :class:`UnknownStudy`."""
    if not series_instance_uids:
        raise ValueError("an analysis needs at least one series")
    now = _now()
    with index.write() as conn:
        study_fk = conn.execute(select(ST.c.id).where(ST.c.study_instance_uid == study_instance_uid)).scalar()
        if study_fk is None:
            raise UnknownStudy(study_instance_uid)
        new_id = conn.execute(R.insert().values(
            job_id=job_id, tool=str(tool), study_fk=study_fk, study_instance_uid=study_instance_uid,
            series_instance_uid=series_instance_uids[0], series_json=_dumps(list(series_instance_uids)),
            parameters_json=_dumps(parameters), algorithm_version=algorithm_version,
            status=ResultStatus.QUEUED.value, result_json="{}", error="", requires_review=True,
            created_by=created_by[:64], created_at=now, updated_at=now, outputs_json="[]",
        ).returning(R.c.id)).scalar_one()
        row = conn.execute(_select().where(R.c.id == new_id)).one()
    return _from_row(row)


def update_result(index: ArchiveIndex, result_id: int, *, status: ResultStatus | str | None = None,
                  job_id: str | None = None, result: dict[str, Any] | None = None, error: str | None = None,
                  algorithm_version: str | None = None, outputs: Sequence[dict[str, str]] | None = None,
                  only_if_unfinished: bool = False) -> bool:
    """Change the given fields; False when there is no such result (or, with
    ``only_if_unfinished``, when it has already finished)."""
    values: dict[str, Any] = {"updated_at": _now()}
    if status is not None:
        values["status"] = ResultStatus(status).value
    if job_id is not None:
        values["job_id"] = job_id
    if result is not None:
        values["result_json"] = _dumps(result)
    if error is not None:
        values["error"] = error
    if algorithm_version is not None:
        values["algorithm_version"] = algorithm_version
    if outputs is not None:
        values["outputs_json"] = _dumps([dict(o) for o in outputs])
    q = update(R).where(R.c.id == result_id)
    if only_if_unfinished:
        q = q.where(R.c.status.not_in([s.value for s in FINISHED]))
    with index.write() as conn:
        return bool(conn.execute(q.values(**values)).rowcount)


def get_result(index: ArchiveIndex, result_id: int, *, study_instance_uid: str | None = None) -> StoredResult | None:
    """The result (of that study, when given); None when there is none."""
    q = _select().where(R.c.id == result_id)
    if study_instance_uid is not None:
        q = q.where(R.c.study_instance_uid == study_instance_uid)
    with index.read() as conn:
        row = conn.execute(q).first()
    if row is None:
        return None
    return _from_row(_reconcile(index, [row])[0])


def list_results(index: ArchiveIndex, *, study_instance_uid: str | None = None, tool: str | None = None,
                 limit: int = 1000) -> list[StoredResult]:
    """Results, newest first: of one study and/or one tool when given."""
    q = _select().order_by(R.c.created_at.desc(), R.c.id.desc()).limit(limit)
    if study_instance_uid is not None:
        q = q.where(R.c.study_instance_uid == study_instance_uid)
    if tool is not None:
        q = q.where(R.c.tool == tool)
    with index.read() as conn:
        rows = list(conn.execute(q))
    return [_from_row(r) for r in _reconcile(index, rows)]


def studies_with_results(index: ArchiveIndex, *, status: ResultStatus | None = None, review: str | None = None,
                         tool: str | None = None, access: Any = None) -> dict[str, int]:
    """Study Instance UID -> number of analyses, for the studies with analyses that match:
    ``status``; ``review`` ``pending`` (done, not yet verified) or ``verified``; ``tool``. Only
    studies ``access`` (an :class:`~voxa.security.accounts.AccessFilter`) lets its user see."""
    from voxa.archive.access import study_condition

    q = (select(ST.c.study_instance_uid, func.count()).select_from(R.join(ST, ST.c.id == R.c.study_fk))
         .group_by(ST.c.study_instance_uid))
    if status is not None:
        q = q.where(R.c.status == status.value)
    if review == "pending":
        q = q.where(R.c.status == ResultStatus.DONE.value, R.c.verified_by.is_(None))
    elif review == "verified":
        q = q.where(R.c.verified_by.is_not(None))
    elif review is not None:
        raise ValueError(f"review must be pending or verified, got {review!r}")
    if tool is not None:
        q = q.where(R.c.tool == tool)
    restriction = study_condition(access, ST)
    if restriction is not None:
        q = q.where(restriction)
    with index.read() as conn:
        return {str(uid): int(n) for uid, n in conn.execute(q)}


def verify_result(index: ArchiveIndex, result_id: int, *, verified_by: str,
                  study_instance_uid: str | None = None) -> StoredResult | None:
    """Record that ``verified_by`` reviewed the finished result; None when there is no such
    result.  Raises :class:`NotFinished` unless its status is ``done``.  Verifying again
    replaces who and when (the last review counts)."""
    current = get_result(index, result_id, study_instance_uid=study_instance_uid)
    if current is None:
        return None
    if current.status is not ResultStatus.DONE:
        raise NotFinished(f"analysis {result_id} is {current.status.value}: only a finished (done) analysis "
                          "can be verified")
    with index.write() as conn:
        conn.execute(update(R).where(R.c.id == result_id).values(
            verified_by=verified_by[:64], verified_at=_now(), updated_at=_now()))
    return get_result(index, result_id)


def result_for_job(conn: Connection, job_id: str) -> int | None:
    """The id of the result a job runs, if any."""
    value = conn.execute(select(R.c.id).where(R.c.job_id == job_id)).scalar()
    return None if value is None else int(value)


__all__ = [
    "FINISHED",
    "AnalysisResult",
    "NotFinished",
    "ResultStatus",
    "StoredResult",
    "ToolName",
    "UnknownStudy",
    "create_result",
    "get_result",
    "list_results",
    "result_for_job",
    "update_result",
    "verify_result",
]
