"""Reconciling the index with the blob store (``voxa check``).

A crash between writing a file and committing its index row leaves an orphan file; a
file removed behind the archive's back leaves an index row without its file.  ``check``
reports both; ``repair`` ingests complete orphan files again (they were never
acknowledged, but nothing received is thrown away), removes leftover temporary files and
drops index rows whose file is gone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from voxa.archive.blobstore import FilesystemBlobStore
from voxa.archive.ingest import Archive, Outcome


@dataclass
class CheckReport:
    instances: int = 0
    files: int = 0
    orphan_files: list[str] = field(default_factory=list)
    temporary_files: list[str] = field(default_factory=list)
    missing_files: list[str] = field(default_factory=list)  # SOP Instance UIDs
    size_mismatches: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.orphan_files or self.temporary_files or self.missing_files or self.size_mismatches)

    def as_dict(self) -> dict[str, object]:
        return {
            "clean": self.clean, "instances": self.instances, "files": self.files,
            "orphan_files": self.orphan_files, "temporary_files": self.temporary_files,
            "missing_files": self.missing_files, "size_mismatches": self.size_mismatches,
            "repaired": self.repaired,
        }


def check(archive: Archive, *, repair: bool = False) -> CheckReport:
    report = CheckReport()
    blobs = archive.blobs
    indexed = archive.index.all_blob_keys()
    report.instances = len(indexed)
    is_tmp = blobs.is_temporary if isinstance(blobs, FilesystemBlobStore) else (lambda k: False)
    stored: set[str] = set()
    for key in blobs.keys():
        if is_tmp(key):
            report.temporary_files.append(key)
            continue
        stored.add(key)
    report.files = len(stored)
    report.orphan_files = sorted(stored - indexed.keys())
    locs = {loc.blob_key: loc for loc in archive.index.locate(instance_ids=list(indexed.values()))} if indexed else {}
    for key, loc in locs.items():
        if key not in stored:
            report.missing_files.append(loc.sop_instance_uid)
        elif blobs.size(key) != loc.size_bytes:
            report.size_mismatches.append(loc.sop_instance_uid)
    report.missing_files.sort()
    if not repair:
        return report
    for key in report.temporary_files:
        blobs.delete(key)
        report.repaired.append(f"removed temporary file {key}")
    for key in report.orphan_files:
        data = blobs.read(key)
        result = archive.ingest(data, source="check")
        blobs.delete(key)
        if result.outcome in (Outcome.STORED, Outcome.REPLACED):
            report.repaired.append(f"re-indexed orphan file {key} as {result.sop_instance_uid}")
        elif result.outcome is Outcome.DUPLICATE:
            report.repaired.append(f"removed orphan file {key} (instance already stored)")
        else:
            report.repaired.append(f"removed orphan file {key} ({result.reason})")
    for key, loc in locs.items():
        if key not in stored:
            archive.index.delete_instance_by_id(loc.id)
            report.repaired.append(f"removed index row of {loc.sop_instance_uid} (file missing)")
    return report
