"""Durable before acknowledged: SIGKILL ``voxa serve`` in the middle of a 1,000-instance
storescu run, restart it, and find every acknowledged instance stored and indexed."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest
from support import free_port
from support.dcmtk import require_dcmtk
from support.dicomfiles import dataset_bytes

from voxa.archive import open_archive
from voxa.archive.check import check
from voxa.config import Settings
from voxa.testing.synthetic import tiny_study, write_study

VOXA = str(Path(sys.executable).parent / "voxa")


def _start(data_dir: Path, dicom_port: int, http_port: int, log: Path) -> subprocess.Popen[bytes]:
    (data_dir / "voxa.toml").write_text(
        '[voxa]\npeers = [{name = "scu", aet = "STORESCU", host = "127.0.0.1", port = 11112}]\n'
    )
    proc = subprocess.Popen(
        [VOXA, "serve", "--data-dir", str(data_dir), "--config", str(data_dir / "voxa.toml"),
         "--host", "127.0.0.1", "--dicom-port", str(dicom_port), "--http-port", str(http_port)],
        stdout=open(log, "ab"), stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        r = subprocess.run(["echoscu", "-aet", "STORESCU", "-aec", "VOXA", "127.0.0.1", str(dicom_port)],
                           capture_output=True, env={**os.environ, "TCP_NODELAY": "1"})
        if r.returncode == 0:
            return proc
        if proc.poll() is not None:
            raise RuntimeError(f"voxa serve exited: {log.read_text()[-2000:]}")
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("voxa serve did not answer C-ECHO")


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
    server = _start(data_dir, dicom_port, http_port, log)
    scu_log = tmp_path / "storescu.log"
    with open(scu_log, "wb") as out:
        scu = subprocess.Popen(
            ["storescu", "-v", "-aet", "STORESCU", "-aec", "VOXA", "127.0.0.1", str(dicom_port), *map(str, files)],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "TCP_NODELAY": "1"},
        )
        # Kill the server once a good part of the run has been acknowledged.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if scu_log.read_text(errors="replace").count("Received Store Response (Success)") >= 300:
                break
            time.sleep(0.02)
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        scu.wait(60)
    text = scu_log.read_text(errors="replace")
    # storescu -v logs "Sending file: F" then "Received Store Response (...)" for each file.
    acknowledged: list[Path] = []
    current: Path | None = None
    for line in text.splitlines():
        m = re.search(r"Sending file: (.+)$", line)
        if m:
            current = Path(m.group(1).strip())
        elif "Received Store Response (Success)" in line and current is not None:
            acknowledged.append(current)
            current = None
    assert 300 <= len(acknowledged) < 1000, f"{len(acknowledged)} acknowledged: kill came too late or too early"

    server = _start(data_dir, dicom_port, http_port, log)
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
