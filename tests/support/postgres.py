"""A private, throw-away PostgreSQL cluster for tests.

The cluster lives in a temporary folder, listens on 127.0.0.1 on a free port (its Unix
socket in the same folder, so no /var/run/postgresql is needed), trusts local connections
and runs with fsync off. PostgreSQL refuses to run as root, so when the tests run as root
the server runs as the ``postgres`` OS user (``runuser``), which owns the folder.
Only this cluster is ever stopped: ``pg_ctl stop`` on its own data folder.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .ports import free_port

PG_BIN_CANDIDATES = (
    "/usr/lib/postgresql/15/bin",
    "/usr/lib/postgresql/16/bin",
    "/usr/lib/postgresql/17/bin",
    "/usr/lib/postgresql/14/bin",
    "/usr/local/bin",
)
PG_OS_USER = "postgres"
PG_SUPERUSER = "postgres"
_DBNAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PostgresUnavailable(RuntimeError):
    """PostgreSQL binaries (or a user to run them as) are missing on this machine."""


def find_pg_bin() -> Path | None:
    """Folder holding initdb, pg_ctl and postgres, or None."""
    env_dir = os.environ.get("VOXA_PG_BIN")
    candidates = (env_dir,) if env_dir else PG_BIN_CANDIDATES
    for folder in candidates:
        if folder and all(
            os.access(Path(folder, tool), os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")
        ):
            return Path(folder)
    return None


def _run_as_user_prefix() -> list[str]:
    """Command prefix that runs a PostgreSQL binary as a non-root user."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(PG_OS_USER)
    except KeyError as exc:
        raise PostgresUnavailable(
            f"running as root and there is no '{PG_OS_USER}' OS user to run PostgreSQL as"
        ) from exc
    runuser = shutil.which("runuser")
    if runuser is None:
        raise PostgresUnavailable("running as root and 'runuser' (util-linux) is missing")
    return [runuser, "-u", PG_OS_USER, "--"]


@dataclass
class PostgresServer:
    """A running private PostgreSQL cluster (see module docstring)."""

    host: str
    port: int
    base_dir: Path
    bin_dir: Path
    _prefix: list[str] = field(repr=False)
    _created: list[str] = field(default_factory=list, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base_dir

    @property
    def log_path(self) -> Path:
        return self.base_dir / "postgres.log"

    def url(self, dbname: str = "postgres") -> str:
        """SQLAlchemy URL (psycopg 3 driver) of database ``dbname`` on this server."""
        return f"postgresql+psycopg://{PG_SUPERUSER}@{self.host}:{self.port}/{dbname}"

    def dsn(self, dbname: str = "postgres") -> str:
        """libpq connection string (for psycopg.connect)."""
        return f"host={self.host} port={self.port} user={PG_SUPERUSER} dbname={dbname}"

    def create_database(self, name: str) -> str:
        """Create an empty database ``name`` (lower-case identifier) and return its URL."""
        if not _DBNAME_RE.match(name):
            raise ValueError(f"not a plain lower-case database name: {name!r}")
        try:
            import psycopg
        except ImportError:  # pragma: no cover - psycopg is a dependency of voxa
            self._pg_tool("createdb", "-h", self.host, "-p", str(self.port), "-U", PG_SUPERUSER, name)
        else:
            with psycopg.connect(self.dsn("postgres"), autocommit=True, connect_timeout=10) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
        self._created.append(name)
        return self.url(name)

    def is_running(self) -> bool:
        proc = self._pg_tool("pg_ctl", "-D", str(self.data_dir), "status", check=False)
        return proc.returncode == 0

    def stop(self) -> None:
        """Stop this cluster (fast shutdown). Safe to call twice."""
        if not self.data_dir.exists():
            return
        if self.is_running():
            self._pg_tool(
                "pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "60", "stop", check=False
            )

    def _pg_tool(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run_pg(self._prefix, self.bin_dir / tool, *args, cwd=self.base_dir, check=check)


def _run_pg(
    prefix: list[str], tool: Path, *args: str, cwd: Path, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    proc = subprocess.run(
        [*prefix, str(tool), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{tool.name} {' '.join(args)} failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def start_postgres(*, host: str = "127.0.0.1", attempts: int = 3) -> PostgresServer:
    """Create and start a private cluster in a new temporary folder; return it running.

    Raises PostgresUnavailable when the binaries are missing, RuntimeError when it fails to start.
    The caller must call ``stop()`` and then remove ``base_dir`` (see ``remove_postgres``).
    """
    bin_dir = find_pg_bin()
    if bin_dir is None:
        raise PostgresUnavailable(
            "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in "
            + ", ".join(PG_BIN_CANDIDATES)
            + " (apt-get install postgresql)"
        )
    prefix = _run_as_user_prefix()

    # Not under pytest's tmp_path: that is private to root (0700), and the server runs as 'postgres'.
    base_dir = Path(tempfile.mkdtemp(prefix="voxa-pg-"))
    if prefix:
        pw = pwd.getpwnam(PG_OS_USER)
        os.chown(base_dir, pw.pw_uid, pw.pw_gid)
    os.chmod(base_dir, 0o700)

    server = PostgresServer(host=host, port=0, base_dir=base_dir, bin_dir=bin_dir, _prefix=prefix)
    try:
        _run_pg(
            prefix,
            bin_dir / "initdb",
            "-D",
            str(server.data_dir),
            "-U",
            PG_SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
            cwd=base_dir,
        )
        last_error = ""
        for _ in range(attempts):
            port = free_port(host)
            options = " ".join(
                [
                    f"-c listen_addresses={host}",
                    f"-p {port}",
                    f"-k {base_dir}",
                    "-c fsync=off",
                    "-c synchronous_commit=off",
                    "-c full_page_writes=off",
                    "-c max_connections=200",
                ]
            )
            proc = _run_pg(
                prefix,
                bin_dir / "pg_ctl",
                "-D",
                str(server.data_dir),
                "-l",
                str(server.log_path),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
                cwd=base_dir,
                check=False,
            )
            if proc.returncode == 0:
                server.port = port
                return server
            last_error = proc.stdout + proc.stderr + _tail(server.log_path)
            time.sleep(0.2)
        raise RuntimeError(f"PostgreSQL did not start after {attempts} attempts:\n{last_error}")
    except BaseException:
        server.stop()
        shutil.rmtree(base_dir, ignore_errors=True)
        raise


def remove_postgres(server: PostgresServer) -> None:
    """Stop the cluster and delete its folder."""
    try:
        server.stop()
    finally:
        shutil.rmtree(server.base_dir, ignore_errors=True)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
