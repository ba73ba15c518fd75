"""Archive commands: ``import``, ``check``, ``send-test-studies``, ``peer``."""

from __future__ import annotations

import json
import os
import sys
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from voxa.cli.options import load_settings, settings_options, setup_logging


def _open_runtime(overrides: dict[str, Any]) -> Any:
    from voxa.runtime import Runtime

    settings = load_settings(overrides)
    setup_logging("WARNING")
    return Runtime.open(settings)


def iter_import_items(paths: tuple[Path, ...]) -> Iterator[tuple[str, bytes | Exception]]:
    """(name, bytes) for every file under the paths; ZIP files are opened and walked."""
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            try:
                if zipfile.is_zipfile(path) and not _looks_dicom(path):
                    with zipfile.ZipFile(path) as zf:
                        for info in zf.infolist():
                            if not info.is_dir():
                                yield f"{path}!{info.filename}", zf.read(info)
                else:
                    yield str(path), path.read_bytes()
            except (OSError, zipfile.BadZipFile) as e:
                yield str(path), e


def _looks_dicom(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def _count_items(paths: tuple[Path, ...]) -> int:
    n = 0
    for root in paths:
        if root.is_file():
            n += len(zipfile.ZipFile(root).namelist()) if zipfile.is_zipfile(root) and not _looks_dicom(root) else 1
        else:
            for _dir, _sub, files in os.walk(root):
                n += len(files)
    return n


def register(main: click.Group) -> None:
    @main.command("import")
    @settings_options
    @click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
    @click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
    def import_(settings_overrides: dict[str, Any], paths: tuple[Path, ...], as_json: bool) -> None:
        """Import DICOM files from folders (recursively) and ZIP files, through the ingest path."""
        from voxa.archive.ingest import Outcome

        rt = _open_runtime(settings_overrides)
        counts: Counter[str] = Counter()
        refused: list[dict[str, str]] = []
        try:
            total = _count_items(paths)
            with click.progressbar(length=total, label="Importing", file=sys.stderr,
                                   show_pos=True) as bar:
                for name, data in iter_import_items(paths):
                    if isinstance(data, Exception):
                        counts["refused"] += 1
                        refused.append({"file": name, "reason": f"cannot read: {data}"})
                    else:
                        result = rt.archive.ingest(data, source="import")
                        key = "stored" if result.outcome in (Outcome.STORED, Outcome.REPLACED) else result.outcome.value
                        counts[key] += 1
                        if result.outcome is Outcome.REFUSED:
                            refused.append({"file": name, "reason": result.reason})
                    bar.update(1)
        finally:
            rt.close()
        summary = {"stored": counts["stored"], "duplicate": counts["duplicate"], "refused": counts["refused"],
                   "refusals": refused}
        if as_json:
            click.echo(json.dumps(summary, indent=2))
        else:
            click.echo(f"stored {summary['stored']}, duplicate {summary['duplicate']}, refused {summary['refused']}")
            for r in refused:
                click.echo(f"  refused {r['file']}: {r['reason']}")

    @main.command()
    @settings_options
    @click.option("--repair", is_flag=True, help="Re-index orphan files, drop rows whose file is gone.")
    @click.option("--json", "as_json", is_flag=True)
    def check(settings_overrides: dict[str, Any], repair: bool, as_json: bool) -> None:
        """Reconcile the index with stored files; exit 1 if anything is inconsistent (and not repaired)."""
        from voxa.archive.check import check as run_check

        rt = _open_runtime(settings_overrides)
        try:
            report = run_check(rt.archive, repair=repair)
        finally:
            rt.close()
        if as_json:
            click.echo(json.dumps(report.as_dict(), indent=2))
        else:
            click.echo(f"{report.instances} indexed instances, {report.files} stored files")
            for what, items in (("orphan file", report.orphan_files), ("temporary file", report.temporary_files),
                                ("index row without file", report.missing_files),
                                ("size mismatch", report.size_mismatches)):
                for item in items:
                    click.echo(f"  {what}: {item}")
            for line in report.repaired:
                click.echo(f"  repaired: {line}")
            click.echo("clean" if report.clean else ("repaired" if repair else "NOT clean (run with --repair)"))
        if not report.clean and not repair:
            sys.exit(1)

    @main.command("send-test-studies")
    @click.option("--host", default="127.0.0.1", show_default=True)
    @click.option("--port", type=int, default=4242, show_default=True)
    @click.option("--aet", default="VOXA", show_default=True, help="Called AE title (the archive).")
    @click.option("--calling-aet", default="VOXATEST", show_default=True)
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option("--ct-slices", type=int, default=300, show_default=True)
    @click.option("--only", multiple=True, type=click.Choice(["ct-chest", "mr-brain", "cr-chest", "xa-run"]),
                  help="Send only these studies.")
    def send_test_studies(host: str, port: int, aet: str, calling_aet: str, seed: int, ct_slices: int,
                          only: tuple[str, ...]) -> None:
        """Send synthetic studies as a modality would (CT chest, MR brain, CR chest, XA run)."""
        from voxa.dimse.peers import PeerInfo
        from voxa.dimse.scu import PeerError, send_datasets
        from voxa.testing.synthetic import demo_studies

        peer = PeerInfo("target", aet, host, port)
        total_failed = 0
        for study in demo_studies(seed, ct_slices=ct_slices):
            if only and study.key not in only:
                continue
            with click.progressbar(length=study.instance_count, label=f"{study.description:<24}",
                                   file=sys.stderr, show_pos=True) as bar:
                done = [0]

                def tick(n: int, bar: Any = bar, done: list[int] = done) -> None:
                    bar.update(n - done[0])
                    done[0] = n

                try:
                    report = send_datasets(peer, calling_aet, study.datasets(), progress=tick)
                except PeerError as e:
                    raise click.ClickException(str(e)) from None
            total_failed += report.failed
            click.echo(f"{study.key}: sent {report.sent}, failed {report.failed}")
            for f in report.failures[:10]:
                click.echo(f"  {f['sop_instance_uid']}: {f['status']} {f['comment']}")
        if total_failed:
            sys.exit(1)

    @main.group()
    def peer() -> None:
        """Known DICOM peers (modalities, workstations, archives)."""

    @peer.command("list")
    @settings_options
    def peer_list(settings_overrides: dict[str, Any]) -> None:
        rt = _open_runtime(settings_overrides)
        try:
            for p in rt.peers.all():
                perms = ",".join(k for k in ("store", "find", "move") if getattr(p, f"allow_{k}"))
                click.echo(f"{p.name}\t{p.aet}\t{p.host}:{p.port}\t{perms}{' (config)' if p.from_config else ''}")
        finally:
            rt.close()

    @peer.command("add")
    @settings_options
    @click.argument("name")
    @click.argument("aet")
    @click.argument("host")
    @click.argument("port", type=int)
    @click.option("--no-store", is_flag=True)
    @click.option("--no-find", is_flag=True)
    @click.option("--no-move", is_flag=True)
    @click.option("--account", default="",
                  help="Username whose patient-level access limits this peer's queries and retrievals.")
    def peer_add(settings_overrides: dict[str, Any], name: str, aet: str, host: str, port: int,
                 no_store: bool, no_find: bool, no_move: bool, account: str) -> None:
        """Add or replace a peer."""
        from voxa.dimse.peers import PeerInfo

        rt = _open_runtime(settings_overrides)
        try:
            account = account.strip().lower()
            if account:
                rt.accounts.get_user(account)
            rt.peers.put(PeerInfo(name, aet, host, port, not no_store, not no_find, not no_move, account=account))
        except LookupError:
            raise click.ClickException(f"no user {account!r}: create the account first (voxa user add)") from None
        except ValueError as e:
            raise click.ClickException(str(e)) from None
        finally:
            rt.close()
        click.echo(f"peer {name} ({aet} at {host}:{port}) saved")

    @peer.command("remove")
    @settings_options
    @click.argument("name")
    def peer_remove(settings_overrides: dict[str, Any], name: str) -> None:
        from voxa.dimse.peers import UnknownPeer

        rt = _open_runtime(settings_overrides)
        try:
            rt.peers.remove(name)
        except UnknownPeer as e:
            raise click.ClickException(str(e)) from None
        finally:
            rt.close()
        click.echo(f"peer {name} removed")
