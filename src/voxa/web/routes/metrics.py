"""Prometheus metrics at ``GET /metrics`` (text exposition format 0.0.4, written by hand).

* archive: ``voxa_archive_resources{level}``, ``voxa_archive_stored_bytes``,
  ``voxa_storage_free_bytes``, ``voxa_changes_last_seq``;
* ingest (counted by a listener on :meth:`Archive.ingest`, see :func:`install_metrics`):
  ``voxa_ingest_total{outcome}``, ``voxa_ingest_refused_total{code}``, ``voxa_ingest_bytes_total``;
* DICOM: ``voxa_dicom_associations_active``, ``voxa_dicom_listening``;
* jobs: ``voxa_jobs{state,kind}`` (from the index, so jobs of every process count);
* process: ``process_resident_memory_bytes``, ``process_virtual_memory_bytes``,
  ``process_cpu_seconds_total``, ``process_open_fds``, ``process_start_time_seconds``,
  ``process_threads`` (Linux ``/proc``; fewer elsewhere);
* ``voxa_info{version}`` and ``voxa_scrape_duration_seconds``.

Counts come from one grouped query per table family per scrape; nothing reads stored files.
"""

from __future__ import annotations

import os
import resource
import threading
import time
import weakref
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from sqlalchemy import func, select

from voxa import __version__
from voxa.archive.ingest import Archive, IngestResult, Outcome
from voxa.archive.models import Job
from voxa.runtime import Runtime
from voxa.security.permissions import Permission as Perm
from voxa.web.access import requires
from voxa.web.deps import RuntimeDep

router = APIRouter(tags=["metrics"])

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class IngestCounters:
    """What :meth:`Archive.ingest` did since :func:`install_metrics` (thread-safe)."""

    outcomes: Counter[str] = field(default_factory=Counter)
    refusals: Counter[str] = field(default_factory=Counter)
    stored_bytes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __call__(self, result: IngestResult) -> None:
        with self._lock:
            self.outcomes[result.outcome.value] += 1
            if result.outcome is Outcome.REFUSED:
                self.refusals[result.code.value if result.code else "unknown"] += 1
            elif result.outcome in (Outcome.STORED, Outcome.REPLACED):
                self.stored_bytes += result.size_bytes

    def snapshot(self) -> tuple[dict[str, int], dict[str, int], int]:
        with self._lock:
            return dict(self.outcomes), dict(self.refusals), self.stored_bytes


# One set of counters per archive (a test process may run several Voxa servers).
_COUNTERS: weakref.WeakKeyDictionary[Archive, IngestCounters] = weakref.WeakKeyDictionary()
_INSTALL_LOCK = threading.Lock()


def install_metrics(runtime: Runtime) -> IngestCounters:
    """Start counting ingests for ``/metrics`` (idempotent; ``create_app`` calls it once)."""
    with _INSTALL_LOCK:
        counters = _COUNTERS.get(runtime.archive)
        if counters is None:
            counters = IngestCounters()
            runtime.archive.add_listener(counters)
            _COUNTERS[runtime.archive] = counters
        return counters


# -- exposition format ----------------------------------------------------------------------------


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


class _Exposition:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def metric(self, name: str, kind: str, help_text: str,
               samples: Iterable[tuple[dict[str, str], float]]) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            self.lines.append(f"{name}{{{label_text}}} {_number(value)}" if labels else f"{name} {_number(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


# -- process --------------------------------------------------------------------------------------------


def _process_metrics() -> dict[str, float]:
    out: dict[str, float] = {}
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out["cpu"] = usage.ru_utime + usage.ru_stime
    try:
        with open("/proc/self/statm") as f:
            size, resident = (int(x) for x in f.read().split()[:2])
        page = os.sysconf("SC_PAGE_SIZE")
        out["rss"], out["vms"] = resident * page, size * page
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        out["cpu"] = (int(fields[11]) + int(fields[12])) / ticks
        out["threads"] = int(fields[17])
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime"))
        out["start"] = boot + int(fields[19]) / ticks
        out["fds"] = len(os.listdir("/proc/self/fd"))
    except (OSError, ValueError, IndexError, StopIteration):
        out["rss"] = usage.ru_maxrss * 1024  # peak, in KiB on Linux: the best available
        out["threads"] = threading.active_count()
    return out


# -- the route ------------------------------------------------------------------------------------------


def render_metrics(rt: Runtime) -> str:
    started = time.perf_counter()
    e = _Exposition()
    stats = rt.archive.index.statistics()
    e.metric("voxa_info", "gauge", "Voxa's version.", [({"version": __version__}, 1)])
    e.metric("voxa_archive_resources", "gauge", "Resources in the archive, by level.",
             [({"level": level}, stats[key]) for level, key in
              (("patient", "patients"), ("study", "studies"), ("series", "series"), ("instance", "instances"))])
    e.metric("voxa_archive_stored_bytes", "gauge", "Bytes of stored DICOM files.", [({}, stats["size_bytes"])])
    free = rt.archive.blobs.free_bytes()
    if free is not None:
        e.metric("voxa_storage_free_bytes", "gauge", "Free bytes on the storage volume.", [({}, free)])
    e.metric("voxa_changes_last_seq", "gauge", "Sequence number of the newest change-log entry.",
             [({}, rt.archive.index.last_change_seq())])

    counters = install_metrics(rt)
    outcomes, refusals, stored_bytes = counters.snapshot()
    e.metric("voxa_ingest_total", "counter", "Instances received by the ingest path, by outcome.",
             [({"outcome": o.value}, outcomes.get(o.value, 0)) for o in Outcome])
    e.metric("voxa_ingest_refused_total", "counter", "Refused instances, by reason.",
             [({"code": code}, n) for code, n in sorted(refusals.items())])
    e.metric("voxa_ingest_bytes_total", "counter", "Bytes of instances stored (or replaced).", [({}, stored_bytes)])

    dicom = rt.dicom
    active = len(dicom.ae.active_associations) if dicom is not None else 0
    e.metric("voxa_dicom_listening", "gauge", "1 when the DICOM listener is up.", [({}, int(dicom is not None))])
    e.metric("voxa_dicom_associations_active", "gauge", "Open DICOM associations (both directions).",
             [({}, active)])

    jobs = Job.__table__
    with rt.archive.index.read() as conn:
        rows = conn.execute(select(jobs.c.state, jobs.c.kind, func.count()).group_by(jobs.c.state, jobs.c.kind)).all()
    by_state = {s: 0 for s in ("pending", "running", "success", "failure", "cancelled")}
    samples: list[tuple[dict[str, str], float]] = []
    for state, kind, n in rows:
        samples.append(({"state": state, "kind": kind}, int(n)))
        by_state[state] = by_state.get(state, 0) + int(n)
    e.metric("voxa_jobs", "gauge", "Jobs recorded in the index, by state and kind.", samples)
    e.metric("voxa_jobs_by_state", "gauge", "Jobs recorded in the index, by state.",
             [({"state": s}, n) for s, n in by_state.items()])

    proc = _process_metrics()
    e.metric("process_cpu_seconds_total", "counter", "User and system CPU time of the process.", [({}, proc["cpu"])])
    e.metric("process_resident_memory_bytes", "gauge", "Resident memory of the process.", [({}, proc["rss"])])
    if "vms" in proc:
        e.metric("process_virtual_memory_bytes", "gauge", "Virtual memory of the process.", [({}, proc["vms"])])
    if "fds" in proc:
        e.metric("process_open_fds", "gauge", "Open file descriptors.", [({}, proc["fds"])])
    if "start" in proc:
        e.metric("process_start_time_seconds", "gauge", "Start time of the process (Unix time).",
                 [({}, proc["start"])])
    e.metric("process_threads", "gauge", "Threads of the process.", [({}, proc["threads"])])
    e.metric("voxa_scrape_duration_seconds", "gauge", "Time taken to collect these metrics.",
             [({}, time.perf_counter() - started)])
    return e.text()


@router.get("/metrics", response_class=PlainTextResponse)
@requires(Perm.MANAGE_SETTINGS)
def metrics(rt: RuntimeDep) -> Any:
    """Prometheus metrics (text format 0.0.4)."""
    return PlainTextResponse(render_metrics(rt), media_type=CONTENT_TYPE)
