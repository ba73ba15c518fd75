"""The audit trail: who touched which patient data, when, from where, with what outcome.

Every record is appended to ``audit_records`` in one write transaction that also moves
the ``audit_anchor`` row (the newest ``seq`` and hash).  Records form a hash chain::

    record_hash = sha256(prev_hash + canonical JSON of the record's fields)

with ``prev_hash`` of the first record 64 zeros.  ``verify`` walks the chain and names
every altered record (its hash no longer matches) and every missing one (a gap in
``seq``, or a tail cut below the anchor).

Appends are serialised so the chain stays linear: in-process by the index write lock on
SQLite (and across processes by updating the anchor row first, which takes SQLite's write
lock), by a transaction-scoped advisory lock on PostgreSQL.  ``seq`` is assigned inside
that lock (never by a database sequence, whose rolled-back values would leave gaps).

Fail closed: when a record cannot be written, ``record`` raises ``AuditUnavailable`` and
logs the failure at ERROR without patient identifiers; callers refuse the access.

Records hold identifiers only (patient ID, Study Instance UIDs), never names.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import hashlib
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    DateTime,
    Integer,
    String,
    Text,
    and_,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Mapped, mapped_column

from voxa.archive.index import Index
from voxa.archive.models import Base, table_of

log = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
_PG_LOCK_KEY = 0x766F7861_00A0D17  # "voxa" + "audit": one advisory lock for all appends
_MULTI_SEP = "\\"  # multi-valued identifiers are backslash-joined, as DICOM multi-values are


class AuditAction(enum.StrEnum):
    QUERY = "query"
    VIEW = "view"
    RETRIEVE = "retrieve"
    DOWNLOAD = "download"
    EXPORT = "export"
    PRINT = "print"
    STORE = "store"
    MODIFY = "modify"
    DELETE = "delete"
    LOGIN = "login"
    LOGOUT = "logout"
    LOGIN_FAILED = "login_failed"
    ACCOUNT_CHANGE = "account_change"
    ROLE_CHANGE = "role_change"
    GRANT_CHANGE = "grant_change"
    PEER_CHANGE = "peer_change"
    SETTINGS_CHANGE = "settings_change"
    AUDIT_QUERY = "audit_query"
    AUDIT_EXPORT = "audit_export"


class AuditOutcome(enum.StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    DENIED = "denied"


class AuditInterface(enum.StrEnum):
    HTTP = "http"
    DIMSE = "dimse"
    CLI = "cli"
    SYSTEM = "system"


# -- tables ------------------------------------------------------------------------------


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class AuditRecord(Base):
    """One audited event; append-only, chained by ``prev_hash`` / ``record_hash``."""

    __tablename__ = "audit_records"

    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                     autoincrement=False)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    actor: Mapped[str] = mapped_column(String(128), index=True)
    actor_role: Mapped[str] = mapped_column(String(64), default="")
    source: Mapped[str] = mapped_column(String(255), default="")
    interface: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(32), index=True)
    outcome: Mapped[str] = mapped_column(String(16))
    outcome_detail: Mapped[str] = mapped_column(Text, default="")
    patient_ids: Mapped[str] = mapped_column(Text, default="", index=True)
    study_instance_uids: Mapped[str] = mapped_column(Text, default="")
    resource: Mapped[str] = mapped_column(Text, default="")
    detail: Mapped[str] = mapped_column(Text, default="{}")
    prev_hash: Mapped[str] = mapped_column(String(64))
    record_hash: Mapped[str] = mapped_column(String(64))


class AuditAnchor(Base):
    """A single row (``id`` = 1): the newest record's ``seq`` and hash, moved with every append,
    so that removing records from the end of the trail is detected too."""

    __tablename__ = "audit_anchor"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    last_hash: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


AR = table_of(AuditRecord)
ANCHOR = table_of(AuditAnchor)
AUDIT_TABLES = [AR, ANCHOR]


# -- events and stored records -------------------------------------------------------------


_LIMITS = {"actor": 128, "actor_role": 64, "source": 255}


def _clean_ids(values: str | Iterable[str] | None) -> tuple[str, ...]:
    if values is None:
        return ()
    if isinstance(values, str):
        values = [values]
    # a backslash would split the value when read back; DICOM IDs and UIDs never hold one
    return tuple(v.strip().replace(_MULTI_SEP, "/") for v in values if v and v.strip())


@dataclass
class AuditEvent:
    """What a caller reports: ``AuditEvent(actor="alice", action="view", source="10.0.0.5",
    interface="http", patient_ids="P1", study_instance_uids=["1.2.3"])``.

    Mutable on purpose: inside ``audited(...)`` a caller may add the identifiers it found
    or set ``outcome`` to ``denied`` before raising."""

    actor: str
    action: AuditAction | str
    source: str = ""
    interface: AuditInterface | str = AuditInterface.SYSTEM
    outcome: AuditOutcome | str = AuditOutcome.SUCCESS
    outcome_detail: str = ""
    actor_role: str = ""
    patient_ids: str | Sequence[str] = ()
    study_instance_uids: str | Sequence[str] = ()
    resource: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    def normalised(self) -> dict[str, Any]:
        """Column values (less ``seq``, ``at`` and hashes); raises ValueError on unknown codes."""
        values = {
            "actor": (self.actor or "anonymous")[: _LIMITS["actor"]],
            "actor_role": (self.actor_role or "")[: _LIMITS["actor_role"]],
            "source": (self.source or "")[: _LIMITS["source"]],
            "interface": AuditInterface(self.interface).value,
            "action": AuditAction(self.action).value,
            "outcome": AuditOutcome(self.outcome).value,
            "outcome_detail": self.outcome_detail or "",
            "patient_ids": _MULTI_SEP.join(_clean_ids(self.patient_ids)),
            "study_instance_uids": _MULTI_SEP.join(_clean_ids(self.study_instance_uids)),
            "resource": self.resource or "",
            "detail": canonical_json(self.detail or {}),
        }
        return values


@dataclass(frozen=True)
class AuditEntry:
    """A stored record as read back."""

    seq: int
    at: dt.datetime
    actor: str
    actor_role: str
    source: str
    interface: str
    action: str
    outcome: str
    outcome_detail: str
    patient_ids: tuple[str, ...]
    study_instance_uids: tuple[str, ...]
    resource: str
    detail: dict[str, Any]
    prev_hash: str
    record_hash: str

    @classmethod
    def from_row(cls, row: Any) -> AuditEntry:
        m = row._mapping
        try:
            detail = json.loads(m["detail"] or "{}")
        except ValueError:
            detail = {"unparsed": m["detail"]}
        return cls(seq=m["seq"], at=_utc(m["at"]), actor=m["actor"], actor_role=m["actor_role"],
                   source=m["source"], interface=m["interface"], action=m["action"], outcome=m["outcome"],
                   outcome_detail=m["outcome_detail"], patient_ids=_split(m["patient_ids"]),
                   study_instance_uids=_split(m["study_instance_uids"]), resource=m["resource"],
                   detail=detail if isinstance(detail, dict) else {"value": detail},
                   prev_hash=m["prev_hash"], record_hash=m["record_hash"])

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (``at`` as ISO 8601 UTC with microseconds)."""
        return {"seq": self.seq, "at": format_at(self.at), "actor": self.actor, "actor_role": self.actor_role,
                "source": self.source, "interface": self.interface, "action": self.action,
                "outcome": self.outcome, "outcome_detail": self.outcome_detail,
                "patient_ids": list(self.patient_ids), "study_instance_uids": list(self.study_instance_uids),
                "resource": self.resource, "detail": self.detail, "prev_hash": self.prev_hash,
                "record_hash": self.record_hash}


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(v for v in (value or "").split(_MULTI_SEP) if v)


def _utc(value: dt.datetime) -> dt.datetime:
    # SQLite returns naive datetimes (stored as UTC); PostgreSQL aware ones in the session zone.
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def format_at(value: dt.datetime) -> str:
    return _utc(value).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


_HASHED = ("seq", "at", "actor", "actor_role", "source", "interface", "action", "outcome", "outcome_detail",
           "patient_ids", "study_instance_uids", "resource", "detail")


def compute_hash(prev_hash: str, values: dict[str, Any]) -> str:
    """sha256 over ``prev_hash`` and the canonical JSON of the stored column values."""
    fields = {k: values[k] for k in _HASHED}
    fields["at"] = format_at(fields["at"])
    return hashlib.sha256((prev_hash + canonical_json(fields)).encode("utf-8")).hexdigest()


# -- the trail -----------------------------------------------------------------------------


class AuditUnavailable(RuntimeError):
    """The audit store cannot be written: access to patient data must be refused."""


class AuditTrail:
    """Appends to the audit trail of an index database."""

    def __init__(self, index: Index):
        self.index = index
        self._is_pg = index.engine.dialect.name == "postgresql"

    def record(self, event: AuditEvent) -> int:
        """Append ``event``; returns its ``seq``.  Raises ``AuditUnavailable`` (logged, no PHI)."""
        values = event.normalised()  # ValueError for unknown codes: a programming error, not an outage
        try:
            with self.index.write() as conn:
                return self._append(conn, values)
        except SQLAlchemyError as e:
            # str(e) would carry the statement's parameters (patient identifiers): class names only
            cause = type(getattr(e, "orig", None) or e).__name__
            log.error("audit store unavailable (%s); %s %s by %s via %s refused", cause, values["action"],
                      values["outcome"], values["actor"], values["interface"])
            raise AuditUnavailable(f"audit trail cannot be written ({cause})") from None

    def _append(self, conn: Connection, values: dict[str, Any]) -> int:
        if self._is_pg:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
        else:
            # a write first: takes SQLite's database write lock before anything is read
            conn.execute(update(ANCHOR).where(ANCHOR.c.id == 1).values(last_seq=ANCHOR.c.last_seq))
        last = conn.execute(select(AR.c.seq, AR.c.record_hash).order_by(AR.c.seq.desc()).limit(1)).first()
        anchor_seq = conn.execute(select(ANCHOR.c.last_seq).where(ANCHOR.c.id == 1)).scalar()
        prev_hash = last.record_hash if last is not None else GENESIS_HASH
        # never reuse a number: after a cut tail the next record leaves a visible gap
        seq = max(last.seq if last is not None else 0, anchor_seq or 0) + 1
        row = {**values, "seq": seq, "at": _now(), "prev_hash": prev_hash}
        row["record_hash"] = compute_hash(prev_hash, row)
        conn.execute(insert(AR), row)
        moved = conn.execute(update(ANCHOR).where(ANCHOR.c.id == 1).values(
            last_seq=seq, last_hash=row["record_hash"], updated_at=row["at"])).rowcount
        if not moved:
            conn.execute(insert(ANCHOR), {"id": 1, "last_seq": seq, "last_hash": row["record_hash"],
                                          "updated_at": row["at"]})
        return seq

    def search(self, **filters: Any) -> list[AuditEntry]:
        return search(self.index, **filters)


def require_audit(trail: AuditTrail, event: AuditEvent) -> int:
    """Record ``event`` before serving patient data; raises ``AuditUnavailable`` (deny access)."""
    return trail.record(event)


@contextlib.contextmanager
def audited(trail: AuditTrail, event: AuditEvent) -> Iterator[AuditEvent]:
    """Record ``event`` when the block ends: success, or failure with the exception's class.

    Do the work inside the block and serve its result after it: if the record cannot be
    written the block's exit raises ``AuditUnavailable`` and nothing must be served.  Set
    ``event.outcome = "denied"`` before raising for refused access; add identifiers found
    during the work to the yielded event."""
    try:
        yield event
    except BaseException as exc:
        if AuditOutcome(event.outcome) is AuditOutcome.SUCCESS:
            event.outcome = AuditOutcome.FAILURE
        if not event.outcome_detail:
            event.outcome_detail = type(exc).__name__
        trail.record(event)
        raise
    trail.record(event)


# -- search --------------------------------------------------------------------------------


def _multi_value_match(column: Any, value: str) -> Any:
    return or_(column == value,
               column.startswith(value + _MULTI_SEP, autoescape=True),
               column.endswith(_MULTI_SEP + value, autoescape=True),
               column.contains(_MULTI_SEP + value + _MULTI_SEP, autoescape=True))


def search(index: Index, *, actor: str | None = None, patient_id: str | None = None,
           study_uid: str | None = None, action: str | Sequence[str] | None = None,
           outcome: str | None = None, interface: str | None = None, since: dt.datetime | None = None,
           until: dt.datetime | None = None, limit: int | None = 100, offset: int = 0,
           newest_first: bool = False) -> list[AuditEntry]:
    """Records matching every given filter, in ``seq`` order (``since`` inclusive, ``until`` exclusive)."""
    where = []
    if actor:
        where.append(AR.c.actor == actor)
    if patient_id:
        where.append(_multi_value_match(AR.c.patient_ids, patient_id))
    if study_uid:
        where.append(_multi_value_match(AR.c.study_instance_uids, study_uid))
    if action:
        actions = [action] if isinstance(action, str) else list(action)
        where.append(AR.c.action.in_([AuditAction(a).value for a in actions]))
    if outcome:
        where.append(AR.c.outcome == AuditOutcome(outcome).value)
    if interface:
        where.append(AR.c.interface == AuditInterface(interface).value)
    if since is not None:
        where.append(AR.c.at >= _utc(since))
    if until is not None:
        where.append(AR.c.at < _utc(until))
    stmt = select(AR).where(and_(True, *where))
    stmt = stmt.order_by(AR.c.seq.desc() if newest_first else AR.c.seq).offset(offset)
    if limit is not None:
        stmt = stmt.limit(limit)
    with index.read() as conn:
        return [AuditEntry.from_row(r) for r in conn.execute(stmt)]


def count(index: Index) -> int:
    with index.read() as conn:
        return int(conn.execute(select(func.count()).select_from(AR)).scalar() or 0)


# -- verification --------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    seq: int
    kind: str  # "altered" | "missing" | "anchor"
    message: str


@dataclass
class VerifyReport:
    records: int = 0
    last_seq: int = 0
    last_hash: str = GENESIS_HASH
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def bad_seqs(self) -> list[int]:
        return sorted({p.seq for p in self.problems})

    @property
    def first_bad_seq(self) -> int | None:
        return self.bad_seqs[0] if self.problems else None

    def lines(self) -> list[str]:
        if self.ok:
            return [f"{self.records} records, chain intact (last record {self.last_seq}, hash {self.last_hash})"]
        return [p.message for p in sorted(self.problems, key=lambda p: (p.seq, p.kind))] + [
            f"{self.records} records, {len(self.bad_seqs)} bad; first bad record {self.first_bad_seq}"]


def _missing(report: VerifyReport, first: int, last: int, why: str = "") -> None:
    for s in range(first, last + 1):
        report.problems.append(Problem(s, "missing", f"record {s} is missing{why}"))


def verify(index: Index, *, batch: int = 5000) -> VerifyReport:
    """Walk the chain in ``seq`` order; name every altered and missing record."""
    report = VerifyReport()
    altered: set[int] = set()

    def altered_(seq: int, why: str) -> None:
        if seq not in altered:
            altered.add(seq)
            report.problems.append(Problem(seq, "altered", f"record {seq} was altered ({why})"))

    prev_seq, prev_hash = 0, GENESIS_HASH
    with index.read() as conn:
        anchor = conn.execute(select(ANCHOR.c.last_seq, ANCHOR.c.last_hash).where(ANCHOR.c.id == 1)).first()
        after = None
        while True:
            stmt = select(AR).order_by(AR.c.seq).limit(batch)
            if after is not None:
                stmt = stmt.where(AR.c.seq > after)
            rows = conn.execute(stmt).all()
            if not rows:
                break
            for r in rows:
                m = dict(r._mapping)
                seq = m["seq"]
                report.records += 1
                own_ok = compute_hash(m["prev_hash"], m) == m["record_hash"]
                if not own_ok:
                    altered_(seq, "its content no longer matches its hash")
                if seq > prev_seq + 1:
                    _missing(report, prev_seq + 1, seq - 1)
                elif own_ok and m["prev_hash"] != prev_hash:
                    if prev_seq == 0:
                        altered_(seq, "the first record does not start the chain")
                    else:  # this record is intact, so the one it points back to was rewritten
                        altered_(prev_seq, f"record {seq} no longer links to it")
                prev_seq, prev_hash = seq, m["record_hash"]
            after = rows[-1].seq
    report.last_seq, report.last_hash = prev_seq, prev_hash
    if anchor is None:
        if report.records:
            report.problems.append(Problem(prev_seq, "anchor", "the audit anchor is missing: "
                                           "removal of the newest records cannot be ruled out"))
    elif anchor.last_seq > prev_seq:
        _missing(report, prev_seq + 1, anchor.last_seq, " (removed from the end of the trail)")
    elif anchor.last_seq < prev_seq:
        report.problems.append(Problem(prev_seq, "anchor", f"records {anchor.last_seq + 1}-{prev_seq} were "
                                       "added outside the audit trail (after the anchor)"))
    elif anchor.last_hash != prev_hash:
        altered_(prev_seq, "it does not match the anchor")
    return report
