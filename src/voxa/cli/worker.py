"""``voxa worker``: a Celery worker that runs analyses queued by the server (Redis broker)."""

from __future__ import annotations

from typing import Any

import click

from voxa.cli.options import load_settings, settings_options, setup_logging


def register(main: click.Group) -> None:
    @main.command("worker")
    @settings_options
    @click.option("--broker", default=None, metavar="URL",
                  help="Celery broker, e.g. redis://127.0.0.1:6379/0 (default: celery_broker_url, "
                       "VOXA_CELERY_BROKER_URL).")
    @click.option("--pool", type=click.Choice(["solo", "prefork", "threads"]), default="solo", show_default=True,
                  help="Celery pool: solo runs one analysis at a time in this process (start more workers to "
                       "run more); prefork forks --concurrency processes.")
    @click.option("--concurrency", type=click.IntRange(1, 256), default=1, show_default=True,
                  help="Analyses run at once (prefork and threads pools).")
    @click.option("--loglevel", default="INFO", show_default=True)
    @click.option("--hostname", default="voxa@%h", show_default=True, help="Worker name (Celery's %h: host).")
    def worker(settings_overrides: dict[str, Any], broker: str | None, pool: str, concurrency: int,
               loglevel: str, hostname: str) -> None:
        """Run analyses from the Celery queue, against the same data folder / database / storage as
        the server (give the same settings)."""
        settings = load_settings(settings_overrides, celery_broker_url=broker)
        if not settings.celery_broker_url:
            raise click.UsageError("no broker: set celery_broker_url (VOXA_CELERY_BROKER_URL) or --broker")
        setup_logging(loglevel)
        try:
            from voxa.jobs.celery_app import configure_worker
        except ModuleNotFoundError as e:
            raise click.ClickException(str(e)) from None
        app = configure_worker(settings)
        argv = ["worker", f"--pool={pool}", f"--loglevel={loglevel}", f"--hostname={hostname}"]
        if pool != "solo":
            argv.append(f"--concurrency={concurrency}")
        app.worker_main(argv=argv)
