"""Durable before acknowledged: SIGKILL ``voxa serve`` in the middle of a 1,000-instance
storescu run, restart it, and find every acknowledged instance stored and indexed."""

from __future__ import annotations

import signal
from pathlib import Path

import pydicom
import pytest
from support import free_port
from support.dcmtk import require_dcmtk
from support.dicomfiles import dataset_bytes
from support.voxa_process import acknowledged_files, start_serve, start_storescu, wait_for_acks

from voxa.archive import open_archive
from voxa.archive.check import check
from voxa.config import Settings
from voxa.testing.synthetic import tiny_study, write_study


@pytest.mark.slow
def test_sigkill_during_storescu_loses_no_acknowledged_instance(tmp_path: Path) -> None:
    require_dcmtk("storescu", "echoscu")
    files_dir = tmp_path / "files"
    write_study(tiny_study(99, series=4, instances_per_series=250, rows=64), files_dir)
    files = sorted(files_dir.rglob("*.dcm"))
    assert len(files) == 1000
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    dicom_port, http_port = free_port(), free_port()
    log = tmp_path / "voxa.log"
    server = start_serve(data_dir, dicom_port, http_port, log)
    scu_log = tmp_path / "storescu.log"
    with open(scu_log, "wb") as out:
        scu = start_storescu(dicom_port, files, out)
        # Kill the server once a good part of the run has been acknowledged.
        wait_for_acks(scu_log, 300, 120)
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        scu.wait(60)
    acknowledged = acknowledged_files(scu_log)
    assert 300 <= len(acknowledged) < 1000, f"{len(acknowledged)} acknowledged: kill came too late or too early"

    server = start_serve(data_dir, dicom_port, http_port, log)
    server.send_signal(signal.SIGTERM)
    assert server.wait(60) == 0
    archive = open_archive(Settings(data_dir=data_dir))
    report = check(archive)
    assert report.missing_files == [], "index rows without their file"
    assert report.size_mismatches == []
    for path in acknowledged:
        uid = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
        [loc] = archive.index.locate(sop_uid=str(uid))
        assert dataset_bytes(archive.blobs.read(loc.blob_key)) == dataset_bytes(path.read_bytes())
    # Anything left unindexed by the kill is an orphan file that repair re-indexes (never acknowledged).
    repaired = check(archive, repair=True)
    assert check(archive).clean, repaired.as_dict()
