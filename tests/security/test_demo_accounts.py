"""The demo profile's accounts and the access it gives them."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from voxa.archive.access import ST
from voxa.cli.serve import DEMO_ACCOUNTS, DEMO_PASSWORD, _grant_demo_access, create_demo_accounts
from voxa.config import Settings
from voxa.runtime import Runtime
from voxa.testing.synthetic import dataset_to_bytes, tiny_study


def test_demo_accounts_get_one_role_each_and_something_to_see(tmp_path: Path) -> None:
    rt = Runtime.open(Settings(data_dir=tmp_path / "data", fsync=False), server=True)
    try:
        for seed, modality in ((1, "MR"), (2, "DX"), (3, "CT")):
            for ds in tiny_study(seed, modality=modality, series=1, instances_per_series=1).datasets():
                assert rt.archive.ingest(dataset_to_bytes(ds), source="demo").ok
        assert create_demo_accounts(rt) == [name for name, _ in DEMO_ACCOUNTS]
        assert create_demo_accounts(rt) == []  # only into an empty account table
        _grant_demo_access(rt)
        _grant_demo_access(rt)  # idempotent
        roles = {u.username: u.role for u in rt.accounts.list_users()}
        assert roles == dict(DEMO_ACCOUNTS)
        assert rt.accounts.authenticate("student", DEMO_PASSWORD).role == "student"
        with rt.archive.index.read() as conn:
            rows = {r.modalities_in_study: r for r in conn.execute(select(ST))}
        assert [a.patient_id for a in rt.accounts.assignments("referrer")] == [rows["MR"].patient_id]
        grants = rt.accounts.family_grants("family")
        assert [(g.patient_id, g.status.value) for g in grants] == [(rows["DX"].patient_id, "active")]
        assert rows["DX"].teaching and not rows["MR"].teaching and not rows["CT"].teaching
    finally:
        rt.close()
