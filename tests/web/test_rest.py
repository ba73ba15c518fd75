"""The Orthanc-compatible REST API, driven by the real ``pyorthanc`` client and by raw HTTP.

Every test runs a Voxa server in process (uvicorn on a free port); the first test runs once
per index backend (SQLite and PostgreSQL), the others on SQLite.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pydicom
import pyorthanc
import pytest
from PIL import Image
from pydicom.fileset import FileSet

from voxa.archive.http_peers import HttpPeer
from voxa.testing.synthetic import dataset_to_bytes, make_instance, small_ct, tiny_study


def _parts(study: Any) -> list[bytes]:
    return [dataset_to_bytes(ds) for ds in study.datasets()]


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _sop_uid(part10: bytes) -> str:
    return str(pydicom.dcmread(io.BytesIO(part10), stop_before_pixels=True).SOPInstanceUID)


@pytest.fixture
def voxa(voxa_factory: Any) -> Any:
    return voxa_factory(http=True)


@pytest.fixture
def rest(voxa: Any) -> Any:
    with httpx.Client(base_url=voxa.base_url, timeout=60, auth=voxa.auth) as client:
        yield client


# -- pyorthanc ----------------------------------------------------------------------------------------


def test_pyorthanc_client_works_against_voxa(voxa_factory: Any, database_url: str) -> None:
    voxa = voxa_factory(http=True, database_url=database_url)
    client = pyorthanc.Orthanc(voxa.base_url, *voxa.auth, timeout=60)
    ct = small_ct(31, slices=3, rows=32)
    ct_parts = _parts(ct)
    tiny = tiny_study(32, series=2, instances_per_series=2)
    tiny_parts = _parts(tiny)

    # upload: one file at a time, then a ZIP; again: AlreadyStored
    answers = [client.post_instances(p) for p in ct_parts]
    assert [a["Status"] for a in answers] == ["Success"] * 3
    assert client.post_instances(ct_parts[0])["Status"] == "AlreadyStored"
    zipped = client.post_instances(_zip({f"dir/{i}.dcm": p for i, p in enumerate(tiny_parts)}))
    assert isinstance(zipped, list) and [a["Status"] for a in zipped] == ["Success"] * 4
    assert len({a["ParentStudy"] for a in zipped}) == 1 and len({a["ParentSeries"] for a in zipped}) == 2

    # lists at every level
    assert len(client.get_patients()) == 2
    assert len(client.get_studies()) == 2
    assert len(client.get_series()) == 3
    assert sorted(client.get_instances()) == sorted(a["ID"] for a in answers + zipped)

    # resources and their main tags, through pyorthanc's objects
    patients = {p.patient_id: p for p in (pyorthanc.Patient(i, client) for i in client.get_patients())}
    patient = patients[ct.patient_id]
    assert patient.name == ct.patient_name
    (study,) = patient.studies
    assert study.uid == ct.study_instance_uid
    assert study.accession_number == ct.accession_number
    assert study.description == "CT CHEST WITH CONTRAST"
    assert study.date.strftime("%Y%m%d") == ct.study_date
    (series,) = study.series
    assert series.modality == "CT"
    instances = series.instances
    assert len(instances) == 3
    by_uid = {_sop_uid(p): p for p in ct_parts}
    for inst in instances:
        content = inst.get_dicom_file_content()
        assert content == by_uid[inst.uid]  # byte-identical download
        assert inst.get_pydicom().SOPInstanceUID == inst.uid
        assert inst.file_size == len(content)
    assert sorted(i.instance_number for i in instances) == [1, 2, 3]
    first = min(instances, key=lambda i: i.instance_number)
    assert first.image_position_patient == [float(v) for v in
                                            pydicom.dcmread(io.BytesIO(by_uid[first.uid])).ImagePositionPatient]
    assert first.simplified_tags["PatientName"] == ct.patient_name
    assert first.tags["0010,0020"] == {"Name": "PatientID", "Type": "String", "Value": ct.patient_id}

    # find
    found = pyorthanc.find_studies(client, query={"PatientID": tiny.patient_id})
    assert [s.uid for s in found] == [tiny.study_instance_uid]
    found = pyorthanc.find_series(client, query={"Modality": "CT", "SeriesDescription": "chest*"})
    assert [s.id_ for s in found] == [series.id_]
    assert len(pyorthanc.find_instances(client, query={"StudyInstanceUID": tiny.study_instance_uid})) == 4
    # pyorthanc pages with Since/Limit until an empty page
    paged = pyorthanc.query_orthanc(client, "Instance", query={}, limit=2)
    assert len(paged) == 7 and len({i.id_ for i in paged}) == 7

    # statistics
    stats = client.get_statistics()
    assert (stats["CountPatients"], stats["CountStudies"], stats["CountSeries"], stats["CountInstances"]) == \
        (2, 2, 3, 7)
    assert int(stats["TotalDiskSize"]) == sum(map(len, ct_parts + tiny_parts))
    assert client.get_studies_id_statistics(study.id_)["CountInstances"] == 3

    # changes
    changes = client.get_changes(params={"since": 0, "limit": 100})
    assert changes["Done"] is True
    new_instances = [c["ID"] for c in changes["Changes"] if c["ChangeType"] == "NewInstance"]
    assert sorted(new_instances) == sorted(client.get_instances())
    assert changes["Last"] == changes["Changes"][-1]["Seq"]

    # delete a study: its patient goes too, and pyorthanc sees the rest
    answer = client.delete_studies_id(study.id_)
    assert answer == {"RemainingAncestor": None}
    assert len(client.get_instances()) == 4
    assert [pyorthanc.Patient(i, client).patient_id for i in client.get_patients()] == [tiny.patient_id]
    after = client.get_changes(params={"since": changes["Last"]})
    assert {c["ChangeType"] for c in after["Changes"]} >= {"DeletedInstance", "DeletedStudy", "DeletedPatient"}
    with pytest.raises(httpx.HTTPError, match="HTTP code: 404"):
        client.get_studies_id(study.id_)


# -- resources over raw HTTP ----------------------------------------------------------------------


def _upload(rest: httpx.Client, parts: list[bytes]) -> list[dict[str, Any]]:
    out = []
    for p in parts:
        r = rest.post("/instances", content=p)
        assert r.status_code == 200, r.text
        out.append(r.json())
    return out


def test_resource_shapes_and_navigation(rest: httpx.Client) -> None:
    study = tiny_study(41, series=2, instances_per_series=2)
    answers = _upload(rest, _parts(study))
    study_id, patient_id = answers[0]["ParentStudy"], answers[0]["ParentPatient"]

    s = rest.get(f"/studies/{study_id}").json()
    assert set(s) == {"ID", "IsStable", "LastUpdate", "MainDicomTags", "ParentPatient", "PatientMainDicomTags",
                      "Series", "Type", "Labels", "OhifUrl"}
    assert s["Type"] == "Study" and s["ParentPatient"] == patient_id and len(s["Series"]) == 2
    # "open in OHIF": the bundled viewer on this study
    assert s["OhifUrl"] == f"/ohif/viewer?StudyInstanceUIDs={s['MainDicomTags']['StudyInstanceUID']}"
    assert re.fullmatch(r"\d{8}T\d{6}", s["LastUpdate"]) and s["IsStable"] is False
    assert s["MainDicomTags"]["StudyInstanceUID"] == study.study_instance_uid
    assert s["PatientMainDicomTags"]["PatientID"] == study.patient_id

    series = rest.get(f"/series/{s['Series'][0]}").json()
    assert series["ParentStudy"] == study_id and len(series["Instances"]) == 2
    assert series["Status"] == "Unknown" and series["ExpectedNumberOfInstances"] is None
    inst = rest.get(f"/instances/{series['Instances'][0]}").json()
    assert set(inst) == {"FileSize", "FileUuid", "ID", "IndexInSeries", "MainDicomTags", "ParentSeries", "Type",
                         "Labels"}
    assert inst["IndexInSeries"] == 1 and inst["MainDicomTags"]["InstanceNumber"] == "1"

    # ?expand, ?since&limit, ?requestedTags
    ids = rest.get("/instances").json()
    assert rest.get("/instances?since=1&limit=2").json() == ids[1:3]
    expanded = rest.get("/studies?expand&requestedTags=ModalitiesInStudy;NumberOfStudyRelatedInstances;"
                        "PatientSex").json()
    assert expanded[0]["RequestedTags"] == {"ModalitiesInStudy": "CT", "NumberOfStudyRelatedInstances": "4",
                                            "PatientSex": expanded[0]["PatientMainDicomTags"]["PatientSex"]}
    assert rest.get("/instances?limit=x").status_code == 400

    # children and parents
    assert [i["ID"] for i in rest.get(f"/studies/{study_id}/instances").json()] == \
        rest.get(f"/studies/{study_id}/instances?expand=false").json()
    assert len(rest.get(f"/patients/{patient_id}/series").json()) == 2
    assert rest.get(f"/instances/{inst['ID']}/study").json()["ID"] == study_id
    assert rest.get(f"/instances/{inst['ID']}/patient").json()["ID"] == patient_id
    assert rest.get(f"/series/{series['ID']}/study").json()["ID"] == study_id

    # unknown and wrong-level IDs: 404 with a message
    for path in (f"/series/{study_id}", "/studies/nope", "/instances/nope/file", "/patients/nope/statistics",
                 f"/studies/{inst['ID']}/archive"):
        r = rest.get(path)
        assert r.status_code == 404 and r.json()["error"], path

    # delete one instance: the series remains
    r = rest.delete(f"/instances/{inst['ID']}")
    assert r.json() == {"RemainingAncestor": {"ID": series["ID"], "Path": f"/series/{series['ID']}",
                                              "Type": "Series"}}
    assert rest.delete(f"/instances/{inst['ID']}").status_code == 404
    assert rest.get(f"/series/{series['ID']}/statistics").json()["CountInstances"] == 1


def test_upload_refusals_and_zips(rest: httpx.Client) -> None:
    parts = _parts(tiny_study(42, series=1, instances_per_series=3))
    r = rest.post("/instances", content=b"not dicom at all")
    assert r.status_code == 400 and "DICOM" in r.json()["error"]
    assert rest.post("/instances", content=b"").status_code == 400
    truncated = parts[0][:-100]
    r = rest.post("/instances", content=truncated)
    assert r.status_code == 400 and "truncated" in r.json()["error"]

    # a ZIP: files that are not DICOM are skipped (as Orthanc does), duplicates reported
    answer = rest.post("/instances", content=_zip({"README.txt": b"hello", "a/1.dcm": parts[0], "a/2.dcm": parts[1],
                                                   "a/again.dcm": parts[1]})).json()
    assert [a["Status"] for a in answer] == ["Success", "Success", "AlreadyStored"]
    # a ZIP with a broken DICOM file: 400 with the details, the good files stored
    r = rest.post("/instances", content=_zip({"ok.dcm": parts[2], "bad.dcm": truncated}))
    assert r.status_code == 400
    body = r.json()
    assert body["Refused"][0]["File"] == "bad.dcm" and "truncated" in body["Refused"][0]["Error"]
    assert [a["Status"] for a in body["Stored"]] == ["Success"]
    assert len(rest.get("/instances").json()) == 3


def test_archive_zip_is_streamed_with_orthanc_names(rest: httpx.Client) -> None:
    study = tiny_study(43, series=2, instances_per_series=3, study_description="HEAD^CT ÉTUDE")
    parts = _parts(study)
    answers = _upload(rest, parts)
    study_id = answers[0]["ParentStudy"]
    with rest.stream("GET", f"/studies/{study_id}/archive") as r:
        assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
        assert "content-length" not in r.headers  # streamed, not built first
        data = b"".join(r.iter_bytes())
    zf = zipfile.ZipFile(io.BytesIO(data))
    assert zf.testzip() is None
    names = zf.namelist()
    assert len(names) == 6
    patient_dir = re.sub(r"[^A-Za-z0-9 ]", "", f"{study.patient_id} {study.patient_name.replace('^', ' ')}")
    assert names[0] == f"{patient_dir}/{study.accession_number} HEAD CT ETUDE/CT CT series 1/CT000000.dcm"
    assert names[3].endswith("/CT CT series 2/CT000000.dcm")
    assert sorted(zf.read(n) for n in names) == sorted(parts)  # byte-identical

    series_zip = zipfile.ZipFile(io.BytesIO(rest.get(f"/series/{answers[0]['ParentSeries']}/archive").content))
    assert len(series_zip.namelist()) == 3
    r = rest.post("/tools/create-archive", json={"Resources": [answers[0]["ID"], answers[4]["ID"]]})
    assert len(zipfile.ZipFile(io.BytesIO(r.content)).namelist()) == 2


def test_media_has_a_dicomdir(rest: httpx.Client, tmp_path: Path) -> None:
    # StudyID empty: DICOMDIR records need it; Voxa still builds the DICOMDIR, as Orthanc does
    parts = [dataset_to_bytes(ds) for ds in tiny_study(44, series=1, instances_per_series=3).datasets()]
    parts.append(dataset_to_bytes(make_instance(
        patient_id="P44", patient_name="NO^STUDYID", study_instance_uid="2.25.44", series_instance_uid="2.25.44.1",
        sop_instance_uid="2.25.44.1.1", study_id="")))
    answers = _upload(rest, parts)
    r = rest.get(f"/studies/{answers[0]['ParentStudy']}/media")
    assert r.status_code == 200
    zipfile.ZipFile(io.BytesIO(r.content)).extractall(tmp_path)
    fs = FileSet(tmp_path / "DICOMDIR")
    assert len(fs) == 3
    by_uid = {_sop_uid(p): p for p in parts}
    for instance in fs:
        assert Path(instance.path).read_bytes() == by_uid[instance.SOPInstanceUID]
    r = rest.post("/tools/create-media", json=[answers[0]["ParentPatient"], answers[3]["ParentPatient"]])
    assert r.status_code == 200
    names = zipfile.ZipFile(io.BytesIO(r.content)).namelist()
    assert "DICOMDIR" in names and len(names) == 5


def test_tags_preview_and_frames(rest: httpx.Client) -> None:
    ct = small_ct(45, slices=2, rows=32)
    parts = _parts(ct)
    answers = _upload(rest, parts)
    iid = answers[0]["ID"]
    ds = pydicom.dcmread(io.BytesIO(parts[0]))

    tags = rest.get(f"/instances/{iid}/tags").json()
    assert tags["0010,0010"] == {"Name": "PatientName", "Type": "String", "Value": ct.patient_name}
    assert tags["0028,1050"]["Value"] == "40\\-600"  # multi-valued DS as stored
    assert tags["7fe0,0010"] == {"Name": "PixelData", "Type": "Null", "Value": None}
    assert tags["0018,9346"]["Type"] == "Sequence"
    assert tags["0018,9346"]["Value"][0]["0008,0100"]["Value"] == "113691"
    assert tags["0018,9345"]["Value"] == f"{ds.CTDIvol:.17g}"  # FD as Orthanc prints it
    simple = rest.get(f"/instances/{iid}/simplified-tags").json()
    assert simple == rest.get(f"/instances/{iid}/tags?simplify").json()
    assert simple["PatientID"] == ct.patient_id and simple["PixelData"] is None
    assert simple["CTDIPhantomTypeCodeSequence"] == [{"CodeMeaning": "IEC Body Dosimetry Phantom",
                                                      "CodeValue": "113691", "CodingSchemeDesignator": "DCM"}]
    assert simple["ImagePositionPatient"] == "\\".join(str(v) for v in ds.ImagePositionPatient)
    assert rest.get(f"/instances/{iid}/tags?short").json()["0010,0020"] == ct.patient_id
    header = rest.get(f"/instances/{iid}/header?simplify").json()
    assert header["TransferSyntaxUID"] == "1.2.840.10008.1.2.1"
    assert rest.get(f"/instances/{iid}/metadata?expand").json()["Origin"] == "RestApi"
    assert rest.get(f"/instances/{iid}/metadata/TransferSyntax").text == "1.2.840.10008.1.2.1"

    assert rest.get(f"/instances/{iid}/frames").json() == [0]
    r = rest.get(f"/instances/{iid}/preview")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    image = np.asarray(Image.open(io.BytesIO(r.content)))
    assert image.shape == (32, 32) and image.dtype == np.uint8 and (image.min(), image.max()) == (0, 255)
    assert rest.get(f"/instances/{iid}/frames/0/preview").content == r.content
    jpeg = rest.get(f"/instances/{iid}/preview", headers={"Accept": "image/jpeg"})
    assert jpeg.headers["content-type"] == "image/jpeg" and Image.open(io.BytesIO(jpeg.content)).size == (32, 32)
    rendered = rest.get(f"/instances/{iid}/rendered?window-center=40&window-width=400&width=16")
    assert Image.open(io.BytesIO(rendered.content)).size == (16, 16)
    assert rest.get(f"/instances/{iid}/frames/1/preview").status_code == 404


def test_find_and_lookup(rest: httpx.Client) -> None:
    a = tiny_study(46, patient_name="SMITH^ANNA", study_description="CHEST CT", series=1, instances_per_series=2)
    b = tiny_study(47, patient_name="SMYTHE^BOB", study_description="Brain MR", modality="MR", series=2,
                   instances_per_series=1, study_date="20230505")
    _upload(rest, _parts(a) + _parts(b))

    def find(**body: Any) -> Any:
        r = rest.post("/tools/find", json=body)
        assert r.status_code == 200, r.text
        return r.json()

    study_a = find(Level="Study", Query={"PatientName": "SMITH*"})
    assert len(study_a) == 1
    assert find(Level="Study", Query={"PatientName": "sm*"}) == rest.get("/studies").json()
    assert find(Level="Study", Query={"PatientName": "sm*"}, CaseSensitive=True) == []
    assert find(Level="Study", Query={"StudyDescription": "chest ct"}) == study_a  # case-insensitive by default
    assert find(Level="Study", Query={"StudyDescription": "chest ct"}, CaseSensitive=True) == []
    assert find(Level="Study", Query={"StudyDate": "20230101-20231231"}) == find(Level="Study",
                                                                                  Query={"PatientName": "SMY*"})
    assert find(Level="Study", Query={"0010,0010": "SMITH^ANNA"}) == study_a
    assert find(Level="Study", Query={"ModalitiesInStudy": "MR"}) == find(Level="Study", Query={"Modality": "MR"})
    assert len(find(Level="Series", Query={"Modality": "MR"})) == 2
    # a tag the index does not hold is matched against the stored instance
    assert len(find(Level="Instance", Query={"PatientOrientation": "L\\P"})) == 4
    assert find(Level="Instance", Query={"PatientOrientation": "X"}) == []
    # paging and expansion
    all_instances = find(Level="Instance", Query={})
    assert find(Level="Instance", Query={}, Since=1, Limit=2) == all_instances[1:3]
    assert find(Level="Instance", Query={"PatientOrientation": "*"}, Since=3, Limit=5) == all_instances[3:]
    expanded = find(Level="Series", Query={"SeriesDescription": "MR*"}, Expand=True,
                    RequestedTags=["NumberOfSeriesRelatedInstances"])
    assert {s["RequestedTags"]["NumberOfSeriesRelatedInstances"] for s in expanded} == {"1"}
    # errors
    assert rest.post("/tools/find", json={"Level": "Nothing", "Query": {}}).status_code == 400
    assert rest.post("/tools/find", json={"Level": "Study"}).status_code == 400
    assert rest.post("/tools/find", json={"Level": "Study", "Query": {"NotATag": "x"}}).status_code == 400
    assert rest.post("/tools/find", json={"Level": "Study", "Query": {"StudyDate": "yesterday"}}).status_code == 400

    # lookup by UID, accession number or patient ID
    r = rest.post("/tools/lookup", content=a.study_instance_uid).json()
    assert r == [{"ID": study_a[0], "Path": f"/studies/{study_a[0]}", "Type": "Study"}]
    assert rest.post("/tools/lookup", content=b.patient_id).json()[0]["Type"] == "Patient"
    assert rest.post("/tools/lookup", content="nothing").json() == []


def test_system_statistics_and_changes(voxa: Any, rest: httpx.Client) -> None:
    system = rest.get("/system").json()
    assert system["Name"] == "Voxa" and system["DicomAet"] == voxa.aet and system["DicomPort"] == voxa.dicom_port
    assert system["HttpPort"] == voxa.http_port and system["ApiVersion"] >= 16
    assert rest.get("/changes").json() == {"Changes": [], "Done": True, "Last": 0}
    assert rest.get("/changes?last").json() == {"Changes": [], "Done": True, "Last": 0}

    _upload(rest, _parts(tiny_study(48, series=1, instances_per_series=2)))
    page = rest.get("/changes?limit=2").json()
    assert [c["ChangeType"] for c in page["Changes"]] == ["NewPatient", "NewStudy"]
    assert page["Done"] is False and page["Last"] == 2
    rest_of = rest.get(f"/changes?since={page['Last']}&limit=100").json()
    assert [c["ChangeType"] for c in rest_of["Changes"]] == ["NewSeries", "NewInstance", "NewInstance"]
    assert rest_of["Done"] is True and rest_of["Last"] == 5
    change = rest_of["Changes"][0]
    assert change["Path"] == f"/series/{change['ID']}" and change["ResourceType"] == "Series"
    assert re.fullmatch(r"\d{8}T\d{6}", change["Date"])
    assert rest.get("/changes?last").json()["Changes"][0]["Seq"] == 5
    stats = rest.get("/statistics").json()
    assert stats["CountInstances"] == 2 and stats["TotalDiskSizeMB"] == 0 and isinstance(stats["TotalDiskSize"], str)


def test_peers_store_to_another_voxa(voxa_factory: Any) -> None:
    a = voxa_factory(http=True)
    b = voxa_factory(http=True)
    for server in (a, b):  # until the lead's migration creates the table
        HttpPeer.__table__.create(server.archive.index.engine, checkfirst=True)
    parts = _parts(tiny_study(49, series=1, instances_per_series=3))
    with httpx.Client(base_url=a.base_url, timeout=60, auth=a.auth) as rest, \
            httpx.Client(base_url=b.base_url, auth=b.auth) as other:
        answers = _upload(rest, parts)
        assert rest.get("/peers").json() == []
        assert rest.put("/peers/b", json={"Url": b.base_url + "/", "Username": b.auth[0], "Password": b.auth[1]}) \
            .status_code == 200
        assert rest.put("/peers/bad", json={"Url": "ftp://x"}).status_code == 400
        assert rest.put("/peers/short", json=["http://127.0.0.1:1"]).status_code == 200
        expanded = rest.get("/peers?expand").json()
        assert expanded["b"]["Url"] == b.base_url + "/" and b.auth[1] not in json.dumps(expanded)
        assert rest.get("/peers/b/system").json()["Name"] == "Voxa"
        assert rest.get("/peers/short/system").status_code == 502

        r = rest.post("/peers/b/store", json=[answers[0]["ParentStudy"]])
        assert r.status_code == 200, r.text
        assert r.json()["InstancesCount"] == 3
        assert sorted(other.get("/instances").json()) == sorted(x["ID"] for x in answers)
        for x in answers:
            assert other.get(f"/instances/{x['ID']}/file").content == rest.get(f"/instances/{x['ID']}/file").content
        r = rest.post("/peers/b/store", json={"Resources": [answers[0]["ID"]], "Asynchronous": True})
        assert a.runtime.jobs.wait(r.json()["ID"], timeout=30).state == "success"
        assert rest.post("/peers/short/store", json=[answers[0]["ID"]]).status_code == 502
        assert rest.post("/peers/b/store", json=["nope"]).status_code == 404
        assert rest.delete("/peers/short").status_code == 200
        assert rest.delete("/peers/short").status_code == 404
        assert rest.get("/peers").json() == ["b"]


def _metric(text: str, name: str, **labels: str) -> float:
    label_text = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = "^" + re.escape(f"{name}{{{label_text}}}" if labels else name) + r" (\S+)$"
    match = re.search(pattern, text, re.MULTILINE)
    assert match, (name, labels)
    return float(match.group(1))


def test_metrics(voxa: Any, rest: httpx.Client) -> None:
    from voxa.web.routes.metrics import install_metrics

    install_metrics(voxa.runtime)
    parts = _parts(tiny_study(50, series=1, instances_per_series=2))
    _upload(rest, parts + parts[:1])
    rest.post("/instances", content=b"junk")
    r = rest.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = r.text
    assert _metric(text, "voxa_archive_resources", level="instance") == 2
    assert _metric(text, "voxa_archive_stored_bytes") == sum(map(len, parts))
    assert _metric(text, "voxa_ingest_total", outcome="stored") == 2
    assert _metric(text, "voxa_ingest_total", outcome="duplicate") == 1
    assert _metric(text, "voxa_ingest_refused_total", code="not-dicom") == 1
    assert _metric(text, "voxa_dicom_associations_active") == 0
    assert _metric(text, "process_resident_memory_bytes") > 0
    for line in text.splitlines():  # every sample line is "name{labels} number"
        assert line.startswith("#") or re.fullmatch(r'[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? \S+', line)


def test_stable_changes_are_logged_once(voxa: Any, rest: httpx.Client) -> None:
    import datetime as dt

    from voxa.web.rest.stable import StableChangeEmitter

    emitter = StableChangeEmitter(voxa.archive.index)
    now = dt.datetime.now(dt.UTC)
    assert emitter.tick(now) == 0  # a fresh log starts from the present
    answers = _upload(rest, _parts(tiny_study(51, series=2, instances_per_series=1)))
    assert emitter.tick(now + dt.timedelta(seconds=30)) == 0  # not yet 60 s without news
    assert emitter.tick(now + dt.timedelta(seconds=90)) == 4
    stable = [c for c in rest.get("/changes").json()["Changes"] if c["ChangeType"].startswith("Stable")]
    assert sorted((c["ChangeType"], c["ID"]) for c in stable) == sorted(
        [("StableSeries", a["ParentSeries"]) for a in answers]
        + [("StableStudy", answers[0]["ParentStudy"]), ("StablePatient", answers[0]["ParentPatient"])])
    assert emitter.tick(now + dt.timedelta(seconds=200)) == 0
    # a restarted server resumes after its last announcement
    assert StableChangeEmitter(voxa.archive.index).tick(now + dt.timedelta(seconds=300)) == 0
