"""Voxa and a real Orthanc 1.10 as DICOM peers of each other.

Voxa moves a study to Orthanc and Orthanc moves a study from Voxa; Orthanc stores to Voxa,
Voxa queries Orthanc and sends to it through its Orthanc-style REST API.  Each time the two sides must hold identical dataset bytes, and Orthanc's
public IDs must be Voxa's (the promise that lets Orthanc scripts run against Voxa).
"""

from __future__ import annotations

from typing import Any

import httpx
import pydicom
import pytest
from sqlalchemy import select

from voxa.archive.models import Instance, Patient, Series, Study
from voxa.config import PeerSettings
from voxa.dimse import scu
from voxa.dimse.peers import PeerInfo
from voxa.testing.synthetic import dataset_to_bytes, small_ct, tiny_study

LOCALHOST = "127.0.0.1"
TESTER_AET = "VOXATEST"  # the calling AE of the C-MOVE this test sends to Voxa


def _ingest(archive: Any, study: Any) -> None:
    for ds in study.datasets():
        assert archive.ingest(dataset_to_bytes(ds), source="test").ok


def _after_file_meta(part10: bytes) -> bytes:
    """The dataset bytes of a Part 10 file (after the preamble and the file meta group)."""
    assert part10[128:132] == b"DICM"
    assert part10[132:136] == b"\x02\x00\x00\x00" and part10[136:138] == b"UL", "no (0002,0000) group length"
    return part10[144 + int.from_bytes(part10[140:144], "little"):]


def _voxa_datasets(archive: Any, study_uid: str) -> dict[str, bytes]:
    return {loc.sop_instance_uid: archive.blobs.read(loc.blob_key)[loc.dataset_offset:]
            for loc in archive.index.locate(study_uid=study_uid)}


def _orthanc_datasets(orthanc: httpx.Client, study_public_id: str) -> dict[str, bytes]:
    """SOP Instance UID -> dataset bytes of every instance Orthanc holds in the study."""
    out = {}
    for inst in orthanc.get(f"/studies/{study_public_id}/instances").raise_for_status().json():
        part10 = orthanc.get(f"/instances/{inst['ID']}/file").raise_for_status().content
        ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(part10), stop_before_pixels=True)
        out[str(ds.SOPInstanceUID)] = _after_file_meta(part10)
    return out


def _public_ids(archive: Any) -> dict[str, set[str]]:
    with archive.index.read() as conn:
        return {name: set(conn.execute(select(model.public_id)).scalars())
                for name, model in (("patients", Patient), ("studies", Study), ("series", Series),
                                    ("instances", Instance))}


def _study_public_id(archive: Any, study_uid: str) -> str:
    with archive.index.read() as conn:
        return str(conn.execute(select(Study.public_id).where(Study.study_instance_uid == study_uid)).scalar_one())


@pytest.fixture
def voxa_and_orthanc(voxa_factory: Any, orthanc_peer: Any) -> Any:
    voxa = voxa_factory(aet="VOXA", http=True,
                        peers=[PeerSettings(name="tester", aet=TESTER_AET, host=LOCALHOST, port=104)])
    orthanc = orthanc_peer(aet="ORTHANC", modalities={"voxa": ["VOXA", LOCALHOST, voxa.dicom_port]})
    voxa.runtime.peers.put(PeerInfo("orthanc", "ORTHANC", LOCALHOST, orthanc.dicom_port))
    with httpx.Client(base_url=orthanc.url, timeout=120) as orthanc_rest, \
            httpx.Client(base_url=voxa.base_url, timeout=120, auth=voxa.auth) as voxa_rest:
        yield voxa, orthanc, orthanc_rest, voxa_rest


def test_voxa_and_orthanc_exchange_identical_studies(voxa_and_orthanc: Any) -> None:
    voxa, orthanc, orthanc_rest, voxa_rest = voxa_and_orthanc
    pushed, pulled = small_ct(21, slices=5, rows=64), small_ct(22, slices=5, rows=64)
    _ingest(voxa.archive, pushed)
    _ingest(voxa.archive, pulled)

    # (a) Voxa moves a study to Orthanc: a C-MOVE sent to Voxa with ORTHANC as destination
    myself = PeerInfo("voxa", voxa.aet, LOCALHOST, voxa.dicom_port)
    counts = scu.move(myself, TESTER_AET, "ORTHANC", "STUDY", {"StudyInstanceUID": pushed.study_instance_uid})
    assert (counts["completed"], counts["failed"]) == (5, 0)
    pushed_id = _study_public_id(voxa.archive, pushed.study_instance_uid)
    assert orthanc_rest.get("/studies").json() == [pushed_id]
    on_voxa = _voxa_datasets(voxa.archive, pushed.study_instance_uid)
    assert len(on_voxa) == 5
    assert _orthanc_datasets(orthanc_rest, pushed_id) == on_voxa

    # (b) Orthanc moves a study from Voxa into itself (Orthanc's REST API drives the C-MOVE)
    r = orthanc_rest.post("/modalities/voxa/move", json={
        "Level": "Study", "Resources": [{"StudyInstanceUID": pulled.study_instance_uid}], "TargetAet": "ORTHANC"})
    assert r.status_code == 200, r.text
    pulled_id = _study_public_id(voxa.archive, pulled.study_instance_uid)
    assert sorted(orthanc_rest.get("/studies").json()) == sorted([pushed_id, pulled_id])
    assert _orthanc_datasets(orthanc_rest, pulled_id) == _voxa_datasets(voxa.archive, pulled.study_instance_uid)

    # (c) Orthanc stores to Voxa an instance uploaded to it
    uploaded = tiny_study(23, series=1, instances_per_series=2)
    parts = [dataset_to_bytes(ds) for ds in uploaded.datasets()]
    ids = [orthanc_rest.post("/instances", content=p).raise_for_status().json()["ID"] for p in parts]
    r = orthanc_rest.post("/modalities/voxa/store", json=ids)
    assert r.status_code == 200, r.text
    uploaded_id = _study_public_id(voxa.archive, uploaded.study_instance_uid)
    on_voxa = _voxa_datasets(voxa.archive, uploaded.study_instance_uid)
    assert on_voxa == _orthanc_datasets(orthanc_rest, uploaded_id)
    assert sorted(on_voxa.values()) == sorted(_after_file_meta(p) for p in parts)

    # (d) Voxa queries Orthanc (C-FIND), directly and over Voxa's REST API
    peer = voxa.runtime.peers.by_name("orthanc")
    studies = scu.find(peer, voxa.aet, "STUDY", {"PatientID": uploaded.patient_id}, scu.DEFAULT_RETURN_KEYS["STUDY"])
    assert [(s["StudyInstanceUID"], s["PatientName"]) for s in studies] == \
        [(uploaded.study_instance_uid, uploaded.patient_name)]
    images = scu.find(peer, voxa.aet, "IMAGE", {"StudyInstanceUID": pushed.study_instance_uid,
                                                "SeriesInstanceUID": ""}, ["SOPInstanceUID"])
    assert sorted(i["SOPInstanceUID"] for i in images) == sorted(_voxa_datasets(voxa.archive,
                                                                                pushed.study_instance_uid))
    r = voxa_rest.post("/modalities/orthanc/query", json={"Level": "Study", "Query": {}})
    assert r.status_code == 200, r.text
    assert sorted(s["StudyInstanceUID"] for s in r.json()) == sorted(
        [pushed.study_instance_uid, pulled.study_instance_uid, uploaded.study_instance_uid])
    assert voxa_rest.post("/modalities/orthanc/echo").status_code == 200

    # (e) Voxa's Orthanc-style REST store, to the real Orthanc, as a job
    sent = tiny_study(24, series=2, instances_per_series=2)
    _ingest(voxa.archive, sent)
    sent_id = _study_public_id(voxa.archive, sent.study_instance_uid)
    r = voxa_rest.post("/modalities/orthanc/store", json={"Resources": [sent_id], "Asynchronous": True})
    assert r.status_code == 200, r.text
    job = voxa.runtime.jobs.wait(r.json()["ID"], timeout=60)
    assert job.state == "success", job.error
    assert voxa_rest.get(f"/jobs/{job.id}").json()["Content"]["InstancesCount"] == 4
    assert _orthanc_datasets(orthanc_rest, sent_id) == _voxa_datasets(voxa.archive, sent.study_instance_uid)

    # Orthanc's public IDs are Voxa's, at every level
    ours = _public_ids(voxa.archive)
    for level in ("patients", "studies", "series", "instances"):
        assert set(orthanc_rest.get(f"/{level}").json()) == ours[level], level

