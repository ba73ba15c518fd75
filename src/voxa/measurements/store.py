"""The ``measurements`` table: each user's measurements and annotations of a study.

A row names the image it was drawn on (series, SOP instance, frame), keeps the graphic data
as drawn (JSON: image ``points`` as (column, row) pairs and/or patient ``points_mm``; volume
``contours`` or ``segment``) and the values the server computed from it (JSON: quantity ->
``{"value", "unit"}``).  Rows hang off the study row (``ON DELETE CASCADE``): deleting a study
deletes its measurements.  ``tracking_uid`` identifies the measurement across SR exports
(the TID 1500 Tracking Unique Identifier).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from pydicom.uid import generate_uid
from sqlalchemy import DateTime, ForeignKey, Index, Integer, String, Text, delete, select, update
from sqlalchemy.engine import Row
from sqlalchemy.orm import Mapped, mapped_column

from voxa.archive.index import Index as ArchiveIndex
from voxa.archive.models import Base, Study, table_of


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Measurement(Base):
    __tablename__ = "measurements"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_fk: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64))
    series_instance_uid: Mapped[str] = mapped_column(String(64), default="")
    sop_instance_uid: Mapped[str] = mapped_column(String(64), default="")
    frame_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    username: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    label: Mapped[str] = mapped_column(String(1024), default="")
    tracking_uid: Mapped[str] = mapped_column(String(64), unique=True)
    graphic_json: Mapped[str] = mapped_column(Text, default="{}")
    values_json: Mapped[str] = mapped_column(Text, default="{}")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)

    __table_args__ = (Index("ix_measurements_study_user", "study_instance_uid", "username"),)


M = table_of(Measurement)
ST = table_of(Study)


class UnknownStudy(LookupError):
    """The study is not in the archive."""


@dataclass(frozen=True)
class StoredMeasurement:
    id: int
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    frame_number: int | None
    username: str
    kind: str
    label: str
    tracking_uid: str
    graphic: dict[str, Any]
    values: dict[str, dict[str, Any]]
    created_at: dt.datetime
    updated_at: dt.datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "study_instance_uid": self.study_instance_uid,
            "series_instance_uid": self.series_instance_uid, "sop_instance_uid": self.sop_instance_uid,
            "frame_number": self.frame_number, "user": self.username, "kind": self.kind, "label": self.label,
            "tracking_uid": self.tracking_uid, "graphic": self.graphic, "values": self.values,
            "created_at": self.created_at.isoformat(), "updated_at": self.updated_at.isoformat(),
        }


def _utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _from_row(row: Row[Any]) -> StoredMeasurement:
    r = row._mapping
    return StoredMeasurement(
        id=int(r["id"]), study_instance_uid=r["study_instance_uid"], series_instance_uid=r["series_instance_uid"],
        sop_instance_uid=r["sop_instance_uid"], frame_number=r["frame_number"], username=r["username"],
        kind=r["kind"], label=r["label"], tracking_uid=r["tracking_uid"], graphic=json.loads(r["graphic_json"]),
        values=json.loads(r["values_json"]), created_at=_utc(r["created_at"]), updated_at=_utc(r["updated_at"]))


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def create_measurement(index: ArchiveIndex, *, study_instance_uid: str, series_instance_uid: str,
                       sop_instance_uid: str, frame_number: int | None, username: str, kind: str, label: str,
                       graphic: dict[str, Any], values: dict[str, dict[str, Any]]) -> StoredMeasurement:
    """Store a new measurement; raises :class:`UnknownStudy` when the study is not archived."""
    now = _now()
    with index.write() as conn:
        study_fk = conn.execute(select(ST.c.id).where(ST.c.study_instance_uid == study_instance_uid)).scalar()
        if study_fk is None:
            raise UnknownStudy(study_instance_uid)
        new_id = conn.execute(M.insert().values(
            study_fk=study_fk, study_instance_uid=study_instance_uid, series_instance_uid=series_instance_uid,
            sop_instance_uid=sop_instance_uid, frame_number=frame_number, username=username, kind=kind,
            label=label, tracking_uid=str(generate_uid()), graphic_json=_dumps(graphic),
            values_json=_dumps(values), created_at=now, updated_at=now,
        ).returning(M.c.id)).scalar_one()
        row = conn.execute(select(M).where(M.c.id == new_id)).one()
    return _from_row(row)


def list_measurements(index: ArchiveIndex, *, study_instance_uid: str,
                      username: str | None = None) -> list[StoredMeasurement]:
    """The study's measurements, oldest first: one user's, or everyone's when ``username`` is None."""
    q = select(M).where(M.c.study_instance_uid == study_instance_uid)
    if username is not None:
        q = q.where(M.c.username == username)
    with index.read() as conn:
        return [_from_row(r) for r in conn.execute(q.order_by(M.c.created_at, M.c.id))]


def get_measurement(index: ArchiveIndex, measurement_id: int, *, study_instance_uid: str,
                    username: str) -> StoredMeasurement | None:
    """The user's measurement of the study; None when there is none with that id (or it is
    another user's)."""
    with index.read() as conn:
        row = conn.execute(select(M).where(M.c.id == measurement_id, M.c.study_instance_uid == study_instance_uid,
                                           M.c.username == username)).first()
    return _from_row(row) if row is not None else None


def update_measurement(index: ArchiveIndex, measurement_id: int, *, study_instance_uid: str, username: str,
                       series_instance_uid: str, sop_instance_uid: str, frame_number: int | None, kind: str,
                       label: str, graphic: dict[str, Any],
                       values: dict[str, dict[str, Any]]) -> StoredMeasurement | None:
    """Replace the user's measurement (its tracking UID stays); None when it is not theirs or absent."""
    mine = (M.c.id == measurement_id, M.c.study_instance_uid == study_instance_uid, M.c.username == username)
    with index.write() as conn:
        changed = conn.execute(update(M).where(*mine).values(
            series_instance_uid=series_instance_uid, sop_instance_uid=sop_instance_uid, frame_number=frame_number,
            kind=kind, label=label, graphic_json=_dumps(graphic), values_json=_dumps(values), updated_at=_now(),
        )).rowcount
        if not changed:
            return None
        row = conn.execute(select(M).where(*mine)).one()
    return _from_row(row)


def delete_measurement(index: ArchiveIndex, measurement_id: int, *, study_instance_uid: str, username: str) -> bool:
    """Delete the user's measurement; False when it is not theirs or absent."""
    with index.write() as conn:
        result = conn.execute(delete(M).where(M.c.id == measurement_id, M.c.study_instance_uid == study_instance_uid,
                                              M.c.username == username))
    return bool(result.rowcount)
