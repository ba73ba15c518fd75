"""The rendered-image cache: encoded JPEG/PNG renderings on disk, bounded in size.

Correctness does not depend on hearing about changes:

* the key includes the instance's index row id and blob key, and every stored file gets a
  fresh blob key (also when ``duplicate_policy=overwrite`` replaces an instance), so a
  changed instance never hits an old entry;
* every request first finds the instance in the index, so a deleted instance is answered
  404 before the cache is looked at.

Files of deleted or replaced instances are also removed, so that rendered patient images
do not outlive the instance on disk: entries live in one folder per SOP Instance UID, which
is purged when the change log reports ``DeletedInstance`` (checked at most every few
seconds, from the requests that use the cache; other processes' deletions arrive the same
way) or when this process replaces the instance.  What is missed (deletions while no
server ran) is unreachable and goes with the LRU eviction: when the folder grows past its
limit, the least recently used files (by modification time, refreshed on hits) are removed
down to 80 % of it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
import time
import uuid
from pathlib import Path

from sqlalchemy import func, select

from voxa.archive.index import Index
from voxa.archive.models import Change, table_of

log = logging.getLogger(__name__)

CH = table_of(Change)
_TOUCH_AFTER_S = 60.0
_SYNC_EVERY_S = 5.0


def _h(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


class RenderedCache:
    def __init__(self, root: Path, max_bytes: int, index: Index | None = None):
        self.root = Path(root)
        self.max_bytes = max(0, int(max_bytes))
        self._index = index
        self._lock = threading.Lock()
        self._evict_lock = threading.Lock()
        self._bytes: int | None = None  # measured lazily on first put
        self._last_seq = index.last_change_seq() if index is not None else 0
        self._last_sync = time.monotonic()
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def _instance_dir(self, sop_uid: str) -> Path:
        h = _h(sop_uid)
        return self.root / h[:2] / h

    def path_for(self, sop_uid: str, instance_row_id: int, blob_key: str, part: str, params_token: str,
                 ext: str) -> Path:
        key = _h(f"{instance_row_id}|{blob_key}|{part}|{params_token}")
        return self._instance_dir(sop_uid) / f"{key[:32]}.{ext}"

    @staticmethod
    def etag(path: Path) -> str:
        return f'"{path.stem}"'

    # -- read / write ---------------------------------------------------------------------

    def get(self, path: Path) -> bytes | None:
        if not self.enabled:
            return None
        try:
            st = os.stat(path)
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            self.misses += 1
            return None
        if time.time() - st.st_mtime > _TOUCH_AFTER_S:
            try:
                os.utime(path)  # LRU by modification time (atime is unreliable with relatime)
            except OSError:
                pass
        self.hits += 1
        return data

    def put(self, path: Path, data: bytes) -> None:
        if not self.enabled or len(data) > self.max_bytes // 4:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except OSError as e:
            log.warning("rendered cache: cannot write %s: %s", path, e)
            return
        with self._lock:
            if self._bytes is None:
                self._bytes = self._measure()
            self._bytes += len(data)
            over = self._bytes > self.max_bytes
        if over:
            self.evict()

    def _measure(self) -> int:
        total = 0
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                try:
                    total += os.stat(os.path.join(dirpath, name)).st_size
                except FileNotFoundError:
                    pass
        return total

    def evict(self) -> None:
        """Remove least recently used files down to 80 % of the limit (one evictor at a time)."""
        if not self._evict_lock.acquire(blocking=False):
            return
        try:
            entries: list[tuple[float, int, str]] = []
            for dirpath, _dirs, files in os.walk(self.root):
                for name in files:
                    p = os.path.join(dirpath, name)
                    try:
                        st = os.stat(p)
                    except FileNotFoundError:
                        continue
                    entries.append((st.st_mtime, st.st_size, p))
            total = sum(e[1] for e in entries)
            target = int(self.max_bytes * 0.8)
            entries.sort()
            for _mtime, size, p in entries:
                if total <= target:
                    break
                try:
                    os.unlink(p)
                    total -= size
                except FileNotFoundError:
                    total -= size
                parent = os.path.dirname(p)
                try:
                    os.rmdir(parent)  # only when empty
                except OSError:
                    pass
            with self._lock:
                self._bytes = total
        finally:
            self._evict_lock.release()

    # -- invalidation ---------------------------------------------------------------------

    def purge_instance(self, sop_uid: str) -> None:
        if sop_uid:
            shutil.rmtree(self._instance_dir(sop_uid), ignore_errors=True)
            with self._lock:
                self._bytes = None  # re-measured at the next put

    def sync_deletions(self, force: bool = False) -> int:
        """Purge the entries of instances the change log reports deleted since the last call."""
        if self._index is None:
            return 0
        now = time.monotonic()
        with self._lock:
            if not force and now - self._last_sync < _SYNC_EVERY_S:
                return 0
            self._last_sync = now
            since = self._last_seq
        with self._index.read() as conn:
            top = int(conn.execute(select(func.coalesce(func.max(CH.c.seq), 0))).scalar_one())
            uids = conn.execute(
                select(CH.c.uid).where(CH.c.seq > since, CH.c.seq <= top, CH.c.change_type == "DeletedInstance")
            ).scalars().all()
        for uid in uids:
            self.purge_instance(uid)
        with self._lock:
            self._last_seq = max(self._last_seq, top)
        purged = len(uids)
        return purged
