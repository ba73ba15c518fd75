"""Modality Worklist and MPPS: data functions (both index backends), DCMTK findscu -W against
the real server, a pynetdicom MPPS SCU, the REST routes and the CLI."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pydicom
import pytest
from click.testing import CliRunner
from pydicom import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.dimse_primitives import N_CREATE
from pynetdicom.sop_class import ModalityPerformedProcedureStep, ModalityWorklistInformationFind
from support.dcmtk import require_dcmtk, run_dcmtk

from voxa.archive.database import create_index_engine, upgrade
from voxa.archive.index import Index
from voxa.dimse import worklist as wl

MPPS = ModalityPerformedProcedureStep


@pytest.fixture
def index(database_url: str) -> Iterator[Index]:
    engine = create_index_engine(database_url)
    upgrade(engine)
    try:
        yield Index(engine)
    finally:
        engine.dispose()


def _schedule(index: Index) -> dict[str, dict[str, Any]]:
    """Five items across modalities, stations and dates; Brown's is already COMPLETED."""
    rows = [
        ("P1", "Doe^John", "CT", "CT1", "20300110", "0800"),
        ("P2", "Smith^Anna", "CT", "CT2", "20300115", "0900"),
        ("P3", "Doe^Jane", "MR", "MR1", "20300110", "1000"),
        ("P4", "Brown^Bob", "CT", "CT1", "20300201", "1100"),
        ("P5", "Müller^Hans", "MR", "MR1", "20300301", "1200"),
    ]
    items = {}
    for pid, name, modality, aet, date, time in rows:
        items[pid] = wl.create_item(index, patient_id=pid, patient_name=name, modality=modality,
                                    scheduled_station_aet=aet, scheduled_start_date=date,
                                    scheduled_start_time=time, referring_physician_name="House^Gregory")
    wl.update_item_status(index, items["P4"]["id"], "COMPLETED")
    return items


def _query(top: dict[str, str] | None = None, sps: dict[str, str] | None = None,
           sps_items: int = 1) -> Dataset:
    ds = Dataset()
    ds.PatientName = ""
    ds.PatientID = ""
    for kw, value in (top or {}).items():
        setattr(ds, kw, value)
    items = []
    for _ in range(sps_items):
        item = Dataset()
        item.Modality = ""
        item.ScheduledStationAETitle = ""
        item.ScheduledProcedureStepStartDate = ""
        for kw, value in (sps or {}).items():
            setattr(item, kw, value)
        items.append(item)
    ds.ScheduledProcedureStepSequence = items
    return ds


def _find(index: Index, query: Dataset, cancelled: bool = False) -> list[tuple[Any, Dataset | None]]:
    return list(wl.handle_find(index, query, SimpleNamespace(is_cancelled=cancelled)))


def _pids(responses: list[tuple[Any, Dataset | None]]) -> list[str]:
    assert all(status == 0xFF00 for status, _ in responses), responses
    return [str(ds.PatientID) for _, ds in responses if ds is not None]


# --------------------------------------------------------------------------- data functions


def test_create_item_generates_identifiers_and_validates(index: Index) -> None:
    item = wl.create_item(index, patient_id="P1", patient_name="Doe^John", modality="ct",
                          scheduled_start_date="2030-01-10", scheduled_start_time="08:30")
    assert item["id"] > 0 and item["status"] == "SCHEDULED"
    assert item["modality"] == "CT"
    assert (item["scheduled_start_date"], item["scheduled_start_time"]) == ("20300110", "083000")
    assert item["study_instance_uid"].count(".") > 3
    for key in ("accession_number", "requested_procedure_id", "scheduled_procedure_step_id"):
        assert 0 < len(item[key]) <= 16
    assert wl.get_item(index, item["id"]) == item

    bad = [
        ({"patient_name": "A^B"}, "patient_id is required"),
        ({"patient_id": "P"}, "patient_name is required"),
        ({"patient_id": "P", "patient_name": "A", "scheduled_start_date": "20301301"}, "not a date"),
        ({"patient_id": "P", "patient_name": "A", "scheduled_start_time": "2561"}, "not a time"),
        ({"patient_id": "P", "patient_name": "A", "modality": "C-T"}, "A-Z"),
        ({"patient_id": "P", "patient_name": "A", "study_instance_uid": "1.02.x"}, "not a valid UID"),
        ({"patient_id": "P", "patient_name": "A", "scheduled_station_aet": "X" * 17}, "AE title"),
        ({"patient_id": "P", "patient_name": "A", "accession_number": "A" * 17}, "longer than 16"),
        ({"patient_id": "P", "patient_name": "A", "colour": "red"}, "unknown worklist field"),
    ]
    for fields, message in bad:
        with pytest.raises(ValueError, match=message):
            wl.create_item(index, **fields)


def test_list_update_delete(index: Index) -> None:
    items = _schedule(index)
    assert [i["patient_id"] for i in wl.list_items(index, modality="CT")] == ["P1", "P2", "P4"]
    assert [i["patient_id"] for i in wl.list_items(index, station_aet="MR1")] == ["P3", "P5"]
    assert [i["patient_id"] for i in wl.list_items(index, date="20300110-20300115")] == ["P1", "P3", "P2"]
    assert [i["patient_id"] for i in wl.list_items(index, patient_name="doe*")] == ["P1", "P3"]
    assert [i["patient_id"] for i in wl.list_items(index, status="completed")] == ["P4"]
    with pytest.raises(ValueError, match="not a date"):
        wl.list_items(index, date="2030-01")

    assert wl.update_item_status(index, items["P1"]["id"], "discontinued")["status"] == "DISCONTINUED"
    with pytest.raises(ValueError):
        wl.update_item_status(index, items["P1"]["id"], "LOST")
    wl.delete_item(index, items["P1"]["id"])
    for call in (wl.get_item, wl.delete_item):
        with pytest.raises(LookupError):
            call(index, items["P1"]["id"])
    with pytest.raises(LookupError):
        wl.update_item_status(index, 999_999, "SCHEDULED")


def test_handle_find_matching(index: Index) -> None:
    _schedule(index)
    # Only SCHEDULED items unless the query names a status.
    assert _pids(_find(index, _query(sps={"Modality": "CT"}))) == ["P1", "P2"]
    assert _pids(_find(index, _query(sps={"Modality": "CT", "ScheduledProcedureStepStatus": "COMPLETED"}))) \
        == ["P4"]
    assert _pids(_find(index, _query(sps={"ScheduledStationAETitle": "CT1"}))) == ["P1"]
    assert _pids(_find(index, _query(sps={"ScheduledProcedureStepStartDate": "20300110-20300115"}))) \
        == ["P1", "P3", "P2"]
    assert _pids(_find(index, _query(sps={"ScheduledProcedureStepStartDate": "20300110",
                                          "ScheduledProcedureStepStartTime": "0900-1200"}))) == ["P3"]
    assert _pids(_find(index, _query({"PatientName": "DOE^J*"}))) == ["P1", "P3"]
    assert _pids(_find(index, _query({"ReferringPhysicianName": "house*"}, {"Modality": "MR"}))) == ["P3", "P5"]
    assert _pids(_find(index, _query({"PatientID": "P9"}))) == []

    # Every requested key comes back, nested keys inside the one sequence item.
    q = _query({"AccessionNumber": "", "PatientWeight": None}, {"ScheduledProcedureStepID": ""})
    q.PatientName = "smith*"
    ((status, ds),) = _find(index, q)
    assert ds is not None and "SpecificCharacterSet" not in ds
    assert ds.PatientName == "Smith^Anna" and ds.AccessionNumber.startswith("VX")
    assert "PatientWeight" in ds and ds.PatientWeight is None
    (sps,) = ds.ScheduledProcedureStepSequence
    assert (sps.Modality, sps.ScheduledStationAETitle, sps.ScheduledProcedureStepStartDate) == \
        ("CT", "CT2", "20300115")
    assert sps.ScheduledProcedureStepID.startswith("SPS")
    assert "ScheduledProcedureStepStatus" not in sps

    # Non-ASCII values are announced; an empty sequence returns the whole step.
    q = _query({"PatientName": "muller*"})
    q.ScheduledProcedureStepSequence = []
    ((_, ds),) = _find(index, q)
    assert ds.SpecificCharacterSet == "ISO_IR 192" and ds.PatientName == "Müller^Hans"
    assert ds.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus == "SCHEDULED"


@pytest.mark.filterwarnings("ignore:Invalid value for VR")  # the malformed values are the point
def test_handle_find_cancel_and_malformed(index: Index) -> None:
    _schedule(index)
    assert _find(index, _query(), cancelled=True) == [(0xFE00, None)]
    for query, reason in ((_query(sps_items=2), "at most one item"),
                          (_query(sps={"ScheduledProcedureStepStartDate": "2030-01-10"}), "not a date"),
                          (_query({"StudyInstanceUID": "1.2.*"}), "wildcards")):
        ((status, ds),) = _find(index, query)
        assert ds is None and status.Status == 0xA900 and reason in status.ErrorComment


def _mpps_dataset(item: dict[str, Any] | None, status: str = "IN PROGRESS") -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ref = Dataset()
    if item is not None:
        ref.StudyInstanceUID = item["study_instance_uid"]
        ref.AccessionNumber = item["accession_number"]
        ref.ScheduledProcedureStepID = item["scheduled_procedure_step_id"]
        ref.RequestedProcedureID = item["requested_procedure_id"]
    ds.ScheduledStepAttributesSequence = [ref]
    ds.PatientName = item["patient_name"] if item else "Walk^In"
    ds.PatientID = item["patient_id"] if item else "W1"
    ds.PerformedProcedureStepID = "PPS1"
    ds.PerformedStationAETitle = "MODALITY1"
    ds.PerformedProcedureStepStartDate = "20300110"
    ds.PerformedProcedureStepStartTime = "080500"
    ds.PerformedProcedureStepStatus = status
    ds.Modality = "CT"
    ds.PerformedSeriesSequence = []
    return ds


def _completion(status: str = "COMPLETED") -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    ds.PerformedProcedureStepEndDate = "20300110"
    ds.PerformedProcedureStepEndTime = "082000"
    series = Dataset()
    series.SeriesInstanceUID = generate_uid()
    series.ReferencedImageSequence = []
    ds.PerformedSeriesSequence = [series]
    return ds


def test_performed_step_data_functions(index: Index) -> None:
    items = _schedule(index)
    uid = generate_uid()
    step = wl.create_performed_step(index, sop_instance_uid=uid, dataset=_mpps_dataset(items["P1"]),
                                    calling_aet="MODALITY1", sop_class_uid=MPPS)
    assert step["status"] == "IN PROGRESS" and step["worklist_item"]["id"] == items["P1"]["id"]
    assert wl.get_item(index, items["P1"]["id"])["status"] == "IN PROGRESS"
    assert step["dataset"]["00080018"]["Value"] == [uid]
    with pytest.raises(wl.DuplicatePerformedStep):
        wl.create_performed_step(index, sop_instance_uid=uid, dataset=_mpps_dataset(items["P1"]))
    with pytest.raises(ValueError, match="must be IN PROGRESS"):
        wl.create_performed_step(index, sop_instance_uid=generate_uid(),
                                 dataset=_mpps_dataset(items["P2"], status="COMPLETED"))

    # Linked by Study Instance UID alone; an unscheduled step links to nothing.
    by_study = _mpps_dataset(items["P2"])
    del by_study.ScheduledStepAttributesSequence[0].AccessionNumber
    step2 = wl.create_performed_step(index, sop_instance_uid=generate_uid(), dataset=by_study)
    assert step2["worklist_item_id"] == items["P2"]["id"]
    walk_in = wl.create_performed_step(index, sop_instance_uid=generate_uid(), dataset=_mpps_dataset(None))
    assert walk_in["worklist_item"] is None

    done = wl.set_performed_step(index, uid, _completion())
    assert done["status"] == "COMPLETED" and done["worklist_item"]["status"] == "COMPLETED"
    assert done["dataset"]["00400250"]["Value"] == ["20300110"]  # PerformedProcedureStepEndDate
    assert done["dataset"]["00400253"]["Value"] == ["PPS1"]  # kept from the N-CREATE
    with pytest.raises(wl.PerformedStepClosed, match="no longer IN PROGRESS"):
        wl.set_performed_step(index, uid, _completion())
    with pytest.raises(wl.UnknownPerformedStep):
        wl.set_performed_step(index, "1.2.3.4", _completion())
    assert wl.set_performed_step(index, step2["sop_instance_uid"], _completion("DISCONTINUED"))[
        "worklist_item"]["status"] == "DISCONTINUED"
    assert {s["sop_instance_uid"] for s in wl.list_performed_steps(index, status="in progress")} == \
        {walk_in["sop_instance_uid"]}

    # Deleting the item keeps the step, unlinked.
    wl.delete_item(index, items["P1"]["id"])
    assert wl.get_performed_step(index, uid)["worklist_item"] is None


def test_mpps_create_without_uid_returns_the_generated_one(index: Index) -> None:
    items = _schedule(index)
    request = N_CREATE()
    request.AffectedSOPClassUID = MPPS
    event = SimpleNamespace(request=request, attribute_list=_mpps_dataset(items["P3"]),
                            assoc=SimpleNamespace(requestor=SimpleNamespace(ae_title="MODALITY1")))
    status, response = wl.handle_mpps_create(index, event)  # type: ignore[arg-type]
    assert status == 0x0000 and response is not None
    uid = str(response.AffectedSOPInstanceUID)
    assert wl.get_performed_step(index, uid)["calling_aet"] == "MODALITY1"


# --------------------------------------------------------------------------- DCMTK findscu -W


def test_findscu_worklist_queries(voxa_factory: Any, database_url: str, tmp_path: Path) -> None:
    require_dcmtk("findscu")
    inst = voxa_factory(database_url=database_url, accept_unknown_peers=True)
    _schedule(inst.archive.index)
    runs = itertools.count()

    def findscu(*keys: str) -> list[Dataset]:
        cwd = tmp_path / f"find{next(runs)}"
        cwd.mkdir()
        args: list[str] = ["-W", "-X", "-aet", "MODALITY1", "-aec", inst.aet,
                           "-k", "PatientName", "-k", "PatientID", "-k", "AccessionNumber",
                           "-k", "ScheduledProcedureStepSequence[0].Modality",
                           "-k", "ScheduledProcedureStepSequence[0].ScheduledStationAETitle",
                           "-k", "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate",
                           "-k", "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime"]
        for key in keys:
            args += ["-k", key]
        proc = run_dcmtk("findscu", *args, "127.0.0.1", str(inst.dicom_port), cwd=cwd, timeout=30)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return [pydicom.dcmread(p) for p in sorted(cwd.glob("rsp*.dcm"))]

    def pids(*keys: str) -> list[str]:
        return sorted(str(ds.PatientID) for ds in findscu(*keys))

    assert pids("ScheduledProcedureStepSequence[0].Modality=CT") == ["P1", "P2"]
    assert pids("ScheduledProcedureStepSequence[0].ScheduledStationAETitle=CT1") == ["P1"]
    assert pids("ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate=20300101-20300112") == \
        ["P1", "P3"]
    assert pids("PatientName=doe*") == ["P1", "P3"]
    assert pids("ScheduledProcedureStepSequence[0].Modality=CT",
                "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate=20300112-") == ["P2"]
    assert pids("ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus=COMPLETED") == ["P4"]

    (ds,) = findscu("PatientName=muller*")
    assert ds.SpecificCharacterSet == "ISO_IR 192" and ds.PatientName == "Müller^Hans"
    (sps,) = ds.ScheduledProcedureStepSequence
    assert (sps.Modality, sps.ScheduledStationAETitle, sps.ScheduledProcedureStepStartDate,
            sps.ScheduledProcedureStepStartTime) == ("MR", "MR1", "20300301", "120000")


# --------------------------------------------------------------------------- MPPS SCU + REST


def test_mpps_scu_and_rest_view(voxa_factory: Any, database_url: str) -> None:
    inst = voxa_factory(database_url=database_url, accept_unknown_peers=True, http=True)
    items = _schedule(inst.archive.index)
    ae = AE(ae_title="MODALITY1")
    ae.add_requested_context(MPPS)
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", inst.dicom_port, ae_title=inst.aet)
    assert assoc.is_established
    try:
        uid = generate_uid()
        status, _ = assoc.send_n_create(_mpps_dataset(items["P1"]), MPPS, uid)
        assert status.Status == 0x0000
        # The started step is no longer offered to modalities.
        found = [ds for st, ds in assoc.send_c_find(_query(sps={"Modality": "CT"}),
                                                     ModalityWorklistInformationFind) if st.Status == 0xFF00]
        assert sorted(str(ds.PatientID) for ds in found) == ["P2"]

        status, _ = assoc.send_n_create(_mpps_dataset(items["P1"]), MPPS, uid)
        assert status.Status == 0x0111
        status, _ = assoc.send_n_create(_mpps_dataset(items["P2"], status="COMPLETED"), MPPS, generate_uid())
        assert status.Status == 0x0106 and "IN PROGRESS" in status.ErrorComment
        status, _ = assoc.send_n_create(_mpps_dataset(None), MPPS)  # the SCP chooses the UID
        assert status.Status == 0x0000

        status, _ = assoc.send_n_set(_completion(), MPPS, uid)
        assert status.Status == 0x0000
        status, _ = assoc.send_n_set(_completion(), MPPS, uid)
        assert status.Status == 0x0110
        assert status.ErrorComment == "Performed Procedure Step is no longer IN PROGRESS"
        status, _ = assoc.send_n_set(_completion(), MPPS, generate_uid())
        assert status.Status == 0x0112
    finally:
        assoc.release()

    with httpx.Client(base_url=inst.base_url, timeout=10, auth=inst.auth) as client:
        assert client.get(f"/worklist/{items['P1']['id']}").json()["status"] == "COMPLETED"
        steps = client.get("/mpps").json()
        assert len(steps) == 2
        assert {s["status"] for s in steps} == {"COMPLETED", "IN PROGRESS"}
        detail = client.get(f"/mpps/{uid}").json()
        assert detail["calling_aet"] == "MODALITY1" and detail["status"] == "COMPLETED"
        assert detail["worklist_item"]["accession_number"] == items["P1"]["accession_number"]
        assert detail["dataset"]["00400252"]["Value"] == ["COMPLETED"]  # PerformedProcedureStepStatus
        assert client.get("/mpps/1.2.3.4").status_code == 404


def test_rest_worklist_create_list_delete(voxa_factory: Any) -> None:
    inst = voxa_factory(http=True)
    with httpx.Client(base_url=inst.base_url, timeout=10, auth=inst.auth) as client:
        r = client.post("/worklist", json={"patient_id": "R1", "patient_name": "Roe^Rita", "modality": "CT",
                                           "scheduled_station_aet": "CT1", "scheduled_start_date": "20300105"})
        assert r.status_code == 201, r.text
        item = r.json()
        assert item["id"] and item["status"] == "SCHEDULED" and item["study_instance_uid"]
        assert item["accession_number"] and item["scheduled_procedure_step_id"]
        client.post("/worklist", json={"patient_id": "R2", "patient_name": "Roe^Ron", "modality": "MR",
                                       "scheduled_start_date": "20300120"}).raise_for_status()

        r = client.post("/worklist", json={"patient_id": "R3", "patient_name": "X", "scheduled_start_date": "tomorrow"})
        assert r.status_code == 400 and "not a date" in r.json()["error"]
        assert client.post("/worklist", json={"patient_name": "X"}).status_code == 422
        assert client.post("/worklist", json={"patient_id": "R", "patient_name": "X", "colour": 1}).status_code == 422

        def ids(**params: str) -> list[str]:
            r = client.get("/worklist", params=params)
            assert r.status_code == 200, r.text
            return [i["patient_id"] for i in r.json()]

        assert ids() == ["R1", "R2"]
        assert ids(modality="MR") == ["R2"]
        assert ids(station_aet="CT1") == ["R1"]
        assert ids(date_from="2030-01-10") == ["R2"]
        assert ids(date_from="20300101", date_to="20300110") == ["R1"]
        assert ids(status="COMPLETED") == []
        assert client.get("/worklist", params={"date_from": "Jan"}).status_code == 400

        assert client.get(f"/worklist/{item['id']}").json() == item
        assert client.delete(f"/worklist/{item['id']}").status_code == 204
        assert client.get(f"/worklist/{item['id']}").status_code == 404
        assert client.delete(f"/worklist/{item['id']}").status_code == 404


# --------------------------------------------------------------------------- CLI


def test_cli_add_list_remove(tmp_path: Path) -> None:
    import json

    from voxa.cli import main

    runner = CliRunner()
    data = ["--data-dir", str(tmp_path / "data")]
    r = runner.invoke(main, ["worklist", "add", *data, "--patient-id", "C1", "--patient-name", "Cole^Cy",
                             "--modality", "CR", "--station-aet", "CR1", "--date", "20300107",
                             "--time", "09:15", "--accession", "ACC42", "--procedure", "Chest PA"])
    assert r.exit_code == 0, r.output
    item = json.loads(r.output)
    assert (item["accession_number"], item["scheduled_start_time"], item["requested_procedure_description"]) == \
        ("ACC42", "091500", "Chest PA")

    r = runner.invoke(main, ["worklist", "add", *data, "--patient-id", "C2", "--patient-name", "X",
                             "--date", "07/01/2030"])
    assert r.exit_code != 0 and "not a date" in r.output

    r = runner.invoke(main, ["worklist", "list", *data, "--json"])
    assert r.exit_code == 0, r.output
    assert [i["patient_id"] for i in json.loads(r.output)] == ["C1"]
    r = runner.invoke(main, ["worklist", "list", *data])
    assert r.exit_code == 0 and "ACC42" in r.output and "Cole^Cy" in r.output

    r = runner.invoke(main, ["worklist", "remove", *data, str(item["id"])])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["worklist", "remove", *data, str(item["id"])])
    assert r.exit_code == 1 and "no worklist item" in r.output
