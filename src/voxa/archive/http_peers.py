"""Orthanc peers: other HTTP servers (Orthanc or Voxa) that Voxa sends instances to with
``POST {url}/instances`` -- Orthanc's ``OrthancPeers``, kept in the index.

The table is on the index's metadata (:class:`voxa.archive.models.Base`), so the Alembic
migrations create it.  Passwords are stored as given (as Orthanc keeps them in its
configuration file) and never returned by the REST API.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import DateTime, Integer, String, Table, delete, insert, select, update
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import Mapped, mapped_column

from voxa.archive.index import Index
from voxa.archive.models import Base


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class HttpPeer(Base):
    """An HTTP peer (Orthanc's ``OrthancPeers`` entry)."""

    __tablename__ = "http_peers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    url: Mapped[str] = mapped_column(String(1024))
    username: Mapped[str] = mapped_column(String(128), default="")
    password: Mapped[str] = mapped_column(String(256), default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)


T: Table = HttpPeer.__table__  # type: ignore[assignment]


class UnknownHttpPeer(LookupError):
    pass


class HttpPeersUnavailable(RuntimeError):
    """The ``http_peers`` table does not exist (the database was not migrated)."""


@dataclass(frozen=True)
class HttpPeerInfo:
    name: str
    url: str
    username: str = ""
    password: str = ""

    def __post_init__(self) -> None:
        if not self.name or len(self.name) > 64 or "/" in self.name:
            raise ValueError("a peer name is 1 to 64 characters, without '/'")
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{self.url!r} is not an http:// or https:// URL")

    @property
    def base_url(self) -> str:
        return self.url.rstrip("/")


class HttpPeerRegistry:
    """Read and change the HTTP peers in the index."""

    def __init__(self, index: Index):
        self.index = index

    @staticmethod
    def _guard(exc: Exception) -> HttpPeersUnavailable:
        return HttpPeersUnavailable(
            f"the http_peers table is missing; migrate the index database ({exc.__class__.__name__})")

    def all(self) -> list[HttpPeerInfo]:
        try:
            with self.index.read() as conn:
                rows = conn.execute(
                    select(T.c.name, T.c.url, T.c.username, T.c.password).order_by(T.c.name)).all()
        except (OperationalError, ProgrammingError) as e:
            raise self._guard(e) from None
        return [HttpPeerInfo(r.name, r.url, r.username or "", r.password or "") for r in rows]

    def by_name(self, name: str) -> HttpPeerInfo:
        for peer in self.all():
            if peer.name == name:
                return peer
        raise UnknownHttpPeer(f"no peer named {name!r}")

    def put(self, peer: HttpPeerInfo) -> None:
        now = _now()
        values = {"url": peer.url, "username": peer.username, "password": peer.password, "updated_at": now}
        try:
            with self.index.write() as conn:
                done = conn.execute(update(T).where(T.c.name == peer.name).values(**values)).rowcount
                if not done:
                    conn.execute(insert(T).values(name=peer.name, created_at=now, **values))
        except (OperationalError, ProgrammingError) as e:
            raise self._guard(e) from None

    def remove(self, name: str) -> None:
        try:
            with self.index.write() as conn:
                done = conn.execute(delete(T).where(T.c.name == name)).rowcount
        except (OperationalError, ProgrammingError) as e:
            raise self._guard(e) from None
        if not done:
            raise UnknownHttpPeer(f"no peer named {name!r}")
