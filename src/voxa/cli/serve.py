"""``voxa serve``: DICOM and HTTP in one process."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any

import click

from voxa.cli.options import load_settings, settings_options, setup_logging

log = logging.getLogger("voxa.serve")


def load_demo_studies(runtime: Any, seed: int = 0) -> int:
    """Ingest the synthetic demo studies (once: skipped when any study is stored)."""
    from voxa.testing.synthetic import dataset_to_bytes, demo_studies

    if runtime.archive.index.statistics()["studies"]:
        return 0
    stored = 0
    for study in demo_studies(seed):
        for ds in study.datasets():
            result = runtime.archive.ingest(dataset_to_bytes(ds), source="demo")
            stored += result.ok
        log.info("demo study loaded: %s (%d instances)", study.description, study.instance_count)
    return stored


def register(main: click.Group) -> None:
    @main.command()
    @settings_options
    @click.option("--aet", default=None, help="DICOM AE title (VOXA_AET; default VOXA).")
    @click.option("--dicom-port", type=int, default=None, help="DICOM port (VOXA_DICOM_PORT; default 4242).")
    @click.option("--http-port", type=int, default=None, help="HTTP port (VOXA_HTTP_PORT; default 8042).")
    @click.option("--host", default=None, help="Address both listeners bind to (default 0.0.0.0).")
    @click.option("--profile", type=click.Choice(["production", "demo"]), default=None,
                  help="demo: load the demo studies into an empty archive and accept unknown DICOM peers.")
    @click.option("--log-level", default=None)
    def serve(settings_overrides: dict[str, Any], aet: str | None, dicom_port: int | None,
              http_port: int | None, host: str | None, profile: str | None, log_level: str | None) -> None:
        """Run the archive: DICOM listener and HTTP server (DICOMweb, REST, web app)."""
        overrides: dict[str, Any] = dict(aet=aet, dicom_port=dicom_port, http_port=http_port, profile=profile,
                                         log_level=log_level)
        if host:
            overrides.update(dicom_host=host, http_host=host)
        if profile == "demo":
            overrides["accept_unknown_peers"] = True
        settings = load_settings(settings_overrides, **overrides)
        setup_logging(settings.log_level)
        run_server(settings)


def run_server(settings: Any) -> None:
    import uvicorn

    from voxa.runtime import Runtime
    from voxa.web.app import create_app

    # Until uvicorn installs its own handlers, a SIGTERM/SIGINT must still end us cleanly.
    stop = threading.Event()
    server_ref: list[Any] = []

    def _early_stop(signum: int, _frame: Any) -> None:
        stop.set()
        for srv in server_ref:
            srv.should_exit = True

    signal.signal(signal.SIGTERM, _early_stop)
    signal.signal(signal.SIGINT, _early_stop)
    runtime = Runtime.open(settings, server=True)
    try:
        runtime.start_dicom()
    except OSError as e:
        runtime.close()
        raise click.ClickException(f"cannot listen for DICOM on port {settings.dicom_port}: {e.strerror}") from None
    from voxa.periodic import Periodic
    from voxa.security.accounts import Accounts
    from voxa.web.rest.stable import StableChangeEmitter

    if settings.profile == "demo":
        create_demo_accounts(runtime)
    if not Accounts(runtime.archive.index).list_users():
        log.warning("no user accounts yet: run `voxa init --data-dir %s` to create the first administrator "
                    "(until then nobody can sign in over HTTP)", settings.data_dir)

    # Orthanc's StableStudy/StableSeries changes, which routing scripts wait for.
    stable = StableChangeEmitter(runtime.archive.index)
    stable.start(5.0)
    sessions = Periodic("voxa-session-purge", SESSION_PURGE_S, lambda: _purge_sessions(runtime))
    sessions.start()
    if settings.profile == "demo":
        threading.Thread(target=_load_demo_logged, args=(runtime,), name="demo-loader", daemon=True).start()
    app = create_app(runtime)
    config = uvicorn.Config(app, host=settings.http_host, port=settings.http_port, log_level="warning",
                            access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    server_ref.append(server)
    log.info("Voxa serving DICOM %s on port %s and HTTP on http://%s:%s (data in %s)", settings.aet,
             settings.dicom_port, settings.http_host, settings.http_port, Path(settings.data_dir).resolve())
    try:
        # uvicorn handles SIGINT/SIGTERM by finishing requests in flight and returning.
        if not stop.is_set():
            server.run()
    finally:
        # Ignore a second signal while associations in flight finish.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        log.info("stopping: finishing DICOM associations in flight")
        stable.stop()
        sessions.stop()
        runtime.close(grace_s=30)
        log.info("stopped")
    if not server.started and not stop.is_set():
        raise click.ClickException(f"cannot listen for HTTP on port {settings.http_port}")


# expired and revoked sessions are deleted this often (they no longer sign anyone in, but their
# rows would pile up: one per sign-in)
SESSION_PURGE_S = 3600.0


def _purge_sessions(runtime: Any) -> int:
    purged = int(runtime.accounts.purge_expired_sessions())
    if purged:
        log.info("deleted %d expired or revoked sessions", purged)
    return purged


DEMO_PASSWORD = "voxa-demo-password"
# (username, role): one account per built-in role, all with DEMO_PASSWORD.
DEMO_ACCOUNTS = (("admin", "super_admin"), ("radiologist", "radiologist"), ("technologist", "technologist"),
                 ("referrer", "referring_physician"), ("student", "student"), ("family", "family_member"))


def create_demo_accounts(runtime: Any) -> list[str]:
    """The demo profile's accounts, when the data folder has none yet.  They share a
    published password: the demo profile is for trying Voxa out, never for patient data."""
    accounts = runtime.accounts
    if accounts.list_users():
        return []
    made = []
    for username, role in DEMO_ACCOUNTS:
        accounts.create_user(username, DEMO_PASSWORD, role=role, display_name=f"Demo {role.replace('_', ' ')}",
                             check_policy=False)
        made.append(username)
    log.warning("demo accounts created (%s), password %r: for trying Voxa out only",
                ", ".join(made), DEMO_PASSWORD)
    return made


def _grant_demo_access(runtime: Any) -> None:
    """Give the demo's restricted accounts something to see: the referrer the MR patient, the
    family member (verified) the DX patient, the student the DX study as a teaching case."""
    import datetime as dt

    from sqlalchemy import select, update

    from voxa.archive.access import ST

    accounts = runtime.accounts
    names = {u.username for u in accounts.list_users()}
    with runtime.archive.index.read() as conn:
        rows = conn.execute(select(ST.c.study_instance_uid, ST.c.patient_id, ST.c.modalities_in_study)).all()
    by_modality = {r.modalities_in_study.split("\\")[0]: r for r in rows}
    mr, dx = by_modality.get("MR"), by_modality.get("DX")
    if mr is not None and "referrer" in names and not accounts.assignments("referrer"):
        accounts.assign_patient("referrer", mr.patient_id)
    if dx is not None:
        if "family" in names and not accounts.family_grants("family"):
            grant = accounts.request_family_access("family", dx.patient_id, note="demo",
                                                   expires_at=accounts.now() + dt.timedelta(days=365))
            accounts.verify_family_access(grant.id, "admin")
        with runtime.archive.index.write() as conn:
            conn.execute(update(ST).where(ST.c.study_instance_uid == dx.study_instance_uid).values(teaching=True))


def _load_demo_logged(runtime: Any) -> None:
    try:
        n = load_demo_studies(runtime)
        if n:
            log.info("demo data: %d instances stored", n)
        _grant_demo_access(runtime)
    except Exception:  # noqa: BLE001
        log.exception("loading the demo studies failed")
