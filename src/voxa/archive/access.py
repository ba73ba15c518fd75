"""Patient-level access as SQL: the one place where an :class:`AccessFilter` becomes a
condition on the index, so QIDO-RS, WADO-RS, REST, C-FIND, C-MOVE and C-GET filter alike.

Visibility is decided per *study*: a study is visible when

* the filter is unrestricted (``all``), or
* ``teaching_only`` and the study is flagged as a teaching case, or
* its patient (Patient ID, Issuer) is one of ``patient_keys`` — an empty issuer in a key
  matches any issuer, since most sites never fill Issuer of Patient ID — or
* its Referring Physician's Name (normalised key) equals ``referring_physician_key``.

A patient is visible when one of its studies is; a series or instance when its study is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, and_, false, or_, select, true

from voxa.archive.index import Index
from voxa.archive.models import Instance, Patient, Series, Study, table_of

if TYPE_CHECKING:
    from voxa.security.accounts import AccessFilter

P, ST, SE, IN = table_of(Patient), table_of(Study), table_of(Series), table_of(Instance)


def study_condition(access: AccessFilter | None, study: Any = ST) -> ColumnElement[bool] | None:
    """A condition on ``study`` (the studies table or an alias of it); None: no restriction."""
    if access is None or access.all:
        return None
    if access.teaching_only:
        return study.c.teaching.is_(True)
    alternatives: list[ColumnElement[bool]] = []
    if access.patient_keys:
        per_key = [
            and_(P.c.patient_id == pid, P.c.issuer_of_patient_id == issuer) if issuer else P.c.patient_id == pid
            for pid, issuer in sorted(access.patient_keys)
        ]
        alternatives.append(study.c.patient_fk.in_(select(P.c.id).where(or_(*per_key))))
    if access.referring_physician_key:
        alternatives.append(study.c.referring_physician_name_key == access.referring_physician_key)
    return or_(*alternatives) if alternatives else false()


def patient_condition(access: AccessFilter | None) -> ColumnElement[bool] | None:
    """A condition on the patients table: the patient has at least one visible study."""
    cond = study_condition(access)
    if cond is None:
        return None
    return select(ST.c.id).where(ST.c.patient_fk == P.c.id, cond).exists()


def visible_study_uids(index: Index, access: AccessFilter | None, study_uids: list[str]) -> set[str]:
    """Those of ``study_uids`` the filter shows (all of them when unrestricted)."""
    cond = study_condition(access)
    if cond is None:
        return set(study_uids)
    if not study_uids:
        return set()
    with index.read() as conn:
        rows = conn.execute(select(ST.c.study_instance_uid).where(ST.c.study_instance_uid.in_(study_uids), cond))
        return {r[0] for r in rows}


def study_visible(index: Index, access: AccessFilter | None, study_uid: str) -> bool:
    """Whether the study is visible; an unknown study is not (callers answer 404 either way)."""
    if access is None or access.all:
        return True
    return bool(visible_study_uids(index, access, [study_uid]))


def patient_visible(index: Index, access: AccessFilter | None, patient_row_id: int) -> bool:
    cond = study_condition(access)
    if cond is None:
        return True
    with index.read() as conn:
        return conn.execute(select(ST.c.id).where(ST.c.patient_fk == patient_row_id, cond).limit(1)).first() is not None


def instance_condition(access: AccessFilter | None) -> ColumnElement[bool]:
    """A condition on the instances table (for C-MOVE/C-GET row lists)."""
    cond = study_condition(access)
    if cond is None:
        return true()
    return IN.c.series_fk.in_(select(SE.c.id).join(ST, ST.c.id == SE.c.study_fk).where(cond))
