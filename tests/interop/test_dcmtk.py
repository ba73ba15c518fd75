"""DCMTK's command-line tools against a real Voxa DICOM listener."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pydicom
import pytest
from support import free_port
from support.dcmtk import require_dcmtk, run_dcmtk
from support.dicomfiles import dataset_bytes

from voxa.config import PeerSettings
from voxa.testing.synthetic import small_ct, tiny_study, write_study

SCU = "STORESCU"


@pytest.fixture
def ct_dir(tmp_path: Path) -> Path:
    out = tmp_path / "ct"
    write_study(small_ct(7, slices=12, rows=64), out)
    return out


@pytest.fixture
def voxa(voxa_factory, tmp_path: Path):  # type: ignore[no-untyped-def]
    require_dcmtk("echoscu", "storescu", "findscu", "movescu", "getscu", "storescp")
    dest_port = free_port()
    inst = voxa_factory(peers=[PeerSettings(name="scu", aet=SCU, host="127.0.0.1", port=free_port()),
                               PeerSettings(name="dest", aet="DEST", host="127.0.0.1", port=dest_port),
                               PeerSettings(name="nofind", aet="NOFIND", host="127.0.0.1", port=1,
                                            allow_find=False, allow_move=False)])
    inst.dest_port = dest_port
    return inst


def _args(voxa, aet: str = SCU) -> list[str]:  # type: ignore[no-untyped-def]
    return ["-aet", aet, "-aec", "VOXA", "127.0.0.1", str(voxa.dicom_port)]


def _store_folder(voxa, folder: Path) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return run_dcmtk("storescu", "-aet", SCU, "-aec", "VOXA", "+sd", "+r", "127.0.0.1", str(voxa.dicom_port),
                     str(folder), timeout=120)


def test_echoscu_known_and_unknown_calling_ae(voxa) -> None:  # type: ignore[no-untyped-def]
    assert run_dcmtk("echoscu", *_args(voxa)).returncode == 0
    refused = run_dcmtk("echoscu", *_args(voxa, "INTRUDER"))
    assert refused.returncode != 0
    assert "Calling AE Title Not Recognized" in refused.stdout + refused.stderr
    wrong_called = run_dcmtk("echoscu", "-aet", SCU, "-aec", "NOTVOXA", "127.0.0.1", str(voxa.dicom_port))
    assert wrong_called.returncode != 0


def test_storescu_folder_one_association_stores_bytes_as_sent(voxa, ct_dir: Path) -> None:  # type: ignore[no-untyped-def]
    proc = _store_folder(voxa, ct_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    files = sorted(ct_dir.rglob("*.dcm"))
    assert voxa.archive.index.statistics()["instances"] == len(files)
    for f in files:
        sent = f.read_bytes()
        uid = pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID
        [loc] = voxa.archive.index.locate(sop_uid=uid)
        stored = voxa.archive.blobs.read(loc.blob_key)
        assert dataset_bytes(stored) == dataset_bytes(sent)
        meta = pydicom.dcmread(voxa.archive.blobs.path(loc.blob_key), stop_before_pixels=True).file_meta
        assert meta.SourceApplicationEntityTitle == SCU


def _find(voxa, tmp_path: Path, model: str, *keys: str, aet: str = SCU) -> list[pydicom.Dataset]:  # type: ignore[no-untyped-def]
    out = tmp_path / f"find{time.monotonic_ns()}"
    out.mkdir()
    args = [model, "-X", "-od", str(out)]
    for k in keys:
        args += ["-k", k]
    proc = run_dcmtk("findscu", *args, *_args(voxa, aet))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def test_findscu_all_levels_patient_and_study_root(voxa, ct_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert _store_folder(voxa, ct_dir).returncode == 0
    from voxa.testing.synthetic import dataset_to_bytes

    for ds in tiny_study(3, patient_id="OTHER1", patient_name="ROE^RICHARD", series=2,
                         instances_per_series=2).datasets():
        voxa.archive.ingest(dataset_to_bytes(ds))
    ct = pydicom.dcmread(next(ct_dir.rglob("*.dcm")), stop_before_pixels=True)

    patients = _find(voxa, tmp_path, "-P", "QueryRetrieveLevel=PATIENT", "PatientID", "PatientName",
                     "NumberOfPatientRelatedStudies")
    assert {str(p.PatientID) for p in patients} == {str(ct.PatientID), "OTHER1"}
    studies = _find(voxa, tmp_path, "-S", "QueryRetrieveLevel=STUDY", "PatientName=roe*", "StudyInstanceUID",
                    "ModalitiesInStudy", "NumberOfStudyRelatedInstances", "StudyDate")
    assert len(studies) == 1 and studies[0].NumberOfStudyRelatedInstances == 4
    assert studies[0].RetrieveAETitle == "VOXA"
    studies = _find(voxa, tmp_path, "-P", "QueryRetrieveLevel=STUDY", f"PatientID={ct.PatientID}",
                    "StudyInstanceUID", f"StudyDate={ct.StudyDate}-")
    assert [str(s.StudyInstanceUID) for s in studies] == [str(ct.StudyInstanceUID)]
    series = _find(voxa, tmp_path, "-S", "QueryRetrieveLevel=SERIES", f"StudyInstanceUID={ct.StudyInstanceUID}",
                   "SeriesInstanceUID", "Modality", "NumberOfSeriesRelatedInstances")
    assert len(series) == 1 and series[0].Modality == "CT" and series[0].NumberOfSeriesRelatedInstances == 12
    images = _find(voxa, tmp_path, "-S", "QueryRetrieveLevel=IMAGE", f"SeriesInstanceUID={ct.SeriesInstanceUID}",
                   "SOPInstanceUID", "InstanceNumber", "Rows")
    assert len(images) == 12 and {int(i.Rows) for i in images} == {64}
    images = _find(voxa, tmp_path, "-P", "QueryRetrieveLevel=IMAGE", f"PatientID={ct.PatientID}",
                   f"StudyInstanceUID={ct.StudyInstanceUID}", f"SeriesInstanceUID={ct.SeriesInstanceUID}",
                   "SOPInstanceUID", "InstanceNumber=3")
    assert len(images) == 1 and images[0].InstanceNumber == 3
    # Universal matching returns everything; a peer without find permission gets a failure.
    assert len(_find(voxa, tmp_path, "-S", "QueryRetrieveLevel=STUDY", "StudyInstanceUID")) == 2
    refused = run_dcmtk("findscu", "-v", "-S", "-k", "QueryRetrieveLevel=STUDY", *_args(voxa, "NOFIND"))
    assert "0x124" in refused.stdout + refused.stderr  # PS3.7 C.5: Refused: Not Authorized
    bad = run_dcmtk("findscu", "-v", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyDate=not-a-date",
                    *_args(voxa))
    assert "StudyDate" in bad.stdout + bad.stderr  # the Error Comment names the bad key


def test_movescu_to_storescp_delivers_identical_datasets(voxa, ct_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert _store_folder(voxa, ct_dir).returncode == 0
    ct = pydicom.dcmread(next(ct_dir.rglob("*.dcm")), stop_before_pixels=True)
    received = tmp_path / "received"
    received.mkdir()
    scp = subprocess.Popen(["storescp", "-aet", "DEST", "-od", str(received), "+B", str(voxa.dest_port)],
                           env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        time.sleep(0.5)
        proc = run_dcmtk("movescu", "-S", "-aem", "DEST", "-k", "QueryRetrieveLevel=STUDY",
                         "-k", f"StudyInstanceUID={ct.StudyInstanceUID}", *_args(voxa), timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    finally:
        scp.terminate()
        scp.wait(10)
    got = sorted(received.iterdir())
    assert len(got) == 12
    for f in got:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        [loc] = voxa.archive.index.locate(sop_uid=str(ds.SOPInstanceUID))
        assert dataset_bytes(f.read_bytes()) == dataset_bytes(voxa.archive.blobs.read(loc.blob_key))
    unknown = run_dcmtk("movescu", "-S", "-aem", "NOWHERE", "-k", "QueryRetrieveLevel=STUDY",
                        "-k", f"StudyInstanceUID={ct.StudyInstanceUID}", *_args(voxa))
    assert "movedestinationunknown" in (unknown.stdout + unknown.stderr).lower()  # status A801


def test_getscu_retrieves_over_the_same_association(voxa, ct_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert _store_folder(voxa, ct_dir).returncode == 0
    ct = pydicom.dcmread(next(ct_dir.rglob("*.dcm")), stop_before_pixels=True)
    out = tmp_path / "got"
    out.mkdir()
    proc = run_dcmtk("getscu", "-S", "+B", "-od", str(out), "-k", "QueryRetrieveLevel=SERIES",
                     "-k", f"SeriesInstanceUID={ct.SeriesInstanceUID}", *_args(voxa), timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = sorted(out.iterdir())
    assert len(got) == 12
    for f in got:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        [loc] = voxa.archive.index.locate(sop_uid=str(ds.SOPInstanceUID))
        assert dataset_bytes(f.read_bytes()) == dataset_bytes(voxa.archive.blobs.read(loc.blob_key))
