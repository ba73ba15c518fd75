"""Attribute matching (PS3.4 C.2.2.2) over the index, shared by C-FIND, QIDO-RS and REST.

A :class:`Query` names a level, match values keyed by DICOM keyword (as they arrive in a
C-FIND identifier or a QIDO-RS parameter) and the keys to return.  It is translated to
one SQL statement; no stored file is read.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Select, and_, func, literal, or_, select
from sqlalchemy.sql.elements import KeyedColumnElement

from voxa.archive.access import instance_condition, patient_condition, study_condition
from voxa.archive.attributes import (
    ATTRIBUTES,
    BY_KEYWORD,
    PATIENT_KEYWORDS_ON_STUDY,
    Attribute,
    Kind,
    Level,
)
from voxa.archive.index import Index
from voxa.archive.models import Instance, Patient, Series, Study, table_of
from voxa.dicom.names import person_name_key

if TYPE_CHECKING:
    from voxa.security.accounts import AccessFilter

P, ST, SE, IN = table_of(Patient), table_of(Study), table_of(Series), table_of(Instance)
_TABLE = {Level.PATIENT: P, Level.STUDY: ST, Level.SERIES: SE, Level.IMAGE: IN}


class QueryError(ValueError):
    """A match value that cannot be understood (bad date range, non-numeric integer...)."""


@dataclass
class Query:
    level: Level
    filters: dict[str, str] = field(default_factory=dict)
    return_keys: Sequence[str] = ()
    fuzzy: bool = False
    limit: int | None = None
    offset: int = 0
    # Study Root queries have no PATIENT level: patient attributes come from the study row.
    patient_root: bool = False
    # Patient-level access of the caller (voxa.archive.access); None: unrestricted.
    access: AccessFilter | None = None
    # A study-level query whose series-level keys (e.g. BodyPartExamined) select the studies
    # that have a matching series (QIDO-RS study searches); hierarchical C-FIND leaves them out.
    match_series: bool = False


@dataclass
class Match:
    """One matching resource: requested attribute values plus identifiers the caller needs."""

    values: dict[str, Any]
    level: Level
    public_id: str
    row_id: int
    study_row_id: int | None = None


def _like_pattern(value: str, esc: str = "\\") -> str:
    escaped = value.replace(esc, esc + esc).replace("%", esc + "%").replace("_", esc + "_")
    return escaped.replace("*", "%").replace("?", "_")


def has_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


_DATE_RE = re.compile(r"^\d{8}$")


def _norm_date(v: str, what: str) -> str:
    v = v.strip().replace(".", "")
    if not _DATE_RE.match(v):
        raise QueryError(f"{what}: {v!r} is not a date (YYYYMMDD)")
    return v


_TIME_RE = re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$")


def _norm_time(v: str, what: str) -> str:
    v = v.strip().replace(":", "")
    if not _TIME_RE.match(v):
        raise QueryError(f"{what}: {v!r} is not a time (HHMMSS.FFFFFF)")
    return v


def clause_for(column: KeyedColumnElement[Any], kind: Kind, value: str, *, keyword: str = "",
               fuzzy: bool = False, key_column: KeyedColumnElement[Any] | None = None) -> ColumnElement[bool] | None:
    """The SQL condition for one attribute match, or None for universal matching."""
    value = value.strip() if kind is not Kind.PN else value.strip(" ")
    if value == "" or value == "*":
        return None
    what = keyword or column.name
    if kind is Kind.COUNT:
        return None
    if kind is Kind.UID:
        uids = [u.strip() for u in re.split(r"[\\,]", value) if u.strip()]
        if any(has_wildcard(u) for u in uids):
            # Wildcards are not defined for UIDs; '*' alone is universal (handled above).
            raise QueryError(f"{what}: wildcards are not allowed in UID matching")
        return column.in_(uids) if len(uids) > 1 else column == uids[0]
    if kind is Kind.INT:
        try:
            ints = [int(v) for v in value.split("\\")]
        except ValueError:
            raise QueryError(f"{what}: {value!r} is not an integer") from None
        return column.in_(ints) if len(ints) > 1 else column == ints[0]
    if kind is Kind.DATE:
        return _range_clause(column, value, _norm_date, what, upper_pad="")
    if kind is Kind.TIME:
        return _range_clause(column, value, _norm_time, what, upper_pad=".999999")
    if kind is Kind.PN:
        col = key_column if key_column is not None else column
        if fuzzy:
            tokens = [t for t in re.split(r"[\^ ,]+", person_name_key(value).replace("*", "")) if t]
            conds = []
            for t in tokens:
                p = _like_pattern(t)
                conds.append(or_(col.like(f"{p}%", escape="\\"), col.like(f"%^{p}%", escape="\\"),
                                 col.like(f"% {p}%", escape="\\")))
            return and_(*conds) if conds else None
        key = person_name_key(value)
        if has_wildcard(key):
            return col.like(_like_pattern(key), escape="\\")
        return col == key
    if kind is Kind.MULTI:
        values = [v for v in value.split("\\") if v]
        wrapped = literal("\\") + column + literal("\\")
        # The values are backslash-delimited, so the LIKE escape character is "!" here.
        return or_(*[wrapped.like(f"%\\{_like_pattern(v, '!')}\\%", escape="!") for v in values])
    # Kind.TEXT: a backslash-separated list matches any of its values.
    values = value.split("\\")
    conds = []
    for v in values:
        if has_wildcard(v):
            conds.append(column.ilike(_like_pattern(v), escape="\\"))
        else:
            conds.append(column == v)
    return or_(*conds) if len(conds) > 1 else conds[0]


def _range_clause(column: KeyedColumnElement[Any], value: str, norm: Any, what: str,
                  upper_pad: str) -> ColumnElement[bool]:
    if "-" not in value:
        v = norm(value, what)
        if upper_pad:  # a time matches every more precise time that starts with it
            return column.like(f"{v}%")
        return column == v
    lo, _, hi = value.partition("-")
    conds = [column != ""]
    if lo.strip():
        conds.append(column >= norm(lo, what))
    if hi.strip():
        h = norm(hi, what)
        conds.append(column <= (h + upper_pad if upper_pad and "." not in h else h))
    if len(conds) == 1:
        raise QueryError(f"{what}: {value!r} is not a range")
    return and_(*conds)


def _attribute_source(attr: Attribute, level: Level, patient_root: bool) -> tuple[Any, Any | None]:
    """The column (and PN key column) answering ``attr`` for a query at ``level``."""
    table = _TABLE[attr.level]
    if attr.level is Level.PATIENT and attr.keyword in PATIENT_KEYWORDS_ON_STUDY and level is not Level.PATIENT:
        table = ST
    col = table.c[attr.column]
    key = table.c[f"{attr.column}_key"] if attr.kind is Kind.PN else None
    return col, key


# Keys that clients send at one level but that the index answers at another.
_ALIASES = {Level.STUDY: {"Modality": "ModalitiesInStudy"}}


def build_select(q: Query) -> Select[Any]:
    level = q.level
    table = _TABLE[level]
    columns: list[Any] = [table.c.id.label("_row_id"), table.c.public_id.label("_public_id")]
    if level is not Level.PATIENT:
        columns.append(ST.c.id.label("_study_row_id"))
    wanted = _returned_attributes(q)
    for attr in wanted:
        col, _ = _attribute_source(attr, level, q.patient_root)
        columns.append(col.label(attr.keyword))
    stmt = select(*columns).select_from(table)
    if level is Level.IMAGE:
        stmt = stmt.join(SE, SE.c.id == IN.c.series_fk).join(ST, ST.c.id == SE.c.study_fk)
    elif level is Level.SERIES:
        stmt = stmt.join(ST, ST.c.id == SE.c.study_fk)
    conds: list[ColumnElement[bool]] = []
    for raw_keyword, value in q.filters.items():
        keyword = _ALIASES.get(level, {}).get(raw_keyword, raw_keyword)
        found = BY_KEYWORD.get(keyword)
        if found is None:
            continue  # not indexed: matches universally, as Orthanc and PS3.4 optional keys do
        attr = found
        if attr.level.depth > level.depth:
            if level is Level.STUDY and attr.level is Level.SERIES and q.match_series:
                c = clause_for(SE.c[attr.column], attr.kind, str(value), keyword=keyword, fuzzy=q.fuzzy)
                if c is not None:
                    conds.append(select(SE.c.id).where(SE.c.study_fk == ST.c.id, c).exists())
            continue  # otherwise keys below the query level are not matched (PS3.4 C.2.2.1)
        if level is Level.PATIENT and attr.level is not Level.PATIENT:
            # Patient-level queries may name study attributes in relational queries; match them via EXISTS.
            col, key = _attribute_source(attr, Level.STUDY, q.patient_root)
            c = clause_for(col, attr.kind, str(value), keyword=keyword, fuzzy=q.fuzzy, key_column=key)
            if c is not None:
                conds.append(select(ST.c.id).where(ST.c.patient_fk == P.c.id, c).exists())
            continue
        col, key = _attribute_source(attr, level, q.patient_root)
        c = clause_for(col, attr.kind, str(value), keyword=keyword, fuzzy=q.fuzzy, key_column=key)
        if c is not None:
            conds.append(c)
    restriction = patient_condition(q.access) if level is Level.PATIENT else study_condition(q.access)
    if restriction is not None:
        conds.append(restriction)
    if conds:
        stmt = stmt.where(and_(*conds))
    orders: dict[Level, list[Any]] = {
        Level.PATIENT: [P.c.id],
        Level.STUDY: [ST.c.study_date.desc(), ST.c.study_time.desc(), ST.c.id],
        Level.SERIES: [SE.c.series_number, SE.c.id],
        Level.IMAGE: [IN.c.instance_number, IN.c.id],
    }
    stmt = stmt.order_by(*orders[level])
    if q.offset:
        stmt = stmt.offset(q.offset)
    if q.limit is not None:
        stmt = stmt.limit(q.limit)
    return stmt


def _returned_attributes(q: Query) -> list[Attribute]:
    """Attributes to return: the level's own and those above it, plus requested ones."""
    names = set(q.return_keys) | set(q.filters)
    out: list[Attribute] = []
    for attr in ATTRIBUTES:
        if attr.level.depth > q.level.depth:
            continue
        if attr.keyword in names or attr.keyword == _unique(attr.level):
            if q.level is not Level.PATIENT and attr.level is Level.PATIENT and \
                    attr.keyword not in PATIENT_KEYWORDS_ON_STUDY:
                continue  # NumberOfPatientRelated* exist at PATIENT level only
            out.append(attr)
    # Aliased names (e.g. Modality at STUDY level) are answered from their target.
    for alias, target in _ALIASES.get(q.level, {}).items():
        if alias in names and BY_KEYWORD[target] not in out:
            out.append(BY_KEYWORD[target])
    return out


def _unique(level: Level) -> str:
    return {Level.PATIENT: "PatientID", Level.STUDY: "StudyInstanceUID",
            Level.SERIES: "SeriesInstanceUID", Level.IMAGE: "SOPInstanceUID"}[level]


def run_query(index: Index, q: Query) -> list[Match]:
    stmt = build_select(q)
    with index.read() as conn:
        rows = conn.execute(stmt).all()
    out = []
    for r in rows:
        m = r._mapping
        values = {k: v for k, v in m.items() if not k.startswith("_")}
        out.append(Match(values=values, level=q.level, public_id=m["_public_id"], row_id=m["_row_id"],
                         study_row_id=m.get("_study_row_id")))
    return out


def count_query(index: Index, q: Query) -> int:
    stmt = build_select(Query(q.level, q.filters, (), q.fuzzy, None, 0, q.patient_root, q.access)).order_by(None)
    with index.read() as conn:
        return int(conn.execute(select(func.count()).select_from(stmt.subquery())).scalar_one())


def matching_instance_ids(index: Index, level: Level, filters: dict[str, str],
                          access: AccessFilter | None = None) -> list[int]:
    """Row ids of the instances under every resource matching ``filters`` at ``level`` (C-MOVE/C-GET),
    within what ``access`` lets the caller see."""
    matches = run_query(index, Query(level, filters, access=access))
    if not matches:
        return []
    ids = [m.row_id for m in matches]
    stmt = select(IN.c.id)
    if level is Level.IMAGE:
        stmt = stmt.where(IN.c.id.in_(ids))
    elif level is Level.SERIES:
        stmt = stmt.where(IN.c.series_fk.in_(ids))
    elif level is Level.STUDY:
        stmt = stmt.join(SE, SE.c.id == IN.c.series_fk).where(SE.c.study_fk.in_(ids))
    else:
        stmt = stmt.join(SE, SE.c.id == IN.c.series_fk).join(ST, ST.c.id == SE.c.study_fk).where(
            ST.c.patient_fk.in_(ids))
    stmt = stmt.where(instance_condition(access))
    with index.read() as conn:
        return [r.id for r in conn.execute(stmt)]
