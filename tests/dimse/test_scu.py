"""Voxa as a DICOM client (voxa.dimse.scu) against another in-process Voxa, and the server's
retrieve services (C-MOVE, C-GET) as a plain pynetdicom SCU sees them."""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest
from pydicom import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from voxa.config import PeerSettings
from voxa.dimse import scu
from voxa.dimse.peers import PeerInfo
from voxa.testing.synthetic import dataset_to_bytes, small_ct

LOCALHOST = "127.0.0.1"


def _ingest(archive: Any, study: Any) -> list[str]:
    uids = []
    for ds in study.datasets():
        result = archive.ingest(dataset_to_bytes(ds), source="test")
        assert result.ok, result.reason
        uids.append(str(ds.SOPInstanceUID))
    return uids


def _dataset_bytes(archive: Any, **where: str) -> dict[str, bytes]:
    """SOP Instance UID -> stored dataset bytes (after the file meta)."""
    return {loc.sop_instance_uid: archive.blobs.read(loc.blob_key)[loc.dataset_offset:]
            for loc in archive.index.locate(**where)}


def _pair(voxa_factory: Any, database_url: str | None = None) -> tuple[Any, Any, PeerInfo, PeerInfo]:
    """Voxa A and Voxa B, each a peer of the other; returns (a, b, b as A's peer, a as B's peer)."""
    a = voxa_factory(aet="VOXAA", database_url=database_url)
    b = voxa_factory(aet="VOXAB", peers=[PeerSettings(name="a", aet="VOXAA", host=LOCALHOST, port=a.dicom_port)])
    # A's port is known only once it listens, and B's after A has started: add B to A now.
    peer_b = a.runtime.peers.put(PeerInfo("b", "VOXAB", LOCALHOST, b.dicom_port))
    return a, b, peer_b, b.runtime.peers.by_name("a")


def test_echo(voxa_factory: Any) -> None:
    a, b, peer_b, peer_a = _pair(voxa_factory)
    assert scu.echo(peer_b, a.aet) > 0
    assert scu.echo(peer_a, b.aet) > 0


def test_store_find_and_move_between_two_voxas(voxa_factory: Any, database_url: str) -> None:
    a, b, peer_b, peer_a = _pair(voxa_factory, database_url)
    sent_study = small_ct(1, slices=5, rows=64)
    _ingest(a.archive, sent_study)

    # C-STORE A -> B: the bytes B stores are the bytes A holds
    locations = a.archive.index.locate(study_uid=sent_study.study_instance_uid)
    seen: list[float] = []
    report = scu.store(a.archive, peer_b, a.aet, locations, progress=lambda _s, pct: seen.append(pct))
    assert (report.sent, report.failed, report.warnings) == (5, 0, 0)
    assert seen[-1] == 100.0
    on_a = _dataset_bytes(a.archive, study_uid=sent_study.study_instance_uid)
    on_b = _dataset_bytes(b.archive, study_uid=sent_study.study_instance_uid)
    assert len(on_a) == 5 and on_b == on_a
    # a second send is answered with the duplicate warning and stores nothing new
    again = scu.store(a.archive, peer_b, a.aet, locations)
    assert (again.sent, again.warnings, again.failed) == (5, 5, 0)

    # C-FIND on B at each level
    studies = scu.find(peer_b, a.aet, "STUDY", {"PatientID": sent_study.patient_id},
                       scu.DEFAULT_RETURN_KEYS["STUDY"])
    assert [s["StudyInstanceUID"] for s in studies] == [sent_study.study_instance_uid]
    assert studies[0]["PatientID"] == sent_study.patient_id
    assert studies[0]["ModalitiesInStudy"] == "CT"
    series = scu.find(peer_b, a.aet, "SERIES", {"StudyInstanceUID": sent_study.study_instance_uid},
                      ["SeriesInstanceUID", "Modality"])
    assert len(series) == 1 and series[0]["Modality"] == "CT"
    images = scu.find(peer_b, a.aet, "IMAGE", {"StudyInstanceUID": sent_study.study_instance_uid,
                                                "SeriesInstanceUID": series[0]["SeriesInstanceUID"]},
                      ["SOPInstanceUID", "InstanceNumber"])
    assert sorted(i["SOPInstanceUID"] for i in images) == sorted(on_a)
    assert scu.find(peer_b, a.aet, "STUDY", {"PatientID": "NOBODY"}, ["StudyInstanceUID"]) == []

    # C-MOVE: B asks A to send a study to B (retrieve into B)
    pulled = small_ct(2, slices=5, rows=64)
    _ingest(a.archive, pulled)
    progress: list[float] = []
    counts = scu.move(peer_a, b.aet, b.aet, "STUDY", {"StudyInstanceUID": pulled.study_instance_uid},
                      progress=lambda _s, pct: progress.append(pct))
    assert counts["completed"] == 5 and counts["failed"] == 0
    assert progress and progress[-1] == 100.0
    assert _dataset_bytes(b.archive, study_uid=pulled.study_instance_uid) == \
        _dataset_bytes(a.archive, study_uid=pulled.study_instance_uid)


def test_find_refuses_an_unknown_keyword(voxa_factory: Any) -> None:
    a, _b, peer_b, _peer_a = _pair(voxa_factory)
    with pytest.raises(ValueError, match="NotAKeyword"):
        scu.find(peer_b, a.aet, "STUDY", {"NotAKeyword": "x"})


def test_peer_errors(voxa_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    a, _b, peer_b, _peer_a = _pair(voxa_factory)

    # nothing listens: PeerError at once, and not a timeout
    closed = socket.socket()
    closed.bind((LOCALHOST, 0))
    port = closed.getsockname()[1]
    closed.close()
    with pytest.raises(scu.PeerError, match="connection refused") as info:
        scu.echo(PeerInfo("closed", "NOBODY", LOCALHOST, port), a.aet)
    assert not isinstance(info.value, scu.PeerTimeout)

    # B does not know this calling AE title: the association is rejected
    with pytest.raises(scu.PeerError, match="rejected the association"):
        scu.echo(peer_b, "STRANGER")

    # a peer that accepts the TCP connection and never answers: PeerTimeout
    monkeypatch.setattr(scu, "_ACSE_TIMEOUT_S", 1.0)
    silent = socket.socket()
    silent.bind((LOCALHOST, 0))
    silent.listen(1)
    try:
        with pytest.raises(scu.PeerTimeout, match="did not answer"):
            scu.echo(PeerInfo("silent", "SILENT", LOCALHOST, silent.getsockname()[1]), a.aet)
    finally:
        silent.close()


def test_move_to_an_unknown_destination_is_a801(voxa_factory: Any) -> None:
    a, b, _peer_b, peer_a = _pair(voxa_factory)
    study = small_ct(3, slices=2, rows=32)
    _ingest(a.archive, study)
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study.study_instance_uid

    ae = AE(ae_title=b.aet)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate(LOCALHOST, a.dicom_port, ae_title=a.aet)
    assert assoc.is_established
    try:
        statuses = [int(status.Status) for status, _ in
                    assoc.send_c_move(identifier, "NOBODY", StudyRootQueryRetrieveInformationModelMove)]
    finally:
        assoc.release()
    assert statuses == [0xA801]

    with pytest.raises(scu.PeerError, match="does not know the move destination NOBODY or cannot reach it"):
        scu.move(peer_a, b.aet, "NOBODY", "STUDY", {"StudyInstanceUID": study.study_instance_uid})


def test_c_get_returns_the_instances_on_the_same_association(voxa_factory: Any) -> None:
    a = voxa_factory(aet="VOXAA", peers=[PeerSettings(name="getter", aet="GETSCU", host=LOCALHOST, port=11112)])
    study = small_ct(4, slices=3, rows=32)
    _ingest(a.archive, study)
    expected = _dataset_bytes(a.archive, study_uid=study.study_instance_uid)

    received: dict[str, bytes] = {}
    lock = threading.Lock()

    def on_store(event: evt.Event) -> int:
        with lock:
            received[str(event.request.AffectedSOPInstanceUID)] = event.request.DataSet.getvalue()
        return 0x0000

    ae = AE(ae_title="GETSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage)
    role = build_role(CTImageStorage, scp_role=True)
    assoc = ae.associate(LOCALHOST, a.dicom_port, ae_title=a.aet, ext_neg=[role],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study.study_instance_uid
    try:
        responses = list(assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet))
    finally:
        assoc.release()
    final = responses[-1][0]
    assert int(final.Status) == 0x0000
    assert int(final.NumberOfCompletedSuboperations) == 3
    assert received == expected


def test_cli_echo_find_move_store(voxa_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """``voxa echo|find|move|store|job`` run on B's data folder while B serves (as beside ``voxa serve``)."""
    import json

    from click.testing import CliRunner

    from voxa.cli import main

    a, b, _peer_b, _peer_a = _pair(voxa_factory)
    on_a, on_b = small_ct(5, slices=3, rows=32), small_ct(6, slices=2, rows=32)
    _ingest(a.archive, on_a)
    _ingest(b.archive, on_b)
    monkeypatch.delenv("VOXA_CONFIG", raising=False)
    runner = CliRunner(env={"VOXA_AET": b.aet})

    where = ["--data-dir", str(b.data_dir)]
    if b.runtime.settings.database_url:  # the PostgreSQL pass: the CLI must open the same index
        where += ["--database-url", b.runtime.settings.database_url]

    def voxa(*args: str) -> Any:
        return runner.invoke(main, [*args, *where], catch_exceptions=False)

    r = voxa("echo", "a")
    assert r.exit_code == 0 and "C-ECHO ok" in r.stdout
    r = voxa("echo", "VOXAA", "--host", LOCALHOST)
    assert r.exit_code == 2  # PEER or --host, not both
    r = runner.invoke(main, ["echo", "--host", LOCALHOST, "--port", str(a.dicom_port), "--aet", a.aet,
                             "--calling-aet", b.aet, *where])
    assert r.exit_code == 0, r.output
    r = voxa("echo", "nobody")
    assert r.exit_code == 1 and "no peer named or titled 'nobody'" in r.output

    r = voxa("find", "a", "--level", "study", "-k", f"PatientID={on_a.patient_id}", "--json")
    assert r.exit_code == 0, r.output
    assert [m["StudyInstanceUID"] for m in json.loads(r.stdout)] == [on_a.study_instance_uid]
    r = voxa("find", "a", "--level", "IMAGE", "-k", f"StudyInstanceUID={on_a.study_instance_uid}", "-r", "Rows")
    assert r.exit_code == 0, r.output
    header, *rows = r.stdout.splitlines()
    assert "Rows" in header.split("\t") and len(rows) == 3
    assert voxa("find", "a", "-k", "Bogus=1").exit_code == 2

    # move: A sends to this data folder's own AE title (B, which is serving)
    r = voxa("move", "a", "-k", f"StudyInstanceUID={on_a.study_instance_uid}")
    assert r.exit_code == 0, r.output
    assert "completed 3" in r.stdout
    assert len(b.archive.index.locate(study_uid=on_a.study_instance_uid)) == 3

    # store: from this data folder (B) to A
    r = voxa("store", "a", "--study", on_b.study_instance_uid)
    assert r.exit_code == 0, r.output
    assert "sent 2" in r.stdout
    assert _dataset_bytes(a.archive, study_uid=on_b.study_instance_uid) == \
        _dataset_bytes(b.archive, study_uid=on_b.study_instance_uid)
    assert voxa("store", "a", "--study", "1.2.3").exit_code == 1
    assert voxa("store", "a").exit_code == 2

    r = voxa("job", "list")
    assert r.exit_code == 0, r.output
