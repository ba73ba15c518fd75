"""Modality Worklist (C-FIND) and Modality Performed Procedure Step (N-CREATE / N-SET).

Two halves: data functions over the index (``create_item``, ``list_items``... used by
REST and the CLI too) and the pynetdicom handlers that :mod:`voxa.dimse.server` routes
to.  A worklist item is one Scheduled Procedure Step of one Requested Procedure, so a
C-FIND answer always carries exactly one ScheduledProcedureStepSequence item.

Status transitions of an item (PS3.4 F.7.2): SCHEDULED -> IN PROGRESS when a modality
N-CREATEs a performed step that references it -> COMPLETED or DISCONTINUED when that
step is N-SET to the same.  A performed step that is COMPLETED or DISCONTINUED is final.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

from pydicom import Dataset
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.multival import MultiValue
from pydicom.uid import generate_uid
from pynetdicom import evt
from pynetdicom.dimse_primitives import N_CREATE, N_SET
from sqlalchemy import ColumnElement, Connection, Row, Table, and_, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from voxa.archive.attributes import Kind
from voxa.archive.index import Index
from voxa.archive.models import PerformedProcedureStep, WorklistItem, table_of
from voxa.archive.query import QueryError, clause_for
from voxa.dicom.names import person_name_key
from voxa.dicom.uids import validate_ae_title, validate_uid
from voxa.dimse import status as st

log = logging.getLogger(__name__)

# Typed as Table so that mypy accepts them in insert/update/delete.
W = cast(Table, table_of(WorklistItem))
PPS = cast(Table, table_of(PerformedProcedureStep))

SCHEDULED = "SCHEDULED"
IN_PROGRESS = "IN PROGRESS"
COMPLETED = "COMPLETED"
DISCONTINUED = "DISCONTINUED"
ITEM_STATUSES = (SCHEDULED, IN_PROGRESS, COMPLETED, DISCONTINUED)
_FINAL = (COMPLETED, DISCONTINUED)

NO_LONGER_IN_PROGRESS = "Performed Procedure Step is no longer IN PROGRESS"


class UnknownWorklistItem(LookupError):
    """No worklist item has that id."""


class UnknownPerformedStep(LookupError):
    """No performed procedure step has that SOP Instance UID."""


class DuplicatePerformedStep(ValueError):
    """A performed procedure step with that SOP Instance UID already exists."""


class PerformedStepClosed(ValueError):
    """The performed procedure step is COMPLETED or DISCONTINUED and may not change."""


# --------------------------------------------------------------------------- fields

@dataclass(frozen=True)
class _Field:
    """One worklist item attribute: its column, DICOM keyword and VR, and how it matches."""

    column: str
    keyword: str
    vr: str
    kind: Kind
    in_sps: bool = False  # lives inside ScheduledProcedureStepSequence


_FIELDS: tuple[_Field, ...] = (
    _Field("patient_id", "PatientID", "LO", Kind.TEXT),
    _Field("patient_name", "PatientName", "PN", Kind.PN),
    _Field("patient_birth_date", "PatientBirthDate", "DA", Kind.DATE),
    _Field("patient_sex", "PatientSex", "CS", Kind.TEXT),
    _Field("accession_number", "AccessionNumber", "SH", Kind.TEXT),
    _Field("requested_procedure_id", "RequestedProcedureID", "SH", Kind.TEXT),
    _Field("requested_procedure_description", "RequestedProcedureDescription", "LO", Kind.TEXT),
    _Field("study_instance_uid", "StudyInstanceUID", "UI", Kind.UID),
    _Field("referring_physician_name", "ReferringPhysicianName", "PN", Kind.PN),
    _Field("modality", "Modality", "CS", Kind.TEXT, in_sps=True),
    _Field("scheduled_station_aet", "ScheduledStationAETitle", "AE", Kind.TEXT, in_sps=True),
    _Field("scheduled_station_name", "ScheduledStationName", "SH", Kind.TEXT, in_sps=True),
    _Field("scheduled_start_date", "ScheduledProcedureStepStartDate", "DA", Kind.DATE, in_sps=True),
    _Field("scheduled_start_time", "ScheduledProcedureStepStartTime", "TM", Kind.TIME, in_sps=True),
    _Field("scheduled_performing_physician_name", "ScheduledPerformingPhysicianName", "PN", Kind.PN,
           in_sps=True),
    _Field("scheduled_procedure_step_id", "ScheduledProcedureStepID", "SH", Kind.TEXT, in_sps=True),
    _Field("scheduled_procedure_step_description", "ScheduledProcedureStepDescription", "LO", Kind.TEXT,
           in_sps=True),
    _Field("status", "ScheduledProcedureStepStatus", "CS", Kind.TEXT, in_sps=True),
)
FIELD_NAMES: tuple[str, ...] = tuple(f.column for f in _FIELDS)
_BY_COLUMN = {f.column: f for f in _FIELDS}
_TOP_BY_KEYWORD = {f.keyword: f for f in _FIELDS if not f.in_sps}
_SPS_BY_KEYWORD = {f.keyword: f for f in _FIELDS if f.in_sps}
_TAG = {f.keyword: cast(int, tag_for_keyword(f.keyword)) for f in _FIELDS}

# PS3.5 6.2 maximum lengths (PN: three component groups of 64).
_MAX_LEN = {"LO": 64, "SH": 16, "CS": 16, "PN": 194, "AE": 16}
_CS_RE = re.compile(r"^[A-Z0-9 _]*$")
_DATE_FORMATS = ("%Y%m%d", "%Y-%m-%d")
_TIME_RE = re.compile(r"^(\d{2}):?(\d{2})(?::?(\d{2}))?$")


def _normalize(f: _Field, value: Any) -> str:
    """The value as the index stores it, or ValueError naming the field and the rule broken."""
    if value is None:
        return ""
    text = str(value).strip()
    if not text:
        return ""
    if f.vr == "DA":
        for fmt in _DATE_FORMATS:
            try:
                return dt.datetime.strptime(text, fmt).strftime("%Y%m%d")
            except ValueError:
                pass
        raise ValueError(f"{f.column}: {text!r} is not a date (YYYYMMDD)")
    if f.vr == "TM":
        m = _TIME_RE.match(text)
        hh, mm, ss = (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)) if m else (99, 0, 0)
        if hh > 23 or mm > 59 or ss > 59:
            raise ValueError(f"{f.column}: {text!r} is not a time (HHMMSS)")
        return f"{hh:02d}{mm:02d}{ss:02d}"
    if f.vr == "UI":
        return validate_uid(text, f.column)
    if f.vr == "AE":
        return validate_ae_title(text)
    if "\\" in text or any(ord(c) < 0x20 for c in text):
        raise ValueError(f"{f.column}: backslashes and control characters are not allowed")
    if f.vr == "CS":
        text = text.upper()
        if not _CS_RE.match(text):
            raise ValueError(f"{f.column}: {text!r} may hold only A-Z, 0-9, space and underscore")
    limit = _MAX_LEN[f.vr]
    if len(text) > limit:
        raise ValueError(f"{f.column}: longer than {limit} characters")
    return text


def _generated_id(prefix: str) -> str:
    # SH holds 16 characters; 12 hex digits (48 random bits) make a collision negligible.
    return prefix + secrets.token_hex(6).upper()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    # SQLite gives back naive datetimes; everything is written in UTC.
    return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).isoformat()


def _item_dict(row: Row[Any]) -> dict[str, Any]:
    m = row._mapping
    out: dict[str, Any] = {"id": m["id"]}
    out.update({name: m[name] for name in FIELD_NAMES})
    out["created_at"], out["updated_at"] = _iso(m["created_at"]), _iso(m["updated_at"])
    return out


# --------------------------------------------------------------------------- worklist items

def create_item(index: Index, **fields: Any) -> dict[str, Any]:
    """Schedule a procedure step; returns the stored item with its id and generated identifiers.

    Fields are the snake_case names in :data:`FIELD_NAMES`.  PatientID and PatientName
    are required; StudyInstanceUID, AccessionNumber, RequestedProcedureID and
    ScheduledProcedureStepID are generated when absent.
    """
    unknown = sorted(set(fields) - set(FIELD_NAMES))
    if unknown:
        raise ValueError(f"unknown worklist field(s): {', '.join(unknown)}")
    values = {name: _normalize(_BY_COLUMN[name], fields.get(name)) for name in FIELD_NAMES}
    for required in ("patient_id", "patient_name"):
        if not values[required]:
            raise ValueError(f"{required} is required")
    values["status"] = values["status"] or SCHEDULED
    if values["status"] not in ITEM_STATUSES:
        raise ValueError(f"status: {values['status']!r} is not one of {', '.join(ITEM_STATUSES)}")
    values["study_instance_uid"] = values["study_instance_uid"] or str(generate_uid())
    values["accession_number"] = values["accession_number"] or _generated_id("VX")
    values["requested_procedure_id"] = values["requested_procedure_id"] or _generated_id("RP")
    values["scheduled_procedure_step_id"] = values["scheduled_procedure_step_id"] or _generated_id("SPS")
    now = _now()
    with index.write() as conn:
        row = conn.execute(
            insert(W).values(patient_name_key=person_name_key(values["patient_name"]),
                             created_at=now, updated_at=now, **values).returning(*W.c)
        ).one()
    return _item_dict(row)


def list_items(index: Index, *, patient_id: str | None = None, patient_name: str | None = None,
               accession_number: str | None = None, modality: str | None = None,
               station_aet: str | None = None, date: str | None = None, status: str | None = None,
               limit: int | None = None) -> list[dict[str, Any]]:
    """Items matching the filters, in scheduled order.

    Filters use C-FIND matching: ``*``/``?`` wildcards, a case-insensitive patient name,
    ``date`` as ``YYYYMMDD`` or a range ``YYYYMMDD-YYYYMMDD`` (either end may be open).
    QueryError (a ValueError) for a value that cannot be matched.
    """
    wanted = {
        "patient_id": patient_id, "patient_name": patient_name, "accession_number": accession_number,
        "modality": modality, "scheduled_station_aet": station_aet, "scheduled_start_date": date,
        "status": status.upper() if status else status,
    }
    conds = []
    for column, value in wanted.items():
        if value:
            c = _clause(_BY_COLUMN[column], str(value))
            if c is not None:
                conds.append(c)
    stmt = select(W).where(and_(*conds)) if conds else select(W)
    stmt = stmt.order_by(W.c.scheduled_start_date, W.c.scheduled_start_time, W.c.id)
    if limit is not None:
        stmt = stmt.limit(limit)
    with index.read() as conn:
        return [_item_dict(r) for r in conn.execute(stmt)]


def get_item(index: Index, item_id: int) -> dict[str, Any]:
    with index.read() as conn:
        row = conn.execute(select(W).where(W.c.id == item_id)).first()
    if row is None:
        raise UnknownWorklistItem(f"no worklist item with id {item_id}")
    return _item_dict(row)


def update_item_status(index: Index, item_id: int, status: str) -> dict[str, Any]:
    """Set an item's status by hand (a RIS cancelling a step, an operator re-opening one)."""
    status = status.strip().upper()
    if status not in ITEM_STATUSES:
        raise ValueError(f"status: {status!r} is not one of {', '.join(ITEM_STATUSES)}")
    with index.write() as conn:
        done = conn.execute(update(W).where(W.c.id == item_id).values(status=status, updated_at=_now()))
        if done.rowcount == 0:
            raise UnknownWorklistItem(f"no worklist item with id {item_id}")
        row = conn.execute(select(W).where(W.c.id == item_id)).one()
    return _item_dict(row)


def delete_item(index: Index, item_id: int) -> None:
    """Remove an item; performed steps that referenced it are kept, unlinked."""
    with index.write() as conn:
        # Done here rather than left to ON DELETE SET NULL: SQLite enforces foreign keys
        # only where the connection enabled them.
        conn.execute(update(PPS).where(PPS.c.worklist_item_fk == item_id).values(worklist_item_fk=None))
        done = conn.execute(delete(W).where(W.c.id == item_id))
        if done.rowcount == 0:
            raise UnknownWorklistItem(f"no worklist item with id {item_id}")


def _clause(f: _Field, value: str) -> ColumnElement[bool] | None:
    column = W.c[f.column]
    key: Any = None
    if f.kind is Kind.PN:
        # Only the patient name has a stored key column; physician names are compared
        # upper-cased in SQL (case-insensitive, but not accent-insensitive).
        key = W.c.patient_name_key if f.column == "patient_name" else func.upper(column)
    return clause_for(column, f.kind, value, keyword=f.keyword, key_column=key)


# --------------------------------------------------------------------------- Modality Worklist C-FIND

@dataclass
class _FindRequest:
    conditions: list[ColumnElement[bool]] = field(default_factory=list)
    # The identifier's top-level elements and, when asked for, the SPS item's elements.
    top: list[DataElement] = field(default_factory=list)
    sps: list[DataElement] | None = None
    status_asked: bool = False


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple | MultiValue):
        return "\\".join(str(v) for v in value)
    return str(value)


def _parse_find(identifier: Dataset) -> _FindRequest:
    """Matching conditions and requested keys; QueryError for a query this model cannot answer."""
    req = _FindRequest()
    for elem in identifier:
        kw = elem.keyword
        if not kw or kw in ("SpecificCharacterSet", "QueryRetrieveLevel"):
            continue
        req.top.append(elem)
        if kw == "ScheduledProcedureStepSequence":
            items = list(elem.value or [])
            if len(items) > 1:
                raise QueryError("ScheduledProcedureStepSequence must hold at most one item")
            req.sps = [e for e in items[0] if e.keyword] if items else []
            for sub in req.sps:
                f = _SPS_BY_KEYWORD.get(sub.keyword)
                if f is None or sub.VR == "SQ":
                    continue
                value = _text(sub.value)
                if f.column == "status" and value.strip():
                    req.status_asked = True
                    value = value.upper()
                c = _clause(f, value)
                if c is not None:
                    req.conditions.append(c)
            continue
        f = _TOP_BY_KEYWORD.get(kw)
        if f is None or elem.VR == "SQ":
            continue  # not stored: matches universally and is returned empty
        c = _clause(f, _text(elem.value))
        if c is not None:
            req.conditions.append(c)
    if not req.status_asked:
        # A modality asks for work still to do: started or finished steps are not offered.
        req.conditions.append(W.c.status == SCHEDULED)
    return req


def _put(ds: Dataset, elem: DataElement, value: str) -> bool:
    """Add the requested element with ``value`` (empty when unknown); True when non-ASCII."""
    try:
        vr = dictionary_VR(elem.tag)
    except KeyError:
        vr = elem.VR
    if vr == "SQ":
        ds.add_new(elem.tag, "SQ", [])
        return False
    ds.add_new(elem.tag, vr, value if value else None)
    return not value.isascii()


def _response(req: _FindRequest, row: Row[Any]) -> Dataset:
    m = row._mapping
    ds = Dataset()
    non_ascii = False
    for elem in req.top:
        if elem.keyword == "ScheduledProcedureStepSequence":
            item = Dataset()
            # An empty sequence in the query is universal matching: return the whole item.
            wanted = req.sps or [DataElement(_TAG[f.keyword], f.vr, None) for f in _SPS_BY_KEYWORD.values()]
            for sub in wanted:
                f = _SPS_BY_KEYWORD.get(sub.keyword)
                non_ascii |= _put(item, sub, str(m[f.column]) if f else "")
            ds.add_new(elem.tag, "SQ", [item])
            continue
        f = _TOP_BY_KEYWORD.get(elem.keyword)
        non_ascii |= _put(ds, elem, str(m[f.column]) if f else "")
    if non_ascii:
        ds.SpecificCharacterSet = "ISO_IR 192"
    return ds


def _select_rows(index: Index, req: _FindRequest) -> list[Row[Any]]:
    stmt = select(W).where(and_(*req.conditions)).order_by(
        W.c.scheduled_start_date, W.c.scheduled_start_time, W.c.id)
    with index.read() as conn:
        return list(conn.execute(stmt).all())


def handle_find(index: Index, identifier: Dataset,
                event: evt.Event) -> Iterator[tuple[int | Dataset, Dataset | None]]:
    """EVT_C_FIND on the Modality Worklist Information Model: one pending response per item."""
    try:
        req = _parse_find(identifier)
    except QueryError as e:
        yield st.status_dataset(st.QR_IDENTIFIER_DOES_NOT_MATCH, str(e)), None
        return
    except Exception as e:  # noqa: BLE001 - an undecodable element is the sender's problem
        yield st.status_dataset(st.QR_IDENTIFIER_DOES_NOT_MATCH, f"identifier cannot be decoded: {e}"), None
        return
    try:
        rows = _select_rows(index, req)
    except Exception as e:  # noqa: BLE001 - the association must survive
        log.exception("Modality Worklist C-FIND failed")
        yield st.status_dataset(st.QR_UNABLE_TO_PROCESS, f"query failed: {type(e).__name__}"), None
        return
    for row in rows:
        if event.is_cancelled:
            yield st.CANCEL, None
            return
        yield st.PENDING, _response(req, row)


# --------------------------------------------------------------------------- performed procedure steps

def _dataset_json(ds: Dataset) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for elem in ds:
        try:
            out[f"{int(elem.tag):08X}"] = elem.to_json_dict(bulk_data_element_handler=None,
                                                           bulk_data_threshold=1 << 20)
        except Exception:  # noqa: BLE001 - one unconvertible private element must not lose the step
            log.debug("MPPS element %s not kept: cannot be written as DICOM JSON", elem.tag)
    return out


def _first_text(ds: Dataset, keyword: str) -> str:
    return _text(ds.get(keyword, "")).strip()


def _linked_item(conn: Connection, ds: Dataset) -> Row[Any] | None:
    """The worklist item the step performs, from its ScheduledStepAttributesSequence.

    Accession Number + Scheduled Procedure Step ID first (what the modality copied from
    the worklist answer), then Study Instance UID, then Accession Number alone when it
    names one item.  Only the first match is linked: the table holds one item per step.
    """
    for ref in ds.get("ScheduledStepAttributesSequence", None) or []:
        accession = _first_text(ref, "AccessionNumber")
        sps_id = _first_text(ref, "ScheduledProcedureStepID")
        study_uid = _first_text(ref, "StudyInstanceUID")
        if accession and sps_id:
            row = conn.execute(select(W).where(W.c.accession_number == accession,
                                               W.c.scheduled_procedure_step_id == sps_id)
                               .order_by(W.c.id)).first()
            if row is not None:
                return row
        if study_uid:
            # Several steps of one study: prefer the one named.
            row = conn.execute(select(W).where(W.c.study_instance_uid == study_uid).order_by(
                (W.c.scheduled_procedure_step_id == sps_id).desc(), W.c.id)).first()
            if row is not None:
                return row
        if accession:
            rows = conn.execute(select(W).where(W.c.accession_number == accession).limit(2)).all()
            if len(rows) == 1:
                return rows[0]
    return None


def create_performed_step(index: Index, *, sop_instance_uid: str, dataset: Dataset,
                          calling_aet: str = "", sop_class_uid: str = "") -> dict[str, Any]:
    """Record an MPPS N-CREATE and move the worklist item it references to IN PROGRESS.

    ValueError when the status is not IN PROGRESS or the UID is invalid;
    :class:`DuplicatePerformedStep` when the SOP Instance UID exists.
    """
    uid = validate_uid(sop_instance_uid, "Affected SOP Instance UID")
    status = _first_text(dataset, "PerformedProcedureStepStatus").upper()
    if not status:
        raise ValueError("Performed Procedure Step Status is missing")
    if status != IN_PROGRESS:
        raise ValueError(f"Performed Procedure Step Status must be IN PROGRESS, not {status!r}")
    stored = _dataset_json(dataset)
    # SOP Common: the step's own identity travels in the command set, not the attribute list.
    if sop_class_uid:
        stored["00080016"] = {"vr": "UI", "Value": [sop_class_uid]}
    stored["00080018"] = {"vr": "UI", "Value": [uid]}
    first_ref = (dataset.get("ScheduledStepAttributesSequence", None) or [Dataset()])[0]
    now = _now()
    try:
        with index.write() as conn:
            if conn.execute(select(PPS.c.id).where(PPS.c.sop_instance_uid == uid)).first() is not None:
                raise DuplicatePerformedStep(f"Performed Procedure Step {uid} already exists")
            item = _linked_item(conn, dataset)
            conn.execute(insert(PPS).values(
                sop_instance_uid=uid, status=IN_PROGRESS, worklist_item_fk=item.id if item else None,
                calling_aet=calling_aet[:16], study_instance_uid=_first_text(first_ref, "StudyInstanceUID")[:64],
                accession_number=_first_text(first_ref, "AccessionNumber")[:64],
                patient_id=_first_text(dataset, "PatientID")[:64],
                dataset_json=json.dumps(stored, ensure_ascii=False), created_at=now, updated_at=now,
            ))
            if item is not None and item.status == SCHEDULED:
                conn.execute(update(W).where(W.c.id == item.id).values(status=IN_PROGRESS, updated_at=now))
    except IntegrityError:
        # A concurrent N-CREATE of the same UID won the insert (PostgreSQL).
        raise DuplicatePerformedStep(f"Performed Procedure Step {uid} already exists") from None
    return get_performed_step(index, uid)


def set_performed_step(index: Index, sop_instance_uid: str, modifications: Dataset) -> dict[str, Any]:
    """Apply an MPPS N-SET: replace the given attributes; a final status also closes the item.

    :class:`UnknownPerformedStep`, :class:`PerformedStepClosed` when the step is already
    final, ValueError for a status other than IN PROGRESS, COMPLETED or DISCONTINUED.
    """
    uid = sop_instance_uid.strip()
    new_status = _first_text(modifications, "PerformedProcedureStepStatus").upper()
    if "PerformedProcedureStepStatus" in modifications and new_status not in (IN_PROGRESS, *_FINAL):
        raise ValueError(f"Performed Procedure Step Status {new_status!r} is not IN PROGRESS, "
                         "COMPLETED or DISCONTINUED")
    now = _now()
    with index.write() as conn:
        row = conn.execute(select(PPS).where(PPS.c.sop_instance_uid == uid).with_for_update()).first()
        if row is None:
            raise UnknownPerformedStep(f"no Performed Procedure Step {uid}")
        if row.status != IN_PROGRESS:
            raise PerformedStepClosed(NO_LONGER_IN_PROGRESS)
        stored = json.loads(row.dataset_json or "{}")
        # N-SET replaces whole attributes (a sequence with all its items), PS3.4 F.7.2.2.
        stored.update(_dataset_json(modifications))
        status = new_status or row.status
        conn.execute(update(PPS).where(PPS.c.id == row.id).values(
            status=status, dataset_json=json.dumps(stored, ensure_ascii=False), updated_at=now))
        if status in _FINAL and row.worklist_item_fk is not None:
            conn.execute(update(W).where(W.c.id == row.worklist_item_fk).values(status=status, updated_at=now))
    return get_performed_step(index, uid)


def _step_dict(row: Row[Any], items: dict[int, dict[str, Any]], with_dataset: bool) -> dict[str, Any]:
    m = row._mapping
    out: dict[str, Any] = {
        "sop_instance_uid": m["sop_instance_uid"], "status": m["status"], "calling_aet": m["calling_aet"],
        "study_instance_uid": m["study_instance_uid"], "accession_number": m["accession_number"],
        "patient_id": m["patient_id"], "worklist_item_id": m["worklist_item_fk"],
        "worklist_item": items.get(m["worklist_item_fk"]) if m["worklist_item_fk"] is not None else None,
        "created_at": _iso(m["created_at"]), "updated_at": _iso(m["updated_at"]),
    }
    if with_dataset:
        out["dataset"] = json.loads(m["dataset_json"] or "{}")
    return out


def _steps(index: Index, where: Any, *, limit: int | None, with_dataset: bool) -> list[dict[str, Any]]:
    stmt = select(PPS)
    if where is not None:
        stmt = stmt.where(where)
    stmt = stmt.order_by(PPS.c.created_at.desc(), PPS.c.id.desc())
    if limit is not None:
        stmt = stmt.limit(limit)
    with index.read() as conn:
        rows = conn.execute(stmt).all()
        fks = {r.worklist_item_fk for r in rows if r.worklist_item_fk is not None}
        items = {r.id: _item_dict(r) for r in conn.execute(select(W).where(W.c.id.in_(fks)))} if fks else {}
    return [_step_dict(r, items, with_dataset) for r in rows]


def list_performed_steps(index: Index, *, status: str | None = None,
                         limit: int | None = None) -> list[dict[str, Any]]:
    """Performed steps, newest first, each with its linked worklist item (or None)."""
    where = PPS.c.status == status.strip().upper() if status else None
    return _steps(index, where, limit=limit, with_dataset=False)


def get_performed_step(index: Index, sop_instance_uid: str) -> dict[str, Any]:
    """One performed step with its linked item and its dataset as DICOM JSON."""
    found = _steps(index, PPS.c.sop_instance_uid == sop_instance_uid.strip(), limit=1, with_dataset=True)
    if not found:
        raise UnknownPerformedStep(f"no Performed Procedure Step {sop_instance_uid}")
    return found[0]


# --------------------------------------------------------------------------- MPPS handlers

def handle_mpps_create(index: Index, event: evt.Event) -> tuple[int | Dataset, Dataset | None]:
    """EVT_N_CREATE on Modality Performed Procedure Step.

    When the request has no Affected SOP Instance UID, one is generated and returned in
    the response Attribute List, from which pynetdicom moves it to the command set.
    """
    req = cast(N_CREATE, event.request)
    given = str(req.AffectedSOPInstanceUID or "").strip()
    uid = given or str(generate_uid())
    try:
        attributes = event.attribute_list
        list(attributes)  # decoding is deferred: fail here, not half-way through the insert
    except Exception as e:  # noqa: BLE001
        return st.status_dataset(st.PROCESSING_FAILURE, f"Attribute List cannot be decoded: {e}"), None
    try:
        create_performed_step(index, sop_instance_uid=uid, dataset=attributes,
                              calling_aet=str(event.assoc.requestor.ae_title).strip(),
                              sop_class_uid=str(req.AffectedSOPClassUID or ""))
    except DuplicatePerformedStep as e:
        return st.status_dataset(st.DUPLICATE_SOP_INSTANCE, str(e)), None
    except ValueError as e:
        return st.status_dataset(st.INVALID_ATTRIBUTE_VALUE, str(e)), None
    except Exception as e:  # noqa: BLE001 - the association must survive
        log.exception("MPPS N-CREATE failed")
        return st.status_dataset(st.PROCESSING_FAILURE, f"internal error: {type(e).__name__}"), None
    response = Dataset()
    response.update(attributes)
    if not given:
        response.AffectedSOPInstanceUID = uid
    return st.SUCCESS, response


def handle_mpps_set(index: Index, event: evt.Event) -> tuple[int | Dataset, Dataset | None]:
    """EVT_N_SET on Modality Performed Procedure Step."""
    uid = str(cast(N_SET, event.request).RequestedSOPInstanceUID or "").strip()
    try:
        modifications = event.modification_list
        list(modifications)
    except Exception as e:  # noqa: BLE001
        return st.status_dataset(st.PROCESSING_FAILURE, f"Modification List cannot be decoded: {e}"), None
    try:
        set_performed_step(index, uid, modifications)
    except UnknownPerformedStep as e:
        return st.status_dataset(st.NO_SUCH_OBJECT_INSTANCE, str(e)), None
    except PerformedStepClosed as e:
        return st.status_dataset(st.PROCESSING_FAILURE, str(e)), None
    except ValueError as e:
        return st.status_dataset(st.INVALID_ATTRIBUTE_VALUE, str(e)), None
    except Exception as e:  # noqa: BLE001 - the association must survive
        log.exception("MPPS N-SET failed")
        return st.status_dataset(st.PROCESSING_FAILURE, f"internal error: {type(e).__name__}"), None
    return st.SUCCESS, modifications
