"""The Celery executor (voxa.jobs.celery_app) with a real Redis and a real worker process
(``celery -A voxa.jobs.celery_app worker --pool=solo``) sharing the test's data folder: a calcium
job runs in the worker with visible progress and the same result as the engine; cancelling works
for a queued job (it never runs) and for a running one (it stops at its next stage)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from analysis.phantom_series import ingest_series, phantom_series, quadrant_phantom

from voxa.analysis import results as store
from voxa.analysis import tools
from voxa.analysis.calcium import score_calcium
from voxa.config import Settings
from voxa.runtime import Runtime

pytest.importorskip("celery", reason="the Celery executor needs the 'scale' extra (celery[redis])")

STUDY = "1.2.826.0.1.3680043.10.511.79.1"
SERIES = STUDY + ".3"


def _phantom() -> Any:
    # 20 slices of 256 x 256: long enough to watch it run and to cancel it mid-way
    return quadrant_phantom(z_extent_mm=60.0, fov_mm=128.0, mass_calibration=0.7)


@pytest.fixture
def celery_runtime(tmp_path: Path, redis_server: Any) -> Iterator[Runtime]:
    settings = Settings(data_dir=tmp_path / "data", celery_broker_url=redis_server.url, fsync=False)
    rt = Runtime.open(settings, server=True)
    ingest_series(rt.archive, phantom_series(_phantom(), study_uid=STUDY, series_uid=SERIES))
    try:
        yield rt
    finally:
        rt.close(grace_s=5)


class Worker:
    """``celery -A voxa.jobs.celery_app worker`` with the settings in the environment, or
    (``voxa_cli=True``) ``voxa worker`` with them as options."""

    def __init__(self, rt: Runtime, log_path: Path, *, voxa_cli: bool = False):
        self.log_path = log_path
        env = {k: v for k, v in os.environ.items() if not k.startswith("VOXA_")}
        self.name = f"test-{uuid.uuid4().hex[:8]}@localhost"
        if voxa_cli:
            argv = [sys.executable, "-m", "voxa", "worker", "--data-dir", str(rt.settings.data_dir),
                    "--broker", str(rt.settings.celery_broker_url), "--hostname", self.name]
            env["VOXA_FSYNC"] = "false"
        else:
            env.update({"VOXA_DATA_DIR": str(rt.settings.data_dir),
                        "VOXA_CELERY_BROKER_URL": str(rt.settings.celery_broker_url), "VOXA_FSYNC": "false"})
            argv = [sys.executable, "-m", "celery", "-A", "voxa.jobs.celery_app", "worker", "--pool=solo",
                    "--loglevel=INFO", "--without-gossip", "--without-mingle", "-n", self.name]
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self, broker_url: str, timeout_s: float = 60.0) -> None:
        from voxa.jobs.celery_app import celery_executor

        app = celery_executor(broker_url).app
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the worker exited:\n{self.log()}")
            if app.control.ping(destination=[self.name], timeout=0.5):
                return
        raise AssertionError(f"the worker did not answer a ping:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # warm shutdown
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def _wait(rt: Runtime, result_id: int, *, until: Any, timeout_s: float = 90.0,
          worker: Worker | None = None) -> tuple[store.StoredResult, list[tuple[str, str, float]]]:
    seen: list[tuple[str, str, float]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = store.get_result(rt.archive.index, result_id)
        assert result is not None
        job = rt.jobs.get(result.job_id)
        seen.append((job.state, job.stage, job.progress))
        if until(result, job):
            return result, seen
        time.sleep(0.005)
    raise AssertionError(f"timed out; seen {seen[-10:]}\n{worker.log() if worker else ''}")


def test_calcium_on_a_celery_worker_with_progress_and_cancellation(celery_runtime: Runtime,
                                                                   tmp_path: Path) -> None:
    rt = celery_runtime
    assert isinstance(tools.executor_for(rt.settings), tools.AnalysisExecutor)
    assert tools.executor_for(rt.settings).name == "celery"

    def submit() -> store.StoredResult:
        return tools.submit_analysis(rt, tool="calcium", study_instance_uid=STUDY, series=SERIES,
                                     params={"mass_calibration": 0.7}, created_by="tester")

    # 1. cancelled while queued (no worker yet): cancelled at once, and never run later
    queued = submit()
    assert rt.jobs.get(queued.job_id).state == "pending" and queued.status is store.ResultStatus.QUEUED
    assert tools.cancel_analysis(rt, queued).status is store.ResultStatus.CANCELLED
    assert rt.jobs.get(queued.job_id).state == "cancelled"

    worker = Worker(rt, tmp_path / "worker.log")
    try:
        worker.wait_ready(str(rt.settings.celery_broker_url))
        # 2. a job runs in the worker: progress is visible here, the outputs land in the archive
        started = time.monotonic()
        result = submit()
        done, seen = _wait(rt, result.id, until=lambda r, j: r.status in store.FINISHED and j.state != "running",
                           worker=worker)
        elapsed = time.monotonic() - started
        assert done.status is store.ResultStatus.DONE, f"{done.error}\n{worker.log()}"
        running = [(stage, p) for state, stage, p in seen if state == "running"]
        assert any(0.0 < p < 100.0 for _, p in running), seen
        assert {"loading series", "scoring"} & {stage for stage, _ in running}, seen
        assert rt.jobs.get(done.job_id).state == "success" and rt.jobs.get(done.job_id).progress == 100.0
        phantom = _phantom()
        expected = score_calcium(phantom.hu, pixel_spacing_mm=(0.5, 0.5), slice_thickness_mm=3.0,
                                 slice_increment_mm=3.0, kvp=120.0, mass_calibration_mg_per_ml_per_hu=0.7,
                                 max_lesion_volume_mm3=3000.0)
        assert done.result["agatston_total"] == pytest.approx(expected.agatston_total, rel=1e-12)
        assert done.result["mass_mg_total"] == pytest.approx(expected.mass_mg_total, rel=1e-12)
        assert [o["kind"] for o in done.outputs] == ["SEG", "SR", "SR"]
        for output in done.outputs:  # stored by the worker, found by the server
            assert rt.archive.index.locate(sop_uid=output["sop_instance_uid"])

        # 3. cancelled while running: the worker stops at its next stage, nothing is stored
        running_job = submit()
        _wait(rt, running_job.id, until=lambda _r, j: j.state == "running", worker=worker)
        tools.cancel_analysis(rt, store.get_result(rt.archive.index, running_job.id))  # type: ignore[arg-type]
        stopped, _ = _wait(rt, running_job.id, until=lambda r, j: r.status in store.FINISHED and j.state != "running",
                           worker=worker)
        assert stopped.status is store.ResultStatus.CANCELLED, f"{stopped}\n{worker.log()}"
        assert stopped.outputs == ()
        assert rt.jobs.get(running_job.job_id).state == "cancelled"
        assert elapsed < 60
    finally:
        worker.stop()
    # the job cancelled while queued reached the worker first and was not run
    assert store.get_result(rt.archive.index, queued.id).status is store.ResultStatus.CANCELLED  # type: ignore[union-attr]
    assert f"job {queued.job_id} is cancelled: not run" in worker.log_path.read_text()
    outputs = [r for r in store.list_results(rt.archive.index) if r.outputs]
    assert [r.id for r in outputs] == [result.id]


def test_voxa_worker_command_runs_analyses(celery_runtime: Runtime, tmp_path: Path) -> None:
    rt = celery_runtime
    worker = Worker(rt, tmp_path / "voxa-worker.log", voxa_cli=True)
    try:
        worker.wait_ready(str(rt.settings.celery_broker_url))
        result = tools.submit_analysis(rt, tool="measure", study_instance_uid=STUDY, series=SERIES,
                                       params={"threshold": 130}, created_by="tester")
        done, _ = _wait(rt, result.id, until=lambda r, j: r.status in store.FINISHED and j.state != "running",
                        worker=worker)
    finally:
        worker.stop()
    assert done.status is store.ResultStatus.DONE, f"{done.error}\n{worker.log()}"
    assert done.result["threshold"]["voxel_count"] == int((_phantom().hu >= 130).sum())
    assert rt.jobs.get(done.job_id).state == "success"


def test_an_unreachable_broker_fails_the_submission(tmp_path: Path) -> None:
    from support.ports import free_port

    settings = Settings(data_dir=tmp_path / "data", celery_broker_url=f"redis://127.0.0.1:{free_port()}/0",
                        fsync=False)
    rt = Runtime.open(settings, server=True)
    try:
        ingest_series(rt.archive, phantom_series(quadrant_phantom(z_extent_mm=6.0), study_uid=STUDY,
                                                 series_uid=SERIES))
        with pytest.raises(tools.ExecutorUnavailable, match="celery executor") as e:
            tools.submit_analysis(rt, tool="measure", study_instance_uid=STUDY, series=SERIES,
                                  params={"threshold": 130}, created_by="tester")
        assert e.value.status == 503
        (failed,) = store.list_results(rt.archive.index)
        assert failed.status is store.ResultStatus.FAILED and "could not be queued" in failed.error
        (job,) = rt.jobs.list()
        assert job.state == "failure"
    finally:
        rt.close(grace_s=5)
