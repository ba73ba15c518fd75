"""DIMSE status codes Voxa answers with, and the Error Comment that goes with a failure."""

from __future__ import annotations

from pydicom import Dataset

from voxa.archive.ingest import IngestResult, Outcome, RefusalCode

SUCCESS = 0x0000
PENDING = 0xFF00
PENDING_WARNING = 0xFF01
CANCEL = 0xFE00
# Storage (PS3.4 B.2.3)
OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000
DUPLICATE_REJECTED = 0xC001
CONFLICT_WITH_STORED = 0xC002
WARNING_COERCION = 0xB000
# General (PS3.7 C)
REFUSED_NOT_AUTHORIZED = 0x0124
PROCESSING_FAILURE = 0x0110
NO_SUCH_OBJECT_INSTANCE = 0x0112
DUPLICATE_SOP_INSTANCE = 0x0111
INVALID_ATTRIBUTE_VALUE = 0x0106
# Query/Retrieve (PS3.4 C.4)
QR_OUT_OF_RESOURCES = 0xA700
QR_OUT_OF_RESOURCES_SUBOPS = 0xA702
QR_MOVE_DESTINATION_UNKNOWN = 0xA801
QR_IDENTIFIER_DOES_NOT_MATCH = 0xA900
QR_UNABLE_TO_PROCESS = 0xC000
QR_SUBOPS_WARNING = 0xB000

_REFUSAL_STATUS = {
    RefusalCode.STORAGE_FULL: OUT_OF_RESOURCES,
    RefusalCode.STORAGE_ERROR: OUT_OF_RESOURCES + 1,
    RefusalCode.SOP_MISMATCH: DATASET_DOES_NOT_MATCH_SOP_CLASS,
    RefusalCode.DUPLICATE_REJECTED: DUPLICATE_REJECTED,
    RefusalCode.CONFLICT: CONFLICT_WITH_STORED,
}


def status_dataset(status: int, comment: str = "") -> Dataset:
    ds = Dataset()
    ds.Status = status
    if comment:
        # Error Comment is LO: at most 64 characters.
        ds.ErrorComment = comment if len(comment) <= 64 else comment[:61] + "..."
    return ds


def store_status(result: IngestResult) -> Dataset:
    if result.outcome in (Outcome.STORED, Outcome.REPLACED):
        return status_dataset(SUCCESS)
    if result.outcome is Outcome.DUPLICATE:
        return status_dataset(WARNING_COERCION, "Duplicate SOP Instance: stored copy kept")
    code = _REFUSAL_STATUS.get(result.code, CANNOT_UNDERSTAND) if result.code else CANNOT_UNDERSTAND
    return status_dataset(code, result.reason)
