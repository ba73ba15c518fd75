"""Alembic environment: runs against the engine Voxa already opened (or the configured URL)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from voxa.analysis import results  # noqa: F401  (analysis_results table)
from voxa.archive import http_peers  # noqa: F401  (registers its table on Base)
from voxa.archive.models import Base
from voxa.measurements import store  # noqa: F401  (measurements table)
from voxa.security import audit, models  # noqa: F401  (accounts and audit tables)

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    engine = config.attributes.get("engine")
    if engine is None:
        engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
