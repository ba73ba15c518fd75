"""Voxa's DICOM application entity: a set of pynetdicom event handlers over the archive.

Services: Verification, Storage (every storage SOP class, every accepted transfer
syntax, stored as received), Query/Retrieve FIND/MOVE/GET (Patient and Study Root),
Modality Worklist FIND and Modality Performed Procedure Step (N-CREATE/N-SET).
A handler never lets an exception end the association: failures become a status with
an Error Comment the peer can read.
"""

from __future__ import annotations

import copy
import io
import logging
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import pydicom
from pydicom import Dataset
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.tag import BaseTag
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.presentation import AllStoragePresentationContexts, build_context
from pynetdicom.sop_class import (
    ModalityPerformedProcedureStep,
    ModalityWorklistInformationFind,
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from voxa.archive.attributes import Level
from voxa.archive.index import StoredLocation
from voxa.archive.ingest import Archive
from voxa.archive.query import Query, QueryError, matching_instance_ids, run_query
from voxa.config import Settings
from voxa.dicom import transfer_syntaxes
from voxa.dimse import status as st
from voxa.dimse.peers import PeerInfo, PeerRegistry
from voxa.security.accounts import AccessFilter, Accounts
from voxa.security.audit import (
    AuditAction,
    AuditEvent,
    AuditInterface,
    AuditOutcome,
    AuditTrail,
    AuditUnavailable,
)

log = logging.getLogger(__name__)

_PATIENT_ROOT = {
    str(PatientRootQueryRetrieveInformationModelFind),
    str(PatientRootQueryRetrieveInformationModelMove),
    str(PatientRootQueryRetrieveInformationModelGet),
}
_QR_FIND = (PatientRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelFind)
_QR_RETRIEVE = (
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelMove,
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelGet,
)
_LEVELS = {"PATIENT": Level.PATIENT, "STUDY": Level.STUDY, "SERIES": Level.SERIES, "IMAGE": Level.IMAGE}
_UNCOMPRESSED = {str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian)}
_MAX_CONTEXTS = 128


def set_nodelay(sock: socket.socket | None) -> None:
    """Small DIMSE messages must not wait for a delayed ACK (about 40 ms per response)."""
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


def _assoc_socket(assoc: Any) -> socket.socket | None:
    dul_sock = getattr(getattr(assoc, "dul", None), "socket", None)
    return getattr(dul_sock, "socket", None)


def _on_conn_open(event: evt.Event) -> None:
    set_nodelay(_assoc_socket(event.assoc))


class _SharedContexts(list[Any]):
    """The listener's supported presentation contexts.

    pynetdicom deep-copies them for every association it accepts; for every storage SOP
    class with thirty-odd transfer syntaxes that is about 50 ms per association, more than
    the association itself.  Negotiation only reads them, so each association gets its own
    shallow copy of each context.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        return [copy.copy(cx) for cx in self]


class _PeerAE(AE):
    """An AE whose accepted calling AE titles follow the peer registry as it changes."""

    def __init__(self, ae_title: str, registry: PeerRegistry, accept_unknown: bool):
        super().__init__(ae_title=ae_title)
        self._registry = registry
        self._accept_unknown = accept_unknown

    @property  # type: ignore[override]
    def require_calling_aet(self) -> list[str]:
        if self._accept_unknown:
            return []
        # An empty list would mean "accept everyone"; [""] matches no real AE title.
        return self._registry.aet_titles() or [""]

    @require_calling_aet.setter
    def require_calling_aet(self, value: list[str]) -> None:  # pragma: no cover - set by AE.__init__ only
        pass


def _text_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple | pydicom.multival.MultiValue):
        return "\\".join(str(v) for v in value)
    return str(value)


def identifier_query(identifier: Dataset, model_uid: str) -> Query:
    """A :class:`Query` from a C-FIND/C-MOVE/C-GET identifier."""
    raw_level = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
    if raw_level not in _LEVELS:
        raise QueryError(f"Query/Retrieve Level {raw_level!r} is not PATIENT, STUDY, SERIES or IMAGE")
    level = _LEVELS[raw_level]
    patient_root = model_uid in _PATIENT_ROOT
    if level is Level.PATIENT and not patient_root:
        raise QueryError("PATIENT level is only defined for the Patient Root model")
    filters: dict[str, str] = {}
    keys: list[str] = []
    for elem in identifier:
        kw = elem.keyword
        if not kw or kw in ("QueryRetrieveLevel", "SpecificCharacterSet"):
            continue
        keys.append(kw)
        if elem.VR == "SQ":
            continue
        text = _text_value(elem.value)
        if text:
            filters[kw] = text
    return Query(level=level, filters=filters, return_keys=keys, patient_root=patient_root)


_BINARY_INT = {"US": "<H", "SS": "<h", "UL": "<I", "SL": "<i"}


def _raw(tag: int, vr: str, value: Any, implicit: bool) -> RawDataElement:
    if value is None or value == "":
        data = b""
    elif vr in _BINARY_INT:
        data = b"".join(struct.pack(_BINARY_INT[vr], int(v)) for v in str(value).split("\\"))
    else:
        data = str(value).encode("utf-8")
        if len(data) % 2:
            data += b"\0" if vr == "UI" else b" "
    return RawDataElement(BaseTag(tag), vr, len(data), data, 0, implicit, True)


def _response_identifier(identifier: Dataset, level_text: str, values: dict[str, Any], aet: str,
                         implicit: bool) -> Dataset:
    """A C-FIND response identifier built from already encoded elements.

    pydicom writes raw elements as they are when the dataset's original encoding matches
    the one it writes; building them directly makes each response several times cheaper
    than creating and encoding DataElements (a 1,000-match query sends 1,000 of these).
    """
    elems: dict[BaseTag, Any] = {}
    non_ascii = False
    for elem in identifier:
        kw = elem.keyword
        tag = int(elem.tag)
        if not kw or kw in ("QueryRetrieveLevel", "SpecificCharacterSet", "RetrieveAETitle"):
            continue
        vr = str(elem.VR)
        if vr == "SQ":
            elems[BaseTag(tag)] = DataElement(tag, "SQ", [])
            continue
        value = values.get(kw)
        if value is not None and not str(value).isascii():
            non_ascii = True
        elems[BaseTag(tag)] = _raw(tag, vr, value, implicit)
    elems[BaseTag(0x00080052)] = _raw(0x00080052, "CS", level_text, implicit)
    elems[BaseTag(0x00080054)] = _raw(0x00080054, "AE", aet, implicit)
    if non_ascii:
        elems[BaseTag(0x00080005)] = _raw(0x00080005, "CS", "ISO_IR 192", implicit)
    ds = Dataset(elems)
    ds.set_original_encoding(implicit, True, ds._character_set)
    return ds


class DicomServer:
    """The DIMSE side of ``voxa serve``."""

    def __init__(self, settings: Settings, archive: Archive, peers: PeerRegistry, *,
                 accounts: Accounts | None = None, audit: AuditTrail | None = None):
        self.settings = settings
        self.archive = archive
        self.peers = peers
        self.accounts = accounts
        self.audit = audit
        # (association id, Study Instance UID) already recorded as stored: one audit record
        # per study and association, not one per instance.
        self._stored_studies: dict[int, set[str]] = {}
        self.ae = self._build_ae()
        self._server: Any = None
        self.port: int | None = None

    # -- set-up ---------------------------------------------------------------------------

    def _build_ae(self) -> AE:
        s = self.settings
        ae = _PeerAE(s.aet, self.peers, s.accept_unknown_peers)
        ae.maximum_pdu_size = s.max_pdu_size
        ae.maximum_associations = s.max_associations
        ae.dimse_timeout = s.dimse_timeout_s
        ae.network_timeout = s.network_timeout_s
        ae.acse_timeout = 30
        ae.require_called_aet = True
        ts = list(transfer_syntaxes.SCP_PREFERENCE)
        ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES[:])
        for cx in AllStoragePresentationContexts:
            # SCU role too: C-GET sends the matches back over the requestor's association.
            ae.add_supported_context(cx.abstract_syntax, ts, scu_role=True, scp_role=True)
        for sop in (*_QR_FIND, *_QR_RETRIEVE, ModalityWorklistInformationFind, ModalityPerformedProcedureStep):
            ae.add_supported_context(sop, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        return ae

    def handlers(self) -> list[tuple[Any, Any]]:
        return [
            (evt.EVT_CONN_OPEN, _on_conn_open),
            (evt.EVT_RELEASED, self._forget_association),
            (evt.EVT_ABORTED, self._forget_association),
            (evt.EVT_C_ECHO, self.on_echo),
            (evt.EVT_C_STORE, self.on_store),
            (evt.EVT_C_FIND, self.on_find),
            (evt.EVT_C_MOVE, self.on_move),
            (evt.EVT_C_GET, self.on_get),
            (evt.EVT_N_CREATE, self.on_n_create),
            (evt.EVT_N_SET, self.on_n_set),
        ]

    def start(self, host: str | None = None, port: int | None = None) -> None:
        host = host if host is not None else self.settings.dicom_host
        port = port if port is not None else self.settings.dicom_port
        self._server = self.ae.start_server((host, port), block=False, evt_handlers=self.handlers())
        self._server.contexts = _SharedContexts(self._server.contexts)
        self.port = self._server.server_address[1]
        log.info("DICOM listening on %s:%s as %s", host, self.port, self.settings.aet)

    def stop(self, grace_s: float = 30.0) -> None:
        """Stop accepting, let associations in flight finish (up to ``grace_s``), then close."""
        if self._server is None:
            return
        server, self._server = self._server, None
        # socketserver.shutdown stops the accept loop; open associations keep running.
        server.shutdown()
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            active = [a for a in server.active_associations if a.is_alive()]
            if not active:
                break
            time.sleep(0.05)
        for assoc in server.active_associations:
            if assoc.is_alive():
                log.warning("aborting association with %s after %.0f s shutdown grace", assoc.requestor.ae_title,
                            grace_s)
                assoc.abort()

    # -- permission -----------------------------------------------------------------------

    def _peer_of(self, event: evt.Event) -> PeerInfo | None:
        return self.peers.by_aet(event.assoc.requestor.ae_title)

    def _allowed(self, event: evt.Event, what: str) -> bool:
        peer = self._peer_of(event)
        if peer is None:
            return self.settings.accept_unknown_peers
        return bool(getattr(peer, f"allow_{what}"))

    def _access(self, event: evt.Event) -> tuple[AccessFilter | None, str, str]:
        """(patient-level access, audit actor, actor role) of the calling peer.

        A peer mapped to an account sees what that account sees; DIMSE cannot de-identify,
        so an account limited to teaching cases sees nothing here."""
        calling = event.assoc.requestor.ae_title.strip()
        peer = self._peer_of(event)
        if peer is None or not peer.account or self.accounts is None:
            return None, f"AE:{calling}", ""
        try:
            user = self.accounts.get_user(peer.account)
        except LookupError:
            log.error("peer %s is mapped to unknown account %r: it sees no patients", peer.name, peer.account)
            return AccessFilter(), f"AE:{calling}", ""
        access = self.accounts.patient_filter(user)
        if access.teaching_only:
            access = AccessFilter()
        return access, user.username, user.role

    @staticmethod
    def _source(event: evt.Event) -> str:
        return f"{event.assoc.requestor.ae_title.strip()}@{event.assoc.requestor.address}"

    def _record(self, event: evt.Event, action: AuditAction, actor: str, role: str, *, patient_ids: Any = (),
                study_uids: Any = (), resource: str = "", outcome: AuditOutcome = AuditOutcome.SUCCESS,
                detail: dict[str, Any] | None = None) -> None:
        """Append an audit record; raises AuditUnavailable (callers refuse the operation)."""
        if self.audit is None:
            return
        self.audit.record(AuditEvent(
            actor=actor, actor_role=role, action=action, source=self._source(event), interface=AuditInterface.DIMSE,
            outcome=outcome, patient_ids=sorted({p for p in patient_ids if p}),
            study_instance_uids=sorted({u for u in study_uids if u}), resource=resource, detail=detail or {}))

    def _forget_association(self, event: evt.Event) -> None:
        self._stored_studies.pop(id(event.assoc), None)

    def _audit_store(self, event: evt.Event, study_uid: str) -> None:
        seen = self._stored_studies.setdefault(id(event.assoc), set())
        if study_uid in seen:
            return
        from sqlalchemy import select

        from voxa.archive.access import ST

        with self.archive.index.read() as conn:
            patient_id = conn.execute(select(ST.c.patient_id).where(ST.c.study_instance_uid == study_uid)).scalar()
        _, actor, role = self._access(event)
        self._record(event, AuditAction.STORE, actor, role, patient_ids=[patient_id or ""], study_uids=[study_uid],
                     resource="C-STORE")
        seen.add(study_uid)

    # -- services -------------------------------------------------------------------------

    def on_echo(self, event: evt.Event) -> int:
        return st.SUCCESS

    def on_store(self, event: evt.Event) -> Dataset:
        calling = event.assoc.requestor.ae_title
        if not self._allowed(event, "store"):
            return st.status_dataset(st.REFUSED_NOT_AUTHORIZED, f"AE {calling} may not store to this archive")
        req = event.request
        try:
            data = req.DataSet.getvalue()
            result = self.archive.ingest_dataset_bytes(
                data,
                sop_class_uid=str(req.AffectedSOPClassUID),
                sop_instance_uid=str(req.AffectedSOPInstanceUID),
                transfer_syntax=str(event.context.transfer_syntax),
                calling_aet=calling,
                source="dimse",
            )
        except Exception as e:  # noqa: BLE001 - the association must survive
            log.exception("C-STORE from %s failed", calling)
            return st.status_dataset(st.OUT_OF_RESOURCES, f"internal error: {type(e).__name__}")
        if result.ok and result.study_instance_uid:
            try:
                self._audit_store(event, result.study_instance_uid)
            except AuditUnavailable:
                # Stored but not audited: say so rather than acknowledge silently.
                return st.status_dataset(st.OUT_OF_RESOURCES, "audit trail cannot be written; store not confirmed")
        return st.store_status(result)

    def on_find(self, event: evt.Event) -> Iterator[tuple[Any, Dataset | None]]:
        calling = event.assoc.requestor.ae_title
        if not self._allowed(event, "find"):
            yield st.status_dataset(st.REFUSED_NOT_AUTHORIZED, f"AE {calling} may not query this archive"), None
            return
        model = str(event.request.AffectedSOPClassUID)
        try:
            identifier = event.identifier
        except Exception as e:  # noqa: BLE001
            yield st.status_dataset(st.QR_IDENTIFIER_DOES_NOT_MATCH, f"identifier cannot be decoded: {e}"), None
            return
        if model == str(ModalityWorklistInformationFind):
            from voxa.dimse import worklist

            yield from worklist.handle_find(self.archive.index, identifier, event)
            return
        access, actor, role = self._access(event)
        try:
            q = identifier_query(identifier, model)
            q.access = access
            matches = run_query(self.archive.index, q)
            self._record(event, AuditAction.QUERY, actor, role, resource=f"C-FIND {q.level.name}",
                         patient_ids=[str(m.values.get("PatientID") or "") for m in matches],
                         study_uids=[str(m.values.get("StudyInstanceUID") or "") for m in matches],
                         detail={"keys": sorted(k for k, v in q.filters.items() if v not in ("", "*")),
                                 "matches": len(matches)})
        except AuditUnavailable as e:
            yield st.status_dataset(st.QR_UNABLE_TO_PROCESS, str(e)), None
            return
        except QueryError as e:
            yield st.status_dataset(st.QR_IDENTIFIER_DOES_NOT_MATCH, str(e)), None
            return
        except Exception as e:  # noqa: BLE001
            log.exception("C-FIND failed")
            yield st.status_dataset(st.QR_UNABLE_TO_PROCESS, f"query failed: {type(e).__name__}"), None
            return
        level_text = str(identifier.QueryRetrieveLevel).strip().upper()
        implicit = event.context.transfer_syntax == ImplicitVRLittleEndian
        for m in matches:
            if event.is_cancelled:
                yield st.CANCEL, None
                return
            yield st.PENDING, _response_identifier(identifier, level_text, m.values, self.settings.aet, implicit)

    # -- retrieve -------------------------------------------------------------------------

    def _retrieve_locations(self, event: evt.Event, destination: str) -> list[StoredLocation]:
        """The instances to send, within the caller's patient-level access; audited first
        (raises AuditUnavailable: the retrieve is refused)."""
        access, actor, role = self._access(event)
        q = identifier_query(event.identifier, str(event.request.AffectedSOPClassUID))
        ids = matching_instance_ids(self.archive.index, q.level, q.filters, access)
        locs = self.archive.index.locate(instance_ids=ids) if ids else []
        study_uids = sorted({loc.study_instance_uid for loc in locs})
        patient_ids: list[str] = []
        if study_uids:
            from sqlalchemy import select

            from voxa.archive.access import ST

            with self.archive.index.read() as conn:
                patient_ids = list(conn.execute(select(ST.c.patient_id).where(
                    ST.c.study_instance_uid.in_(study_uids))).scalars())
        self._record(event, AuditAction.RETRIEVE, actor, role, patient_ids=patient_ids, study_uids=study_uids,
                     resource=f"{'C-GET' if not destination else 'C-MOVE'} {q.level.name}",
                     detail={"destination": destination, "instances": len(locs)} if destination
                     else {"instances": len(locs)})
        return locs

    def _load_for_context(self, loc: StoredLocation, accepted: list[tuple[str, str]]) -> Dataset:
        """The stored dataset, decompressed when the peer accepted no context for its syntax."""
        data = self.archive.blobs.read(loc.blob_key)
        ds = pydicom.dcmread(io.BytesIO(data))
        ts = loc.transfer_syntax_uid
        if (loc.sop_class_uid, ts) in accepted or ts in _UNCOMPRESSED:
            return ds
        if any(sop == loc.sop_class_uid and t in _UNCOMPRESSED for sop, t in accepted):
            ds.decompress()
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        return ds

    @staticmethod
    def _sub_contexts(locs: list[StoredLocation]) -> list[Any]:
        """Contexts proposed to a move destination: each stored syntax, then uncompressed."""
        contexts: list[Any] = []
        seen: set[tuple[str, str]] = set()
        for loc in locs:
            key = (loc.sop_class_uid, loc.transfer_syntax_uid)
            if key not in seen and loc.transfer_syntax_uid not in _UNCOMPRESSED:
                seen.add(key)
                contexts.append(build_context(loc.sop_class_uid, [loc.transfer_syntax_uid]))
            plain = (loc.sop_class_uid, "uncompressed")
            if plain not in seen:
                seen.add(plain)
                contexts.append(build_context(loc.sop_class_uid, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]))
        if len(contexts) > _MAX_CONTEXTS:
            log.warning("move needs %d presentation contexts; proposing the first %d", len(contexts), _MAX_CONTEXTS)
        return contexts[:_MAX_CONTEXTS]

    def on_move(self, event: evt.Event) -> Iterator[Any]:
        calling = event.assoc.requestor.ae_title
        dest_aet = str(event.move_destination).strip()
        dest = self.peers.by_aet(dest_aet)
        if not self._allowed(event, "move"):
            log.warning("C-MOVE refused: %s may not retrieve", calling)
            raise PermissionError(f"AE {calling} may not retrieve from this archive")
        if dest is None:
            log.warning("C-MOVE from %s to unknown destination %r", calling, dest_aet)
            yield None, None
            return
        locs = self._retrieve_locations(event, dest.aet)
        sub_assoc: dict[str, Any] = {}

        def _established(e: evt.Event) -> None:
            sub_assoc["assoc"] = e.assoc
            set_nodelay(_assoc_socket(e.assoc))

        yield dest.host, dest.port, {
            "contexts": self._sub_contexts(locs) or [build_context(Verification)],
            "evt_handlers": [(evt.EVT_ESTABLISHED, _established)],
            "ae_title": dest.aet,
        }
        yield len(locs)
        yield from self._sub_operations(event, locs, lambda: sub_assoc.get("assoc"))

    def on_get(self, event: evt.Event) -> Iterator[Any]:
        calling = event.assoc.requestor.ae_title
        if not self._allowed(event, "move"):
            raise PermissionError(f"AE {calling} may not retrieve from this archive")
        locs = self._retrieve_locations(event, "")
        yield len(locs)
        yield from self._sub_operations(event, locs, lambda: event.assoc)

    def _sub_operations(self, event: evt.Event, locs: list[StoredLocation], assoc_of: Any) -> Iterator[Any]:
        for loc in locs:
            if event.is_cancelled:
                yield st.CANCEL, None
                return
            assoc = assoc_of()
            accepted = []
            if assoc is not None:
                for cx in assoc.accepted_contexts:
                    accepted.append((str(cx.abstract_syntax), str(cx.transfer_syntax[0])))
            try:
                ds = self._load_for_context(loc, accepted)
            except Exception as e:  # noqa: BLE001 - one unreadable file must not end the retrieve
                log.error("cannot read stored instance %s for retrieve: %s", loc.sop_instance_uid, e)
                failed = Dataset()
                failed.SOPInstanceUID = loc.sop_instance_uid
                ds = failed
            yield st.PENDING, ds

    # -- MPPS -----------------------------------------------------------------------------

    def on_n_create(self, event: evt.Event) -> tuple[Any, Dataset | None]:
        from voxa.dimse import worklist

        if not self._allowed(event, "store"):  # MPPS comes from the modalities that store
            return st.status_dataset(st.REFUSED_NOT_AUTHORIZED, "this AE may not report performed steps"), None
        return worklist.handle_mpps_create(self.archive.index, event)

    def on_n_set(self, event: evt.Event) -> tuple[Any, Dataset | None]:
        from voxa.dimse import worklist

        if not self._allowed(event, "store"):
            return st.status_dataset(st.REFUSED_NOT_AUTHORIZED, "this AE may not report performed steps"), None
        return worklist.handle_mpps_set(self.archive.index, event)


def quiet_pynetdicom() -> None:
    """pynetdicom logs identifiers (patient names, IDs) at INFO/DEBUG; keep them out of our
    logs.  Turning the identifier dumps off also spares formatting every C-FIND response."""
    from pynetdicom import _config

    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
