"""``voxa worklist``: schedule, list and remove Modality Worklist items in the index."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from voxa.cli.options import load_settings, settings_options, setup_logging


@contextmanager
def _open_index(overrides: dict[str, Any]) -> Iterator[Any]:
    # Only the index is needed: no job workers, no peer sync, unlike a full Runtime.
    from voxa.archive import open_archive

    settings = load_settings(overrides)
    setup_logging("WARNING")
    archive = open_archive(settings)
    try:
        yield archive.index
    finally:
        archive.index.engine.dispose()


_COLUMNS = (("id", 5), ("status", 12), ("scheduled_start_date", 9), ("scheduled_start_time", 7),
            ("modality", 5), ("scheduled_station_aet", 12), ("accession_number", 16), ("patient_id", 12),
            ("patient_name", 0))


def register(main: click.Group) -> None:
    @main.group()
    def worklist() -> None:
        """Modality Worklist items offered to modalities (C-FIND) and tracked by MPPS."""

    @worklist.command("add")
    @settings_options
    @click.option("--patient-id", required=True)
    @click.option("--patient-name", required=True, help="DICOM PN, e.g. 'Doe^Jane'.")
    @click.option("--birth-date", help="YYYYMMDD.")
    @click.option("--sex", type=click.Choice(["M", "F", "O"], case_sensitive=False))
    @click.option("--modality", help="e.g. CT, MR, CR.")
    @click.option("--station-aet", help="AE title of the modality that should perform the step.")
    @click.option("--station-name")
    @click.option("--date", help="Scheduled start date, YYYYMMDD.")
    @click.option("--time", help="Scheduled start time, HHMMSS or HH:MM.")
    @click.option("--accession", help="Accession Number (generated when absent).")
    @click.option("--procedure", help="Requested Procedure Description.")
    @click.option("--procedure-id", help="Requested Procedure ID (generated when absent).")
    @click.option("--step-id", help="Scheduled Procedure Step ID (generated when absent).")
    @click.option("--step-description", help="Scheduled Procedure Step Description.")
    @click.option("--study-uid", help="Study Instance UID (generated when absent).")
    @click.option("--referring-physician")
    @click.option("--performing-physician")
    def add(settings_overrides: dict[str, Any], **opts: Any) -> None:
        """Schedule a procedure step; prints the created item as JSON."""
        from voxa.dimse.worklist import create_item

        fields = {
            "patient_id": opts["patient_id"], "patient_name": opts["patient_name"],
            "patient_birth_date": opts["birth_date"], "patient_sex": opts["sex"],
            "modality": opts["modality"], "scheduled_station_aet": opts["station_aet"],
            "scheduled_station_name": opts["station_name"], "scheduled_start_date": opts["date"],
            "scheduled_start_time": opts["time"], "accession_number": opts["accession"],
            "requested_procedure_description": opts["procedure"],
            "requested_procedure_id": opts["procedure_id"],
            "scheduled_procedure_step_id": opts["step_id"],
            "scheduled_procedure_step_description": opts["step_description"],
            "study_instance_uid": opts["study_uid"],
            "referring_physician_name": opts["referring_physician"],
            "scheduled_performing_physician_name": opts["performing_physician"],
        }
        with _open_index(settings_overrides) as index:
            try:
                item = create_item(index, **fields)
            except ValueError as e:
                raise click.ClickException(str(e)) from None
        click.echo(json.dumps(item, indent=2, ensure_ascii=False))

    @worklist.command("list")
    @settings_options
    @click.option("--status", help="SCHEDULED, IN PROGRESS, COMPLETED or DISCONTINUED (default: all).")
    @click.option("--modality")
    @click.option("--station-aet")
    @click.option("--date", help="YYYYMMDD or a range YYYYMMDD-YYYYMMDD.")
    @click.option("--json", "as_json", is_flag=True, help="Print the items as JSON.")
    def list_(settings_overrides: dict[str, Any], status: str | None, modality: str | None,
              station_aet: str | None, date: str | None, as_json: bool) -> None:
        """List worklist items in scheduled order."""
        from voxa.dimse.worklist import list_items

        with _open_index(settings_overrides) as index:
            try:
                items = list_items(index, status=status, modality=modality, station_aet=station_aet, date=date)
            except ValueError as e:
                raise click.ClickException(str(e)) from None
        if as_json:
            click.echo(json.dumps(items, indent=2, ensure_ascii=False))
            return
        if not items:
            click.echo("no worklist items")
            return
        for item in items:
            click.echo("  ".join(str(item[name]).ljust(width) for name, width in _COLUMNS).rstrip())

    @worklist.command("remove")
    @settings_options
    @click.argument("item_id", metavar="ID", type=int)
    def remove(settings_overrides: dict[str, Any], item_id: int) -> None:
        """Remove a worklist item (its performed steps are kept, unlinked)."""
        from voxa.dimse.worklist import delete_item

        with _open_index(settings_overrides) as index:
            try:
                delete_item(index, item_id)
            except LookupError as e:
                raise click.ClickException(str(e)) from None
        click.echo(f"worklist item {item_id} removed")
