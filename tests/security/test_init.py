"""``voxa init``: checks, configuration and the first administrator, without prompts."""

from __future__ import annotations

import socket
import tomllib
from pathlib import Path

from click.testing import CliRunner
from support import free_port

from voxa.archive import open_archive
from voxa.cli import main
from voxa.config import Settings
from voxa.security.accounts import Accounts


def test_init_writes_config_and_creates_the_administrator(tmp_path: Path) -> None:
    data = tmp_path / "data"
    dicom_port, http_port = free_port(), free_port()
    args = ["init", "--data-dir", str(data), "--aet", "PACS1", "--dicom-port", str(dicom_port),
            "--http-port", str(http_port), "--admin-user", "Admin", "--admin-password",
            "Correct-Horse-42-battery", "--non-interactive"]
    r = CliRunner().invoke(main, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "administrator: admin created" in r.output and "Next steps" in r.output
    config = tomllib.loads((data / "voxa.toml").read_text())["voxa"]
    assert config["aet"] == "PACS1" and config["dicom_port"] == dicom_port and config["http_port"] == http_port
    loaded = Settings.load(data / "voxa.toml")
    assert loaded.aet == "PACS1" and loaded.accept_unknown_peers is False
    archive = open_archive(Settings(data_dir=data))
    accounts = Accounts(archive.index)
    assert accounts.authenticate("admin", "Correct-Horse-42-battery").role == "super_admin"
    archive.close()
    # Running it again keeps the configuration and the administrator.
    again = CliRunner().invoke(main, args[:-5] + ["--non-interactive"], catch_exceptions=False)
    assert again.exit_code == 0 and "already exists" in again.output and "left unchanged" in again.output


def test_init_refuses_a_busy_port_and_a_weak_password(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = CliRunner().invoke(main, ["init", "--data-dir", str(tmp_path / "a"), "--dicom-port", str(port),
                                      "--http-port", str(free_port()), "--non-interactive"])
    assert r.exit_code == 1 and f"DICOM port {port} is in use" in r.output
    r = CliRunner().invoke(main, ["init", "--data-dir", str(tmp_path / "b"), "--dicom-port", str(free_port()),
                                  "--http-port", str(free_port()), "--admin-user", "admin",
                                  "--admin-password", "short", "--non-interactive"])
    assert r.exit_code == 1 and "password" in r.output.lower()
    r = CliRunner().invoke(main, ["init", "--data-dir", str(tmp_path / "c"), "--dicom-port", str(free_port()),
                                  "--http-port", str(free_port()), "--non-interactive"])
    assert r.exit_code == 2 and "--non-interactive" in r.output
