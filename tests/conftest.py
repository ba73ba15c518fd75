"""Shared fixtures: private real peers (PostgreSQL, Orthanc, Redis) and the index database URL.

Fixtures (see tests/support/ for the helpers behind them):

* ``postgres_server`` (session) -> ``PostgresServer``: a private PostgreSQL cluster on
  127.0.0.1:<free port>; ``.url(dbname)``, ``.create_database(name) -> url``.
* ``database_url`` (function, parametrized ``sqlite`` / ``postgresql``) -> SQLAlchemy URL of a
  fresh, empty database: every test that requests it runs once per index backend.
* ``orthanc_bind_shim`` (session) -> path of the compiled LD_PRELOAD bind shim.
* ``orthanc_peer`` (function) -> ``OrthancPeerFactory``: ``orthanc_peer(aet="ORTHANC",
  modalities={"voxa": ["VOXA", "127.0.0.1", port]}) -> OrthancPeer`` with ``aet``,
  ``dicom_port``, ``http_port``, ``url``, ``dicomweb_url``, ``storage_dir``, ``stop()``.
  Every peer started is stopped at the end of the test.
* ``redis_server`` (session) -> ``RedisServer`` with ``.url`` (``redis://127.0.0.1:PORT/0``).

Helpers to import in tests: ``from support import free_port``,
``from support.dcmtk import run_dcmtk, require_dcmtk``.

A missing peer skips the test, or fails it when ``VOXA_REQUIRE_POSTGRES=1`` (PostgreSQL) /
``VOXA_REQUIRE_INTEROP=1`` (Orthanc, DCMTK, Redis) is set, as ``scripts/test.sh`` does.
Tests that use a real peer get the ``interop`` marker automatically (``-m "not interop"``
runs the rest).
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_TESTS_DIR = Path(__file__).resolve().parent
if str(_TESTS_DIR) not in sys.path:
    # makes `import support` work in every import mode, with or without __init__.py files
    sys.path.insert(0, str(_TESTS_DIR))

from support import skip_or_fail  # noqa: E402
from support.orthanc import (  # noqa: E402
    OrthancPeerFactory,
    OrthancUnavailable,
    build_bind_shim,
    orthanc_binary,
)
from support.postgres import PostgresServer, PostgresUnavailable, remove_postgres, start_postgres  # noqa: E402
from support.redis import RedisServer, RedisUnavailable, start_redis  # noqa: E402

# tests/support holds helpers, not tests
collect_ignore = ["support"]

_PEER_FIXTURES = frozenset({"postgres_server", "orthanc_peer", "orthanc_bind_shim", "redis_server"})
_database_numbers = itertools.count(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        uses_peer = bool(_PEER_FIXTURES.intersection(getattr(item, "fixturenames", ())))
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("database_url") == "postgresql":
            uses_peer = True
        if uses_peer:
            item.add_marker(pytest.mark.interop)


# --------------------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A private PostgreSQL cluster for the whole session (stopped and deleted at the end)."""
    unavailable = ""
    try:
        server = start_postgres()
    except PostgresUnavailable as exc:
        unavailable = str(exc)
    if unavailable:  # skipped/failed outside the except block: no chained traceback
        skip_or_fail(unavailable, require_env="VOXA_REQUIRE_POSTGRES")
    try:
        yield server
    finally:
        remove_postgres(server)


@pytest.fixture(params=["sqlite", "postgresql"], ids=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """SQLAlchemy URL of a fresh, empty index database, once for SQLite and once for PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'index.sqlite'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database(f"voxa_test_{next(_database_numbers)}")


# --------------------------------------------------------------------------- Orthanc


@pytest.fixture(scope="session")
def orthanc_bind_shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bind_localhost.so, compiled once per session (forces Orthanc's wildcard binds to 127.0.0.1)."""
    if orthanc_binary() is None:
        skip_or_fail("Orthanc is not installed (/usr/sbin/Orthanc; apt-get install orthanc orthanc-dicomweb)")
    try:
        return build_bind_shim(tmp_path_factory.mktemp("bind-shim"))
    except OrthancUnavailable as exc:
        unavailable = str(exc)
    skip_or_fail(unavailable)


@pytest.fixture
def orthanc_peer(tmp_path: Path, orthanc_bind_shim: Path) -> Iterator[OrthancPeerFactory]:
    """Factory for private Orthanc peers; each one started is stopped (by PID) after the test."""
    factory = OrthancPeerFactory(tmp_path, orthanc_bind_shim)
    try:
        yield factory
    finally:
        factory.stop_all()


# --------------------------------------------------------------------------- Redis


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private redis-server for the whole session (no persistence), stopped by PID at the end."""
    unavailable = ""
    try:
        server = start_redis(tmp_path_factory.mktemp("redis"))
    except RedisUnavailable as exc:
        unavailable = str(exc)
    if unavailable:
        skip_or_fail(unavailable)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def voxa_factory(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    """Start in-process Voxa servers: ``voxa_factory(database_url=None, aet="VOXA", peers=[...],
    accept_unknown_peers=False, http=False, **settings) -> VoxaInstance``; stopped at test end.

    Without a ``database_url`` the index is SQLite, or a fresh PostgreSQL database when the
    environment says ``VOXA_TEST_DATABASE=postgresql`` (scripts/test.sh runs the server tests
    a second time that way)."""
    from support.voxa import start_voxa

    started: list[Any] = []
    counter = itertools.count()
    use_postgres = os.environ.get("VOXA_TEST_DATABASE") == "postgresql"

    def factory(**kwargs: Any) -> Any:
        if use_postgres and not kwargs.get("database_url"):
            server: PostgresServer = request.getfixturevalue("postgres_server")
            kwargs["database_url"] = server.create_database(f"voxa_test_{next(_database_numbers)}")
        data_dir = kwargs.pop("data_dir", None) or tmp_path / f"voxa{next(counter)}"
        inst = start_voxa(data_dir, **kwargs)
        started.append(inst)
        return inst

    yield factory
    for inst in reversed(started):
        inst.stop()
