"""The archive: blob storage, the index, and the one ingest path."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from voxa.archive.ingest import Archive
    from voxa.config import Settings


def open_archive(settings: Settings, *, migrate: bool = True) -> Archive:
    """The archive described by ``settings``: index database (migrated) and blob store."""
    from voxa.archive.blobstore import FilesystemBlobStore
    from voxa.archive.database import create_index_engine, upgrade
    from voxa.archive.index import Index
    from voxa.archive.ingest import Archive

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_index_engine(settings.effective_database_url)
    if migrate:
        upgrade(engine)
    blobs = FilesystemBlobStore(settings.storage_dir, fsync=settings.fsync)
    return Archive(
        Index(engine),
        blobs,
        duplicate_policy=settings.duplicate_policy,
        min_free_bytes=settings.min_free_disk_mb * 1024 * 1024,
    )
