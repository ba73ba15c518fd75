"""ZIP downloads of stored resources, streamed: ``/{level}/{id}/archive`` and ``/media``.

The ZIP is written by :mod:`zipfile` into a sink that the response generator empties after
every megabyte, so a study of any size goes out with constant memory (entries carry data
descriptors, as a streamed ZIP must; ZIP64 is used where sizes need it).  Files are
DEFLATE-compressed at level 1: cheap on CPU, and what every unzip tool reads.

Folder names follow Orthanc's: ``PatientID PatientName/AccessionNumber StudyDescription/
Modality SeriesDescription/CT000000.dcm`` with Orthanc's clean-up of names (``^`` and white
space to one space, only ASCII letters, digits, ``.`` and ``_`` kept -- accented letters
are transliterated where Orthanc drops them) and ``-2``, ``-3`` suffixes for names already
used in a folder.  Instances are numbered within their series in InstanceNumber order.

``/media`` adds a DICOMDIR built by pydicom's :class:`~pydicom.fileset.FileSet` from the
instances' headers (read once, before streaming, so that a problem answers an error status
rather than a cut ZIP); the files keep their stored bytes under the File IDs the DICOMDIR
names (``PT000000/ST000000/SE000000/IM000000``).
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import os
import re
import shutil
import tempfile
import unicodedata
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from pydicom import Dataset
from pydicom.fileset import FileSet, RecordNode
from sqlalchemy import or_, select

from voxa.archive.attributes import Level
from voxa.archive.blobstore import BlobStore
from voxa.archive.index import Index
from voxa.web.rest.common import IN, SE, ST, P

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
_ZIP64_THRESHOLD = 0x7FFFFFFF


@dataclass(frozen=True)
class ArchiveEntry:
    """One stored file and the name it gets in the ZIP."""

    name: str
    blob_key: str
    size_bytes: int
    sop_instance_uid: str = ""


# -- names -------------------------------------------------------------------------------------------


def folder_name(text: str, level: str) -> str:
    """A folder's name from its tags, or Orthanc's ``Unknown Patient`` / ``Study`` / ``Series``."""
    return keep_alphanumeric(text) or f"Unknown {level}"


def keep_alphanumeric(text: str) -> str:
    """Orthanc's ``HierarchicalZipWriter::Index::KeepAlphanumeric`` (with transliteration)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    out: list[str] = []
    last_space = False
    for c in ascii_text.replace("^", " "):
        if c.isspace():
            if not last_space:
                out.append(" ")
                last_space = True
        elif c.isalnum() or c in "._":
            out.append(c)
            last_space = False
    return "".join(out).strip()


def file_format(modality: str) -> str:
    """Orthanc's file name pattern in a series folder: ``CT%06d.dcm``, ``M%07d.dcm`` or ``%08d.dcm``."""
    m = modality.strip()
    if len(m) == 1:
        return m[0].upper() + "%07d.dcm"
    if len(m) >= 2:
        return m[:2].upper() + "%06d.dcm"
    return "%08d.dcm"


class _Names:
    """Unique names per folder, as Orthanc's ZIP writer makes them (``name``, ``name-2``...)."""

    def __init__(self) -> None:
        self._used: dict[str, set[str]] = {}

    def unique(self, folder: str, name: str) -> str:
        used = self._used.setdefault(folder, set())
        candidate, n = name, 1
        while candidate in used:
            n += 1
            candidate = f"{name}-{n}"
        used.add(candidate)
        return candidate


def _resource_filter(level: Level, row_ids: list[int]) -> Any:
    column = {Level.PATIENT: P.c.id, Level.STUDY: ST.c.id, Level.SERIES: SE.c.id, Level.IMAGE: IN.c.id}[level]
    return column.in_(row_ids)


def archive_entries(index: Index, resources: Iterable[tuple[Level, int]]) -> list[ArchiveEntry]:
    """The files of these resources (level, row id), each once, with Orthanc-style folder names."""
    by_level: dict[Level, list[int]] = {}
    for level, rid in resources:
        by_level.setdefault(level, []).append(rid)
    if not by_level:
        return []
    conditions = [_resource_filter(level, ids) for level, ids in by_level.items()]
    q = (
        select(P.c.id.label("p_id"), P.c.patient_id, P.c.patient_name,
               ST.c.id.label("st_id"), ST.c.accession_number, ST.c.study_description,
               SE.c.id.label("se_id"), SE.c.modality, SE.c.series_description,
               IN.c.blob_key, IN.c.size_bytes, IN.c.sop_instance_uid)
        .select_from(IN).join(SE, SE.c.id == IN.c.series_fk).join(ST, ST.c.id == SE.c.study_fk)
        .join(P, P.c.id == ST.c.patient_fk)
        .where(or_(*conditions))
        .order_by(P.c.id, ST.c.id, SE.c.series_number.is_(None), SE.c.series_number, SE.c.id,
                  IN.c.instance_number.is_(None), IN.c.instance_number, IN.c.id)
    )
    with index.read() as conn:
        rows = conn.execute(q).all()
    names = _Names()
    folders: dict[tuple[str, int], str] = {}
    counters: dict[int, int] = {}
    entries: list[ArchiveEntry] = []
    seen: set[str] = set()
    for r in rows:
        if r.sop_instance_uid in seen:
            continue
        seen.add(r.sop_instance_uid)
        pkey = ("p", r.p_id)
        if pkey not in folders:
            folders[pkey] = names.unique("", folder_name(f"{r.patient_id} {r.patient_name}", "Patient"))
        skey = ("st", r.st_id)
        if skey not in folders:
            folders[skey] = folders[pkey] + "/" + names.unique(
                folders[pkey], folder_name(f"{r.accession_number} {r.study_description}", "Study"))
        ekey = ("se", r.se_id)
        if ekey not in folders:
            folders[ekey] = folders[skey] + "/" + names.unique(
                folders[skey], folder_name(f"{r.modality} {r.series_description}", "Series"))
        n = counters.get(r.se_id, 0)
        counters[r.se_id] = n + 1
        entries.append(ArchiveEntry(f"{folders[ekey]}/{file_format(r.modality or '') % n}", r.blob_key,
                                    int(r.size_bytes), r.sop_instance_uid))
    return entries


# -- DICOMDIR ----------------------------------------------------------------------------------------


def _tolerant_leaf(ds: Dataset) -> RecordNode:
    """PATIENT/STUDY/SERIES/IMAGE records that accept the empty values real files often have."""
    def record(kind: str, **values: Any) -> RecordNode:
        r = Dataset()
        r.DirectoryRecordType = kind
        for keyword, value in values.items():
            setattr(r, keyword, value)
        return RecordNode(r)

    patient = record("PATIENT", PatientID=ds.get("PatientID", ""), PatientName=ds.get("PatientName", ""))
    study = record("STUDY", StudyDate=ds.get("StudyDate", ""), StudyTime=ds.get("StudyTime", ""),
                   StudyDescription=ds.get("StudyDescription", ""), StudyInstanceUID=ds.StudyInstanceUID,
                   StudyID=ds.get("StudyID", ""), AccessionNumber=ds.get("AccessionNumber", ""))
    series = record("SERIES", Modality=ds.get("Modality", "OT") or "OT", SeriesInstanceUID=ds.SeriesInstanceUID,
                    SeriesNumber=ds.get("SeriesNumber", ""))
    image = record("IMAGE", InstanceNumber=ds.get("InstanceNumber", ""),
                   ReferencedSOPClassUIDInFile=ds.SOPClassUID, ReferencedSOPInstanceUIDInFile=ds.SOPInstanceUID,
                   ReferencedTransferSyntaxUIDInFile=ds.file_meta.TransferSyntaxUID)
    study.parent = patient
    series.parent = study
    image.parent = series
    return image


def media_entries(index: Index, blobs: BlobStore, entries: list[ArchiveEntry]) -> tuple[bytes, list[ArchiveEntry]]:
    """(DICOMDIR bytes, the files renamed to the DICOMDIR's File IDs)."""
    fs = FileSet()
    work = Path(tempfile.mkdtemp(prefix="voxa-media-"))
    try:
        for entry in entries:
            with blobs.open(entry.blob_key) as fp:
                ds = pydicom.dcmread(fp, stop_before_pixels=True)
            try:
                fs.add(ds)
            except ValueError:
                # A Type 1 attribute of a directory record is missing or empty (StudyID often is).
                fs.add_custom(ds, _tolerant_leaf(ds))
        out_dir = work / "fileset"
        fs.write(out_dir)
        dicomdir = (out_dir / "DICOMDIR").read_bytes()
        file_ids = {str(inst.SOPInstanceUID): inst.FileID.replace(os.sep, "/") for inst in fs}
    finally:
        shutil.rmtree(work, ignore_errors=True)
        del fs
    renamed = [ArchiveEntry(file_ids[e.sop_instance_uid], e.blob_key, e.size_bytes, e.sop_instance_uid)
               for e in entries]
    return dicomdir, renamed


# -- streaming ---------------------------------------------------------------------------------------


class _Sink(io.RawIOBase):
    """A write-only, non-seekable file that collects what :mod:`zipfile` writes."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[bytes] = []
        self._size = 0
        self._pos = 0

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._parts.append(chunk)
        self._size += len(chunk)
        self._pos += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._pos

    @property
    def pending(self) -> int:
        return self._size

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        self._size = 0
        return data


def _zip_info(name: str, size: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=dt.datetime.now().timetuple()[:6])
    info.compress_type = zipfile.ZIP_DEFLATED
    info.file_size = size
    info.external_attr = 0o644 << 16
    return info


def stream_zip(blobs: BlobStore, entries: list[ArchiveEntry], extra: dict[str, bytes] | None = None
               ) -> Iterator[bytes]:
    """The ZIP of ``entries`` (read from ``blobs`` one megabyte at a time) and ``extra`` files."""
    sink = _Sink()
    zf = zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1, allowZip64=True)
    try:
        for entry in entries:
            with blobs.open(entry.blob_key) as src, \
                    zf.open(_zip_info(entry.name, entry.size_bytes), "w",
                            force_zip64=entry.size_bytes > _ZIP64_THRESHOLD) as dst:
                while chunk := src.read(CHUNK_BYTES):
                    dst.write(chunk)
                    if sink.pending >= CHUNK_BYTES:
                        yield sink.take()
            if sink.pending >= CHUNK_BYTES:
                yield sink.take()
        for name, data in (extra or {}).items():
            with zf.open(_zip_info(name, len(data)), "w") as dst:
                dst.write(data)
        zf.close()
        yield sink.take()
    finally:
        if zf.fp is not None:
            # The client went away: nothing more will be read; let the ZipFile go quietly.
            zf.fp = None


_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


def download_name(public_id: str) -> str:
    return _SAFE_NAME.sub("_", public_id) + ".zip"
