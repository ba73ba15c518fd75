"""``voxa serve`` as a separate process, and a storescu run beside it, for tests that signal
or kill the server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

VOXA = str(Path(sys.executable).parent / "voxa")
SCU_AET = "STORESCU"
_ACK = "Received Store Response (Success)"


def start_serve(data_dir: Path, dicom_port: int, http_port: int, log: Path) -> subprocess.Popen[bytes]:
    """Start ``voxa serve`` (with STORESCU as a known peer) and wait until it answers C-ECHO."""
    (data_dir / "voxa.toml").write_text(
        f'[voxa]\npeers = [{{name = "scu", aet = "{SCU_AET}", host = "127.0.0.1", port = 11112}}]\n'
    )
    proc = subprocess.Popen(
        [VOXA, "serve", "--data-dir", str(data_dir), "--config", str(data_dir / "voxa.toml"),
         "--host", "127.0.0.1", "--dicom-port", str(dicom_port), "--http-port", str(http_port)],
        stdout=open(log, "ab"), stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        r = subprocess.run(["echoscu", "-aet", SCU_AET, "-aec", "VOXA", "127.0.0.1", str(dicom_port)],
                           capture_output=True, env={**os.environ, "TCP_NODELAY": "1"})
        if r.returncode == 0:
            return proc
        if proc.poll() is not None:
            raise RuntimeError(f"voxa serve exited: {log.read_text()[-2000:]}")
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("voxa serve did not answer C-ECHO")


def start_storescu(dicom_port: int, files: list[Path], out: object) -> subprocess.Popen[bytes]:
    """storescu -v of ``files`` over one association, its log written to ``out``."""
    return subprocess.Popen(
        ["storescu", "-v", "-aet", SCU_AET, "-aec", "VOXA", "127.0.0.1", str(dicom_port), *map(str, files)],
        stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "TCP_NODELAY": "1"},  # type: ignore[arg-type]
    )


def wait_for_acks(scu_log: Path, count: int, timeout_s: float) -> None:
    """Return once storescu has logged ``count`` successful responses (or the time is up)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if scu_log.read_text(errors="replace").count(_ACK) >= count:
            return
        time.sleep(0.02)


def acknowledged_files(scu_log: Path) -> list[Path]:
    """Files storescu -v reported as stored: "Sending file: F" followed by a Success response."""
    acknowledged: list[Path] = []
    current: Path | None = None
    for line in scu_log.read_text(errors="replace").splitlines():
        if "Sending file: " in line:
            current = Path(line.split("Sending file: ", 1)[1].strip())
        elif _ACK in line and current is not None:
            acknowledged.append(current)
            current = None
    return acknowledged
