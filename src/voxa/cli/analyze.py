"""``voxa analyze``: run an analysis tool on a stored series and print its result as JSON."""

from __future__ import annotations

import getpass
import json
import socket
import sys
import time
from typing import Any

import click

from voxa.cli.options import load_settings, settings_options, setup_logging


def _params(values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r}: expected key=value", param_hint="--param")
        out[key.strip()] = value.strip()
    return out


def _actor() -> str:
    try:
        return f"os:{getpass.getuser()}"
    except (KeyError, OSError):
        return "os:unknown"


def register(main: click.Group) -> None:
    @main.command("analyze")
    @settings_options
    @click.argument("tool")
    @click.option("--series", "series", multiple=True, required=True, metavar="UID",
                  help="SeriesInstanceUID of the series to analyse.")
    @click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
                  help="A tool parameter, e.g. --param kvp=120 --param start=10,-20,35 (repeatable).")
    @click.option("--wait/--no-wait", default=True, show_default=True,
                  help="Wait for the result and print it (--no-wait: print the queued analysis; needs Celery "
                       "workers, as the embedded executor runs inside this process).")
    @click.option("--timeout", "timeout_s", type=float, default=3600.0, show_default=True,
                  help="Seconds to wait before cancelling the analysis.")
    def analyze(settings_overrides: dict[str, Any], tool: str, series: tuple[str, ...], params: tuple[str, ...],
                wait: bool, timeout_s: float) -> None:
        """Run analysis TOOL (calcium, cardiac, vessels, measure) on a stored series.

        Prints the analysis as JSON: with --wait (the default) once it finished, with its result
        and the SEG/SR it stored; exits 1 when it failed or was cancelled."""
        from voxa.analysis import results as store
        from voxa.analysis import tools as analysis_tools
        from voxa.runtime import Runtime
        from voxa.security.audit import AuditAction, AuditEvent, AuditInterface

        settings = load_settings(settings_overrides)
        setup_logging("WARNING")
        if not wait and not settings.celery_broker_url:
            raise click.UsageError("--no-wait needs Celery workers (celery_broker_url): the embedded executor "
                                   "runs the analysis inside this command")
        values = _params(params)
        rt = Runtime.open(settings)
        try:
            try:
                study = analysis_tools.study_of_series(rt, series[0])
                result = analysis_tools.submit_analysis(rt, tool=tool, study_instance_uid=study,
                                                        series=list(series), params=values, created_by=_actor())
            except analysis_tools.AnalysisError as e:
                raise click.ClickException(str(e)) from None
            rt.audit.record(AuditEvent(
                actor=_actor(), action=AuditAction.VIEW, source=socket.gethostname(), interface=AuditInterface.CLI,
                study_instance_uids=(study,), resource="analyze",
                detail={"analysis": result.id, "tool": tool, "series": list(series)}))
            if not wait:
                click.echo(json.dumps(result.as_json(with_result=False), indent=2))
                return
            deadline = time.monotonic() + timeout_s
            shown = ""
            try:
                while result.status not in store.FINISHED:
                    if time.monotonic() > deadline:
                        analysis_tools.cancel_analysis(rt, result)
                        raise click.ClickException(f"analysis {result.id} did not finish in {timeout_s:g} s: "
                                                   "cancelled")
                    line = f"{result.stage} {result.progress:.0f}%"
                    if line != shown:
                        click.echo(line, err=True)
                        shown = line
                    time.sleep(0.2)
                    fresh = store.get_result(rt.archive.index, result.id)
                    assert fresh is not None
                    result = fresh
            except KeyboardInterrupt:
                analysis_tools.cancel_analysis(rt, result)
                click.echo(f"analysis {result.id} cancelled", err=True)
                sys.exit(130)
            click.echo(json.dumps(result.as_json(), indent=2))
            if result.status is not store.ResultStatus.DONE:
                raise click.ClickException(f"analysis {result.id} {result.status.value}: {result.error}")
        finally:
            rt.close(grace_s=5)
