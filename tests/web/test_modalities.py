"""The Orthanc-style /modalities and /jobs REST resources, against in-process Voxa servers."""

from __future__ import annotations

import socket
import time
from typing import Any

import httpx
import pytest

from voxa.config import PeerSettings
from voxa.dimse import scu
from voxa.dimse.peers import PeerInfo
from voxa.testing.synthetic import dataset_to_bytes, small_ct, tiny_study

LOCALHOST = "127.0.0.1"


def _ingest(archive: Any, study: Any) -> None:
    for ds in study.datasets():
        assert archive.ingest(dataset_to_bytes(ds), source="test").ok


def _dataset_bytes(archive: Any, **where: str) -> dict[str, bytes]:
    return {loc.sop_instance_uid: archive.blobs.read(loc.blob_key)[loc.dataset_offset:]
            for loc in archive.index.locate(**where)}


def _study_public_id(archive: Any, study_uid: str) -> str:
    from sqlalchemy import select

    from voxa.archive.models import Study

    with archive.index.read() as conn:
        return str(conn.execute(select(Study.public_id).where(Study.study_instance_uid == study_uid)).scalar_one())


def _closed_port() -> int:
    s = socket.socket()
    s.bind((LOCALHOST, 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def _wait_job(client: httpx.Client, job_id: str, timeout_s: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        job = client.get(f"/jobs/{job_id}").json()
        if job["State"] in ("Success", "Failure") or time.monotonic() > deadline:
            return job  # type: ignore[no-any-return]
        time.sleep(0.05)


def _start_pair(voxa_factory: Any, database_url: str | None = None) -> tuple[Any, Any]:
    """A serves HTTP; B knows A as "voxa"; A learns B over REST in the tests."""
    a = voxa_factory(aet="VOXA", http=True, database_url=database_url)
    b = voxa_factory(aet="VOXAB", peers=[PeerSettings(name="voxa", aet="VOXA", host=LOCALHOST, port=a.dicom_port)])
    return a, b


@pytest.fixture
def pair(voxa_factory: Any) -> Any:
    """(client of A's REST API, A, B)."""
    a, b = _start_pair(voxa_factory)
    with httpx.Client(base_url=a.base_url, timeout=60, auth=a.auth) as client:
        yield client, a, b


def test_put_get_delete_modalities(pair: Any) -> None:
    client, _a, b = pair
    assert client.get("/modalities").json() == []

    # Orthanc's list form, Orthanc's object form, and Voxa's snake_case form
    assert client.put("/modalities/b", json=["VOXAB", LOCALHOST, b.dicom_port]).status_code == 200
    r = client.put("/modalities/ct1", json={"AET": "CT1", "Host": "10.0.0.7", "Port": 104, "AllowStore": True,
                                            "AllowFind": False, "AllowMove": False})
    assert r.status_code == 200, r.text
    assert r.json()["AllowFind"] is False
    r = client.put("/modalities/ws", json={"aet": "WS", "host": "ws.local", "port": "11112", "allow_store": False})
    assert r.status_code == 200, r.text

    assert client.get("/modalities").json() == ["b", "ct1", "ws"]
    expanded = client.get("/modalities?expand").json()
    assert expanded["b"]["AET"] == "VOXAB" and expanded["b"]["Port"] == b.dicom_port
    assert (expanded["ct1"]["AllowFind"], expanded["ct1"]["AllowMove"], expanded["ct1"]["AllowStore"]) == \
        (False, False, True)
    assert expanded["ws"]["Port"] == 11112 and expanded["ws"]["AllowStore"] is False
    one = client.get("/modalities/ct1").json()
    assert (one["AET"], one["Host"], one["Port"]) == ("CT1", "10.0.0.7", 104)
    assert client.get("/modalities/ct1/configuration").json() == one

    # replace, then delete
    assert client.put("/modalities/ct1", json=["CT1", "10.0.0.8", 104]).status_code == 200
    assert client.get("/modalities/ct1").json()["Host"] == "10.0.0.8"
    assert client.delete("/modalities/ct1").status_code == 200
    assert client.get("/modalities/ct1").status_code == 404
    assert client.delete("/modalities/ct1").status_code == 404
    assert client.get("/modalities").json() == ["b", "ws"]


def test_put_modality_refuses_bad_bodies(pair: Any) -> None:
    client, _a, _b = pair
    for body in (
        ["VOXAB", LOCALHOST],  # too short
        ["VOXAB", LOCALHOST, "not-a-port"],
        ["A_VERY_LONG_AE_TITLE", LOCALHOST, 104],
        ["VOXAB", LOCALHOST, 70000],
        {"AET": "X", "Host": LOCALHOST},  # no port
        {"AET": "X", "Host": LOCALHOST, "Port": 104, "AllowStore": "yes"},
        "just text",
    ):
        r = client.put("/modalities/x", json=body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]
    assert client.put("/modalities/x", content=b"{not json").status_code == 400
    assert client.get("/modalities").json() == []


def test_echo(pair: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    client, _a, b = pair
    client.put("/modalities/b", json=["VOXAB", LOCALHOST, b.dicom_port])
    r = client.post("/modalities/b/echo")
    assert r.status_code == 200 and r.json()["round_trip_ms"] > 0

    assert client.post("/modalities/nobody/echo").status_code == 404

    client.put("/modalities/closed", json=["CLOSED", LOCALHOST, _closed_port()])
    r = client.post("/modalities/closed/echo")
    assert r.status_code == 502 and "connection refused" in r.json()["error"]

    # B refuses an AE title it does not know
    client.put("/modalities/wrong", json=["VOXAB", LOCALHOST, b.dicom_port])
    b.runtime.peers.remove("voxa")
    r = client.post("/modalities/wrong/echo")
    assert r.status_code == 502 and "rejected" in r.json()["error"]

    # a peer that never answers: 504
    monkeypatch.setattr(scu, "_ACSE_TIMEOUT_S", 1.0)
    with socket.socket() as silent:
        silent.bind((LOCALHOST, 0))
        silent.listen(1)
        client.put("/modalities/silent", json=["SILENT", LOCALHOST, silent.getsockname()[1]])
        r = client.post("/modalities/silent/echo")
    assert r.status_code == 504, r.text


def test_store_as_job_and_jobs_resource(voxa_factory: Any, database_url: str) -> None:
    a, b = _start_pair(voxa_factory, database_url)
    with httpx.Client(base_url=a.base_url, timeout=60, auth=a.auth) as client:
        _store_as_job_and_jobs_resource(client, a, b)


def _store_as_job_and_jobs_resource(client: httpx.Client, a: Any, b: Any) -> None:
    client.put("/modalities/b", json=["VOXAB", LOCALHOST, b.dicom_port])
    study = small_ct(11, slices=5, rows=64)
    _ingest(a.archive, study)
    study_id = _study_public_id(a.archive, study.study_instance_uid)

    # asynchronous: a job to poll
    r = client.post("/modalities/b/store", json={"Resources": [study_id], "Synchronous": False})
    assert r.status_code == 200, r.text
    job_id = r.json()["ID"]
    assert r.json()["Path"] == f"/jobs/{job_id}"
    job = _wait_job(client, job_id)
    assert job["State"] == "Success", job
    assert (job["Type"], job["Progress"], job["ErrorCode"]) == ("DicomModalityStore", 100, 0)
    assert job["Content"]["InstancesCount"] == 5 and job["Content"]["FailedInstancesCount"] == 0
    assert job["Content"]["ParentResources"] == [study_id]
    assert job["kind"] == "dicom-store" and job["state"] == "success"
    assert "CompletionTime" in job
    assert _dataset_bytes(b.archive, study_uid=study.study_instance_uid) == \
        _dataset_bytes(a.archive, study_uid=study.study_instance_uid)

    assert job_id in client.get("/jobs").json()
    assert [j["ID"] for j in client.get("/jobs?expand").json()] == client.get("/jobs").json()
    assert client.get("/jobs/no-such-job").status_code == 404
    assert client.post("/jobs/no-such-job/cancel").status_code == 404
    # cancelling a finished job leaves it as it is
    assert client.post(f"/jobs/{job_id}/cancel").json()["State"] == "Success"

    # synchronous (Orthanc's default): instance IDs in a list, and our {"series_uid": ...}
    locs = a.archive.index.locate(study_uid=study.study_instance_uid)
    r = client.post("/modalities/b/store", json=[locs[0].public_id, locs[1].public_id])
    assert r.status_code == 200, r.text
    assert r.json()["InstancesCount"] == 2 and r.json()["warnings"] == 2  # B holds them already
    r = client.post("/modalities/b/store", json={"series_uid": locs[0].series_instance_uid})
    assert r.status_code == 200 and r.json()["InstancesCount"] == 5
    # Orthanc also takes one bare ID as the body
    r = client.post("/modalities/b/store", content=study_id.encode())
    assert r.status_code == 200 and r.json()["InstancesCount"] == 5


def test_store_errors(pair: Any) -> None:
    client, a, b = pair
    client.put("/modalities/b", json=["VOXAB", LOCALHOST, b.dicom_port])
    study = tiny_study(12, series=1, instances_per_series=2)
    _ingest(a.archive, study)
    study_id = _study_public_id(a.archive, study.study_instance_uid)

    assert client.post("/modalities/nobody/store", json=[study_id]).status_code == 404
    for bad in ([], {"Resources": "nope"}, {"Resources": [1]}, 123, {"Resources": [study_id], "Synchronous": "no"},
                ["not-an-id"]):
        r = client.post("/modalities/b/store", json=bad)
        assert r.status_code == 400, (bad, r.text)
    r = client.post("/modalities/b/store", json=["0" * 8 + "-" + "-".join(["0" * 8] * 4)])
    assert r.status_code == 404 and "no patient, study, series or instance" in r.json()["error"]
    assert client.post("/modalities/b/store", json={"study_uid": "1.2.3.4"}).status_code == 404

    # an unreachable peer: 502 when synchronous, a failed job when not
    client.put("/modalities/closed", json=["CLOSED", LOCALHOST, _closed_port()])
    r = client.post("/modalities/closed/store", json=[study_id])
    assert r.status_code == 502 and "connection refused" in r.json()["error"]
    r = client.post("/modalities/closed/store", json={"Resources": [study_id], "Asynchronous": True})
    job = _wait_job(client, r.json()["ID"])
    assert job["State"] == "Failure" and "connection refused" in job["ErrorDescription"]

    # a peer that refuses the instances: B does not let this AE title store
    b.runtime.peers.put(PeerInfo("voxa", "VOXA", LOCALHOST, a.dicom_port, allow_store=False))
    r = client.post("/modalities/b/store", json=[study_id])
    assert r.status_code == 502 and "refused 2 of 2" in r.json()["error"]
    r = client.post("/modalities/b/store", json={"Resources": [study_id], "Permissive": True})
    assert r.status_code == 200 and r.json()["FailedInstancesCount"] == 2


def test_query(pair: Any) -> None:
    client, _a, b = pair
    client.put("/modalities/b", json=["VOXAB", LOCALHOST, b.dicom_port])
    study = tiny_study(13, series=2, instances_per_series=2)
    _ingest(b.archive, study)

    r = client.post("/modalities/b/query", json={"Level": "Study", "Query": {"PatientID": study.patient_id}})
    assert r.status_code == 200, r.text
    [match] = r.json()
    assert match["StudyInstanceUID"] == study.study_instance_uid
    assert match["PatientName"] == study.patient_name and match["StudyDate"] == study.study_date

    # tags are accepted as keys, and ReturnKeys chooses what comes back
    r = client.post("/modalities/b/query", json={"Level": "Series", "Query": {"0020,000D": study.study_instance_uid},
                                                 "ReturnKeys": ["SeriesInstanceUID", "SeriesNumber"]})
    assert r.status_code == 200, r.text
    assert sorted(int(s["SeriesNumber"]) for s in r.json()) == [1, 2]
    r = client.post("/modalities/b/query", json={"Level": "Instance",
                                                 "Query": {"StudyInstanceUID": study.study_instance_uid}})
    assert len(r.json()) == 4 and all("SOPInstanceUID" in i for i in r.json())
    r = client.post("/modalities/b/query", json={"Level": "Patient", "Query": {"PatientID": study.patient_id}})
    assert [p["PatientID"] for p in r.json()] == [study.patient_id]

    for bad in ({"Level": "Galaxy"}, {"Query": {}}, {"Level": "Study", "Query": {"NotAKeyword": "1"}},
                {"Level": "Study", "Query": {"PatientID": ["a"]}}, ["Study"]):
        assert client.post("/modalities/b/query", json=bad).status_code == 400, bad
    assert client.post("/modalities/nobody/query", json={"Level": "Study"}).status_code == 404


def test_move_retrieves_into_voxa(pair: Any) -> None:
    client, a, b = pair
    client.put("/modalities/b", json=["VOXAB", LOCALHOST, b.dicom_port])
    first, second = small_ct(14, slices=5, rows=64), small_ct(15, slices=3, rows=32)
    _ingest(b.archive, first)
    _ingest(b.archive, second)

    # synchronous, target defaulting to Voxa's own AE title
    r = client.post("/modalities/b/move", json={"Level": "Study",
                                                "Resources": [{"StudyInstanceUID": first.study_instance_uid}]})
    assert r.status_code == 200, r.text
    assert (r.json()["completed"], r.json()["failed"], r.json()["TargetAet"]) == (5, 0, "VOXA")
    assert _dataset_bytes(a.archive, study_uid=first.study_instance_uid) == \
        _dataset_bytes(b.archive, study_uid=first.study_instance_uid)

    # asynchronous: a job with progress
    r = client.post("/modalities/b/move", json={"Level": "Study", "Asynchronous": True,
                                                "Resources": [{"StudyInstanceUID": second.study_instance_uid}]})
    job = _wait_job(client, r.json()["ID"])
    assert (job["State"], job["Type"], job["Progress"]) == ("Success", "DicomMoveScu", 100)
    assert job["Content"]["completed"] == 3
    assert len(a.archive.index.locate(study_uid=second.study_instance_uid)) == 3

    # B does not know this destination
    r = client.post("/modalities/b/move", json={"Level": "Study", "TargetAet": "NOBODY",
                                                "Resources": [{"StudyInstanceUID": first.study_instance_uid}]})
    assert r.status_code == 502 and "NOBODY" in r.json()["error"]

    for bad in ({"Level": "Study"}, {"Level": "Study", "Resources": []},
                {"Level": "Study", "Resources": [{"PatientID": "x"}]},
                {"Level": "Study", "Resources": [{"StudyInstanceUID": "1.2"}], "TargetAet": "WAY_TOO_LONG_AE_TITLE"},
                {"Level": "Nope", "Resources": [{"StudyInstanceUID": "1.2"}]}):
        assert client.post("/modalities/b/move", json=bad).status_code == 400, bad
    assert client.post("/modalities/nobody/move", json={"Level": "Study"}).status_code == 404

    client.put("/modalities/closed", json=["CLOSED", LOCALHOST, _closed_port()])
    r = client.post("/modalities/closed/move", json={"Level": "Study",
                                                     "Resources": [{"StudyInstanceUID": first.study_instance_uid}]})
    assert r.status_code == 502
