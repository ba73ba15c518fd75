"""The index: writes (add, delete) and lookups of stored resources.

Writes use SQLAlchemy Core on the ORM tables: one transaction per instance, a handful
of statements, no ORM identity map on the hot ingest path.  On SQLite, writers are
serialised in-process (SQLite allows one writer; waiting on a Python lock is cheaper and
fairer than retrying on ``database is locked``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from voxa.archive import identifiers
from voxa.archive.attributes import Level
from voxa.archive.models import Change, Instance, Patient, Series, Study, table_of

P, ST, SE, IN, CH = table_of(Patient), table_of(Study), table_of(Series), table_of(Instance), table_of(Change)


# Statements of the ingest hot path, built once: constructing them per call costs more
# than executing them on SQLite.
_INSERT_INSTANCE = insert(IN)
_INSERT_CHANGE = insert(CH)
_COUNT_STUDY = update(ST).where(ST.c.id == bindparam("_id")).values(
    num_instances=ST.c.num_instances + 1, size_bytes=ST.c.size_bytes + bindparam("_size"),
    updated_at=bindparam("_now"))
_COUNT_SERIES = update(SE).where(SE.c.id == bindparam("_id")).values(
    num_instances=SE.c.num_instances + 1, size_bytes=SE.c.size_bytes + bindparam("_size"),
    updated_at=bindparam("_now"))
_COUNT_PATIENT = update(P).where(P.c.id == bindparam("_id")).values(
    num_instances=P.c.num_instances + 1, size_bytes=P.c.size_bytes + bindparam("_size"),
    updated_at=bindparam("_now"))


class DuplicateInstance(Exception):
    """The SOP Instance UID is already in the index."""


class NotFound(LookupError):
    pass


@dataclass
class InstanceRecord:
    """Everything the index stores about one instance, extracted at ingest."""

    patient: dict[str, Any]
    study: dict[str, Any]
    series: dict[str, Any]
    instance: dict[str, Any]
    metadata_json: bytes = b""

    @property
    def sop_instance_uid(self) -> str:
        return str(self.instance["sop_instance_uid"])


@dataclass
class StoredLocation:
    """Where an instance's bytes are and what they are."""

    id: int
    public_id: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    blob_key: str
    size_bytes: int
    dataset_offset: int
    study_instance_uid: str = ""
    series_instance_uid: str = ""


@dataclass
class AddResult:
    instance_id: int
    public_ids: dict[str, str] = field(default_factory=dict)
    new_study: bool = False
    new_series: bool = False
    replaced_blob_key: str | None = None
    patient_name_conflict: bool = False


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Index:
    def __init__(self, engine: Engine):
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        self._write_lock = threading.RLock() if self.is_sqlite else None
        # SeriesInstanceUID -> (series, study, patient row ids, StudyInstanceUID) and
        # StudyInstanceUID -> (study, patient row ids, SOP classes): spares the lookups
        # for the second and later instances of a series.  Cleared on any delete.
        self._cache_lock = threading.Lock()
        self._series_cache: dict[str, tuple[Any, ...]] = {}
        self._study_cache: dict[str, tuple[Any, ...]] = {}

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction (serialised on SQLite)."""
        lock = self._write_lock or contextlib.nullcontext()
        with lock, self.engine.begin() as conn:
            yield conn

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    # -- writes ---------------------------------------------------------------------------

    def existing_instance(self, sop_instance_uid: str) -> StoredLocation | None:
        with self.read() as conn:
            return self._locate(conn, IN.c.sop_instance_uid == sop_instance_uid)

    def add(self, rec: InstanceRecord, *, replace: bool = False) -> AddResult:
        """Insert one instance (creating patient/study/series rows as needed) and update counts.

        Raises :class:`DuplicateInstance` when the SOP Instance UID exists and ``replace``
        is false.  With ``replace``, the old row is swapped for the new one and the old
        blob key is returned so the caller can delete the file after the commit.
        """
        for attempt in range(3):
            try:
                with self.write() as conn:
                    result, cache_updates = self._add(conn, rec, replace=replace)
                # Only what committed may enter the cache.
                with self._cache_lock:
                    for uid, entry in cache_updates:
                        (self._series_cache if len(entry) == 4 else self._study_cache)[uid] = entry
                return result
            except IntegrityError:
                # A concurrent writer (another process on PostgreSQL) created the same
                # patient/study/series or instance between our select and insert, or a
                # cached row was deleted elsewhere; forget the cache and look again.
                self.clear_cache()
                if attempt == 2:
                    raise
                with self.read() as conn:
                    if not replace and self._locate(conn, IN.c.sop_instance_uid == rec.sop_instance_uid):
                        raise DuplicateInstance(rec.sop_instance_uid) from None
        raise AssertionError("unreachable")

    def clear_cache(self) -> None:
        with self._cache_lock:
            self._series_cache.clear()
            self._study_cache.clear()

    def _add(self, conn: Connection, rec: InstanceRecord, *,
             replace: bool) -> tuple[AddResult, list[tuple[str, tuple[Any, ...]]]]:
        now = _now()
        pat, stu, ser, ins = rec.patient, rec.study, rec.series, rec.instance
        pid = pat["patient_id"]
        study_uid, series_uid, sop_uid = stu["study_instance_uid"], ser["series_instance_uid"], ins["sop_instance_uid"]
        sop_class = ins["sop_class_uid"]
        result = AddResult(instance_id=0)
        cache_updates: list[tuple[str, tuple[Any, ...]]] = []

        if replace:
            old = self._locate(conn, IN.c.sop_instance_uid == sop_uid)
            if old is not None:
                self._delete_instance_rows(conn, old.id, record_change=False)
                result.replaced_blob_key = old.blob_key
                self.clear_cache()

        size = int(ins["size_bytes"])
        with self._cache_lock:
            cached_series = self._series_cache.get(series_uid)
            cached_study = self._study_cache.get(study_uid)
        if cached_series is not None and cached_series[3] == study_uid and cached_study is not None:
            # The common case: another instance of a series we just wrote to.
            series_fk, study_fk, patient_fk, _ = cached_series
            known_classes: frozenset[str] = cached_study[2]
        else:
            patient_fk = self._ensure_patient(conn, pat, now, result)
            study_fk, known_classes = self._ensure_study(conn, stu, pat, ser, ins, patient_fk, now, result)
            series_fk = self._ensure_series(conn, ser, study_fk, patient_fk, pid, study_uid, now, result)
            cache_updates.append((series_uid, (series_fk, study_fk, patient_fk, study_uid)))

        instance_public = identifiers.instance_public_id(pid, study_uid, series_uid, sop_uid)
        instance_id = conn.execute(
            _INSERT_INSTANCE,
            {"series_fk": series_fk, "public_id": instance_public, "received_at": now,
             "metadata_json": rec.metadata_json, **ins},
        ).inserted_primary_key[0]  # type: ignore[index]

        study_values: dict[str, Any] = {
            "num_instances": ST.c.num_instances + 1,
            "size_bytes": ST.c.size_bytes + size,
            "updated_at": now,
        }
        if result.new_series:
            study_values["num_series"] = ST.c.num_series + 1
            # Recomputed from the series rows, so that writers in other processes agree.
            modalities = conn.execute(
                select(SE.c.modality).distinct().where(SE.c.study_fk == study_fk)
            ).scalars().all()
            study_values["modalities_in_study"] = "\\".join(sorted(m for m in modalities if m))
        if sop_class not in known_classes:
            classes = set(conn.execute(
                select(IN.c.sop_class_uid).distinct().join(SE, SE.c.id == IN.c.series_fk)
                .where(SE.c.study_fk == study_fk)
            ).scalars().all())
            study_values["sop_classes_in_study"] = "\\".join(sorted(c for c in classes if c))
            known_classes = frozenset(classes)
        counts = {"_id": 0, "_size": size, "_now": now}
        if len(study_values) == 3:  # no new series or SOP class: the prepared statement
            conn.execute(_COUNT_STUDY, {**counts, "_id": study_fk})
        else:
            conn.execute(update(ST).where(ST.c.id == study_fk).values(**study_values))
        conn.execute(_COUNT_SERIES, {**counts, "_id": series_fk})
        if result.new_series or result.new_study:
            pat_values: dict[str, Any] = {
                "num_instances": P.c.num_instances + 1, "size_bytes": P.c.size_bytes + size, "updated_at": now,
                "num_series": P.c.num_series + int(result.new_series),
                "num_studies": P.c.num_studies + int(result.new_study),
            }
            conn.execute(update(P).where(P.c.id == patient_fk).values(**pat_values))
        else:
            conn.execute(_COUNT_PATIENT, {**counts, "_id": patient_fk})
        conn.execute(_INSERT_CHANGE, {"change_type": "NewInstance", "resource_type": "Instance",
                                      "public_id": instance_public, "uid": sop_uid, "detail": "", "at": now})
        cache_updates.append((study_uid, (study_fk, patient_fk, known_classes)))
        result.instance_id = instance_id
        result.public_ids = {
            "patient": identifiers.patient_public_id(pid),
            "study": identifiers.study_public_id(pid, study_uid),
            "series": identifiers.series_public_id(pid, study_uid, series_uid),
            "instance": instance_public,
        }
        return result, cache_updates

    def _ensure_patient(self, conn: Connection, pat: dict[str, Any], now: dt.datetime, result: AddResult) -> int:
        """The patient row for PatientID + issuer; the first-seen name and demographics are kept."""
        pid = pat["patient_id"]
        row = conn.execute(
            select(P.c.id, P.c.patient_name).where(
                P.c.patient_id == pid, P.c.issuer_of_patient_id == pat["issuer_of_patient_id"]
            )
        ).first()
        if row is not None:
            if row.patient_name != pat["patient_name"]:
                result.patient_name_conflict = True
            return int(row.id)
        public = identifiers.patient_public_id(pid)
        fk = conn.execute(
            insert(P).values(public_id=public, created_at=now, updated_at=now, num_studies=0, num_series=0,
                             num_instances=0, size_bytes=0, **pat)
        ).inserted_primary_key[0]  # type: ignore[index]
        conn.execute(insert(CH).values(change_type="NewPatient", resource_type="Patient", public_id=public,
                                       uid=pid, at=now))
        return int(fk)

    def _ensure_study(self, conn: Connection, stu: dict[str, Any], pat: dict[str, Any], ser: dict[str, Any],
                      ins: dict[str, Any], patient_fk: int, now: dt.datetime,
                      result: AddResult) -> tuple[int, frozenset[str]]:
        study_uid = stu["study_instance_uid"]
        row = conn.execute(
            select(ST.c.id, ST.c.patient_fk, ST.c.sop_classes_in_study).where(ST.c.study_instance_uid == study_uid)
        ).first()
        if row is not None:
            if row.patient_fk != patient_fk:
                raise IntegrityErrorLike(f"StudyInstanceUID {study_uid} already belongs to another patient")
            return int(row.id), frozenset(c for c in row.sop_classes_in_study.split("\\") if c)
        public = identifiers.study_public_id(pat["patient_id"], study_uid)
        fk = conn.execute(
            insert(ST).values(
                patient_fk=patient_fk, public_id=public, created_at=now, updated_at=now,
                modalities_in_study=ser["modality"], sop_classes_in_study=ins["sop_class_uid"],
                num_series=0, num_instances=0, size_bytes=0, **stu,
                **{k: pat[k] for k in ("patient_id", "patient_name", "patient_name_key",
                                       "patient_birth_date", "patient_sex", "issuer_of_patient_id")},
            )
        ).inserted_primary_key[0]  # type: ignore[index]
        result.new_study = True
        conn.execute(insert(CH).values(change_type="NewStudy", resource_type="Study", public_id=public,
                                       uid=study_uid, at=now))
        return int(fk), frozenset({ins["sop_class_uid"]})

    def _ensure_series(self, conn: Connection, ser: dict[str, Any], study_fk: int, patient_fk: int, pid: str,
                       study_uid: str, now: dt.datetime, result: AddResult) -> int:
        series_uid = ser["series_instance_uid"]
        row = conn.execute(select(SE.c.id, SE.c.study_fk).where(SE.c.series_instance_uid == series_uid)).first()
        if row is not None:
            if row.study_fk != study_fk:
                raise IntegrityErrorLike(f"SeriesInstanceUID {series_uid} already belongs to another study")
            return int(row.id)
        public = identifiers.series_public_id(pid, study_uid, series_uid)
        fk = conn.execute(
            insert(SE).values(study_fk=study_fk, public_id=public, created_at=now, updated_at=now,
                              num_instances=0, size_bytes=0, **ser)
        ).inserted_primary_key[0]  # type: ignore[index]
        result.new_series = True
        conn.execute(insert(CH).values(change_type="NewSeries", resource_type="Series", public_id=public,
                                       uid=series_uid, at=now))
        return int(fk)

    # -- deletes --------------------------------------------------------------------------

    def delete(self, level: Level, public_id: str) -> list[str]:
        """Delete a resource and everything below it; returns the blob keys to remove."""
        self.clear_cache()
        with self.write() as conn:
            table = {Level.PATIENT: P, Level.STUDY: ST, Level.SERIES: SE, Level.IMAGE: IN}[level]
            row = conn.execute(select(table.c.id).where(table.c.public_id == public_id)).first()
            if row is None:
                raise NotFound(f"no {level.value.lower()} with ID {public_id}")
            ids = self._instance_ids_under(conn, level, row.id)
            keys: list[str] = []
            for iid in ids:
                key = self._delete_instance_rows(conn, iid, record_change=True)
                if key:
                    keys.append(key)
            if level is Level.PATIENT:
                # A patient with no instances can still exist after partial deletes.
                left = conn.execute(select(P.c.public_id, P.c.patient_id).where(P.c.id == row.id)).first()
                if left is not None:
                    conn.execute(delete(P).where(P.c.id == row.id))
                    conn.execute(insert(CH).values(change_type="DeletedPatient", resource_type="Patient",
                                                   public_id=left.public_id, uid=left.patient_id, at=_now()))
            return keys

    def delete_instance_by_id(self, instance_id: int) -> str | None:
        self.clear_cache()
        with self.write() as conn:
            return self._delete_instance_rows(conn, instance_id, record_change=True)

    def _instance_ids_under(self, conn: Connection, level: Level, row_id: int) -> list[int]:
        q = select(IN.c.id)
        if level is Level.IMAGE:
            q = q.where(IN.c.id == row_id)
        elif level is Level.SERIES:
            q = q.where(IN.c.series_fk == row_id)
        elif level is Level.STUDY:
            q = q.join(SE, SE.c.id == IN.c.series_fk).where(SE.c.study_fk == row_id)
        else:
            q = q.join(SE, SE.c.id == IN.c.series_fk).join(ST, ST.c.id == SE.c.study_fk).where(
                ST.c.patient_fk == row_id
            )
        return [r.id for r in conn.execute(q)]

    def _delete_instance_rows(self, conn: Connection, instance_id: int, *, record_change: bool) -> str | None:
        row = conn.execute(
            select(
                IN.c.id, IN.c.blob_key, IN.c.size_bytes, IN.c.public_id, IN.c.sop_instance_uid, IN.c.sop_class_uid,
                SE.c.id.label("series_id"), SE.c.public_id.label("series_public"),
                SE.c.series_instance_uid, ST.c.id.label("study_id"), ST.c.public_id.label("study_public"),
                ST.c.study_instance_uid, ST.c.patient_fk,
            )
            .join(SE, SE.c.id == IN.c.series_fk)
            .join(ST, ST.c.id == SE.c.study_fk)
            .where(IN.c.id == instance_id)
        ).first()
        if row is None:
            return None
        now = _now()
        conn.execute(delete(IN).where(IN.c.id == instance_id))
        if record_change:
            conn.execute(insert(CH).values(change_type="DeletedInstance", resource_type="Instance",
                                           public_id=row.public_id, uid=row.sop_instance_uid, at=now))
        size = row.size_bytes
        remaining_in_series = conn.execute(
            select(func.count()).select_from(IN).where(IN.c.series_fk == row.series_id)
        ).scalar_one()
        series_gone = remaining_in_series == 0
        if series_gone:
            conn.execute(delete(SE).where(SE.c.id == row.series_id))
            if record_change:
                conn.execute(insert(CH).values(change_type="DeletedSeries", resource_type="Series",
                                               public_id=row.series_public, uid=row.series_instance_uid, at=now))
        else:
            conn.execute(update(SE).where(SE.c.id == row.series_id).values(
                num_instances=SE.c.num_instances - 1, size_bytes=SE.c.size_bytes - size, updated_at=now))
        remaining_series = conn.execute(
            select(SE.c.modality).where(SE.c.study_fk == row.study_id)
        ).all()
        study_gone = not remaining_series
        if study_gone:
            conn.execute(delete(ST).where(ST.c.id == row.study_id))
            if record_change:
                conn.execute(insert(CH).values(change_type="DeletedStudy", resource_type="Study",
                                               public_id=row.study_public, uid=row.study_instance_uid, at=now))
        else:
            modalities = "\\".join(sorted({r.modality for r in remaining_series if r.modality}))
            classes = conn.execute(
                select(IN.c.sop_class_uid).distinct().join(SE, SE.c.id == IN.c.series_fk)
                .where(SE.c.study_fk == row.study_id)
            ).scalars().all()
            conn.execute(update(ST).where(ST.c.id == row.study_id).values(
                num_instances=ST.c.num_instances - 1, size_bytes=ST.c.size_bytes - size,
                num_series=len(remaining_series), modalities_in_study=modalities,
                sop_classes_in_study="\\".join(sorted(c for c in classes if c)), updated_at=now))
        pat_values: dict[str, Any] = {
            "num_instances": P.c.num_instances - 1, "size_bytes": P.c.size_bytes - size, "updated_at": now,
        }
        if series_gone:
            pat_values["num_series"] = P.c.num_series - 1
        if study_gone:
            pat_values["num_studies"] = P.c.num_studies - 1
        conn.execute(update(P).where(P.c.id == row.patient_fk).values(**pat_values))
        if study_gone:
            left = conn.execute(select(P.c.num_studies, P.c.public_id, P.c.patient_id)
                                .where(P.c.id == row.patient_fk)).first()
            if left is not None and left.num_studies <= 0:
                conn.execute(delete(P).where(P.c.id == row.patient_fk))
                if record_change:
                    conn.execute(insert(CH).values(change_type="DeletedPatient", resource_type="Patient",
                                                   public_id=left.public_id, uid=left.patient_id, at=now))
        return row.blob_key

    # -- lookups --------------------------------------------------------------------------

    def _locate(self, conn: Connection, where: Any) -> StoredLocation | None:
        row = conn.execute(
            select(
                IN.c.id, IN.c.public_id, IN.c.sop_instance_uid, IN.c.sop_class_uid, IN.c.transfer_syntax_uid,
                IN.c.blob_key, IN.c.size_bytes, IN.c.dataset_offset,
            ).where(where)
        ).first()
        if row is None:
            return None
        return StoredLocation(**row._asdict())

    def locate(self, *, study_uid: str | None = None, series_uid: str | None = None,
               sop_uid: str | None = None, instance_ids: list[int] | None = None) -> list[StoredLocation]:
        """Stored instances under a study, series or instance (ordered by series, instance number)."""
        q = (
            select(
                IN.c.id, IN.c.public_id, IN.c.sop_instance_uid, IN.c.sop_class_uid, IN.c.transfer_syntax_uid,
                IN.c.blob_key, IN.c.size_bytes, IN.c.dataset_offset,
                ST.c.study_instance_uid, SE.c.series_instance_uid,
            )
            .join(SE, SE.c.id == IN.c.series_fk)
            .join(ST, ST.c.id == SE.c.study_fk)
        )
        if study_uid:
            q = q.where(ST.c.study_instance_uid == study_uid)
        if series_uid:
            q = q.where(SE.c.series_instance_uid == series_uid)
        if sop_uid:
            q = q.where(IN.c.sop_instance_uid == sop_uid)
        if instance_ids is not None:
            q = q.where(IN.c.id.in_(instance_ids))
        q = q.order_by(SE.c.series_number, SE.c.id, IN.c.instance_number, IN.c.id)
        with self.read() as conn:
            return [StoredLocation(**r._asdict()) for r in conn.execute(q)]

    def all_blob_keys(self) -> dict[str, int]:
        with self.read() as conn:
            return {r.blob_key: r.id for r in conn.execute(select(IN.c.blob_key, IN.c.id))}

    def last_change_seq(self) -> int:
        with self.read() as conn:
            return int(conn.execute(select(func.coalesce(func.max(CH.c.seq), 0))).scalar_one())

    def changes(self, since: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        with self.read() as conn:
            rows = conn.execute(select(CH).where(CH.c.seq > since).order_by(CH.c.seq).limit(limit))
            return [dict(r._mapping) for r in rows]

    def statistics(self) -> dict[str, int]:
        """Resource counts and stored bytes, from the patient rows' maintained counters (one
        row per patient rather than per instance, so /statistics and /metrics stay cheap)."""
        with self.read() as conn:
            row = conn.execute(
                select(
                    func.count(),
                    func.coalesce(func.sum(P.c.num_studies), 0),
                    func.coalesce(func.sum(P.c.num_series), 0),
                    func.coalesce(func.sum(P.c.num_instances), 0),
                    func.coalesce(func.sum(P.c.size_bytes), 0),
                ).select_from(P)
            ).one()
        return {"patients": int(row[0]), "studies": int(row[1]), "series": int(row[2]),
                "instances": int(row[3]), "size_bytes": int(row[4])}


class IntegrityErrorLike(ValueError):
    """Stored data contradicts an incoming instance (e.g. a series moving between studies)."""
