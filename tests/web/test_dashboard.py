"""GET /admin/dashboard: totals, studies and bytes per day, sessions and jobs, on SQLite and
PostgreSQL; administrators only."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
from sqlalchemy import select, update

from voxa.archive.models import Instance, Series, Study
from voxa.testing.synthetic import dataset_to_bytes, small_ct


def test_dashboard_counts_what_was_received_per_day(voxa_factory: Any, database_url: str) -> None:
    v = voxa_factory(http=True, database_url=database_url)
    today, earlier = small_ct(1, slices=3), small_ct(2, slices=2)
    sizes = {}
    for study in (today, earlier):
        data = [dataset_to_bytes(ds) for ds in study.datasets()]
        for blob in data:
            assert v.archive.ingest(blob, source="test").ok
        sizes[study.study_instance_uid] = sum(len(b) for b in data)
    # the second study arrived three days ago
    three_days_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
    st, se, inst = Study.__table__, Series.__table__, Instance.__table__
    with v.archive.index.write() as conn:
        conn.execute(update(st).where(st.c.study_instance_uid == earlier.study_instance_uid)
                     .values(created_at=three_days_ago))
        its_series = select(se.c.id).join(st, st.c.id == se.c.study_fk).where(
            st.c.study_instance_uid == earlier.study_instance_uid)
        conn.execute(update(inst).where(inst.c.series_fk.in_(its_series)).values(received_at=three_days_ago))
    with httpx.Client(base_url=v.base_url, timeout=30) as http:
        r = http.get("/admin/dashboard", params={"days": 7}, auth=v.auth)
        assert r.status_code == 200, r.text
        got = r.json()
        assert got["totals"]["studies"] == 2 and got["totals"]["instances"] == 5
        assert got["totals"]["size_bytes"] >= sum(sizes.values())
        days = {d["date"]: d for d in got["days"]}
        assert len(got["days"]) == 7 and list(days) == sorted(days)
        now = dt.datetime.now(dt.UTC).date()
        assert days[now.isoformat()]["studies"] == 1 and days[now.isoformat()]["instances"] == 3
        back = (now - dt.timedelta(days=3)).isoformat()
        assert days[back]["studies"] == 1 and days[back]["instances"] == 2
        assert days[back]["bytes"] > 0 and days[now.isoformat()]["bytes"] > days[back]["bytes"]
        assert sum(d["studies"] for d in got["days"]) == 2
        assert set(got["users"]) == {"active_sessions", "active_users", "sign_ins_24h"}
        assert isinstance(got["jobs"]["by_state"], dict) and isinstance(got["jobs"]["recent"], list)
        # a signed-in browser session counts
        login = http.post("/login", json={"username": v.auth[0], "password": v.auth[1]})
        assert login.status_code == 200, login.text
        users = http.get("/admin/dashboard", auth=v.auth).json()["users"]
        assert users["active_sessions"] >= 1 and users["active_users"] >= 1 and users["sign_ins_24h"] >= 1
        assert http.get("/admin/dashboard", params={"days": 0}, auth=v.auth).status_code == 422
    # not for a radiologist
    v.runtime.accounts.create_user("rad", "Radiologist-Passw0rd!", role="radiologist")
    r = httpx.get(f"{v.base_url}/admin/dashboard", auth=("rad", "Radiologist-Passw0rd!"), timeout=30)
    assert r.status_code == 403
