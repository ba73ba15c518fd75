"""Long work as jobs: submit, report progress (stage and percent), cancel, read the outcome.

Job state lives in the index database so that REST, the CLI and other server processes
see the same thing.  This module is the embedded executor (a thread pool in the server
process); a Celery backend implements the same :class:`JobManager` surface later.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update

from voxa.archive.index import Index
from voxa.archive.models import Job, table_of

log = logging.getLogger(__name__)
T = table_of(Job)

TERMINAL = ("success", "failure", "cancelled")


class JobCancelled(Exception):
    pass


class UnknownJob(LookupError):
    pass


@dataclass
class JobView:
    id: str
    kind: str
    state: str
    stage: str
    progress: float
    params: dict[str, Any]
    result: dict[str, Any]
    error: str
    created_at: dt.datetime
    updated_at: dt.datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "kind": self.kind, "state": self.state, "stage": self.stage,
            "progress": round(self.progress, 1), "params": self.params, "result": self.result,
            "error": self.error, "created_at": self.created_at.isoformat(), "updated_at": self.updated_at.isoformat(),
        }


class JobContext:
    """Handed to the job's function: report progress, and notice cancellation."""

    def __init__(self, manager: JobManager, job_id: str):
        self._manager = manager
        self.job_id = job_id
        self._last_write = 0.0

    def report(self, stage: str, percent: float) -> None:
        self._manager._update(self.job_id, stage=stage, progress=max(0.0, min(100.0, percent)))
        if self.cancelled:
            raise JobCancelled()

    @property
    def cancelled(self) -> bool:
        return self._manager._cancel_requested(self.job_id)


JobFunction = Callable[[JobContext], dict[str, Any]]


class JobManager:
    def __init__(self, index: Index, *, workers: int = 2, recover: bool = False):
        self.index = index
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="voxa-job")
        self._futures: dict[str, Future[None]] = {}
        self._cancel: set[str] = set()
        self._lock = threading.Lock()
        if recover:
            self.recover()

    def recover(self) -> None:
        """Jobs left pending or running by a stopped server will never finish: say so.

        Only the server that runs the jobs may do this (``voxa serve`` at start-up): any
        other process would fail the jobs of a server that is still running.
        """
        with self.index.write() as conn:
            conn.execute(
                # Jobs queued on Celery workers (voxa.jobs.celery_app) outlive this server.
                update(T).where(T.c.state.in_(("pending", "running")),
                                ~T.c.params_json.like('%"executor": "celery"%')).values(
                    state="failure", stage="interrupted", error="the server stopped before the job finished",
                    updated_at=dt.datetime.now(dt.UTC),
                )
            )

    def submit(self, kind: str, params: dict[str, Any], fn: JobFunction) -> str:
        job_id = str(uuid.uuid4())
        now = dt.datetime.now(dt.UTC)
        with self.index.write() as conn:
            conn.execute(T.insert().values(id=job_id, kind=kind, params_json=json.dumps(params), state="pending",
                                           stage="queued", progress=0.0, created_at=now, updated_at=now))
        with self._lock:
            # Registered under the lock so that a job finishing at once still finds its entry.
            self._futures[job_id] = self._pool.submit(self._run, job_id, fn)
        return job_id

    def _run(self, job_id: str, fn: JobFunction) -> None:
        if self._cancel_requested(job_id):
            self._update(job_id, state="cancelled", stage="cancelled")
            return
        self._update(job_id, state="running", stage="starting")
        ctx = JobContext(self, job_id)
        try:
            result = fn(ctx)
        except JobCancelled:
            self._update(job_id, state="cancelled", stage="cancelled")
        except Exception as e:  # noqa: BLE001 - a job's failure is its outcome, not the server's
            log.warning("job %s failed: %s", job_id, e)
            self._update(job_id, state="failure", stage="failed", error=f"{e}")
        else:
            self._update(job_id, state="success", stage="done", progress=100.0,
                         result_json=json.dumps(result, default=str))
        finally:
            with self._lock:
                self._futures.pop(job_id, None)

    def _update(self, job_id: str, **values: Any) -> None:
        values["updated_at"] = dt.datetime.now(dt.UTC)
        with self.index.write() as conn:
            conn.execute(update(T).where(T.c.id == job_id).values(**values))

    def _cancel_requested(self, job_id: str) -> bool:
        with self._lock:
            if job_id in self._cancel:
                return True
        # A cancel may come from another process (``voxa job cancel``): it sets the column.
        with self.index.read() as conn:
            flagged = conn.execute(select(T.c.cancel_requested).where(T.c.id == job_id)).scalar()
        if flagged:
            with self._lock:
                self._cancel.add(job_id)
        return bool(flagged)

    def cancel(self, job_id: str) -> JobView:
        view = self.get(job_id)
        if view.state in TERMINAL:
            return view
        with self._lock:
            self._cancel.add(job_id)
        with self.index.write() as conn:
            conn.execute(update(T).where(T.c.id == job_id).values(cancel_requested=True))
        return self.get(job_id)

    def get(self, job_id: str) -> JobView:
        with self.index.read() as conn:
            r = conn.execute(select(T).where(T.c.id == job_id)).first()
        if r is None:
            raise UnknownJob(f"no job {job_id}")
        return _view(r)

    def list(self, limit: int = 100, kind: str | None = None) -> list[JobView]:
        q = select(T).order_by(T.c.created_at.desc()).limit(limit)
        if kind:
            q = q.where(T.c.kind == kind)
        with self.index.read() as conn:
            return [_view(r) for r in conn.execute(q)]

    def wait(self, job_id: str, timeout: float | None = None) -> JobView:
        with self._lock:
            fut = self._futures.get(job_id)
        if fut is not None:
            fut.result(timeout=timeout)
        return self.get(job_id)

    def shutdown(self) -> None:
        with self._lock:
            self._cancel.update(self._futures)
        self._pool.shutdown(wait=True, cancel_futures=True)


def _view(r: Any) -> JobView:
    return JobView(
        id=r.id, kind=r.kind, state=r.state, stage=r.stage, progress=r.progress,
        params=json.loads(r.params_json or "{}"), result=json.loads(r.result_json or "{}"), error=r.error,
        created_at=r.created_at, updated_at=r.updated_at,
    )
