"""The index: SQLAlchemy models of what the archive holds.

Rows carry every attribute that C-FIND and QIDO-RS match or return, so queries never
open a stored file.  Values are kept as DICOM strings (dates ``YYYYMMDD``, times
``HHMMSS.ffffff`` without colons) so that range matching is a string comparison; person
names also have an upper-case, accent-free ``*_key`` column for case-insensitive and
fuzzy matching.  Multi-valued study attributes are stored backslash-joined.
"""

from __future__ import annotations

import datetime as dt
from typing import cast

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, deferred, mapped_column, relationship


class Base(DeclarativeBase):
    pass


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Patient(Base):
    __tablename__ = "patients"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(44), unique=True)
    patient_id: Mapped[str] = mapped_column(String(64), index=True)
    issuer_of_patient_id: Mapped[str] = mapped_column(String(64), default="")
    patient_name: Mapped[str] = mapped_column(String(324), default="")
    patient_name_key: Mapped[str] = mapped_column(String(324), default="", index=True)
    patient_birth_date: Mapped[str] = mapped_column(String(16), default="")
    patient_sex: Mapped[str] = mapped_column(String(16), default="")
    num_studies: Mapped[int] = mapped_column(Integer, default=0)
    num_series: Mapped[int] = mapped_column(Integer, default=0)
    num_instances: Mapped[int] = mapped_column(Integer, default=0)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)

    studies: Mapped[list[Study]] = relationship(back_populates="patient", passive_deletes=True)

    __table_args__ = (Index("ix_patients_pid_issuer", "patient_id", "issuer_of_patient_id", unique=True),)


class Study(Base):
    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_fk: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"), index=True)
    public_id: Mapped[str] = mapped_column(String(44), unique=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    study_date: Mapped[str] = mapped_column(String(16), default="", index=True)
    study_time: Mapped[str] = mapped_column(String(32), default="")
    accession_number: Mapped[str] = mapped_column(String(64), default="", index=True)
    study_id: Mapped[str] = mapped_column(String(32), default="")
    referring_physician_name: Mapped[str] = mapped_column(String(324), default="")
    referring_physician_name_key: Mapped[str] = mapped_column(String(324), default="")
    study_description: Mapped[str] = mapped_column(String(128), default="")
    institution_name: Mapped[str] = mapped_column(String(128), default="")
    patient_age: Mapped[str] = mapped_column(String(8), default="")
    # Patient attributes as this study received them (the patient row keeps the first seen).
    patient_id: Mapped[str] = mapped_column(String(64), default="", index=True)
    patient_name: Mapped[str] = mapped_column(String(324), default="")
    patient_name_key: Mapped[str] = mapped_column(String(324), default="", index=True)
    patient_birth_date: Mapped[str] = mapped_column(String(16), default="")
    patient_sex: Mapped[str] = mapped_column(String(16), default="")
    issuer_of_patient_id: Mapped[str] = mapped_column(String(64), default="")
    modalities_in_study: Mapped[str] = mapped_column(String(128), default="")
    sop_classes_in_study: Mapped[str] = mapped_column(Text, default="")
    num_series: Mapped[int] = mapped_column(Integer, default=0)
    num_instances: Mapped[int] = mapped_column(Integer, default=0)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    teaching: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now, index=True)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)

    patient: Mapped[Patient] = relationship(back_populates="studies")
    series: Mapped[list[Series]] = relationship(back_populates="study", passive_deletes=True)


class Series(Base):
    __tablename__ = "series"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_fk: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    public_id: Mapped[str] = mapped_column(String(44), unique=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    modality: Mapped[str] = mapped_column(String(16), default="", index=True)
    series_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    series_description: Mapped[str] = mapped_column(String(128), default="")
    body_part_examined: Mapped[str] = mapped_column(String(32), default="")
    series_date: Mapped[str] = mapped_column(String(16), default="")
    series_time: Mapped[str] = mapped_column(String(32), default="")
    protocol_name: Mapped[str] = mapped_column(String(128), default="")
    laterality: Mapped[str] = mapped_column(String(16), default="")
    manufacturer: Mapped[str] = mapped_column(String(128), default="")
    station_name: Mapped[str] = mapped_column(String(32), default="")
    performed_procedure_step_start_date: Mapped[str] = mapped_column(String(16), default="")
    performed_procedure_step_start_time: Mapped[str] = mapped_column(String(32), default="")
    frame_of_reference_uid: Mapped[str] = mapped_column(String(64), default="")
    num_instances: Mapped[int] = mapped_column(Integer, default=0)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)

    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list[Instance]] = relationship(back_populates="series", passive_deletes=True)


class Instance(Base):
    __tablename__ = "instances"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_fk: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"), index=True)
    public_id: Mapped[str] = mapped_column(String(44), unique=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64), default="")
    instance_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rows: Mapped[int | None] = mapped_column(Integer, nullable=True)
    columns: Mapped[int | None] = mapped_column(Integer, nullable=True)
    number_of_frames: Mapped[int | None] = mapped_column(Integer, nullable=True)
    content_date: Mapped[str] = mapped_column(String(16), default="")
    content_time: Mapped[str] = mapped_column(String(32), default="")
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64), default="")
    blob_key: Mapped[str] = mapped_column(String(256))
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str] = mapped_column(String(64), default="")
    # Byte offset of the dataset after the Part-10 file meta, so the network path can send
    # the stored dataset without parsing the file again.
    dataset_offset: Mapped[int] = mapped_column(Integer, default=0)
    calling_aet: Mapped[str] = mapped_column(String(16), default="")
    source: Mapped[str] = mapped_column(String(32), default="")
    received_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    # DICOM JSON (PS3.18 F.2) of the instance without bulk data, zlib-compressed UTF-8.
    metadata_json: Mapped[bytes] = deferred(mapped_column(LargeBinary))

    series: Mapped[Series] = relationship(back_populates="instances")


class Change(Base):
    """Append-only log of what happened to the archive, read by routing and sync (``/changes``)."""

    __tablename__ = "changes"

    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    change_type: Mapped[str] = mapped_column(String(32))
    resource_type: Mapped[str] = mapped_column(String(16))
    public_id: Mapped[str] = mapped_column(String(44))
    uid: Mapped[str] = mapped_column(String(64), default="")
    detail: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Peer(Base):
    """A remote application entity (DICOM modality, workstation or PACS)."""

    __tablename__ = "peers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    aet: Mapped[str] = mapped_column(String(16), index=True)
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    allow_store: Mapped[bool] = mapped_column(default=True)
    allow_find: Mapped[bool] = mapped_column(default=True)
    allow_move: Mapped[bool] = mapped_column(default=True)
    from_config: Mapped[bool] = mapped_column(default=False)
    # The account whose patient-level access applies to this peer's C-FIND/C-MOVE/C-GET
    # (empty: the peer sees every patient, as a trusted modality or archive does).
    account: Mapped[str] = mapped_column(String(64), default="")


class WorklistItem(Base):
    """A scheduled procedure step offered to modalities by Modality Worklist C-FIND."""

    __tablename__ = "worklist_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(64), index=True)
    patient_name: Mapped[str] = mapped_column(String(324), default="")
    patient_name_key: Mapped[str] = mapped_column(String(324), default="")
    patient_birth_date: Mapped[str] = mapped_column(String(16), default="")
    patient_sex: Mapped[str] = mapped_column(String(16), default="")
    accession_number: Mapped[str] = mapped_column(String(64), default="", index=True)
    requested_procedure_id: Mapped[str] = mapped_column(String(64), default="")
    requested_procedure_description: Mapped[str] = mapped_column(String(128), default="")
    study_instance_uid: Mapped[str] = mapped_column(String(64))
    referring_physician_name: Mapped[str] = mapped_column(String(324), default="")
    scheduled_station_aet: Mapped[str] = mapped_column(String(16), default="", index=True)
    scheduled_station_name: Mapped[str] = mapped_column(String(32), default="")
    modality: Mapped[str] = mapped_column(String(16), default="", index=True)
    scheduled_start_date: Mapped[str] = mapped_column(String(16), default="", index=True)
    scheduled_start_time: Mapped[str] = mapped_column(String(32), default="")
    scheduled_performing_physician_name: Mapped[str] = mapped_column(String(324), default="")
    scheduled_procedure_step_id: Mapped[str] = mapped_column(String(32), default="")
    scheduled_procedure_step_description: Mapped[str] = mapped_column(String(128), default="")
    # SCHEDULED -> IN PROGRESS (MPPS N-CREATE) -> COMPLETED / DISCONTINUED (MPPS N-SET)
    status: Mapped[str] = mapped_column(String(16), default="SCHEDULED", index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)

    performed_steps: Mapped[list[PerformedProcedureStep]] = relationship(back_populates="worklist_item")


class PerformedProcedureStep(Base):
    """A Modality Performed Procedure Step (N-CREATE / N-SET)."""

    __tablename__ = "performed_procedure_steps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="IN PROGRESS")
    worklist_item_fk: Mapped[int | None] = mapped_column(
        ForeignKey("worklist_items.id", ondelete="SET NULL"), nullable=True
    )
    calling_aet: Mapped[str] = mapped_column(String(16), default="")
    study_instance_uid: Mapped[str] = mapped_column(String(64), default="")
    accession_number: Mapped[str] = mapped_column(String(64), default="")
    patient_id: Mapped[str] = mapped_column(String(64), default="")
    # DICOM JSON of the whole MPPS dataset as last set.
    dataset_json: Mapped[str] = mapped_column(Text, default="{}")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)

    worklist_item: Mapped[WorklistItem | None] = relationship(back_populates="performed_steps")


class Job(Base):
    """Long work (send to a peer, retrieve, analyses): progress a client can poll, and the outcome."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64), index=True)
    params_json: Mapped[str] = mapped_column(Text, default="{}")
    # pending -> running -> success | failure | cancelled
    state: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    stage: Mapped[str] = mapped_column(String(128), default="")
    progress: Mapped[float] = mapped_column(default=0.0)
    result_json: Mapped[str] = mapped_column(Text, default="{}")
    error: Mapped[str] = mapped_column(Text, default="")
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=_now, onupdate=func.now()
    )


def table_of(model: type[Base]) -> Table:
    """The Core table of a model, typed as such (``__table__`` is typed as a FromClause)."""
    return cast(Table, model.__table__)
