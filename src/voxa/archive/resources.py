"""Orthanc-style public resource IDs: what an ID names, and the stored instances under it.

Every patient, study, series and instance row carries an Orthanc-compatible ``public_id``
(see :mod:`voxa.archive.identifiers`).  Orthanc's REST API takes these IDs without saying
their level, so :func:`resolve_public_id` looks the ID up at each level in turn.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from voxa.archive.attributes import Level
from voxa.archive.index import Index, StoredLocation
from voxa.archive.models import Instance, Patient, Series, Study, table_of

P, ST, SE, IN = table_of(Patient), table_of(Study), table_of(Series), table_of(Instance)

#: Orthanc's names for the four levels.
ORTHANC_LEVEL = {Level.PATIENT: "Patient", Level.STUDY: "Study", Level.SERIES: "Series", Level.IMAGE: "Instance"}


class UnknownResource(LookupError):
    """No patient, study, series or instance has this public ID."""


@dataclass(frozen=True)
class ResourceRef:
    """A resource named by its public ID, with the DICOM identifiers of it and its parents."""

    level: Level
    public_id: str
    patient_id: str
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    sop_instance_uid: str = ""

    @property
    def orthanc_level(self) -> str:
        return ORTHANC_LEVEL[self.level]


def resolve_public_id(index: Index, public_id: str) -> ResourceRef:
    """The resource with this Orthanc-style ID, at whichever level it is."""
    public_id = public_id.strip()
    with index.read() as conn:
        ri = conn.execute(
            select(IN.c.sop_instance_uid, SE.c.series_instance_uid, ST.c.study_instance_uid, P.c.patient_id)
            .join(SE, SE.c.id == IN.c.series_fk).join(ST, ST.c.id == SE.c.study_fk).join(P, P.c.id == ST.c.patient_fk)
            .where(IN.c.public_id == public_id)
        ).first()
        if ri is not None:
            return ResourceRef(Level.IMAGE, public_id, ri.patient_id, ri.study_instance_uid,
                               ri.series_instance_uid, ri.sop_instance_uid)
        rs = conn.execute(
            select(SE.c.series_instance_uid, ST.c.study_instance_uid, P.c.patient_id)
            .join(ST, ST.c.id == SE.c.study_fk).join(P, P.c.id == ST.c.patient_fk)
            .where(SE.c.public_id == public_id)
        ).first()
        if rs is not None:
            return ResourceRef(Level.SERIES, public_id, rs.patient_id, rs.study_instance_uid,
                               rs.series_instance_uid)
        rt = conn.execute(
            select(ST.c.study_instance_uid, P.c.patient_id).join(P, P.c.id == ST.c.patient_fk)
            .where(ST.c.public_id == public_id)
        ).first()
        if rt is not None:
            return ResourceRef(Level.STUDY, public_id, rt.patient_id, rt.study_instance_uid)
        rp = conn.execute(select(P.c.patient_id).where(P.c.public_id == public_id)).first()
        if rp is not None:
            return ResourceRef(Level.PATIENT, public_id, rp.patient_id)
    raise UnknownResource(f"no patient, study, series or instance with ID {public_id}")


def locate_resource(index: Index, ref: ResourceRef) -> list[StoredLocation]:
    """The stored instances under ``ref``, in series then instance order."""
    if ref.level is Level.IMAGE:
        return index.locate(sop_uid=ref.sop_instance_uid)
    if ref.level is Level.SERIES:
        return index.locate(series_uid=ref.series_instance_uid)
    if ref.level is Level.STUDY:
        return index.locate(study_uid=ref.study_instance_uid)
    with index.read() as conn:
        study_uids = conn.execute(
            select(ST.c.study_instance_uid).join(P, P.c.id == ST.c.patient_fk)
            .where(P.c.public_id == ref.public_id).order_by(ST.c.study_date, ST.c.id)
        ).scalars().all()
    return [loc for uid in study_uids for loc in index.locate(study_uid=uid)]


def locate_public_ids(index: Index, public_ids: list[str]) -> list[StoredLocation]:
    """The stored instances under every ID, each instance once, in the order given.

    Raises :class:`UnknownResource` naming the first ID that is not in the archive.
    """
    seen: set[str] = set()
    out: list[StoredLocation] = []
    for public_id in public_ids:
        for loc in locate_resource(index, resolve_public_id(index, public_id)):
            if loc.sop_instance_uid not in seen:
                seen.add(loc.sop_instance_uid)
                out.append(loc)
    return out
