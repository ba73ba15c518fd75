"""The Celery executor: analyses run by ``voxa worker`` processes, fed through Redis.

Configured by ``celery_broker_url`` (``VOXA_CELERY_BROKER_URL``).  The server records the job
(a ``jobs`` row, ``pending``) and sends the task ``voxa.analysis.run`` with the job and result
ids; a worker opens its own :class:`~voxa.runtime.Runtime` from the same settings (data folder,
index database, storage), runs :func:`voxa.analysis.tools.run_analysis` and writes stage and
percent into the ``jobs`` row as it goes, exactly as the embedded executor does, so REST, the CLI
and the UI read progress the same way whichever executor ran the job.

Cancellation: the server sets the job's ``cancel_requested`` flag (the worker checks it at every
stage and stops with ``cancelled``), revokes the task (a worker that has not started it drops
it), and marks a job that is still ``pending`` as ``cancelled`` at once.  Celery's result backend
is not used: the outcome is in the index.

Start a worker with ``voxa worker`` (same settings as the server), or with Celery's own command
and the settings in the environment::

    VOXA_DATA_DIR=... VOXA_DATABASE_URL=... VOXA_CELERY_BROKER_URL=redis://... \\
        celery -A voxa.jobs.celery_app worker --pool=solo

The worker needs the same storage as the server (a shared data folder, or S3 and PostgreSQL).
Celery is an optional dependency (the ``scale`` extra); this module imports it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import uuid
from typing import TYPE_CHECKING, Any

try:
    from celery import Celery
    from celery.signals import worker_process_shutdown, worker_shutdown
except ModuleNotFoundError as e:  # pragma: no cover - depends on the installed extras
    raise ModuleNotFoundError(
        "the Celery executor needs Celery and Redis: pip install 'voxa[scale]' (celery[redis])", name=e.name
    ) from e
from sqlalchemy import update

from voxa.archive.models import Job, table_of

if TYPE_CHECKING:
    from voxa.config import Settings
    from voxa.runtime import Runtime

log = logging.getLogger(__name__)
T = table_of(Job)

TASK_NAME = "voxa.analysis.run"


def _configure(app: Celery, broker_url: str | None) -> Celery:
    app.conf.update(
        broker_url=broker_url,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,  # the outcome is in the index
        worker_prefetch_multiplier=1,  # long jobs: a worker takes one at a time
        task_acks_late=False,  # a job that started is never run twice (its row would say running)
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": 24 * 3600},
        task_publish_retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5,
                                   "interval_max": 2.0},
        worker_hijack_root_logger=False,
    )
    return app


#: The worker's app (``celery -A voxa.jobs.celery_app worker``): broker from the environment,
#: or from the settings ``voxa worker`` passes to :func:`configure_worker`.
app = _configure(Celery("voxa"), os.environ.get("VOXA_CELERY_BROKER_URL"))

# --------------------------------------------------------------------------- the worker side

_worker_settings: Settings | None = None
_worker_runtime: Runtime | None = None
_worker_lock = threading.Lock()


def configure_worker(settings: Settings) -> Celery:
    """Use ``settings`` for this process's worker (``voxa worker``); returns the app."""
    global _worker_settings
    if not settings.celery_broker_url:
        raise ValueError("celery_broker_url is not set: a worker needs the broker (VOXA_CELERY_BROKER_URL)")
    _worker_settings = settings
    app.conf.broker_url = settings.celery_broker_url
    return app


def worker_runtime() -> Runtime:
    """This worker process's runtime, opened on first use from the configured settings (or the
    ``VOXA_*`` environment)."""
    global _worker_runtime
    with _worker_lock:
        if _worker_runtime is None:
            from voxa.config import Settings
            from voxa.runtime import Runtime

            settings = _worker_settings or Settings.load()
            logging.getLogger("highdicom").setLevel(logging.WARNING)  # it narrates every attribute it copies
            _worker_runtime = Runtime.open(settings)
            log.info("analysis worker opened data folder %s", settings.data_dir)
        return _worker_runtime


def close_worker_runtime(**_: Any) -> None:
    global _worker_runtime
    with _worker_lock:
        if _worker_runtime is not None:
            _worker_runtime.close(grace_s=5)
            _worker_runtime = None


worker_process_shutdown.connect(close_worker_runtime, weak=False)
worker_shutdown.connect(close_worker_runtime, weak=False)


def execute_job(runtime: Runtime, job_id: str, result_id: int) -> str:
    """Run a queued analysis job in this process; returns the job's final state.

    A job that is no longer ``pending`` (cancelled while queued, failed by a restarting server)
    is not run."""
    from voxa.analysis.tools import run_analysis
    from voxa.jobs.executor import JobContext, UnknownJob

    try:
        job = runtime.jobs.get(job_id)
    except UnknownJob:
        log.warning("job %s is not in the index: not run (another data folder?)", job_id)
        return "unknown"
    if job.state != "pending":
        log.info("job %s is %s: not run", job_id, job.state)
        return job.state

    def fn(ctx: JobContext) -> dict[str, Any]:
        return run_analysis(runtime, result_id, ctx.report, lambda: bool(ctx.cancelled))

    # The JobManager's own runner: the same state changes, stage and percent updates, and
    # cancellation checks (against the jobs row's flag) as in the embedded executor.
    runtime.jobs._run(job_id, fn)
    return runtime.jobs.get(job_id).state


@app.task(name=TASK_NAME, ignore_result=True)
def run_analysis_task(job_id: str, result_id: int) -> str:
    return execute_job(worker_runtime(), job_id, int(result_id))


# --------------------------------------------------------------------------- the server side

_senders: dict[str, Celery] = {}
_senders_lock = threading.Lock()


def _sender(broker_url: str) -> Celery:
    """One app (and its connection pool) per broker, for sending tasks and revokes."""
    with _senders_lock:
        found = _senders.get(broker_url)
        if found is None:
            found = _senders[broker_url] = _configure(Celery("voxa-sender", set_as_current=False), broker_url)
        return found


class CeleryExecutor:
    """Hands analyses to Celery workers (see the module docstring)."""

    name = "celery"

    def __init__(self, broker_url: str):
        self.broker_url = broker_url
        self.app = _sender(broker_url)

    def submit(self, runtime: Runtime, result_id: int, tool: str) -> str:
        job_id = str(uuid.uuid4())
        now = dt.datetime.now(dt.UTC)
        params = {"analysis_id": result_id, "tool": tool, "executor": self.name}
        with runtime.archive.index.write() as conn:
            conn.execute(T.insert().values(id=job_id, kind=f"analysis-{tool}", params_json=json.dumps(params),
                                           state="pending", stage="queued", progress=0.0, created_at=now,
                                           updated_at=now))
        try:
            self.app.send_task(TASK_NAME, args=[job_id, result_id], task_id=job_id)
        except Exception as e:
            with runtime.archive.index.write() as conn:
                conn.execute(update(T).where(T.c.id == job_id).values(
                    state="failure", stage="failed", error=f"could not be queued: {e}", updated_at=now))
            raise
        return job_id

    def cancel(self, runtime: Runtime, job_id: str) -> None:
        runtime.jobs.cancel(job_id)  # the flag a running worker checks at its next stage
        try:
            self.app.control.revoke(job_id)
        except Exception as e:  # noqa: BLE001 - the flag alone still stops the job
            log.warning("could not revoke task %s: %s", job_id, e)
        with runtime.archive.index.write() as conn:
            conn.execute(update(T).where(T.c.id == job_id, T.c.state == "pending").values(
                state="cancelled", stage="cancelled", updated_at=dt.datetime.now(dt.UTC)))


def celery_executor(broker_url: str) -> CeleryExecutor:
    return CeleryExecutor(broker_url)


__all__ = ["TASK_NAME", "CeleryExecutor", "app", "celery_executor", "configure_worker", "execute_job",
           "run_analysis_task", "worker_runtime"]
