"""Where stored DICOM files live: a small interface and its filesystem implementation.

Keys are relative paths chosen by the archive (``ab/c/<uuid>.dcm``).  ``put`` is durable
before it returns: data goes to a temporary name, is fsynced, renamed into place and the
folder is fsynced, so a crash leaves either the whole file or an orphan temporary file,
never a half-written object under its key.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol


class BlobNotFound(FileNotFoundError):
    pass


class StorageFull(OSError):
    """The store has less free space than the configured minimum."""


class BlobStore(Protocol):
    def new_key(self) -> str: ...

    def put(self, key: str, chunks: list[bytes] | tuple[bytes, ...]) -> int:
        """Store the concatenation of ``chunks`` durably under ``key``; returns its size."""
        ...

    def open(self, key: str) -> BinaryIO: ...

    def read(self, key: str, offset: int = 0) -> bytes: ...

    def delete(self, key: str) -> None: ...

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int: ...

    def keys(self) -> Iterator[str]: ...

    def free_bytes(self) -> int | None: ...


class FilesystemBlobStore:
    """Files under one root folder, two levels of hashed sub-folders."""

    suffix = ".dcm"
    tmp_suffix = ".tmp"

    def __init__(self, root: Path, *, fsync: bool = True):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self._known_dirs: set[Path] = set()

    def new_key(self) -> str:
        # 256 x 16 folders: few enough that ingest rarely creates one, enough that a
        # folder holds a few thousand files at ten million instances.
        h = uuid.uuid4().hex
        return f"{h[0:2]}/{h[2]}/{h}{self.suffix}"

    def path(self, key: str) -> Path:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"invalid blob key {key!r}")
        return self.root / key

    def put(self, key: str, chunks: list[bytes] | tuple[bytes, ...]) -> int:
        final = self.path(key)
        folder = final.parent
        if folder not in self._known_dirs:
            folder.mkdir(parents=True, exist_ok=True)
            self._known_dirs.add(folder)
        tmp = folder / f".{final.name}.{uuid.uuid4().hex[:8]}{self.tmp_suffix}"
        size = 0
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                    size += n
            if self.fsync:
                os.fdatasync(fd)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        os.replace(tmp, final)
        if self.fsync:
            dfd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        return size

    def open(self, key: str) -> BinaryIO:
        try:
            return open(self.path(key), "rb")
        except FileNotFoundError as e:
            raise BlobNotFound(f"stored file {key} is missing") from e

    def read(self, key: str, offset: int = 0) -> bytes:
        with self.open(key) as f:
            if offset:
                f.seek(offset)
            return f.read()

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def size(self, key: str) -> int:
        try:
            return self.path(key).stat().st_size
        except FileNotFoundError as e:
            raise BlobNotFound(f"stored file {key} is missing") from e

    def keys(self) -> Iterator[str]:
        """Every stored key; leftover temporary files are reported as keys too so that
        ``voxa check`` can remove them."""
        for dirpath, _dirs, files in os.walk(self.root):
            rel = os.path.relpath(dirpath, self.root)
            for name in files:
                yield name if rel == "." else f"{rel}/{name}".replace(os.sep, "/")

    def is_temporary(self, key: str) -> bool:
        return key.endswith(self.tmp_suffix)

    def free_bytes(self) -> int | None:
        return shutil.disk_usage(self.root).free
