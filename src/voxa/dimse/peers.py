"""Known DICOM peers (modalities, workstations, other archives) and what each may do.

Peers live in the index database so that REST and the CLI can manage them while the
server runs; peers named in the configuration file are written there at start-up.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass

from sqlalchemy import delete, select, update

from voxa.archive.index import Index
from voxa.archive.models import Peer, table_of
from voxa.config import PeerSettings
from voxa.dicom.uids import validate_ae_title

T = table_of(Peer)


@dataclass(frozen=True)
class PeerInfo:
    name: str
    aet: str
    host: str
    port: int
    allow_store: bool = True
    allow_find: bool = True
    allow_move: bool = True
    from_config: bool = False
    account: str = ""  # username whose patient-level access applies to this peer (empty: all patients)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class UnknownPeer(LookupError):
    pass


class PeerRegistry:
    def __init__(self, index: Index):
        self.index = index
        self._lock = threading.Lock()
        self._cache: list[PeerInfo] | None = None
        self._loaded_at = 0.0

    # Every association consults the registry; a short time-to-live keeps that off the
    # database while changes made by another process (``voxa peer add``) still apply soon.
    CACHE_TTL_S = 2.0

    def _load(self) -> list[PeerInfo]:
        with self._lock:
            if self._cache is None or time.monotonic() - self._loaded_at > self.CACHE_TTL_S:
                self._loaded_at = time.monotonic()
                with self.index.read() as conn:
                    rows = conn.execute(select(T).order_by(T.c.name)).all()
                self._cache = [
                    PeerInfo(r.name, r.aet, r.host, r.port, r.allow_store, r.allow_find, r.allow_move,
                             r.from_config, r.account or "")
                    for r in rows
                ]
            return self._cache

    def _invalidate(self) -> None:
        with self._lock:
            self._cache = None

    def all(self) -> list[PeerInfo]:
        return list(self._load())

    def by_name(self, name: str) -> PeerInfo:
        for p in self._load():
            if p.name == name:
                return p
        raise UnknownPeer(f"no peer named {name!r}")

    def by_aet(self, aet: str) -> PeerInfo | None:
        aet = aet.strip()
        for p in self._load():
            if p.aet == aet:
                return p
        return None

    def resolve(self, name_or_aet: str) -> PeerInfo:
        """A peer by its name, or failing that by its AE title."""
        for p in self._load():
            if p.name == name_or_aet:
                return p
        found = self.by_aet(name_or_aet)
        if found is None:
            raise UnknownPeer(f"no peer named or titled {name_or_aet!r}")
        return found

    def aet_titles(self) -> list[str]:
        return [p.aet for p in self._load()]

    def put(self, peer: PeerInfo) -> PeerInfo:
        """Create or replace the peer with this name."""
        validate_ae_title(peer.aet)
        if not peer.name or "/" in peer.name:
            raise ValueError("a peer name must be non-empty and contain no '/'")
        if not 0 < peer.port < 65536:
            raise ValueError(f"port {peer.port} is out of range")
        values = asdict(peer)
        with self.index.write() as conn:
            exists = conn.execute(select(T.c.id).where(T.c.name == peer.name)).first()
            if exists:
                conn.execute(update(T).where(T.c.name == peer.name).values(**values))
            else:
                conn.execute(T.insert().values(**values))
        self._invalidate()
        return peer

    def remove(self, name: str) -> None:
        with self.index.write() as conn:
            n = conn.execute(delete(T).where(T.c.name == name)).rowcount
        self._invalidate()
        if not n:
            raise UnknownPeer(f"no peer named {name!r}")

    def sync_from_settings(self, peers: list[PeerSettings]) -> None:
        """Make the configured peers present; peers added over REST/CLI are left alone."""
        wanted = {p.name for p in peers}
        for p in peers:
            self.put(PeerInfo(p.name, p.aet, p.host, p.port, p.allow_store, p.allow_find, p.allow_move,
                              from_config=True, account=p.account.strip().lower()))
        for known in self.all():
            if known.from_config and known.name not in wanted:
                self.remove(known.name)
