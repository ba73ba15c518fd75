"""DICOM client commands: ``echo``, ``store``, ``find``, ``move`` and ``job``.

They talk to the peer directly (not through a running ``voxa serve``), with the data folder's
peer registry and archive.  PEER is a peer's name or AE title from the registry; ``--host``,
``--port`` and ``--aet`` name a peer that is not registered.  ``voxa move`` asks the peer to
send to Voxa's own AE title by default, so ``voxa serve`` must be running to receive.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import click

from voxa.cli.options import load_settings, settings_options, setup_logging

_LEVELS = {"PATIENT": "PATIENT", "STUDY": "STUDY", "SERIES": "SERIES", "IMAGE": "IMAGE", "INSTANCE": "IMAGE"}


@dataclass
class _Local:
    """What the client commands need from the data folder: settings, archive and peer registry.

    Not a full :class:`~voxa.runtime.Runtime`, and nothing is written: opening a Runtime starts
    a job manager (which marks the jobs of a running server as interrupted) and rewrites the
    configured peers (removing those of a server started with another configuration file).
    """

    settings: Any
    archive: Any
    peers: Any


@contextlib.contextmanager
def _open_local(overrides: dict[str, Any]) -> Iterator[_Local]:
    from voxa.archive import open_archive
    from voxa.dimse.peers import PeerRegistry
    from voxa.dimse.server import quiet_pynetdicom

    settings = load_settings(overrides)
    setup_logging("WARNING")
    quiet_pynetdicom()
    archive = open_archive(settings)
    try:
        yield _Local(settings, archive, PeerRegistry(archive.index))
    finally:
        archive.index.engine.dispose()


def peer_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """PEER (name or AE title) or --host/--port/--aet, and --calling-aet."""

    @click.argument("peer", required=False)
    @click.option("--host", help="Host of a peer that is not registered (with --port and --aet).")
    @click.option("--port", type=int, help="Port of a peer that is not registered.")
    @click.option("--aet", "called_aet", help="AE title of a peer that is not registered (default ANY-SCP).")
    @click.option("--calling-aet", help="Calling AE title (default: Voxa's own AE title).")
    @functools.wraps(fn)
    def wrapper(*args: Any, peer: str | None, host: str | None, port: int | None, called_aet: str | None,
                calling_aet: str | None, **kwargs: Any) -> Any:
        if peer is None and (host is None or port is None):
            raise click.UsageError("name a PEER, or give --host and --port (and --aet)")
        if peer is not None and host is not None:
            raise click.UsageError("give either PEER or --host/--port/--aet, not both")
        kwargs["peer_spec"] = (peer, host, port, called_aet, calling_aet)
        return fn(*args, **kwargs)

    return wrapper


def _resolve_peer(local: _Local, spec: tuple[Any, ...]) -> tuple[Any, str]:
    """(PeerInfo, calling AE title) from the command line."""
    from voxa.dicom.uids import InvalidIdentifier, validate_ae_title
    from voxa.dimse.peers import PeerInfo, UnknownPeer

    name, host, port, called_aet, calling_aet = spec
    try:
        calling = validate_ae_title(calling_aet) if calling_aet else local.settings.aet
        if name is not None:
            try:
                return local.peers.resolve(name), calling
            except UnknownPeer:
                # configured, but no server has written the configuration to the index yet
                for p in local.settings.peers:
                    if name in (p.name, p.aet):
                        return PeerInfo(p.name, p.aet, p.host, p.port, p.allow_store, p.allow_find,
                                        p.allow_move, from_config=True), calling
                raise
        if not 0 < port < 65536:
            raise click.BadParameter(f"port {port} is out of range", param_hint="--port")
        return PeerInfo("ad-hoc", validate_ae_title(called_aet or "ANY-SCP"), host, port), calling
    except UnknownPeer as e:
        raise click.ClickException(f"{e} (see 'voxa peer list', or use --host/--port/--aet)") from None
    except InvalidIdentifier as e:
        raise click.BadParameter(str(e)) from None


def _keys(pairs: tuple[str, ...]) -> dict[str, str]:
    """``-k Keyword=value`` pairs (also ``-k gggg,eeee=value``)."""
    from pydicom.datadict import keyword_for_tag, tag_for_keyword

    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEYWORD=VALUE", param_hint="-k")
        if "," in key and len(key) == 9:
            try:
                key = keyword_for_tag(int(key.replace(",", ""), 16)) or key
            except ValueError:
                pass
        if tag_for_keyword(key) is None:
            raise click.BadParameter(f"{key!r} is not a DICOM attribute keyword", param_hint="-k")
        out[key] = value
    return out


def _level(value: str) -> str:
    return _LEVELS[value.upper()]


@contextlib.contextmanager
def _percent_bar(label: str) -> Iterator[Callable[[str, float], None]]:
    """A 0-100 progress bar on stderr, fed by (stage, percent) callbacks."""
    with click.progressbar(length=100, label=label, file=sys.stderr) as bar:
        done = [0]

        def progress(_stage: str, percent: float) -> None:
            target = int(max(0.0, min(100.0, percent)))
            if target > done[0]:
                bar.update(target - done[0])
                done[0] = target

        yield progress


def register(main: click.Group) -> None:
    @main.command()
    @settings_options
    @peer_options
    @click.option("-n", "--count", type=int, default=1, show_default=True, help="Number of C-ECHOs.")
    def echo(settings_overrides: dict[str, Any], peer_spec: tuple[Any, ...], count: int) -> None:
        """C-ECHO a peer; exit 1 when it does not answer."""
        from voxa.dimse.scu import PeerError
        from voxa.dimse.scu import echo as c_echo

        with _open_local(settings_overrides) as local:
            peer, calling = _resolve_peer(local, peer_spec)
        for _ in range(max(1, count)):
            try:
                ms = c_echo(peer, calling)
            except PeerError as e:
                click.echo(f"echo {peer.aet} at {peer.host}:{peer.port} failed: {e}", err=True)
                sys.exit(1)
            click.echo(f"{peer.aet} at {peer.host}:{peer.port}: C-ECHO ok in {ms:.1f} ms")

    @main.command()
    @settings_options
    @peer_options
    @click.option("--study", "study_uid", help="Study Instance UID to send.")
    @click.option("--series", "series_uid", help="Series Instance UID to send.")
    @click.option("--instance", "sop_uid", help="SOP Instance UID to send.")
    @click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
    def store(settings_overrides: dict[str, Any], peer_spec: tuple[Any, ...], study_uid: str | None,
              series_uid: str | None, sop_uid: str | None, as_json: bool) -> None:
        """Send a stored study, series or instance to a peer (C-STORE); exit 1 if any is refused."""
        from voxa.dimse.scu import PeerError
        from voxa.dimse.scu import store as c_store

        if sum(x is not None for x in (study_uid, series_uid, sop_uid)) != 1:
            raise click.UsageError("give exactly one of --study, --series, --instance")
        with _open_local(settings_overrides) as local:
            peer, calling = _resolve_peer(local, peer_spec)
            locations = local.archive.index.locate(study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid)
            if not locations:
                raise click.ClickException("no stored instance matches")
            try:
                with _percent_bar(f"Sending {len(locations)} instances to {peer.aet}") as progress:
                    report = c_store(local.archive, peer, calling, locations, progress=progress)
            except PeerError as e:
                raise click.ClickException(str(e)) from None
        if as_json:
            click.echo(json.dumps(report.as_dict(), indent=2))
        else:
            click.echo(f"sent {report.sent} ({report.warnings} with warnings), failed {report.failed}")
            for f in report.failures[:20]:
                click.echo(f"  {f['sop_instance_uid']}: {f['status']} {f['comment']}")
        if report.failed:
            sys.exit(1)

    @main.command()
    @settings_options
    @peer_options
    @click.option("--level", type=click.Choice(sorted(_LEVELS), case_sensitive=False), default="STUDY",
                  show_default=True)
    @click.option("-k", "--key", "keys", multiple=True, metavar="KEYWORD=VALUE",
                  help="Matching key, e.g. -k PatientID=123 -k StudyDate=2020*  (repeatable).")
    @click.option("-r", "--return-key", "return_keys", multiple=True, metavar="KEYWORD",
                  help="Also return this attribute (repeatable).")
    @click.option("--json", "as_json", is_flag=True, help="Print the matches as JSON.")
    def find(settings_overrides: dict[str, Any], peer_spec: tuple[Any, ...], level: str, keys: tuple[str, ...],
             return_keys: tuple[str, ...], as_json: bool) -> None:
        """Query a peer (C-FIND, Study Root; Patient Root at PATIENT level)."""
        from voxa.dimse.scu import DEFAULT_RETURN_KEYS, PeerError
        from voxa.dimse.scu import find as c_find

        lvl = _level(level)
        query = _keys(keys)
        wanted = list(dict.fromkeys([*DEFAULT_RETURN_KEYS[lvl], *_keys(tuple(f"{k}=" for k in return_keys))]))
        with _open_local(settings_overrides) as local:
            peer, calling = _resolve_peer(local, peer_spec)
        try:
            matches = c_find(peer, calling, lvl, query, [k for k in wanted if k not in query],
                             patient_root=lvl == "PATIENT")
        except PeerError as e:
            raise click.ClickException(str(e)) from None
        if as_json:
            click.echo(json.dumps(matches, indent=2))
            return
        columns = [k for k in dict.fromkeys([*query, *wanted]) if any(k in m for m in matches)]
        click.echo("\t".join(columns))
        for m in matches:
            click.echo("\t".join(_cell(m.get(k)) for k in columns))
        click.echo(f"{len(matches)} match{'es' if len(matches) != 1 else ''}", err=True)

    @main.command()
    @settings_options
    @peer_options
    @click.option("--level", type=click.Choice(sorted(_LEVELS), case_sensitive=False), default="STUDY",
                  show_default=True)
    @click.option("-k", "--key", "keys", multiple=True, metavar="KEYWORD=VALUE", required=True,
                  help="Identifier, e.g. -k StudyInstanceUID=1.2.3 (repeatable).")
    @click.option("--dest", help="Move destination AE title (default: Voxa's own AE title).")
    def move(settings_overrides: dict[str, Any], peer_spec: tuple[Any, ...], level: str, keys: tuple[str, ...],
             dest: str | None) -> None:
        """Ask a peer to send matching instances to an AE (C-MOVE); by default to Voxa itself."""
        from voxa.dicom.uids import InvalidIdentifier, validate_ae_title
        from voxa.dimse.scu import PeerError
        from voxa.dimse.scu import move as c_move

        lvl = _level(level)
        query = _keys(keys)
        with _open_local(settings_overrides) as local:
            peer, calling = _resolve_peer(local, peer_spec)
            try:
                destination = validate_ae_title(dest) if dest else local.settings.aet
            except InvalidIdentifier as e:
                raise click.BadParameter(str(e), param_hint="--dest") from None
        try:
            with _percent_bar(f"{peer.aet} -> {destination}") as progress:
                counts = c_move(peer, calling, destination, lvl, query, patient_root=lvl == "PATIENT",
                                progress=progress)
        except PeerError as e:
            raise click.ClickException(str(e)) from None
        click.echo(f"completed {counts['completed']}, warning {counts['warning']}, failed {counts['failed']}")
        if counts["failed"]:
            sys.exit(1)

    @main.group()
    def job() -> None:
        """Jobs recorded in the data folder (sends, retrieves, analyses)."""

    @job.command("list")
    @settings_options
    @click.option("--limit", type=int, default=20, show_default=True)
    @click.option("--json", "as_json", is_flag=True)
    def job_list(settings_overrides: dict[str, Any], limit: int, as_json: bool) -> None:
        with _open_local(settings_overrides) as local:
            views = _jobs_table(local).list(limit)
        if as_json:
            click.echo(json.dumps([v.as_dict() for v in views], indent=2))
            return
        for v in views:
            click.echo(f"{v.id}\t{v.kind}\t{v.state}\t{v.progress:.0f}%\t{v.stage}\t{v.created_at:%Y-%m-%d %H:%M:%S}")

    @job.command("show")
    @settings_options
    @click.argument("job_id")
    def job_show(settings_overrides: dict[str, Any], job_id: str) -> None:
        with _open_local(settings_overrides) as local:
            view = _jobs_table(local).get(job_id)
        click.echo(json.dumps(view.as_dict(), indent=2))

    @job.command("cancel")
    @settings_options
    @click.argument("job_id")
    def job_cancel(settings_overrides: dict[str, Any], job_id: str) -> None:
        """Ask the server running a job to stop it."""
        with _open_local(settings_overrides) as local:
            view = _jobs_table(local).cancel(job_id)
        from voxa.jobs.executor import TERMINAL

        click.echo(f"job {job_id}: {view.state}{'' if view.state in TERMINAL else ' (cancel requested)'}")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return "\\".join(str(v) for v in value)
    return str(value)


class _JobsTable:
    """The jobs table read and flagged directly: a CLI process runs no jobs of its own."""

    def __init__(self, index: Any):
        self.index = index

    def list(self, limit: int) -> list[Any]:
        from sqlalchemy import select

        from voxa.jobs.executor import T, _view

        with self.index.read() as conn:
            return [_view(r) for r in conn.execute(select(T).order_by(T.c.created_at.desc()).limit(limit))]

    def get(self, job_id: str) -> Any:
        from sqlalchemy import select

        from voxa.jobs.executor import T, _view

        with self.index.read() as conn:
            r = conn.execute(select(T).where(T.c.id == job_id)).first()
        if r is None:
            raise click.ClickException(f"no job {job_id}")
        return _view(r)

    def cancel(self, job_id: str) -> Any:
        from sqlalchemy import update

        from voxa.archive.models import Job
        from voxa.jobs.executor import TERMINAL

        view = self.get(job_id)
        if view.state not in TERMINAL:
            with self.index.write() as conn:
                conn.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True))
        return self.get(job_id)


def _jobs_table(local: _Local) -> _JobsTable:
    return _JobsTable(local.archive.index)
