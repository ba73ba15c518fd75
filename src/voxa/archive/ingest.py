"""The one ingest path: every way an instance arrives (C-STORE, STOW-RS, REST upload,
``voxa import``, analysis results) ends in :meth:`Archive.ingest`.

Order of work, so that nothing acknowledged is lost and nothing refused is half-written:
parse and validate the bytes (refuse with a reason), check for a duplicate, write the file
durably under a fresh key, commit the index row, and only then report success.  A failure
after the file was written deletes the file; a crash there leaves an orphan file that
``voxa check`` removes.
"""

from __future__ import annotations

import hashlib
import io
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import pydicom
from pydicom import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.multival import MultiValue
from pydicom.uid import UID

from voxa import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from voxa.archive.attributes import ATTRIBUTES, Kind, Level
from voxa.archive.blobstore import BlobStore, StorageFull
from voxa.archive.index import DuplicateInstance, Index, InstanceRecord, IntegrityErrorLike
from voxa.config import DuplicatePolicy
from voxa.dicom import transfer_syntaxes
from voxa.dicom.json import instance_json, pack_json
from voxa.dicom.names import person_name_key
from voxa.dicom.structure import TruncatedDataset, check_dataset_complete
from voxa.dicom.uids import InvalidIdentifier, validate_uid

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"  # already held; the stored copy was kept
    REPLACED = "replaced"  # already held; overwritten by this one
    REFUSED = "refused"


class RefusalCode(StrEnum):
    NOT_DICOM = "not-dicom"
    CORRUPT = "corrupt"
    MISSING_ATTRIBUTE = "missing-attribute"
    INVALID_UID = "invalid-uid"
    UNSUPPORTED_TRANSFER_SYNTAX = "unsupported-transfer-syntax"
    DUPLICATE_REJECTED = "duplicate-rejected"
    CONFLICT = "conflict"
    STORAGE_FULL = "storage-full"
    STORAGE_ERROR = "storage-error"
    SOP_MISMATCH = "sop-mismatch"
    NOT_AN_INSTANCE = "not-an-instance"


@dataclass
class IngestResult:
    outcome: Outcome
    sop_instance_uid: str = ""
    sop_class_uid: str = ""
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    reason: str = ""
    code: RefusalCode | None = None
    public_ids: dict[str, str] = field(default_factory=dict)
    size_bytes: int = 0

    @property
    def ok(self) -> bool:
        return self.outcome is not Outcome.REFUSED


class Refused(Exception):
    def __init__(self, code: RefusalCode, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


IngestListener = Callable[[IngestResult], None]

_PART10_PREAMBLE = b"\0" * 128 + b"DICM"
_MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def _int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, MultiValue | list | tuple):
        value = value[0] if value else None
        if value is None:
            return None
    try:
        return int(float(str(value)))
    except (TypeError, ValueError):
        return None


def _time(value: Any) -> str:
    return _text(value).replace(":", "")


def extract_record(ds: Dataset, *, size: int, blob_key: str, transfer_syntax: str, dataset_offset: int,
                   sha256: str, calling_aet: str, source: str) -> InstanceRecord:
    """The index row values for one instance, from its parsed header."""
    by_level: dict[Level, dict[str, Any]] = {lvl: {} for lvl in Level}
    for attr in ATTRIBUTES:
        if attr.kind is Kind.COUNT or attr.keyword in ("ModalitiesInStudy", "SOPClassesInStudy",
                                                        "AvailableTransferSyntaxUID"):
            continue
        elem = ds.get(attr.keyword)
        value = elem if elem is not None else None
        if attr.kind is Kind.INT:
            v: Any = _int(value)
        elif attr.kind is Kind.TIME:
            v = _time(value)
        elif attr.kind is Kind.UID:
            v = _text(value).strip("\0 ")
        else:
            v = _text(value)
        by_level[attr.level][attr.column] = v
        if attr.kind is Kind.PN:
            by_level[attr.level][f"{attr.column}_key"] = person_name_key(v)

    instance = by_level[Level.IMAGE]
    instance.update(
        transfer_syntax_uid=transfer_syntax,
        blob_key=blob_key,
        size_bytes=size,
        sha256=sha256,
        dataset_offset=dataset_offset,
        calling_aet=calling_aet,
        source=source,
    )
    return InstanceRecord(
        patient=by_level[Level.PATIENT],
        study=by_level[Level.STUDY],
        series=by_level[Level.SERIES],
        instance=instance,
    )


def build_file_meta(sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str,
                    source_aet: str = "") -> bytes:
    """Part-10 preamble and file meta group for a dataset received over the network."""
    meta = pydicom.dataset.FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    if source_aet:
        meta.SourceApplicationEntityTitle = source_aet
    buf = DicomBytesIO()
    buf.is_little_endian = True
    buf.is_implicit_VR = False
    write_file_meta_info(buf, meta, enforce_standard=True)
    return _PART10_PREAMBLE + buf.getvalue()


@dataclass
class ParsedInstance:
    dataset: Dataset
    transfer_syntax: str
    dataset_offset: int
    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    series_instance_uid: str


def as_part10(data: bytes) -> bytes:
    """``data`` as a Part-10 file.  Some writers (pydicom's ``dcmwrite`` without a preamble,
    as dicomweb-client sends) omit the 128-byte preamble, or the preamble and the ``DICM``
    prefix, before a complete file meta group: only that container is completed here; the
    file meta and the dataset stay as received."""
    if data[128:132] == b"DICM":
        return data
    if data[:4] == b"DICM":
        return _PART10_PREAMBLE[:128] + data
    if data[:2] == b"\x02\x00" and data[4:6] in (b"UL", b"OB"):  # (0002,xxxx), explicit VR little endian
        return _PART10_PREAMBLE + data
    return data


def parse_part10(data: bytes) -> ParsedInstance:
    """Parse and validate a Part-10 file; raise :class:`Refused` with a reason when it is not acceptable."""
    if len(data) < 132 or data[128:132] != b"DICM":
        raise Refused(RefusalCode.NOT_DICOM,
                      "not a DICOM Part 10 file (no 'DICM' prefix after the 128-byte preamble)")
    fp = io.BytesIO(data)
    try:
        ds = pydicom.dcmread(fp)
    except InvalidDicomError as e:
        raise Refused(RefusalCode.NOT_DICOM, f"not a readable DICOM file: {e}") from None
    except Exception as e:  # noqa: BLE001 - pydicom raises many kinds on corrupt input
        raise Refused(RefusalCode.CORRUPT, f"corrupt or truncated DICOM file: {type(e).__name__}: {e}") from None
    meta = ds.file_meta
    ts = _text(meta.get("TransferSyntaxUID", "")).strip("\0 ")
    if not ts:
        ts = _guess_transfer_syntax(ds)
    if not transfer_syntaxes.is_accepted(ts):
        raise Refused(RefusalCode.UNSUPPORTED_TRANSFER_SYNTAX,
                      f"transfer syntax {ts} ({transfer_syntaxes.name_of(ts)}) is not supported")
    offset = _dataset_offset(data)
    if offset > len(data):
        raise Refused(RefusalCode.CORRUPT, "file is truncated inside its file meta information")
    _check_complete(data, offset, ts)
    if _text(meta.get("MediaStorageSOPClassUID", "")).strip("\0 ") == _MEDIA_STORAGE_DIRECTORY:
        raise Refused(RefusalCode.NOT_AN_INSTANCE,
                      "a DICOMDIR (media storage directory), not an instance: import the files it lists")
    uids = {}
    for kw in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        try:
            uids[kw] = validate_uid(ds.get(kw), kw)
        except InvalidIdentifier as e:
            code = RefusalCode.MISSING_ATTRIBUTE if ds.get(kw) in (None, "") else RefusalCode.INVALID_UID
            raise Refused(code, str(e)) from None
    meta_sop = _text(meta.get("MediaStorageSOPInstanceUID", "")).strip("\0 ")
    if meta_sop and meta_sop != uids["SOPInstanceUID"]:
        # Seen in real files; the dataset is authoritative and the bytes are kept as received.
        log.warning("file meta SOP Instance UID differs from the dataset's; indexing the dataset's (%s)",
                    uids["SOPInstanceUID"])
    return ParsedInstance(ds, ts, offset, uids["SOPInstanceUID"], uids["SOPClassUID"],
                          uids["StudyInstanceUID"], uids["SeriesInstanceUID"])


def _guess_transfer_syntax(ds: Dataset) -> str:
    """A file meta without (0002,0010): use the encoding pydicom detected, where that is
    unambiguous (native pixel data only)."""
    elem = ds.get("PixelData")
    if elem is not None and ds["PixelData"].is_undefined_length:
        raise Refused(RefusalCode.MISSING_ATTRIBUTE,
                      "file meta has no Transfer Syntax UID (0002,0010) and the pixel data is encapsulated")
    implicit, little = ds.original_encoding
    if implicit:
        return str(pydicom.uid.ImplicitVRLittleEndian)
    return str(pydicom.uid.ExplicitVRLittleEndian if little else pydicom.uid.ExplicitVRBigEndian)


def _dataset_offset(data: bytes) -> int:
    # (0002,0000) File Meta Information Group Length is required; the dataset starts after it.
    if data[132:136] == b"\x02\x00\x00\x00" and data[136:138] == b"UL":
        group_len = int.from_bytes(data[140:144], "little")
        return 144 + group_len
    # Tolerate files without the group length: read the meta to find its end.
    fp = io.BytesIO(data)
    pydicom.filereader.read_preamble(fp, False)
    pydicom.filereader._read_file_meta_info(fp)
    return fp.tell()


def _check_complete(data: bytes, offset: int, transfer_syntax: str) -> None:
    """pydicom reads lazily and forgives short files; make sure every element is whole."""
    try:
        check_dataset_complete(data, offset, transfer_syntax)
    except TruncatedDataset as e:
        raise Refused(RefusalCode.CORRUPT, f"corrupt or truncated DICOM file: {e}") from None


def _settle(fut: Future[Any]) -> None:
    """Wait for a background write, whatever its outcome, before cleaning up after it."""
    try:
        fut.result()
    except BaseException:  # noqa: BLE001
        pass


class Archive:
    """Storage + index: the archive's single write path and its deletions."""

    def __init__(self, index: Index, blobs: BlobStore, *, duplicate_policy: DuplicatePolicy = DuplicatePolicy.KEEP_FIRST,
                 min_free_bytes: int = 0):
        self.index = index
        self.blobs = blobs
        self.duplicate_policy = duplicate_policy
        self.min_free_bytes = min_free_bytes
        self._listeners: list[IngestListener] = []
        self._free_check_lock = threading.Lock()
        self._writer = ThreadPoolExecutor(max_workers=8, thread_name_prefix="voxa-blob-write")
        self._bytes_since_free_check = 1 << 62

    def add_listener(self, fn: IngestListener) -> None:
        self._listeners.append(fn)

    # -- ingest ---------------------------------------------------------------------------

    def ingest_dataset_bytes(self, dataset_bytes: bytes, *, sop_class_uid: str, sop_instance_uid: str,
                             transfer_syntax: str, calling_aet: str = "", source: str = "dimse") -> IngestResult:
        """A dataset received over the network (no file meta): wrap it as Part 10 and ingest."""
        meta = build_file_meta(sop_class_uid, sop_instance_uid, transfer_syntax, calling_aet)
        return self.ingest(meta + dataset_bytes, calling_aet=calling_aet, source=source)

    def ingest(self, data: bytes, *, calling_aet: str = "", source: str = "upload") -> IngestResult:
        """Validate and store one Part-10 file; never raises for bad input, reports a refusal."""
        data = as_part10(data)
        try:
            result = self._ingest(data, calling_aet=calling_aet, source=source)
        except Refused as r:
            result = IngestResult(Outcome.REFUSED, reason=r.reason, code=r.code)
            log.info("refused instance from %s (%s): %s", calling_aet or source, r.code, r.reason)
        for fn in self._listeners:
            try:
                fn(result)
            except Exception:  # noqa: BLE001 - a listener must never fail an ingest
                log.exception("ingest listener failed")
        return result

    def _ingest(self, data: bytes, *, calling_aet: str, source: str) -> IngestResult:
        parsed = parse_part10(data)
        base = IngestResult(
            Outcome.STORED, sop_instance_uid=parsed.sop_instance_uid, sop_class_uid=parsed.sop_class_uid,
            study_instance_uid=parsed.study_instance_uid, series_instance_uid=parsed.series_instance_uid,
            size_bytes=len(data),
        )
        # No look-up before writing: duplicates are rare, and the index insert detects them.
        replace = self.duplicate_policy is DuplicatePolicy.OVERWRITE
        self._check_free_space(len(data))
        key = self.blobs.new_key()
        # The durable write (write, fdatasync, rename, fsync the folder) waits on the disk
        # with the GIL released: start it first and build the index record meanwhile.
        written = self._writer.submit(self.blobs.put, key, (data,))
        try:
            record = extract_record(
                parsed.dataset, size=len(data), blob_key=key, transfer_syntax=parsed.transfer_syntax,
                dataset_offset=parsed.dataset_offset, sha256=hashlib.sha256(data).hexdigest(),
                calling_aet=calling_aet, source=source,
            )
            record.metadata_json = pack_json(
                instance_json(parsed.dataset, parsed.study_instance_uid, parsed.series_instance_uid,
                              parsed.sop_instance_uid)
            )
        except BaseException:
            _settle(written)
            self.blobs.delete(key)
            raise
        try:
            written.result()
        except OSError as e:
            self.blobs.delete(key)
            raise Refused(RefusalCode.STORAGE_ERROR, f"could not write the file: {e.strerror or e}") from None

        try:
            added = self.index.add(record, replace=replace)
        except DuplicateInstance:
            self.blobs.delete(key)
            if self.duplicate_policy is DuplicatePolicy.REJECT:
                raise Refused(RefusalCode.DUPLICATE_REJECTED,
                              f"SOP Instance {parsed.sop_instance_uid} is already stored") from None
            base.outcome = Outcome.DUPLICATE
            base.reason = "SOP Instance already stored; the stored copy was kept"
            return base
        except IntegrityErrorLike as e:
            self.blobs.delete(key)
            raise Refused(RefusalCode.CONFLICT, str(e)) from None
        except BaseException:
            self.blobs.delete(key)
            raise
        if added.replaced_blob_key:
            self.blobs.delete(added.replaced_blob_key)
            base.outcome = Outcome.REPLACED
        if added.patient_name_conflict:
            log.warning("PatientID already known with a different patient name; the study keeps its own name "
                        "and the patient record keeps the first (study %s)", parsed.study_instance_uid)
        base.public_ids = added.public_ids
        return base

    def _check_free_space(self, incoming: int) -> None:
        if not self.min_free_bytes:
            return
        # statvfs per instance costs little, but skip it while far from the limit.
        with self._free_check_lock:
            self._bytes_since_free_check += incoming
            if self._bytes_since_free_check < 64 * 1024 * 1024:
                return
            self._bytes_since_free_check = 0
            free = self.blobs.free_bytes()
            if free is not None and free - incoming < self.min_free_bytes:
                self._bytes_since_free_check = 1 << 62  # check again next time
                raise Refused(
                    RefusalCode.STORAGE_FULL,
                    f"storage full: {free // (1024 * 1024)} MB free, at least "
                    f"{self.min_free_bytes // (1024 * 1024)} MB must stay free",
                )

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        self.index.engine.dispose()

    # -- delete ---------------------------------------------------------------------------

    def delete(self, level: Level, public_id: str) -> int:
        keys = self.index.delete(level, public_id)
        for key in keys:
            self.blobs.delete(key)
        return len(keys)

    def read_instance(self, blob_key: str) -> bytes:
        return self.blobs.read(blob_key)


__all__ = ["Archive", "IngestResult", "Outcome", "RefusalCode", "Refused", "StorageFull", "parse_part10",
           "build_file_meta"]
