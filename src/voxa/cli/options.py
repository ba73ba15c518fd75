"""Options shared by the commands that open a data folder."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from voxa.config import Settings


def settings_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    @click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
                  envvar="VOXA_CONFIG", help="TOML configuration file (also VOXA_CONFIG).")
    @click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                  help="Data folder: index, stored files, caches (VOXA_DATA_DIR; default ./voxa-data).")
    @click.option("--database-url", default=None,
                  help="Index database URL, e.g. postgresql+psycopg://user@host/voxa (VOXA_DATABASE_URL).")
    @functools.wraps(fn)
    def wrapper(*args: Any, config_file: Path | None, data_dir: Path | None, database_url: str | None,
                **kwargs: Any) -> Any:
        kwargs["settings_overrides"] = {"config_file": config_file, "data_dir": data_dir,
                                        "database_url": database_url}
        return fn(*args, **kwargs)

    return wrapper


def load_settings(overrides: dict[str, Any], **more: Any) -> Settings:
    merged = {**overrides, **more}
    config_file = merged.pop("config_file", None)
    try:
        return Settings.load(config_file, **merged)
    except FileNotFoundError as e:
        raise click.ClickException(str(e)) from None
    except ValueError as e:
        raise click.ClickException(f"invalid configuration: {e}") from None


def setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
