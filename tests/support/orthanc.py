"""Private Orthanc peers for interoperability tests.

Each peer is ``/usr/sbin/Orthanc`` started by hand with its own JSON configuration, storage
and index folders, on free ports, and with the DICOMweb plugin when it is installed. The
system ``orthanc`` service, ``/etc/orthanc`` and ``/var/lib/orthanc`` are never used.

Orthanc 1.10 cannot choose its listening address and binds to 0.0.0.0, so it is started
with ``LD_PRELOAD`` of ``bind_localhost.so`` (built from ``bind_localhost.c`` next to this
file), which rewrites wildcard binds to 127.0.0.1. ``TCP_NODELAY=1`` turns off Nagle's
algorithm in its DCMTK (otherwise every small DIMSE message waits ~40 ms for a delayed ACK).

A peer is stopped by its own PID only: TERM, then KILL after 20 s.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .ports import free_port, port_is_listening

SHIM_SOURCE = Path(__file__).with_name("bind_localhost.c")
DICOMWEB_PLUGIN_CANDIDATES = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/plugins/libOrthancDicomWeb.so",
)
#: AE title the readiness check (echoscu) uses as calling AE.
CHECK_AET = "VOXACHECK"

ModalitySpec = Sequence[Any] | Mapping[str, Any]


class OrthancUnavailable(RuntimeError):
    """Orthanc (or the C compiler for the bind shim) is not installed."""


def orthanc_binary() -> str | None:
    """Path of the Orthanc server binary, or None."""
    explicit = os.environ.get("VOXA_ORTHANC_BIN")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    if os.access("/usr/sbin/Orthanc", os.X_OK):
        return "/usr/sbin/Orthanc"
    return shutil.which("Orthanc")


def dicomweb_plugin() -> Path | None:
    """Path of the Orthanc DICOMweb plugin, or None when orthanc-dicomweb is not installed."""
    for candidate in DICOMWEB_PLUGIN_CANDIDATES:
        if Path(candidate).is_file():
            return Path(candidate)
    return None


def build_bind_shim(out_dir: Path) -> Path:
    """Compile ``bind_localhost.c`` into ``out_dir/bind_localhost.so`` (gcc) and return its path."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise OrthancUnavailable(
            "no C compiler (gcc) to build the bind_localhost.so shim (apt-get install gcc)"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "bind_localhost.so"
    proc = subprocess.run(
        [gcc, "-shared", "-fPIC", "-O2", "-o", str(target), str(SHIM_SOURCE), "-ldl"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"building {SHIM_SOURCE.name} failed:\n{proc.stdout}\n{proc.stderr}")
    return target


def modality_config(spec: ModalitySpec) -> dict[str, Any]:
    """Orthanc ``DicomModalities`` entry from ``[AET, host, port]`` (all services allowed) or a dict."""
    if isinstance(spec, Mapping):
        return dict(spec)
    aet, host, port = spec
    return {
        "AET": str(aet),
        "Host": str(host),
        "Port": int(port),
        "AllowEcho": True,
        "AllowFind": True,
        "AllowMove": True,
        "AllowGet": True,
        "AllowStore": True,
    }


@dataclass
class OrthancPeer:
    """A running private Orthanc (see module docstring)."""

    aet: str
    dicom_port: int
    http_port: int
    storage_dir: Path
    config_path: Path
    log_path: Path
    dicomweb_enabled: bool
    process: subprocess.Popen[bytes] = field(repr=False)
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        """Base URL of Orthanc's REST API, e.g. ``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self.http_port}"

    @property
    def dicomweb_url(self) -> str | None:
        """DICOMweb root (QIDO/WADO/STOW prefix), or None without the plugin."""
        return f"{self.url}/dicom-web" if self.dicomweb_enabled else None

    @property
    def pid(self) -> int:
        return self.process.pid

    def is_running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout_s: float = 20) -> None:
        """Stop this Orthanc by its PID: TERM, then KILL after ``timeout_s``. Safe to call twice."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def _http_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/system", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _dicom_ready(aet: str, port: int, host: str) -> bool:
    echoscu = shutil.which("echoscu")
    if echoscu is None:
        return port_is_listening(port, host)
    try:
        proc = subprocess.run(
            [echoscu, "-aet", CHECK_AET, "-aec", aet, "-to", "5", host, str(port)],
            capture_output=True,
            timeout=15,
            env={**os.environ, "TCP_NODELAY": "1"},
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == 0


def orthanc_config(
    *,
    name: str,
    aet: str,
    dicom_port: int,
    http_port: int,
    storage_dir: Path,
    modalities: Mapping[str, ModalitySpec] | None = None,
    dicomweb: bool = True,
    extra_config: Mapping[str, Any] | None = None,
    host: str = "127.0.0.1",
) -> dict[str, Any]:
    """The configuration a test peer runs with (``extra_config`` is merged in last, at top level)."""
    plugin = dicomweb_plugin() if dicomweb else None
    config: dict[str, Any] = {
        "Name": name,
        "StorageDirectory": str(storage_dir),
        "IndexDirectory": str(storage_dir),
        "StorageCompression": False,
        "Plugins": [str(plugin)] if plugin else [],
        "HttpServerEnabled": True,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "SslEnabled": False,
        "HttpDescribeErrors": True,
        "DicomServerEnabled": True,
        "DicomAet": aet,
        "DicomPort": dicom_port,
        "DicomCheckCalledAet": False,
        "DicomCheckModalityHost": False,
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowFind": True,
        "DicomAlwaysAllowFindWorklist": True,
        "DicomAlwaysAllowGet": True,
        "DicomAlwaysAllowMove": True,
        "DicomModalities": {key: modality_config(spec) for key, spec in (modalities or {}).items()},
        "OrthancPeers": {},
        "SaveJobs": False,
        "LogExportedResources": False,
        "WebDavEnabled": False,
        "DicomWeb": {
            "Enable": plugin is not None,
            "Root": "/dicom-web/",
            "EnableWado": True,
            "WadoRoot": "/wado",
            "Host": f"{host}:{http_port}",
            "Ssl": False,
        },
    }
    if extra_config:
        config.update(extra_config)
    return config


def start_orthanc(
    work_dir: Path,
    *,
    shim: Path,
    aet: str = "ORTHANC",
    modalities: Mapping[str, ModalitySpec] | None = None,
    dicomweb: bool = True,
    extra_config: Mapping[str, Any] | None = None,
    tcp_nodelay: bool = True,
    verbose: bool = False,
    startup_timeout_s: float = 60,
    attempts: int = 3,
    host: str = "127.0.0.1",
) -> OrthancPeer:
    """Start a private Orthanc with its state under ``work_dir``; return when HTTP and C-ECHO answer.

    ``modalities``: Orthanc ``DicomModalities``, name -> ``[AET, host, port]`` (or a full dict).
    A failed start (for example a port taken meanwhile) is retried on new ports.
    """
    binary = orthanc_binary()
    if binary is None:
        raise OrthancUnavailable("Orthanc is not installed (/usr/sbin/Orthanc; apt-get install orthanc)")
    work_dir.mkdir(parents=True, exist_ok=True)
    storage_dir = work_dir / "storage"
    storage_dir.mkdir(exist_ok=True)
    config_path = work_dir / "orthanc.json"
    log_path = work_dir / "orthanc.log"

    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "TCP_NODELAY")}
    env["LD_PRELOAD"] = str(shim)
    if tcp_nodelay:
        env["TCP_NODELAY"] = "1"

    failure = ""
    for _ in range(attempts):
        http_port, dicom_port = free_port(host), free_port(host)
        config = orthanc_config(
            name=f"VoxaTest-{aet}",
            aet=aet,
            dicom_port=dicom_port,
            http_port=http_port,
            storage_dir=storage_dir,
            modalities=modalities,
            dicomweb=dicomweb,
            extra_config=extra_config,
            host=host,
        )
        config_path.write_text(json.dumps(config, indent=2))
        argv = [binary, *(["--verbose"] if verbose else []), str(config_path)]
        with open(log_path, "ab") as log:
            process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=work_dir, env=env)
        peer = OrthancPeer(
            aet=aet,
            dicom_port=dicom_port,
            http_port=http_port,
            storage_dir=storage_dir,
            config_path=config_path,
            log_path=log_path,
            dicomweb_enabled=bool(config["Plugins"]),
            process=process,
            host=host,
        )
        deadline = time.monotonic() + startup_timeout_s
        http_ok = False
        while time.monotonic() < deadline and peer.is_running():
            http_ok = http_ok or _http_ready(peer.url)
            if http_ok and _dicom_ready(aet, dicom_port, host):
                return peer
            time.sleep(0.1)
        exited = not peer.is_running()
        peer.stop()
        failure = (
            f"Orthanc {'exited during start-up' if exited else f'not ready within {startup_timeout_s:.0f} s'}"
            f" (HTTP {http_port}, DICOM {dicom_port}); log tail:\n{peer.log_tail()}"
        )
        if not exited:
            break  # a hang is not a port race; retrying would only waste time
    raise RuntimeError(failure)


class OrthancPeerFactory:
    """What the ``orthanc_peer`` fixture returns: call it to start a peer (stopped at test end)."""

    def __init__(self, base_dir: Path, shim: Path) -> None:
        self._base_dir = base_dir
        self._shim = shim
        self.peers: list[OrthancPeer] = []

    def __call__(
        self,
        *,
        aet: str = "ORTHANC",
        modalities: Mapping[str, ModalitySpec] | None = None,
        dicomweb: bool = True,
        extra_config: Mapping[str, Any] | None = None,
        tcp_nodelay: bool = True,
        verbose: bool = False,
    ) -> OrthancPeer:
        work_dir = self._base_dir / f"orthanc-{len(self.peers) + 1}"
        peer = start_orthanc(
            work_dir,
            shim=self._shim,
            aet=aet,
            modalities=modalities,
            dicomweb=dicomweb,
            extra_config=extra_config,
            tcp_nodelay=tcp_nodelay,
            verbose=verbose,
        )
        self.peers.append(peer)
        return peer

    def stop_all(self) -> None:
        for peer in reversed(self.peers):
            peer.stop()
