"""Audit trail commands: ``voxa audit verify | search | export``."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import getpass
import json
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from voxa.cli.options import load_settings, settings_options, setup_logging

_ACTIONS = [
    "query", "view", "retrieve", "download", "export", "print", "store", "modify", "delete", "login", "logout",
    "login_failed", "account_change", "role_change", "grant_change", "peer_change", "settings_change",
    "audit_query", "audit_export",
]


@contextlib.contextmanager
def _open_index(overrides: dict[str, Any]) -> Iterator[Any]:
    from voxa.archive import open_archive

    settings = load_settings(overrides)
    setup_logging("WARNING")
    archive = open_archive(settings)
    try:
        yield archive.index
    finally:
        archive.index.engine.dispose()


def _when(value: str | None, name: str) -> dt.datetime | None:
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"not an ISO 8601 date or date-time: {value}", param_hint=name) from None
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed


def filter_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    @click.option("--actor", help="User name, AE:<AET> or system.")
    @click.option("--patient-id", help="Patient ID.")
    @click.option("--study", "study_uid", help="Study Instance UID.")
    @click.option("--action", "actions", multiple=True, type=click.Choice(_ACTIONS),
                  help="Action (repeatable).")
    @click.option("--outcome", type=click.Choice(["success", "failure", "denied"]))
    @click.option("--since", help="From this time (ISO 8601, UTC unless a zone is given), inclusive.")
    @click.option("--until", help="Before this time (ISO 8601), exclusive.")
    @functools.wraps(fn)
    def wrapper(*args: Any, actor: str | None, patient_id: str | None, study_uid: str | None,
                actions: tuple[str, ...], outcome: str | None, since: str | None, until: str | None,
                **kwargs: Any) -> Any:
        kwargs["filters"] = {"actor": actor, "patient_id": patient_id, "study_uid": study_uid,
                             "action": list(actions) or None, "outcome": outcome,
                             "since": _when(since, "--since"), "until": _when(until, "--until")}
        return fn(*args, **kwargs)

    return wrapper


def _record_own_access(index: Any, action: str, filters: dict[str, Any], n: int, extra: dict[str, Any]) -> None:
    """Reading the audit trail is itself audited; refuse to show it if that cannot be recorded."""
    from voxa.security.audit import AuditEvent, AuditTrail, AuditUnavailable

    criteria = {k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in filters.items() if v}
    try:
        AuditTrail(index).record(AuditEvent(
            actor=getpass.getuser(), action=action, source=socket.gethostname(), interface="cli",
            patient_ids=filters.get("patient_id") or (), study_instance_uids=filters.get("study_uid") or (),
            resource="audit_records", detail={"filters": criteria, "records": n, **extra}))
    except AuditUnavailable as e:
        raise click.ClickException(f"{e}: refused") from None


def register(main: click.Group) -> None:
    @main.group("audit")
    def audit() -> None:
        """The audit trail: verify its hash chain, search it, export it."""

    @audit.command("verify")
    @settings_options
    def verify_(settings_overrides: dict[str, Any]) -> None:
        """Check the hash chain: exit 1 and name every altered or missing record."""
        from voxa.security.audit import verify

        with _open_index(settings_overrides) as index:
            report = verify(index)
        for line in report.lines():
            click.echo(line)
        if not report.ok:
            sys.exit(1)

    @audit.command("search")
    @settings_options
    @filter_options
    @click.option("--limit", type=click.IntRange(1, 100_000), default=100, show_default=True)
    @click.option("--offset", type=click.IntRange(0), default=0)
    @click.option("--json", "as_json", is_flag=True, help="One JSON array of records.")
    def search_(settings_overrides: dict[str, Any], filters: dict[str, Any], limit: int, offset: int,
                as_json: bool) -> None:
        """Audit records matching the filters, oldest first."""
        from voxa.security.audit import search

        with _open_index(settings_overrides) as index:
            records = search(index, **filters, limit=limit, offset=offset)
            _record_own_access(index, "audit_query", filters, len(records), {})
        if as_json:
            click.echo(json.dumps([r.as_dict() for r in records], indent=2))
            return
        for r in records:
            who = f"{r.actor}@{r.source}" if r.source else r.actor
            what = " ".join(filter(None, ["patient=" + ",".join(r.patient_ids) if r.patient_ids else "",
                                          "study=" + ",".join(r.study_instance_uids) if r.study_instance_uids
                                          else "", r.resource]))
            outcome = f"{r.outcome} ({r.outcome_detail})" if r.outcome_detail else r.outcome
            click.echo(f"{r.seq:>8} {r.as_dict()['at']} {r.interface:<6} {who} {r.action} {outcome} {what}".rstrip())
        if not records:
            click.echo("no matching audit records", err=True)

    @audit.command("export")
    @settings_options
    @filter_options
    @click.option("--format", "fmt", type=click.Choice(["csv", "fhir", "dicom"]), required=True,
                  help="csv, fhir (R4 Bundle of AuditEvent, JSON) or dicom (PS3.15 A.5 audit messages, XML).")
    @click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
                  help="Write to this file (default: standard output).")
    @click.option("--limit", type=click.IntRange(1), default=None, help="At most this many records.")
    def export_(settings_overrides: dict[str, Any], filters: dict[str, Any], fmt: str, output: Path | None,
                limit: int | None) -> None:
        """Export matching audit records (all by default), oldest first."""
        from voxa.security.audit import search
        from voxa.security.audit_export import to_csv, to_dicom_audit_xml, to_fhir_audit_events

        with _open_index(settings_overrides) as index:
            records = search(index, **filters, limit=limit)
            _record_own_access(index, "audit_export", filters, len(records), {"format": fmt})
        if fmt == "csv":
            body = to_csv(records)
        elif fmt == "fhir":
            body = json.dumps(to_fhir_audit_events(records), indent=2) + "\n"
        else:
            body = to_dicom_audit_xml(records)
        if output is None:
            click.echo(body, nl=False)
        else:
            output.write_text(body, encoding="utf-8")
            click.echo(f"{len(records)} records written to {output}", err=True)
