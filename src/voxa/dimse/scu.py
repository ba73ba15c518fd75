"""Voxa as a DICOM client: echo, store to, query and retrieve from a peer.

Each operation opens one association, disables Nagle on its socket, and reports
progress through an optional callback so that it can run as a job.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pydicom
from pydicom import Dataset
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from voxa.archive.index import StoredLocation
from voxa.archive.ingest import Archive
from voxa.dimse.peers import PeerInfo
from voxa.dimse.server import _assoc_socket, set_nodelay

log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]
_UNCOMPRESSED = {str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian)}


class PeerError(RuntimeError):
    """The peer could not be reached, refused the association, or answered with a failure."""


class PeerTimeout(PeerError):
    """The peer did not answer in time: no TCP connection, no association response, or no DIMSE response."""


@dataclass
class StoreReport:
    sent: int = 0
    warnings: int = 0
    failed: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"sent": self.sent, "warnings": self.warnings, "failed": self.failed, "failures": self.failures}


_CONNECTION_TIMEOUT_S = 15.0
_ACSE_TIMEOUT_S = 30.0


def _ae(calling_aet: str) -> AE:
    ae = AE(ae_title=calling_aet)
    ae.connection_timeout = _CONNECTION_TIMEOUT_S
    ae.acse_timeout = _ACSE_TIMEOUT_S
    ae.dimse_timeout = 120
    ae.network_timeout = 120
    ae.maximum_pdu_size = 0
    return ae


@contextlib.contextmanager
def associate(peer: PeerInfo, calling_aet: str, contexts: list[Any], **kwargs: Any) -> Iterator[Any]:
    """An established association with ``peer``, released on exit.

    Raises :class:`PeerTimeout` when the peer does not answer in time and :class:`PeerError`
    when it cannot be reached, rejects the association or accepts none of ``contexts``.
    """
    ae = _ae(calling_aet)
    seen: set[str] = set()

    def _opened(event: evt.Event) -> None:
        seen.add("open")
        set_nodelay(_assoc_socket(event.assoc))

    def _accepted(_event: evt.Event) -> None:
        seen.add("accepted")

    handlers: list[Any] = [(evt.EVT_CONN_OPEN, _opened), (evt.EVT_ACCEPTED, _accepted)]
    where = f"{peer.aet} at {peer.host}:{peer.port}"
    started = time.monotonic()
    try:
        assoc = ae.associate(peer.host, peer.port, contexts=contexts, ae_title=peer.aet,
                             evt_handlers=handlers, **kwargs)
    except Exception as e:  # noqa: BLE001
        raise PeerError(f"cannot connect to {where}: {e}") from None
    if not assoc.is_established:
        elapsed = time.monotonic() - started
        if assoc.is_rejected:
            raise PeerError(f"{where} rejected the association (does it know the calling AE title {calling_aet}?)")
        if "open" not in seen:
            if elapsed >= _CONNECTION_TIMEOUT_S - 0.5:
                raise PeerTimeout(f"cannot connect to {where}: no answer within {_CONNECTION_TIMEOUT_S:.0f} s")
            raise PeerError(f"cannot connect to {where}: connection refused or host unreachable")
        if "accepted" in seen:
            raise PeerError(f"{where} accepted none of the proposed presentation contexts")
        if elapsed >= _ACSE_TIMEOUT_S - 0.5:
            raise PeerTimeout(f"{where} did not answer the association request within {_ACSE_TIMEOUT_S:.0f} s")
        raise PeerError(f"{where} aborted the association request")
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def echo(peer: PeerInfo, calling_aet: str) -> float:
    """C-ECHO; returns the round trip in milliseconds."""
    with associate(peer, calling_aet, [build_context(Verification)]) as assoc:
        t = time.perf_counter()
        rsp = assoc.send_c_echo()
        ms = (time.perf_counter() - t) * 1000
    if not rsp:
        raise PeerTimeout(f"{peer.aet} did not answer the C-ECHO")
    if rsp.get("Status") != 0:
        raise PeerError(f"{peer.aet} answered C-ECHO with status {rsp.get('Status') if rsp else 'none'}")
    return ms


def store(archive: Archive, peer: PeerInfo, calling_aet: str, locations: list[StoredLocation],
          progress: Progress | None = None) -> StoreReport:
    """Send stored instances to a peer over one association, as stored where the peer accepts it."""
    report = StoreReport()
    if not locations:
        return report
    contexts: list[Any] = []
    seen: set[tuple[str, str]] = set()
    for loc in locations:
        if loc.transfer_syntax_uid not in _UNCOMPRESSED and (loc.sop_class_uid, loc.transfer_syntax_uid) not in seen:
            seen.add((loc.sop_class_uid, loc.transfer_syntax_uid))
            contexts.append(build_context(loc.sop_class_uid, [loc.transfer_syntax_uid]))
        if (loc.sop_class_uid, "") not in seen:
            seen.add((loc.sop_class_uid, ""))
            contexts.append(build_context(loc.sop_class_uid, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]))
    contexts = contexts[:128]
    with associate(peer, calling_aet, contexts) as assoc:
        accepted = {(str(cx.abstract_syntax), str(cx.transfer_syntax[0])) for cx in assoc.accepted_contexts}
        for i, loc in enumerate(locations):
            try:
                ds = pydicom.dcmread(io.BytesIO(archive.blobs.read(loc.blob_key)))
                if (loc.sop_class_uid, loc.transfer_syntax_uid) not in accepted and \
                        loc.transfer_syntax_uid not in _UNCOMPRESSED:
                    ds.decompress()
                    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
                rsp = assoc.send_c_store(ds)
                status = int(rsp.get("Status", 0xC000)) if rsp else None
            except Exception as e:  # noqa: BLE001 - report per instance and go on
                status, comment = None, f"{type(e).__name__}: {e}"
            else:
                comment = str(rsp.get("ErrorComment", "")) if rsp else "no response"
            if status == 0:
                report.sent += 1
            elif status is not None and (status & 0xF000) == 0xB000:
                report.sent += 1
                report.warnings += 1
            else:
                report.failed += 1
                report.failures.append({"sop_instance_uid": loc.sop_instance_uid,
                                        "status": f"0x{status:04X}" if status is not None else "none",
                                        "comment": comment})
            if progress:
                progress("sending", 100.0 * (i + 1) / len(locations))
            if not assoc.is_established:
                raise PeerError(f"{peer.aet} closed the association after {report.sent} instances")
    return report


def find(peer: PeerInfo, calling_aet: str, level: str, query: dict[str, str],
         return_keys: Iterable[str] = (), patient_root: bool = False) -> list[dict[str, Any]]:
    """C-FIND on a peer; returns each match as {keyword: value}."""
    model = PatientRootQueryRetrieveInformationModelFind if patient_root else StudyRootQueryRetrieveInformationModelFind
    ds = Dataset()
    ds.QueryRetrieveLevel = level.upper()
    for kw in return_keys:
        _set_key(ds, kw, "")
    for kw, value in query.items():
        _set_key(ds, kw, value)
    results: list[dict[str, Any]] = []
    with associate(peer, calling_aet, [build_context(model)]) as assoc:
        for status, identifier in assoc.send_c_find(ds, model):
            code = int(status.get("Status", 0xC000)) if status else None
            if code in (0xFF00, 0xFF01):
                if identifier is not None:
                    results.append({e.keyword: _plain(e.value) for e in identifier if e.keyword})
            elif code is None:
                raise PeerTimeout(f"{peer.aet} did not answer the C-FIND")
            elif code != 0:
                raise PeerError(f"{peer.aet} answered C-FIND with status 0x{code:04X} "
                                f"{status.get('ErrorComment', '')}".strip())
    return results


def move(peer: PeerInfo, calling_aet: str, destination_aet: str, level: str, query: dict[str, str],
         patient_root: bool = False, progress: Progress | None = None) -> dict[str, int]:
    """Ask a peer to C-MOVE matching instances to ``destination_aet`` (often Voxa itself)."""
    model = PatientRootQueryRetrieveInformationModelMove if patient_root else StudyRootQueryRetrieveInformationModelMove
    ds = Dataset()
    ds.QueryRetrieveLevel = level.upper()
    for kw, value in query.items():
        _set_key(ds, kw, value)
    last: dict[str, int] = {"completed": 0, "failed": 0, "warning": 0, "remaining": 0}
    with associate(peer, calling_aet, [build_context(model)]) as assoc:
        for status, _identifier in assoc.send_c_move(ds, destination_aet, model):
            if not status:
                raise PeerTimeout(f"{peer.aet} did not answer the C-MOVE")
            code = int(status.Status)
            last = {
                "completed": int(status.get("NumberOfCompletedSuboperations", last["completed"]) or 0),
                "failed": int(status.get("NumberOfFailedSuboperations", last["failed"]) or 0),
                "warning": int(status.get("NumberOfWarningSuboperations", last["warning"]) or 0),
                "remaining": int(status.get("NumberOfRemainingSuboperations", 0) or 0),
            }
            if progress:
                done = last["completed"] + last["failed"] + last["warning"]
                total = done + last["remaining"]
                progress("retrieving", 100.0 * done / total if total else 0.0)
            if code in (0xFF00, 0xFF01):
                continue
            if code == 0xA801:
                raise PeerError(f"{peer.aet} does not know the move destination {destination_aet} "
                                "or cannot reach it (status 0xA801)")
            if code not in (0x0000, 0xB000):
                raise PeerError(f"{peer.aet} answered C-MOVE with status 0x{code:04X} "
                                f"{status.get('ErrorComment', '')}".strip())
    return last


def send_datasets(peer: PeerInfo, calling_aet: str, datasets: Iterable[Dataset],
                  progress: Callable[[int], None] | None = None) -> StoreReport:
    """Send datasets that are not in the archive (the test sender, demo data) over one association."""
    report = StoreReport()
    pending: list[Dataset] = []
    it = iter(datasets)
    first = next(it, None)
    if first is None:
        return report
    pending.append(first)
    # Contexts are declared up front; the test studies use a handful of SOP classes.
    from pynetdicom.presentation import StoragePresentationContexts

    contexts = [build_context(cx.abstract_syntax, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
                for cx in StoragePresentationContexts][:128]
    with associate(peer, calling_aet, contexts) as assoc:
        for ds in _chain(pending, it):
            rsp = assoc.send_c_store(ds)
            code = int(rsp.get("Status", 0xC000)) if rsp else None
            if code == 0 or (code is not None and (code & 0xF000) == 0xB000):
                report.sent += 1
            else:
                report.failed += 1
                report.failures.append({"sop_instance_uid": str(ds.SOPInstanceUID),
                                        "status": f"0x{code:04X}" if code is not None else "none",
                                        "comment": str(rsp.get("ErrorComment", "")) if rsp else ""})
            if progress:
                progress(report.sent + report.failed)
    return report


#: Keys every C-FIND at a level asks for unless the caller names its own, so that each match
#: says what it is (a query on PatientID alone would otherwise return only the PatientID).
DEFAULT_RETURN_KEYS: dict[str, tuple[str, ...]] = {
    "PATIENT": ("PatientID", "PatientName", "PatientBirthDate", "PatientSex"),
    "STUDY": ("StudyInstanceUID", "PatientID", "PatientName", "StudyDate", "StudyTime", "AccessionNumber",
              "StudyDescription", "ModalitiesInStudy"),
    "SERIES": ("StudyInstanceUID", "SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription"),
    "IMAGE": ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "InstanceNumber"),
}


_BINARY_VRS = frozenset({"US", "UL", "SS", "SL", "UV", "SV", "FL", "FD", "AT", "US or SS", "US or OW",
                         "US or SS or OW"})


def _set_key(ds: Dataset, keyword: str, value: Any) -> None:
    """Set a query key; an unknown keyword is an error (setattr would silently make it a Python attribute)."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise ValueError(f"{keyword!r} is not a DICOM attribute keyword")
    vr = dictionary_VR(tag)
    if value == "" and vr in _BINARY_VRS:
        value = None  # a numeric return key is sent empty, as pydicom writes None
    elif value in ("", None) and vr == "SQ":
        value = []
    setattr(ds, keyword, value)


def _chain(first: list[Dataset], rest: Iterator[Dataset]) -> Iterator[Dataset]:
    yield from first
    yield from rest


def _plain(value: Any) -> Any:
    if isinstance(value, pydicom.multival.MultiValue):
        return [str(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return None
    if isinstance(value, pydicom.sequence.Sequence):
        return None
    return str(value) if value is not None else ""
