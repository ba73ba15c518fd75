"""A restarting server fails its own unfinished jobs, not those queued on Celery workers."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from voxa.archive import open_archive
from voxa.config import Settings
from voxa.jobs.executor import JobManager, T


def test_recovery_leaves_celery_jobs_alone(tmp_path: Path) -> None:
    archive = open_archive(Settings(data_dir=tmp_path / "data", fsync=False))
    try:
        now = dt.datetime.now(dt.UTC)
        with archive.index.write() as conn:
            for job_id, params in (("embedded", {"tool": "calcium"}),
                                   ("celery", {"tool": "calcium", "executor": "celery"})):
                conn.execute(T.insert().values(id=job_id, kind="analysis-calcium", params_json=json.dumps(params),
                                               state="pending", stage="queued", progress=0.0, created_at=now,
                                               updated_at=now))
        JobManager(archive.index, recover=True).shutdown()
        with archive.index.read() as conn:
            states = dict(conn.execute(T.select().with_only_columns(T.c.id, T.c.state)).all())
        assert states == {"embedded": "failure", "celery": "pending"}
    finally:
        archive.close()
