"""An in-process Voxa for tests: a Runtime with its DICOM listener on a free loopback port,
and optionally its HTTP app served by uvicorn in a thread."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support.ports import free_port
from voxa.config import PeerSettings, Settings
from voxa.runtime import Runtime


@dataclass
class VoxaInstance:
    runtime: Runtime
    aet: str
    dicom_port: int
    data_dir: Path
    http_port: int | None = None
    # HTTP Basic credentials of the super admin that start_voxa creates
    auth: tuple[str, str] = ("admin", "")
    _uvicorn: Any = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def archive(self) -> Any:
        return self.runtime.archive

    @property
    def base_url(self) -> str:
        assert self.http_port, "start_voxa(http=True) to serve HTTP"
        return f"http://127.0.0.1:{self.http_port}"

    def stop(self) -> None:
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
            if self._thread is not None:
                self._thread.join(timeout=10)
            self._uvicorn = None
        self.runtime.close(grace_s=5)


ADMIN_USER = "admin"
ADMIN_PASSWORD = "Test-Superuser-Passw0rd"  # synthetic, for test servers only


def start_voxa(data_dir: Path, *, database_url: str | None = None, aet: str = "VOXA",
               peers: list[PeerSettings] | None = None, accept_unknown_peers: bool = False,
               http: bool = False, **settings: Any) -> VoxaInstance:
    s = Settings(
        data_dir=data_dir, database_url=database_url, aet=aet, dicom_host="127.0.0.1", dicom_port=0,
        http_host="127.0.0.1", accept_unknown_peers=accept_unknown_peers, peers=peers or [],
        fsync=settings.pop("fsync", False), **settings,
    )
    rt = Runtime.open(s, server=True)
    if not any(u.username == ADMIN_USER for u in rt.accounts.list_users()):
        rt.accounts.create_user(ADMIN_USER, ADMIN_PASSWORD, role="super_admin")
    server = rt.start_dicom("127.0.0.1", 0)
    inst = VoxaInstance(runtime=rt, aet=aet, dicom_port=int(server.port or 0), data_dir=data_dir,
                        auth=(ADMIN_USER, ADMIN_PASSWORD))
    if http:
        import uvicorn

        from voxa.web.app import create_app

        port = free_port()
        config = uvicorn.Config(create_app(rt), host="127.0.0.1", port=port, log_level="warning", lifespan="on")
        srv = uvicorn.Server(config)
        # uvicorn installs signal handlers only in the main thread; a thread is fine here.
        t = threading.Thread(target=srv.run, name="voxa-http-test", daemon=True)
        t.start()
        deadline = time.monotonic() + 15
        while not srv.started and time.monotonic() < deadline:
            time.sleep(0.02)
        if not srv.started:
            inst.stop()
            raise RuntimeError("the test HTTP server did not start")
        inst.http_port, inst._uvicorn, inst._thread = port, srv, t
    return inst
