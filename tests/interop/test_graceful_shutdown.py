"""SIGTERM lets associations in flight finish, then ``voxa serve`` exits cleanly."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
from support import free_port
from support.dcmtk import require_dcmtk
from support.voxa_process import start_serve, start_storescu, wait_for_acks

from voxa.archive import open_archive
from voxa.archive.check import check
from voxa.config import Settings
from voxa.testing.synthetic import tiny_study, write_study


@pytest.mark.slow
def test_sigterm_finishes_the_association_in_flight(tmp_path: Path) -> None:
    require_dcmtk("storescu", "echoscu")
    files_dir = tmp_path / "files"
    write_study(tiny_study(77, series=2, instances_per_series=200, rows=64), files_dir)
    files = sorted(files_dir.rglob("*.dcm"))
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    dicom_port = free_port()
    log = tmp_path / "voxa.log"
    server = start_serve(data_dir, dicom_port, free_port(), log)
    scu_log = tmp_path / "storescu.log"
    with open(scu_log, "wb") as out:
        scu = start_storescu(dicom_port, files, out)
        wait_for_acks(scu_log, 30, 60)
        server.send_signal(signal.SIGTERM)
        assert scu.wait(120) == 0, scu_log.read_text()[-2000:]
    assert server.wait(60) == 0, log.read_text()[-2000:]
    text = scu_log.read_text(errors="replace")
    assert text.count("Received Store Response (Success)") == len(files)
    # A new association after the stop is not accepted.
    r = subprocess.run(["echoscu", "-aet", "STORESCU", "-aec", "VOXA", "127.0.0.1", str(dicom_port)],
                       capture_output=True)
    assert r.returncode != 0
    archive = open_archive(Settings(data_dir=data_dir))
    assert archive.index.statistics()["instances"] == len(files)
    assert check(archive).clean
