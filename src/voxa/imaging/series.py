"""Load a stored series as a :class:`Volume`, cached on disk as a memory-mapped ``.npy``.

Cache layout under ``cache_dir`` (default ``<data_dir>/cache/volumes/``), per series:

* ``<SeriesInstanceUID>.<fingerprint>.npy`` — the voxels (float32, (z, y, x));
* ``<SeriesInstanceUID>.json`` — the geometry and the fingerprint of the ``.npy`` it describes.

The fingerprint is a SHA-256 of the sorted (SOP Instance UID, blob key) pairs and the assembly
options, so adding, removing or replacing an instance rebuilds the volume. Both files are written
to a temporary name and renamed (the JSON last), so a reader never sees a half-written entry.

The cache is bounded (``max_cache_bytes``, the setting ``volume_cache_max_gb``): after each write,
the least recently used entries are removed until the ``.npy`` files fit (a hit touches the
entry's JSON, so its modification time is its last use), and so are the entries of series
that are no longer stored. A removed file that a reader still maps stays readable (POSIX).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from voxa.imaging.assemble import AssemblyError, TiltPolicy, UnevenPolicy, volume_from_datasets
from voxa.imaging.volume import Volume

if TYPE_CHECKING:
    from voxa.archive.index import StoredLocation
    from voxa.archive.ingest import Archive

log = logging.getLogger(__name__)

_CACHE_FORMAT = 1


def default_cache_dir(archive: Archive) -> Path:
    """``<data_dir>/cache/volumes`` for a filesystem archive (its blob root is ``<data_dir>/storage``)."""
    root = getattr(archive.blobs, "root", None)
    if root is None:
        raise ValueError("this archive's blob store has no local folder: pass cache_dir")
    return Path(root).parent / "cache" / "volumes"


def series_fingerprint(locations: list[StoredLocation], *, uneven: str = "resample", tilt: str = "resample") -> str:
    items = sorted((loc.sop_instance_uid, loc.blob_key) for loc in locations)
    text = json.dumps([_CACHE_FORMAT, uneven, tilt, items])
    return hashlib.sha256(text.encode()).hexdigest()


def _read_dataset(archive: Archive, loc: StoredLocation) -> Dataset:
    from voxa.archive.ingest import as_part10

    data = as_part10(archive.blobs.read(loc.blob_key))
    return pydicom.dcmread(io.BytesIO(data))


def _write_atomic(path: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _geometry(volume: Volume, fingerprint: str, npy_name: str) -> dict[str, Any]:
    return {
        "format": _CACHE_FORMAT,
        "fingerprint": fingerprint,
        "voxels": npy_name,
        "shape": list(volume.shape),
        "spacing_mm": list(volume.spacing_mm),
        "origin_mm": list(volume.origin_mm),
        "direction": np.asarray(volume.direction).tolist(),
        "units": volume.units,
        "modality": volume.modality,
        "series_instance_uid": volume.series_instance_uid,
        "sop_instance_uids": list(volume.sop_instance_uids),
        "tilt_deg": volume.tilt_deg,
        "notes": list(volume.notes),
    }


def _from_cache(folder: Path, series_uid: str, fingerprint: str) -> Volume | None:
    meta_path = folder / f"{series_uid}.json"
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != _CACHE_FORMAT or meta.get("fingerprint") != fingerprint:
            return None
        voxels = np.load(folder / meta["voxels"], mmap_mode="r")
        os.utime(meta_path)  # its last use, for the least-recently-used clean-up
    except (OSError, ValueError, KeyError):
        return None
    if list(voxels.shape) != meta["shape"] or voxels.dtype != np.float32:
        return None
    return Volume(
        voxels=voxels,
        spacing_mm=(float(meta["spacing_mm"][0]), float(meta["spacing_mm"][1]), float(meta["spacing_mm"][2])),
        origin_mm=(float(meta["origin_mm"][0]), float(meta["origin_mm"][1]), float(meta["origin_mm"][2])),
        direction=np.asarray(meta["direction"], dtype=np.float64),
        units=meta["units"],
        modality=meta["modality"],
        series_instance_uid=meta["series_instance_uid"],
        sop_instance_uids=tuple(meta["sop_instance_uids"]),
        tilt_deg=float(meta["tilt_deg"]),
        notes=tuple(meta["notes"]),
    )


def _store(folder: Path, series_uid: str, fingerprint: str, volume: Volume) -> Volume:
    folder.mkdir(parents=True, exist_ok=True)
    npy_name = f"{series_uid}.{fingerprint[:24]}.npy"
    voxels = np.ascontiguousarray(volume.voxels, dtype=np.float32)
    _write_atomic(folder / npy_name, lambda f: np.save(f, voxels, allow_pickle=False))
    meta = json.dumps(_geometry(volume, fingerprint, npy_name), indent=1).encode()
    _write_atomic(folder / f"{series_uid}.json", lambda f: f.write(meta))
    for stale in folder.glob(f"{series_uid}.*.npy"):
        if stale.name != npy_name:
            stale.unlink(missing_ok=True)  # open memory maps of it stay valid (POSIX)
    return _from_cache(folder, series_uid, fingerprint) or volume


def load_series_volume(
    archive: Archive,
    series_uid: str,
    *,
    cache_dir: Path | None = None,
    uneven: UnevenPolicy = "resample",
    tilt: TiltPolicy = "resample",
    background_cache_write: bool = True,
    max_cache_bytes: int | None = None,
) -> Volume:
    """The series as a :class:`Volume`, from the cache when its instances have not changed.

    A freshly assembled volume is returned at once and written to the cache in the
    background (``background_cache_write=False``: before returning, as a memory map); then the
    cache is trimmed to ``max_cache_bytes`` (None: no limit; 0: nothing is kept).

    A cached volume's ``voxels`` is a read-only :class:`numpy.memmap`. Raises
    :class:`~voxa.imaging.assemble.AssemblyError` when the series has no instances or cannot
    be assembled (see :func:`~voxa.imaging.assemble.volume_from_datasets`).
    """
    if not series_uid or "/" in series_uid or series_uid.startswith("."):
        raise ValueError(f"invalid series UID {series_uid!r}")
    locations = archive.index.locate(series_uid=series_uid)
    if not locations:
        raise AssemblyError(f"series {series_uid} has no stored instances")
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir(archive)
    fingerprint = series_fingerprint(locations, uneven=uneven, tilt=tilt)
    key = (str(folder), series_uid, fingerprint)
    with _pending_lock:
        pending = _pending.get(key)
    if pending is not None:
        pending.join()
    cached = _from_cache(folder, series_uid, fingerprint)
    if cached is not None:
        return cached
    volume = volume_from_datasets((_read_dataset(archive, loc) for loc in locations), uneven=uneven, tilt=tilt)
    volume.voxels.flags.writeable = False  # shared with the cache writer, as the memmap would be
    if max_cache_bytes == 0:
        return volume
    trim = _Trim(archive, max_cache_bytes)
    if not background_cache_write:
        _store_logged(folder, series_uid, fingerprint, volume, trim)
        return _from_cache(folder, series_uid, fingerprint) or volume
    # Writing 300 MB of voxels takes a good part of a second: the caller gets the volume now,
    # a second load of the series waits for the write and then maps the file.
    writer = threading.Thread(target=_store_logged, args=(folder, series_uid, fingerprint, volume, trim),
                              name=f"volume-cache-{series_uid[-12:]}", daemon=True)
    with _pending_lock:
        _pending[key] = writer
    writer.start()
    return volume


_pending: dict[tuple[str, str, str], threading.Thread] = {}
_pending_lock = threading.Lock()


def flush_cache_writes(timeout_s: float | None = None) -> None:
    """Wait for volume cache files still being written (at shutdown; in tests)."""
    with _pending_lock:
        writers = list(_pending.values())
    for writer in writers:
        writer.join(timeout_s)


class _Trim:
    """What the clean-up after a write needs: the archive (which series are stored) and the limit."""

    def __init__(self, archive: Archive, max_bytes: int | None):
        self.archive = archive
        self.max_bytes = max_bytes

    def __call__(self, folder: Path, keep: str) -> None:
        trim_cache(folder, self.max_bytes, keep=keep, stored=self._stored)

    def _stored(self, series_uid: str) -> bool:
        try:
            return bool(self.archive.index.locate(series_uid=series_uid))
        except Exception:  # noqa: BLE001 - the index unreachable (closing): remove nothing for it
            return True


def trim_cache(folder: Path, max_bytes: int | None, *, keep: str | None = None,
               stored: Any = None) -> list[str]:
    """Remove cache entries of series that ``stored(uid)`` says are gone, then the least recently
    used ones until the ``.npy`` files take at most ``max_bytes`` (None: no limit); ``keep``
    (the series just written) stays. Returns the series UIDs removed."""
    entries: list[tuple[float, str, int]] = []
    for meta in folder.glob("*.json"):
        uid = meta.name[:-len(".json")]
        try:
            mtime = meta.stat().st_mtime
            size = sum(p.stat().st_size for p in folder.glob(f"{uid}.*.npy"))
        except OSError:
            continue
        entries.append((mtime, uid, size))
    removed: list[str] = []
    total = sum(size for _, _, size in entries)
    for _used, uid, size in sorted(entries):  # oldest use first
        gone = stored is not None and uid != keep and not stored(uid)
        over = max_bytes is not None and total > max_bytes and uid != keep
        if not (gone or over):
            continue
        (folder / f"{uid}.json").unlink(missing_ok=True)
        for npy in folder.glob(f"{uid}.*.npy"):
            npy.unlink(missing_ok=True)
        total -= size
        removed.append(uid)
    if removed:
        log.info("volume cache: removed %d entries (%s)", len(removed), "now %.1f GB" % (total / 1e9))
    return removed


def _store_logged(folder: Path, series_uid: str, fingerprint: str, volume: Volume, trim: _Trim | None = None) -> None:
    try:
        _store(folder, series_uid, fingerprint, volume)
        if trim is not None:
            trim(folder, series_uid)
    except OSError as e:  # a full or read-only cache must not stop the viewer
        log.warning("could not cache the volume of series %s: %s", series_uid, e)
    finally:
        with _pending_lock:
            _pending.pop((str(folder), series_uid, fingerprint), None)


__all__ = ["default_cache_dir", "flush_cache_writes", "load_series_volume", "series_fingerprint", "trim_cache"]
