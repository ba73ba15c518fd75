"""Load a stored series as a :class:`Volume`, cached on disk as a memory-mapped ``.npy``.

Cache layout under ``cache_dir`` (default ``<data_dir>/cache/volumes/``), per series:

* ``<SeriesInstanceUID>.<fingerprint>.npy`` — the voxels (float32, (z, y, x));
* ``<SeriesInstanceUID>.json`` — the geometry and the fingerprint of the ``.npy`` it describes.

The fingerprint is a SHA-256 of the sorted (SOP Instance UID, blob key) pairs and the assembly
options, so adding, removing or replacing an instance rebuilds the volume. Both files are written
to a temporary name and renamed (the JSON last), so a reader never sees a half-written entry.
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
) -> Volume:
    """The series as a :class:`Volume`, from the cache when its instances have not changed.

    A freshly assembled volume is returned at once and written to the cache in the
    background (``background_cache_write=False``: before returning, as a memory map).

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
    if not background_cache_write:
        _store_logged(folder, series_uid, fingerprint, volume)
        return _from_cache(folder, series_uid, fingerprint) or volume
    # Writing 300 MB of voxels takes a good part of a second: the caller gets the volume now,
    # a second load of the series waits for the write and then maps the file.
    writer = threading.Thread(target=_store_logged, args=(folder, series_uid, fingerprint, volume),
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


def _store_logged(folder: Path, series_uid: str, fingerprint: str, volume: Volume) -> None:
    try:
        _store(folder, series_uid, fingerprint, volume)
    except OSError as e:  # a full or read-only cache must not stop the viewer
        log.warning("could not cache the volume of series %s: %s", series_uid, e)
    finally:
        with _pending_lock:
            _pending.pop((str(folder), series_uid, fingerprint), None)


__all__ = ["default_cache_dir", "flush_cache_writes", "load_series_volume", "series_fingerprint"]
