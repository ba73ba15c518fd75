"""The Alembic migrations create exactly the schema the models describe, on both back-ends."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from voxa.archive import http_peers  # noqa: F401  (its table is part of the metadata)
from voxa.archive.database import create_index_engine, schema_is_current, upgrade
from voxa.archive.models import Base
from voxa.security import audit, models  # noqa: F401  (accounts and audit tables)


def test_migrations_reach_the_models(database_url: str) -> None:
    engine = create_index_engine(database_url)
    upgrade(engine)
    assert schema_is_current(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == [], f"models and migrations differ; add a migration: {diff}"
