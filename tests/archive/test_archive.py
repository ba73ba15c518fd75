"""The archive core on both index backends: ingest, duplicates, counts, change log,
deletion, attribute matching, and reconciliation with the blob store."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from voxa.archive import open_archive
from voxa.archive.attributes import Level
from voxa.archive.check import check
from voxa.archive.ingest import Archive, Outcome, RefusalCode
from voxa.archive.query import Query, QueryError, count_query, run_query
from voxa.config import DuplicatePolicy, Settings
from voxa.dicom.json import unpack_json_bytes
from voxa.testing.synthetic import dataset_to_bytes, tiny_study


@pytest.fixture
def archive(tmp_path: Path, database_url: str) -> Archive:
    a = open_archive(Settings(data_dir=tmp_path / "data", database_url=database_url, fsync=False))
    yield a
    a.index.engine.dispose()


def _store(archive: Archive, study) -> list:  # type: ignore[no-untyped-def]
    return [archive.ingest(dataset_to_bytes(ds), source="test", calling_aet="TESTSCU") for ds in study.datasets()]


def test_ingest_indexes_every_level_with_counts(archive: Archive) -> None:
    study = tiny_study(1, patient_name="DOE^JANE", series=2, instances_per_series=3)
    results = _store(archive, study)
    assert all(r.outcome is Outcome.STORED for r in results)
    stats = archive.index.statistics()
    assert stats == {"patients": 1, "studies": 1, "series": 2, "instances": 6, "size_bytes": stats["size_bytes"]}
    [s] = run_query(archive.index, Query(Level.STUDY, {}, ["NumberOfStudyRelatedSeries",
                                                           "NumberOfStudyRelatedInstances", "ModalitiesInStudy",
                                                           "PatientName", "AccessionNumber"]))
    assert s.values["NumberOfStudyRelatedSeries"] == 2
    assert s.values["NumberOfStudyRelatedInstances"] == 6
    assert s.values["ModalitiesInStudy"] == "CT"
    assert s.values["PatientName"] == "DOE^JANE"
    assert s.values["AccessionNumber"] == study.accession_number
    [p] = run_query(archive.index, Query(Level.PATIENT, {}, ["NumberOfPatientRelatedInstances"], patient_root=True))
    assert p.values["NumberOfPatientRelatedInstances"] == 6
    # Instance rows know where they came from and hold metadata without bulk data.
    loc = archive.index.locate(sop_uid=results[0].sop_instance_uid)[0]
    with archive.index.read() as conn:
        from sqlalchemy import select

        from voxa.archive.models import Instance

        row = conn.execute(select(Instance.calling_aet, Instance.metadata_json, Instance.received_at)
                           .where(Instance.id == loc.id)).one()
    assert row.calling_aet == "TESTSCU"
    meta = json.loads(unpack_json_bytes(row.metadata_json))
    assert meta["7FE00010"]["BulkDataURI"].endswith(f"instances/{results[0].sop_instance_uid}/frames")
    assert "InlineBinary" not in json.dumps(meta["7FE00010"])
    assert meta["00100010"]["Value"][0]["Alphabetic"] == "DOE^JANE"


def test_change_log_is_monotonic_and_records_new_and_deleted(archive: Archive) -> None:
    _store(archive, tiny_study(2, series=1, instances_per_series=2))
    changes = archive.index.changes(0, 100)
    types = [c["change_type"] for c in changes]
    assert types[:4] == ["NewPatient", "NewStudy", "NewSeries", "NewInstance"]
    assert types.count("NewInstance") == 2
    seqs = [c["seq"] for c in changes]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    [study] = run_query(archive.index, Query(Level.STUDY))
    assert archive.delete(Level.STUDY, study.public_id) == 2
    later = [c["change_type"] for c in archive.index.changes(seqs[-1], 100)]
    assert later.count("DeletedInstance") == 2
    assert {"DeletedSeries", "DeletedStudy", "DeletedPatient"} <= set(later)
    assert archive.index.statistics()["instances"] == 0
    assert list(archive.blobs.keys()) == []


@pytest.mark.parametrize("policy", list(DuplicatePolicy))
def test_duplicate_sop_instance_policies(tmp_path: Path, database_url: str, policy: DuplicatePolicy) -> None:
    archive = open_archive(Settings(data_dir=tmp_path / "d", database_url=database_url, duplicate_policy=policy,
                                    fsync=False))
    ds = next(tiny_study(3, series=1, instances_per_series=1).datasets())
    first = dataset_to_bytes(ds)
    assert archive.ingest(first).outcome is Outcome.STORED
    ds.StudyDescription = "CHANGED"
    second = dataset_to_bytes(ds)
    result = archive.ingest(second)
    [loc] = archive.index.locate(sop_uid=str(ds.SOPInstanceUID))
    stored = archive.blobs.read(loc.blob_key)
    if policy is DuplicatePolicy.KEEP_FIRST:
        assert result.outcome is Outcome.DUPLICATE and stored == first
    elif policy is DuplicatePolicy.OVERWRITE:
        assert result.outcome is Outcome.REPLACED and stored == second
    else:
        assert result.outcome is Outcome.REFUSED and result.code is RefusalCode.DUPLICATE_REJECTED
        assert stored == first
    stats = archive.index.statistics()
    assert stats["instances"] == 1 and len(list(archive.blobs.keys())) == 1  # never two copies
    assert check(archive).clean
    archive.index.engine.dispose()


def test_same_patient_id_with_another_name_keeps_each_study_as_received(archive: Archive) -> None:
    _store(archive, tiny_study(4, patient_id="PID42", patient_name="SMITH^ANNA", series=1, instances_per_series=1))
    _store(archive, tiny_study(5, patient_id="PID42", patient_name="SMITH-JONES^ANNA", series=1,
                               instances_per_series=1))
    [patient] = run_query(archive.index, Query(Level.PATIENT, {"PatientID": "PID42"}, ["PatientName"],
                                               patient_root=True))
    assert patient.values["PatientName"] == "SMITH^ANNA"  # the first received
    names = {m.values["PatientName"] for m in run_query(archive.index, Query(Level.STUDY, {"PatientID": "PID42"},
                                                                             ["PatientName"]))}
    assert names == {"SMITH^ANNA", "SMITH-JONES^ANNA"}


def test_attribute_matching(archive: Archive) -> None:
    _store(archive, tiny_study(10, patient_id="A1", patient_name="Müller^Jürgen", study_date="20240105",
                               study_time="101500", accession_number="ACC1", modality="CT", series=1,
                               instances_per_series=2))
    _store(archive, tiny_study(11, patient_id="A2", patient_name="MULLER^JOHN", study_date="20240210",
                               study_time="143000", accession_number="ACC2", modality="MR", series=1,
                               instances_per_series=1))
    _store(archive, tiny_study(12, patient_id="B3", patient_name="ZHANG^WEI", study_date="20230101",
                               accession_number="XYZ", modality="CR", series=1, instances_per_series=1))

    def study_ids(**filters: str) -> set[str]:
        return {m.values["PatientID"] for m in run_query(archive.index, Query(Level.STUDY, dict(filters)))}

    assert study_ids() == {"A1", "A2", "B3"}
    assert study_ids(PatientID="A*") == {"A1", "A2"}
    assert study_ids(PatientID="?2") == {"A2"}
    assert study_ids(PatientName="mul*") == {"A1", "A2"}  # case- and accent-insensitive
    assert study_ids(PatientName="MUELLER*") == set()
    assert study_ids(PatientName="müller^jürgen") == {"A1"}
    assert study_ids(PatientName="MULLER^JURGEN") == {"A1"}  # accents are not significant
    assert study_ids(StudyDate="20240101-20240131") == {"A1"}
    assert study_ids(StudyDate="20240101-") == {"A1", "A2"}
    assert study_ids(StudyDate="-20231231") == {"B3"}
    assert study_ids(StudyTime="1000-1100") == {"A1"}
    assert study_ids(ModalitiesInStudy="MR") == {"A2"}
    assert study_ids(ModalitiesInStudy="CR\\MR") == {"A2", "B3"}
    assert study_ids(Modality="CT") == {"A1"}  # QIDO clients send Modality at study level
    assert study_ids(AccessionNumber="ACC*") == {"A1", "A2"}
    uids = [m.values["StudyInstanceUID"] for m in run_query(archive.index, Query(Level.STUDY))]
    assert len(study_ids(StudyInstanceUID="\\".join(uids[:2]))) == 2
    fuzzy = {m.values["PatientID"] for m in run_query(archive.index, Query(Level.STUDY, {"PatientName": "jurg"},
                                                                            fuzzy=True))}
    assert fuzzy == {"A1"}
    fuzzy = {m.values["PatientID"] for m in run_query(archive.index, Query(Level.STUDY, {"PatientName": "wei"},
                                                                            fuzzy=True))}
    assert fuzzy == {"B3"}
    # Series and image levels, with keys of the levels above.
    series = run_query(archive.index, Query(Level.SERIES, {"PatientID": "A1", "Modality": "CT"}, ["SeriesNumber"]))
    assert len(series) == 1 and series[0].values["SeriesNumber"] == 1
    images = run_query(archive.index, Query(Level.IMAGE, {"PatientID": "A1"}, ["InstanceNumber", "Rows"]))
    assert sorted(m.values["InstanceNumber"] for m in images) == [1, 2]
    # Paging
    q = Query(Level.STUDY, {}, limit=2, offset=0)
    assert len(run_query(archive.index, q)) == 2 and count_query(archive.index, q) == 3
    assert len(run_query(archive.index, Query(Level.STUDY, {}, limit=2, offset=2))) == 1


@pytest.mark.parametrize("bad", [{"StudyDate": "2024-01"}, {"StudyDate": "yesterday"}, {"SeriesNumber": "x"},
                                 {"StudyInstanceUID": "1.2.*"}, {"StudyTime": "25:99:99x"}])
def test_malformed_match_values_are_reported(archive: Archive, bad: dict[str, str]) -> None:
    level = Level.SERIES if "SeriesNumber" in bad else Level.STUDY
    with pytest.raises(QueryError) as e:
        run_query(archive.index, Query(level, bad))
    assert next(iter(bad)) in str(e.value)


def test_failed_index_write_leaves_no_file(archive: Archive, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a, **k):  # type: ignore[no-untyped-def]
        raise RuntimeError("index unavailable")

    monkeypatch.setattr(archive.index, "add", boom)
    ds = next(tiny_study(20, series=1, instances_per_series=1).datasets())
    with pytest.raises(RuntimeError):
        archive.ingest(dataset_to_bytes(ds))
    assert list(archive.blobs.keys()) == []


def test_check_finds_and_repairs_orphans_and_missing_files(archive: Archive) -> None:
    results = _store(archive, tiny_study(30, series=1, instances_per_series=3))
    locs = archive.index.locate()
    # A file whose index row never committed (crash between the two), and a lost file.
    orphan_bytes = dataset_to_bytes(next(tiny_study(31, series=1, instances_per_series=1).datasets()))
    archive.blobs.put("ff/ff/orphan.dcm", (orphan_bytes,))
    archive.blobs.put("ff/ff/.x.dcm.1234.tmp", (b"partial",))
    Path(archive.blobs.path(locs[0].blob_key)).unlink()
    report = check(archive)
    assert not report.clean
    assert report.orphan_files == ["ff/ff/orphan.dcm"]
    assert report.temporary_files == ["ff/ff/.x.dcm.1234.tmp"]
    assert report.missing_files == [locs[0].sop_instance_uid]
    repaired = check(archive, repair=True)
    assert len(repaired.repaired) == 3
    after = check(archive)
    assert after.clean, after.as_dict()
    assert archive.index.statistics()["instances"] == 3  # 3 stored - 1 lost + 1 orphan re-indexed
    assert results


def test_concurrent_ingest_of_one_study_keeps_counts_exact(archive: Archive) -> None:
    study = tiny_study(40, series=4, instances_per_series=10)
    payloads = [dataset_to_bytes(ds) for ds in study.datasets()]
    payloads += payloads[:10]  # some arrive twice, concurrently
    errors: list[BaseException] = []

    def worker(chunk: list[bytes]) -> None:
        try:
            for p in chunk:
                archive.ingest(p)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(payloads[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    [s] = run_query(archive.index, Query(Level.STUDY, {}, ["NumberOfStudyRelatedInstances",
                                                           "NumberOfStudyRelatedSeries"]))
    assert s.values["NumberOfStudyRelatedInstances"] == 40
    assert s.values["NumberOfStudyRelatedSeries"] == 4
    assert len(list(archive.blobs.keys())) == 40
    assert check(archive).clean


def test_deleting_a_patient_without_instances_is_logged(archive: Archive) -> None:
    from voxa.archive import identifiers
    from voxa.archive.models import Patient, table_of

    public = identifiers.patient_public_id("EMPTY1")
    with archive.index.write() as conn:
        conn.execute(table_of(Patient).insert().values(public_id=public, patient_id="EMPTY1"))
    before = archive.index.last_change_seq()
    assert archive.delete(Level.PATIENT, public) == 0
    [change] = archive.index.changes(before, 10)
    assert (change["change_type"], change["public_id"]) == ("DeletedPatient", public)
