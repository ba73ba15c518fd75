"""``voxa init``: the setup wizard — check the machine, write the configuration, create the
first administrator, and say what to do next."""

from __future__ import annotations

import shutil
import socket
import sys
from pathlib import Path
from typing import Any

import click

from voxa.cli.options import setup_logging

MIN_FREE_GB = 2.0


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(path: Path, *, data_dir: Path, aet: str, dicom_port: int, http_port: int) -> None:
    path.write_text(
        "# Written by `voxa init`; every key is documented in docs/configuration.md.\n"
        "[voxa]\n"
        f"data_dir = {_toml_string(str(data_dir))}\n"
        f"aet = {_toml_string(aet)}\n"
        f"dicom_port = {dicom_port}\n"
        f"http_port = {http_port}\n"
        "accept_unknown_peers = false\n"
        "\n"
        "# Add each modality, workstation or PACS that may talk to Voxa:\n"
        "# [[voxa.peers]]\n"
        '# name = "ct1"\n'
        '# aet = "CT_SCANNER_1"\n'
        '# host = "10.0.0.21"\n'
        "# port = 104\n"
    )


def register(main: click.Group) -> None:
    @main.command()
    @click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("voxa-data"),
                  show_default=True, help="Folder for the index, stored files and the configuration.")
    @click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
                  help="Where to write the configuration (default: DATA_DIR/voxa.toml).")
    @click.option("--aet", default="VOXA", show_default=True, help="Voxa's DICOM AE title.")
    @click.option("--dicom-port", type=int, default=4242, show_default=True)
    @click.option("--http-port", type=int, default=8042, show_default=True)
    @click.option("--admin-user", default=None, help="Username of the first administrator.")
    @click.option("--admin-password", default=None, help="Their password (prompted for when omitted).")
    @click.option("--database-url", default=None, help="PostgreSQL URL; default SQLite in the data folder.")
    @click.option("--non-interactive", is_flag=True, help="Never prompt; fail when a value is missing.")
    def init(data_dir: Path, config_path: Path | None, aet: str, dicom_port: int, http_port: int,
             admin_user: str | None, admin_password: str | None, database_url: str | None,
             non_interactive: bool) -> None:
        """Set up a new Voxa installation: checks, configuration, first administrator."""
        from voxa.archive import open_archive
        from voxa.config import Settings
        from voxa.dicom.uids import InvalidIdentifier, validate_ae_title
        from voxa.security.accounts import AccountError, Accounts
        from voxa.security.passwords import WeakPassword
        from voxa.security.secretbox import SecretBox, load_or_create_key

        setup_logging("WARNING")
        interactive = not non_interactive and sys.stdin.isatty()

        def ask(label: str, default: Any = None, hide: bool = False) -> Any:
            if not interactive:
                raise click.UsageError(f"{label} is required with --non-interactive (or without a terminal)")
            return click.prompt(label, default=default, hide_input=hide, confirmation_prompt=hide)

        try:
            aet = validate_ae_title(aet)
        except InvalidIdentifier as e:
            raise click.UsageError(str(e)) from None

        # 1. Checks that would otherwise only show when the server starts.
        problems = []
        for what, port in (("DICOM", dicom_port), ("HTTP", http_port)):
            if not port_is_free("0.0.0.0", port):
                problems.append(f"{what} port {port} is in use (choose another with --{what.lower()}-port)")
        data_dir.mkdir(parents=True, exist_ok=True)
        free_gb = shutil.disk_usage(data_dir).free / 1e9
        if free_gb < MIN_FREE_GB:
            problems.append(f"only {free_gb:.1f} GB free in {data_dir}; at least {MIN_FREE_GB} GB is needed")
        for p in problems:
            click.echo(f"problem: {p}", err=True)
        if problems:
            sys.exit(1)
        click.echo(f"checks: ports {dicom_port} (DICOM) and {http_port} (HTTP) free, {free_gb:.0f} GB free")

        # 2. Configuration.
        config_path = config_path or data_dir / "voxa.toml"
        if config_path.exists():
            click.echo(f"configuration: {config_path} exists, left unchanged")
        else:
            write_config(config_path, data_dir=data_dir.resolve(), aet=aet, dicom_port=dicom_port,
                         http_port=http_port)
            click.echo(f"configuration: written to {config_path}")

        # 3. Database and the first administrator.
        settings = Settings(data_dir=data_dir, database_url=database_url, aet=aet)
        archive = open_archive(settings)
        try:
            accounts = Accounts(archive.index, secret_box=SecretBox(load_or_create_key(settings.effective_secret_key_file)))
            accounts.ensure_default_roles()
            admins = [u for u in accounts.list_users() if u.role == "super_admin" and not u.disabled]
            if admins and not admin_user:
                click.echo(f"administrator: {admins[0].username} already exists")
            else:
                username = admin_user or ask("Administrator username", default="admin")
                password = admin_password or ask("Administrator password", hide=True)
                try:
                    user = accounts.create_user(username, password, role="super_admin",
                                                display_name="Administrator")
                except (AccountError, WeakPassword) as e:
                    raise click.ClickException(str(e)) from None
                click.echo(f"administrator: {user.username} created (role super_admin)")
        finally:
            archive.close()

        config_arg = f" --config {config_path}"
        click.echo(
            "\nNext steps:\n"
            f"  1. Start Voxa:          voxa serve{config_arg}\n"
            f"  2. Configure a modality: voxa peer add{config_arg} ct1 CT_SCANNER_1 10.0.0.21 104\n"
            f"     and point it at AE title {aet}, port {dicom_port} on this machine\n"
            f"  3. Add users:           voxa user add{config_arg} --role radiologist alice\n"
            f"  4. Back up {data_dir.resolve()} (index and stored files) regularly\n"
        )
