"""Orthanc's ``StableSeries`` / ``StableStudy`` / ``StablePatient`` change-log entries.

Orthanc logs a resource as stable when no instance arrived for it during ``StableAge``
(60 s); auto-routing scripts poll ``/changes`` for ``StableStudy``.  Voxa computes
``IsStable`` from ``updated_at``; :class:`StableChangeEmitter` also writes these entries, each
:meth:`~StableChangeEmitter.tick` announcing the resources that became stable since the
previous one.  Only the server process should run it (one emitter per archive), e.g.
``StableChangeEmitter(runtime.archive.index).start()`` in ``voxa serve``.

After a restart it resumes from its last announcement; on a database that never had one it
starts from the present (resources already stable are not announced).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from sqlalchemy import Table, func, insert, select

from voxa.archive.index import Index
from voxa.archive.models import Change
from voxa.periodic import Periodic
from voxa.web.rest.common import SE, ST, STABLE_AGE_S, P

log = logging.getLogger(__name__)
CH: Table = Change.__table__  # type: ignore[assignment]

_LEVELS: tuple[tuple[Any, Any, str, str], ...] = (
    (SE, SE.c.series_instance_uid, "StableSeries", "Series"),
    (ST, ST.c.study_instance_uid, "StableStudy", "Study"),
    (P, P.c.patient_id, "StablePatient", "Patient"),
)
STABLE_CHANGE_TYPES = tuple(change for _t, _u, change, _r in _LEVELS)


def _aware(t: dt.datetime) -> dt.datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=dt.UTC)


class StableChangeEmitter:
    def __init__(self, index: Index, *, stable_age_s: float = STABLE_AGE_S):
        self.index = index
        self.age = dt.timedelta(seconds=stable_age_s)
        self._since: dt.datetime | None = None
        self._ticker: Periodic | None = None

    def _resume_point(self, cutoff: dt.datetime) -> dt.datetime:
        with self.index.read() as conn:
            last = conn.execute(select(func.max(CH.c.at)).where(CH.c.change_type.in_(STABLE_CHANGE_TYPES))).scalar()
        return _aware(last) - self.age if last is not None else cutoff

    def tick(self, now: dt.datetime | None = None) -> int:
        """Log the series, studies and patients that became stable; returns how many."""
        now = now or dt.datetime.now(dt.UTC)
        cutoff = now - self.age
        if self._since is None:
            self._since = self._resume_point(cutoff)
        if cutoff <= self._since:
            return 0
        rows: list[dict[str, Any]] = []
        with self.index.write() as conn:
            for table, uid, change, resource in _LEVELS:
                q = select(table.c.public_id, uid).where(table.c.updated_at > self._since,
                                                         table.c.updated_at <= cutoff).order_by(table.c.updated_at)
                rows += [{"change_type": change, "resource_type": resource, "public_id": public_id, "uid": value,
                          "detail": "", "at": now} for public_id, value in conn.execute(q)]
            if rows:
                conn.execute(insert(CH), rows)
        self._since = cutoff
        return len(rows)

    def start(self, interval_s: float = 5.0) -> None:
        """Tick every ``interval_s`` seconds in a daemon thread until :meth:`stop`."""
        if self._ticker is None:
            self._ticker = Periodic("voxa-stable-changes", interval_s, self.tick)
            self._ticker.start()

    def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.stop()
            self._ticker = None
