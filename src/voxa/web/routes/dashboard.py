"""The administrator's dashboard: what the archive holds and how it grows, who is signed in, and
the jobs. Counts only (no patient identifiers), so reading it is not a patient-data access.

``GET /admin/dashboard?days=30``::

    {"totals": {"patients", "studies", "series", "instances", "size_bytes"},
     "days": [{"date": "2026-11-22", "studies": 3, "instances": 912, "bytes": 480000000}, ...],
     "users": {"active_sessions", "active_users", "sign_ins_24h"},
     "jobs": {"by_state": {"running": 1, ...}, "recent": [{"id", "kind", "state", "created_at", ...}]}}

``days`` lists every day of the window (oldest first, zeros included): studies whose first
instance arrived that day, and the instances and bytes received that day. Dates are UTC.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy import func, select

from voxa.archive.models import Instance, Job, Study
from voxa.security.models import WebSession
from voxa.security.permissions import Permission as Perm
from voxa.web.access import requires
from voxa.web.deps import RuntimeDep

router = APIRouter(tags=["admin"])

S, INST, J, W = Study.__table__, Instance.__table__, Job.__table__, WebSession.__table__


def _day(value: Any) -> str:
    """func.date() answers a string on SQLite and a date on PostgreSQL."""
    return value.isoformat() if isinstance(value, dt.date) else str(value)[:10]


@router.get("/admin/dashboard")
@requires(Perm.MANAGE_SETTINGS, Perm.MANAGE_USERS, Perm.VIEW_AUDIT)
def dashboard(rt: RuntimeDep, days: Annotated[int, Query(ge=1, le=366)] = 30) -> dict[str, Any]:
    """Archive totals, studies and storage received per day, sessions, and jobs."""
    index = rt.archive.index
    now = dt.datetime.now(dt.UTC)
    first_day = (now - dt.timedelta(days=days - 1)).date()
    since = dt.datetime.combine(first_day, dt.time(), tzinfo=dt.UTC)
    per_day: dict[str, dict[str, Any]] = {
        (first_day + dt.timedelta(days=k)).isoformat(): {"studies": 0, "instances": 0, "bytes": 0} for k in range(days)}
    with index.read() as conn:
        study_day = func.date(S.c.created_at)
        for day, count in conn.execute(select(study_day, func.count()).where(S.c.created_at >= since)
                                       .group_by(study_day)):
            if _day(day) in per_day:
                per_day[_day(day)]["studies"] = int(count)
        instance_day = func.date(INST.c.received_at)
        for day, count, size in conn.execute(
                select(instance_day, func.count(), func.coalesce(func.sum(INST.c.size_bytes), 0))
                .where(INST.c.received_at >= since).group_by(instance_day)):
            if _day(day) in per_day:
                per_day[_day(day)].update(instances=int(count), bytes=int(size))
        live = (W.c.revoked_at.is_(None)) & (W.c.expires_at > now)
        active_sessions, active_users = conn.execute(
            select(func.count(), func.count(func.distinct(W.c.user_id))).where(live)).one()
        sign_ins = conn.execute(select(func.count()).select_from(W)
                                .where(W.c.created_at >= now - dt.timedelta(hours=24))).scalar_one()
        by_state = {str(state): int(n) for state, n in conn.execute(
            select(J.c.state, func.count()).group_by(J.c.state))}
        recent = [
            {"id": r.id, "kind": r.kind, "state": r.state, "created_at": r.created_at.isoformat()}
            for r in conn.execute(select(J.c.id, J.c.kind, J.c.state, J.c.created_at)
                                  .order_by(J.c.created_at.desc()).limit(10))
        ]
    totals = index.statistics()
    return {
        "totals": {"patients": totals["patients"], "studies": totals["studies"], "series": totals["series"],
                   "instances": totals["instances"], "size_bytes": totals["size_bytes"]},
        "days": [{"date": day, **values} for day, values in per_day.items()],
        "users": {"active_sessions": int(active_sessions), "active_users": int(active_users),
                  "sign_ins_24h": int(sign_ins)},
        "jobs": {"by_state": by_state, "recent": recent},
    }
