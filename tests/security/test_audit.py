"""The audit trail: hash chain, tamper detection, fail-closed appends, search, exports, CLI."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import delete, text, update

from voxa.archive import open_archive
from voxa.archive.index import Index
from voxa.cli import main
from voxa.cli.audit import _ACTIONS
from voxa.config import Settings
from voxa.security.audit import (
    AR,
    GENESIS_HASH,
    AuditAction,
    AuditEvent,
    AuditTrail,
    AuditUnavailable,
    audited,
    search,
    verify,
)
from voxa.security.audit_export import to_csv, to_dicom_audit_xml, to_fhir_audit_events

PHI_ID = "PID-SECRET-4711"


@pytest.fixture
def index(database_url: str, tmp_path: Path) -> Iterator[Index]:
    settings = Settings.load(data_dir=tmp_path / "data", database_url=database_url)
    archive = open_archive(settings)
    try:
        yield archive.index
    finally:
        archive.index.engine.dispose()


def _event(i: int, **kw: object) -> AuditEvent:
    base: dict[str, object] = dict(actor=f"user{i % 3}", action=AuditAction.VIEW, source="10.0.0.5",
                                   interface="http", patient_ids=f"P{i}", study_instance_uids=[f"1.2.3.{i}"],
                                   resource=f"/api/studies/{i}", detail={"n": i})
    base.update(kw)
    return AuditEvent(**base)  # type: ignore[arg-type]


def _fill(index: Index, n: int) -> AuditTrail:
    trail = AuditTrail(index)
    for i in range(1, n + 1):
        assert trail.record(_event(i)) == i
    return trail


def _cli(data_dir: Path, database_url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, [*args, "--data-dir", str(data_dir), "--database-url", database_url])
    return result.exit_code, result.output


def test_chain_intact_and_linked(index: Index) -> None:
    _fill(index, 6)
    report = verify(index)
    assert report.ok and report.records == 6 and report.last_seq == 6
    rows = search(index, limit=None)
    assert rows[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.record_hash for a, b in zip(rows, rows[1:], strict=False))
    assert rows[0].at.tzinfo is not None and rows[0].at <= rows[-1].at
    assert "6 records, chain intact" in report.lines()[0]


def test_altered_field_is_named(index: Index) -> None:
    _fill(index, 5)
    with index.write() as conn:
        conn.execute(update(AR).where(AR.c.seq == 3).values(actor="mallory"))
    report = verify(index)
    assert not report.ok and report.bad_seqs == [3] and report.first_bad_seq == 3
    assert "record 3 was altered" in report.lines()[0]


def test_rehashed_record_is_named_by_its_successor(index: Index) -> None:
    from voxa.security.audit import compute_hash

    _fill(index, 4)
    with index.write() as conn:
        row = dict(conn.execute(AR.select().where(AR.c.seq == 2)).one()._mapping)
        row["patient_ids"] = "OTHER"
        conn.execute(update(AR).where(AR.c.seq == 2).values(
            patient_ids="OTHER", record_hash=compute_hash(row["prev_hash"], row)))
    assert verify(index).bad_seqs == [2]


def test_deleted_middle_record_is_missing(index: Index) -> None:
    _fill(index, 5)
    with index.write() as conn:
        conn.execute(delete(AR).where(AR.c.seq == 3))
    report = verify(index)
    assert report.bad_seqs == [3]
    assert any("record 3 is missing" in line for line in report.lines())


def test_deleted_last_record_is_detected_and_never_reused(index: Index) -> None:
    trail = _fill(index, 4)
    with index.write() as conn:
        conn.execute(delete(AR).where(AR.c.seq == 4))
    report = verify(index)
    assert report.bad_seqs == [4]
    assert "record 4 is missing" in report.lines()[0]
    assert trail.record(_event(9)) == 5  # the gap stays visible
    assert verify(index).bad_seqs == [4]


def test_concurrent_appends_keep_a_linear_chain(index: Index) -> None:
    trail = AuditTrail(index)
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            for i in range(10):
                trail.record(_event(t * 100 + i))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    report = verify(index)
    assert report.ok and report.records == 60 and report.last_seq == 60


def test_unavailable_store_fails_closed_and_logs_without_phi(index: Index,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    trail = _fill(index, 1)
    with index.write() as conn:
        conn.execute(text("DROP TABLE audit_records"))
    caplog.set_level(logging.ERROR, logger="voxa.security.audit")
    with pytest.raises(AuditUnavailable) as info:
        trail.record(_event(2, patient_ids=PHI_ID, study_instance_uids=["9.9.9.4711"]))
    assert info.value.__cause__ is None
    assert "audit store unavailable" in caplog.text
    for secret in (PHI_ID, "9.9.9.4711"):
        assert secret not in caplog.text and secret not in str(info.value)
    served = []
    with pytest.raises(AuditUnavailable):
        with audited(trail, _event(3)):
            pass
        served.append("data")  # never reached: nothing is served
    assert not served


def test_audited_records_success_and_failure(index: Index) -> None:
    trail = AuditTrail(index)
    with audited(trail, _event(1)) as ev:
        ev.study_instance_uids = ["1.2.840.1", "1.2.840.2"]
    with pytest.raises(PermissionError), audited(trail, _event(2)) as ev:
        ev.outcome = "denied"
        raise PermissionError
    with pytest.raises(KeyError), audited(trail, _event(3)):
        raise KeyError("x")
    rows = search(index)
    assert [(r.outcome, r.outcome_detail) for r in rows] == [
        ("success", ""), ("denied", "PermissionError"), ("failure", "KeyError")]
    assert rows[0].study_instance_uids == ("1.2.840.1", "1.2.840.2")


def test_search_filters(index: Index) -> None:
    trail = AuditTrail(index)
    trail.record(_event(1, actor="alice", patient_ids=["P1", "P10"], study_instance_uids=["1.2.1", "1.2.10"]))
    trail.record(_event(2, actor="bob", action="query", patient_ids="P10", study_instance_uids=[]))
    trail.record(_event(3, actor="AE:CT1", interface="dimse", action="store", outcome="denied",
                        patient_ids="P1", study_instance_uids="1.2.1"))
    trail.record(_event(4, actor="alice", action="login", patient_ids=(), study_instance_uids=()))
    seqs = lambda rows: [r.seq for r in rows]  # noqa: E731
    assert seqs(search(index, actor="alice")) == [1, 4]
    assert seqs(search(index, patient_id="P1")) == [1, 3]
    assert seqs(search(index, patient_id="P10")) == [1, 2]
    assert seqs(search(index, study_uid="1.2.1")) == [1, 3]
    assert seqs(search(index, action="query")) == [2]
    assert seqs(search(index, action=["store", "login"])) == [3, 4]
    assert seqs(search(index, outcome="denied")) == [3]
    assert seqs(search(index, interface="dimse")) == [3]
    assert seqs(search(index, limit=2, offset=1)) == [2, 3]
    assert seqs(search(index, newest_first=True, limit=1)) == [4]
    now = dt.datetime.now(dt.UTC)
    assert seqs(search(index, since=now - dt.timedelta(minutes=5), until=now + dt.timedelta(minutes=5))) == [1, 2, 3, 4]
    assert search(index, since=now + dt.timedelta(minutes=5)) == []
    at2 = search(index, action="query")[0].at
    assert seqs(search(index, until=at2)) == [1]


def test_exports(index: Index) -> None:
    trail = AuditTrail(index)
    trail.record(_event(1, actor="alice", actor_role="radiologist", patient_ids="P1",
                        study_instance_uids=["1.2.1", "1.2.2"]))
    trail.record(_event(2, actor="AE:CT1", source="ct1.example", interface="dimse", action="store",
                        outcome="denied", outcome_detail="not allowed"))
    trail.record(_event(3, actor="bob", action="login_failed", outcome="failure", patient_ids=(),
                        study_instance_uids=()))
    rows = search(index)

    table = list(csv.DictReader(io.StringIO(to_csv(rows))))
    assert len(table) == 3 and table[0]["actor"] == "alice" and table[0]["study_instance_uids"] == "1.2.1\\1.2.2"
    assert table[1]["outcome"] == "denied" and table[0]["record_hash"] == rows[0].record_hash

    bundle = to_fhir_audit_events(rows)
    assert bundle["resourceType"] == "Bundle" and len(bundle["entry"]) == 3
    json.dumps(bundle)
    first, second, third = (e["resource"] for e in bundle["entry"])
    for res in (first, second, third):
        assert res["resourceType"] == "AuditEvent"
        assert res["type"]["system"] == "http://dicom.nema.org/resources/ontology/DCM"
        assert res["recorded"].endswith("Z") and res["agent"][0]["requestor"] is True
        assert res["source"]["observer"]["display"] == "Voxa"
    assert first["type"]["code"] == "110103" and first["action"] == "R" and first["outcome"] == "0"
    assert first["agent"][0]["network"] == {"address": "10.0.0.5", "type": "2"}
    whats = [e["what"]["identifier"]["value"] for e in first["entity"] if "identifier" in e["what"]]
    assert whats == ["P1", "urn:oid:1.2.1", "urn:oid:1.2.2"]
    assert second["action"] == "C" and second["outcome"] == "4" and second["agent"][0]["network"]["type"] == "1"
    assert third["type"]["code"] == "110114" and third["subtype"][0]["code"] == "110122" and third["outcome"] == "8"

    root = ET.fromstring(to_dicom_audit_xml(rows).encode())
    messages = root.findall("AuditMessage")
    assert len(messages) == 3
    ev = messages[0].find("EventIdentification")
    assert ev is not None and ev.get("EventActionCode") == "R" and ev.get("EventOutcomeIndicator") == "0"
    event_id = ev.find("EventID")
    assert event_id is not None and event_id.get("csd-code") == "110103" and event_id.get("codeSystemName") == "DCM"
    ap = messages[0].find("ActiveParticipant")
    assert ap is not None and ap.get("UserID") == "alice" and ap.get("NetworkAccessPointID") == "10.0.0.5"
    source = messages[0].find("AuditSourceIdentification")
    assert source is not None and source.get("AuditSourceID") == "VOXA"
    objects = messages[0].findall("ParticipantObjectIdentification")
    assert [(o.get("ParticipantObjectID"), o.get("ParticipantObjectTypeCode")) for o in objects] == [
        ("P1", "1"), ("1.2.1", "2"), ("1.2.2", "2")]
    id_type = objects[0].find("ParticipantObjectIDTypeCode")
    assert id_type is not None and id_type.get("csd-code") == "2"
    login = messages[2].find("EventIdentification")
    assert login is not None and login.get("EventOutcomeIndicator") == "8"


def test_cli_verify_search_export(database_url: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    settings = Settings.load(data_dir=data_dir, database_url=database_url)
    archive = open_archive(settings)
    _fill(archive.index, 3)

    code, out = _cli(data_dir, database_url, "audit", "verify")
    assert code == 0 and "3 records, chain intact" in out

    code, out = _cli(data_dir, database_url, "audit", "search", "--actor", "user1", "--json")
    assert code == 0
    assert [r["seq"] for r in json.loads(out)] == [1]
    code, out = _cli(data_dir, database_url, "audit", "search", "--patient-id", "P2")
    assert code == 0 and "patient=P2" in out

    target = tmp_path / "audit.xml"
    code, _ = _cli(data_dir, database_url, "audit", "export", "--format", "dicom", "--output", str(target),
                   "--action", "view")
    assert code == 0 and len(ET.parse(target).getroot().findall("AuditMessage")) == 3
    code, out = _cli(data_dir, database_url, "audit", "export", "--format", "fhir", "--study", "1.2.3.2")
    assert code == 0 and json.loads(out)["total"] == 1
    code, out = _cli(data_dir, database_url, "audit", "export", "--format", "csv", "--action", "audit_export")
    assert code == 0 and len(out.strip().splitlines()) == 1 + 2  # the exports themselves were audited

    with archive.index.write() as conn:
        conn.execute(update(AR).where(AR.c.seq == 2).values(detail='{"n":99}'))
    code, out = _cli(data_dir, database_url, "audit", "verify")
    assert code == 1 and "record 2 was altered" in out
    archive.index.engine.dispose()


def test_cli_action_choices_match_the_enum() -> None:
    assert _ACTIONS == [a.value for a in AuditAction]
