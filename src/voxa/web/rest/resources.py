"""Patients, studies, series and instances as Orthanc describes them, read from the index.

A resource's ``MainDicomTags`` come, as in Orthanc, from the first instance that created it:
here the instance with the lowest row id under the resource.  They are read from that
instance's DICOM JSON in the index; for series and instances the raw text of DS/IS values
(``ImagePositionPatient``, ``InstanceNumber``...) is read from the stored file's element
headers, because DICOM JSON keeps those as numbers.  Everything else (children, sizes,
counts, times) comes from the index rows.  Expanding many resources costs a fixed handful
of SQL statements per batch of 500, plus one short file read per series or instance.
"""

from __future__ import annotations

import json
import uuid
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from sqlalchemy import Connection, func, select

from voxa.archive.access import instance_condition, patient_condition, study_condition
from voxa.archive.attributes import BY_KEYWORD, Level
from voxa.archive.blobstore import BlobStore
from voxa.archive.index import Index
from voxa.security.accounts import AccessFilter
from voxa.web.rest.common import (
    BY_LEVEL,
    IN,
    INSTANCES,
    PATIENTS,
    SE,
    SERIES,
    ST,
    STUDIES,
    LevelInfo,
    P,
    is_stable,
    orthanc_time,
    unknown,
)
from voxa.web.rest.tags import MAIN_DICOM_TAGS, NUMBER_STRING_TAGS, main_tags, read_number_strings, tag_value
from voxa.web.routes.ohif import ohif_study_url

_BATCH = 500

# Requested tags that Orthanc computes from the index rather than reading from a file.
_COMPUTED: dict[Level, dict[str, str]] = {
    Level.PATIENT: {"NumberOfPatientRelatedStudies": "num_studies", "NumberOfPatientRelatedSeries": "num_series",
                    "NumberOfPatientRelatedInstances": "num_instances"},
    Level.STUDY: {"NumberOfStudyRelatedSeries": "num_series", "NumberOfStudyRelatedInstances": "num_instances",
                  "ModalitiesInStudy": "modalities_in_study", "SOPClassesInStudy": "sop_classes_in_study"},
    Level.SERIES: {"NumberOfSeriesRelatedInstances": "num_instances"},
    Level.IMAGE: {},
}


def _chunks(ids: Sequence[int], size: int = _BATCH) -> Iterator[Sequence[int]]:
    for i in range(0, len(ids), size):
        yield ids[i:i + size]


def file_uuid(blob_key: str) -> str:
    """Orthanc's ``FileUuid``: the UUID in Voxa's blob key (``ab/c/<uuid hex>.dcm``)."""
    stem = PurePosixPath(blob_key).stem
    try:
        return str(uuid.UUID(hex=stem))
    except ValueError:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"voxa-blob:{blob_key}"))


def expected_instances(series_tags: dict[str, str]) -> int | None:
    """Orthanc's ``ExpectedNumberOfInstances`` from a series' main tags."""
    def num(keyword: str) -> int | None:
        try:
            return int(float(series_tags[keyword].split("\\")[0]))
        except (KeyError, ValueError, IndexError):
            return None

    for a, b in (("ImagesInAcquisition", "NumberOfTemporalPositions"), ("NumberOfSlices", "NumberOfTimeSlices")):
        x, y = num(a), num(b)
        if x is not None and y is not None:
            return x * y if x * y > 0 else None
    cardiac = num("CardiacNumberOfImages")
    return cardiac if cardiac and cardiac > 0 else None


def series_status(expected: int | None, indexes: list[int | None]) -> str:
    """Orthanc's series ``Status``: Unknown, Complete, Missing or Inconsistent."""
    if expected is None:
        return "Unknown"
    known = [i for i in indexes if i is not None]
    if len(known) != len(indexes) or len(set(known)) != len(known) or any(i < 1 or i > expected for i in known):
        return "Inconsistent"
    return "Complete" if len(known) == expected else "Missing"


@dataclass
class _Representative:
    metadata: dict[str, Any]
    numbers: dict[int, str] | None


class ResourceReader:
    """Reads resources from the index (and, for DS/IS main tags, the stored files' headers)."""

    def __init__(self, index: Index, blobs: BlobStore, access: AccessFilter | None = None):
        self.index = index
        self.blobs = blobs
        # The caller's patient-level access: resources outside it do not exist for them.
        self.access = access

    def visible(self, info: LevelInfo) -> Any:
        """A condition on ``info.table`` keeping the resources the caller may see (None: all)."""
        cond = study_condition(self.access)
        if cond is None:
            return None
        if info is PATIENTS:
            return patient_condition(self.access)
        if info is STUDIES:
            return cond
        if info is SERIES:
            return SE.c.study_fk.in_(select(ST.c.id).where(cond))
        return instance_condition(self.access)

    # -- look-ups -------------------------------------------------------------------------------

    def row_id(self, info: LevelInfo, public_id: str) -> int:
        """The row id of a resource at this level; 404 when there is none."""
        q = select(info.table.c.id).where(info.table.c.public_id == public_id.strip())
        visible = self.visible(info)
        if visible is not None:
            q = q.where(visible)
        with self.index.read() as conn:
            rid = conn.execute(q).scalar()
        if rid is None:
            raise unknown(info, public_id)
        return int(rid)

    def lineage(self, info: LevelInfo, public_id: str) -> dict[Level, str]:
        """Public IDs of the resource and its ancestors, by level; 404 when it does not exist."""
        t = info.table
        cols: list[Any] = [t.c.public_id.label(info.level.value)]
        q: Any = None
        if info is INSTANCES:
            cols += [SE.c.public_id.label("SERIES"), ST.c.public_id.label("STUDY"), P.c.public_id.label("PATIENT")]
            q = select(*cols).join(SE, SE.c.id == IN.c.series_fk).join(ST, ST.c.id == SE.c.study_fk) \
                .join(P, P.c.id == ST.c.patient_fk)
        elif info is SERIES:
            cols += [ST.c.public_id.label("STUDY"), P.c.public_id.label("PATIENT")]
            q = select(*cols).join(ST, ST.c.id == SE.c.study_fk).join(P, P.c.id == ST.c.patient_fk)
        elif info is STUDIES:
            cols += [P.c.public_id.label("PATIENT")]
            q = select(*cols).join(P, P.c.id == ST.c.patient_fk)
        else:
            q = select(*cols)
        with self.index.read() as conn:
            row = conn.execute(q.where(t.c.public_id == public_id.strip())).first()
        if row is None:
            raise unknown(info, public_id)
        return {Level(k): v for k, v in row._mapping.items()}

    def list_row_ids(self, info: LevelInfo, since: int = 0, limit: int | None = None) -> list[int]:
        q = select(info.table.c.id).order_by(info.table.c.id)
        visible = self.visible(info)
        if visible is not None:
            q = q.where(visible)
        if since:
            q = q.offset(since)
        if limit:
            q = q.limit(limit)
        with self.index.read() as conn:
            return [int(r) for r in conn.execute(q).scalars()]

    def public_ids(self, info: LevelInfo, row_ids: Sequence[int]) -> list[str]:
        by_id: dict[int, str] = {}
        with self.index.read() as conn:
            for chunk in _chunks(row_ids):
                q = select(info.table.c.id, info.table.c.public_id).where(info.table.c.id.in_(chunk))
                by_id.update((int(a), str(b)) for a, b in conn.execute(q))
        return [by_id[i] for i in row_ids if i in by_id]

    def descendant_row_ids(self, info: LevelInfo, row_id: int, child: LevelInfo) -> list[int]:
        """Row ids of the resources at level ``child`` under one resource, in row order."""
        if child.level.depth <= info.level.depth:
            raise ValueError(f"{child.name} is not below {info.name}")
        q = select(child.table.c.id)
        if child is INSTANCES and info is not SERIES:
            q = q.join(SE, SE.c.id == IN.c.series_fk)
        if child is not STUDIES and info is PATIENTS:
            q = q.join(ST, ST.c.id == SE.c.study_fk)
        column = {Level.PATIENT: ST.c.patient_fk, Level.STUDY: SE.c.study_fk, Level.SERIES: IN.c.series_fk}[info.level]
        visible = self.visible(child)
        if visible is not None:
            q = q.where(visible)
        with self.index.read() as conn:
            return [int(r) for r in conn.execute(q.where(column == row_id).order_by(child.table.c.id)).scalars()]

    # -- Orthanc's resource objects -------------------------------------------------------------

    def get(self, info: LevelInfo, public_id: str, requested: Sequence[str] = ()) -> dict[str, Any]:
        return self.expand(info, [self.row_id(info, public_id)], requested)[0]

    def expand(self, info: LevelInfo, row_ids: Sequence[int], requested: Sequence[str] = ()) -> list[dict[str, Any]]:
        """Orthanc's objects for these rows, in the order given (rows deleted meanwhile are left out)."""
        out: list[dict[str, Any]] = []
        for chunk in _chunks(list(row_ids)):
            with self.index.read() as conn:
                out.extend(self._expand_chunk(conn, info, chunk, requested))
        return out

    def _expand_chunk(self, conn: Connection, info: LevelInfo, ids: Sequence[int],
                      requested: Sequence[str]) -> list[dict[str, Any]]:
        level = info.level
        rows = {r.id: r for r in conn.execute(self._rows_query(info).where(info.table.c.id.in_(ids)))}
        children = self._children(conn, info, ids, study_condition(self.access))
        if level is Level.IMAGE:
            first = {i: i for i in rows}
        else:
            first = self._first_instances(conn, info, ids)
        reps = self._representatives(conn, set(first.values()), numbers=level in (Level.SERIES, Level.IMAGE))
        out = []
        for rid in ids:
            row = rows.get(rid)
            if row is None:
                continue
            rep = reps.get(first.get(rid, -1))
            obj = self._object(info, row, rep, children.get(rid, []))
            if requested:
                obj["RequestedTags"] = self._requested(level, row, rep, requested)
            out.append(dict(sorted(obj.items())))
        return out

    @staticmethod
    def _rows_query(info: LevelInfo) -> Any:
        if info is PATIENTS:
            return select(P)
        if info is STUDIES:
            return select(ST, P.c.public_id.label("parent_public_id")).join(P, P.c.id == ST.c.patient_fk)
        if info is SERIES:
            return select(SE, ST.c.public_id.label("parent_public_id")).join(ST, ST.c.id == SE.c.study_fk)
        cols = [c for c in IN.c if c.name != "metadata_json"]
        return select(*cols, SE.c.public_id.label("parent_public_id")).join(SE, SE.c.id == IN.c.series_fk)

    @staticmethod
    def _children(conn: Connection, info: LevelInfo, ids: Sequence[int], studies_visible: Any = None
                  ) -> dict[int, list[Any]]:
        out: dict[int, list[Any]] = {}
        if info is PATIENTS:
            q = select(ST.c.patient_fk, ST.c.public_id).where(ST.c.patient_fk.in_(ids)).order_by(ST.c.id)
            if studies_visible is not None:
                q = q.where(studies_visible)
        elif info is STUDIES:
            q = select(SE.c.study_fk, SE.c.public_id).where(SE.c.study_fk.in_(ids)).order_by(SE.c.id)
        elif info is SERIES:
            q = select(IN.c.series_fk, IN.c.public_id, IN.c.instance_number).where(IN.c.series_fk.in_(ids)) \
                .order_by(IN.c.id)
        else:
            return out
        for r in conn.execute(q):
            out.setdefault(r[0], []).append(r[1:] if info is SERIES else r[1])
        return out

    @staticmethod
    def _first_instances(conn: Connection, info: LevelInfo, ids: Sequence[int]) -> dict[int, int]:
        """Resource row id -> row id of its first instance."""
        if info is SERIES:
            q = select(IN.c.series_fk, func.min(IN.c.id)).where(IN.c.series_fk.in_(ids)).group_by(IN.c.series_fk)
        elif info is STUDIES:
            q = select(SE.c.study_fk, func.min(IN.c.id)).join(SE, SE.c.id == IN.c.series_fk) \
                .where(SE.c.study_fk.in_(ids)).group_by(SE.c.study_fk)
        else:
            q = select(ST.c.patient_fk, func.min(IN.c.id)).join(SE, SE.c.id == IN.c.series_fk) \
                .join(ST, ST.c.id == SE.c.study_fk).where(ST.c.patient_fk.in_(ids)).group_by(ST.c.patient_fk)
        return {int(a): int(b) for a, b in conn.execute(q)}

    def _representatives(self, conn: Connection, instance_ids: Iterable[int], *,
                         numbers: bool) -> dict[int, _Representative]:
        ids = sorted(instance_ids)
        if not ids:
            return {}
        out: dict[int, _Representative] = {}
        q = select(IN.c.id, IN.c.metadata_json, IN.c.blob_key, IN.c.dataset_offset, IN.c.transfer_syntax_uid) \
            .where(IN.c.id.in_(ids))
        for r in conn.execute(q):
            try:
                metadata = json.loads(zlib.decompress(r.metadata_json)) if r.metadata_json else {}
            except (zlib.error, ValueError):
                metadata = {}
            raw = self._number_strings(r.blob_key, r.dataset_offset, r.transfer_syntax_uid, metadata) \
                if numbers else None
            out[int(r.id)] = _Representative(metadata, raw)
        return out

    def _number_strings(self, blob_key: str, offset: int, transfer_syntax: str,
                        metadata: dict[str, Any]) -> dict[int, str] | None:
        wanted = [t for t in NUMBER_STRING_TAGS if f"{t:08X}" in metadata]
        if not wanted:
            return None
        try:
            with self.blobs.open(blob_key) as fp:
                return read_number_strings(fp, offset, transfer_syntax, wanted)
        except OSError:
            return None

    def _object(self, info: LevelInfo, row: Any, rep: _Representative | None, children: list[Any]) -> dict[str, Any]:
        level = info.level
        tags = main_tags(rep.metadata, level, rep.numbers) if rep and rep.metadata else _row_main_tags(level, row)
        # "Labels" as Orthanc 1.12+ has them (pyorthanc reads them); Voxa has no labels yet.
        obj: dict[str, Any] = {"ID": row.public_id, "Type": info.name, "MainDicomTags": tags, "Labels": []}
        if level is not Level.IMAGE:
            obj["IsStable"] = is_stable(row.updated_at)
            obj["LastUpdate"] = orthanc_time(row.updated_at)
        if level is Level.PATIENT:
            obj["Studies"] = children
        elif level is Level.STUDY:
            obj["ParentPatient"] = row.parent_public_id
            obj["PatientMainDicomTags"] = main_tags(rep.metadata, Level.PATIENT) if rep and rep.metadata \
                else _row_main_tags(Level.PATIENT, row)
            obj["Series"] = children
            if tags.get("StudyInstanceUID"):
                obj["OhifUrl"] = ohif_study_url(str(tags["StudyInstanceUID"]))
        elif level is Level.SERIES:
            obj["ParentStudy"] = row.parent_public_id
            obj["Instances"] = [c[0] for c in children]
            expected = expected_instances(tags)
            obj["ExpectedNumberOfInstances"] = expected
            obj["Status"] = series_status(expected, [c[1] for c in children])
        else:
            obj["ParentSeries"] = row.parent_public_id
            obj["FileSize"] = int(row.size_bytes)
            obj["FileUuid"] = file_uuid(row.blob_key)
            if row.instance_number is not None:
                obj["IndexInSeries"] = int(row.instance_number)
        return obj

    @staticmethod
    def _requested(level: Level, row: Any, rep: _Representative | None, requested: Sequence[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        computed = _COMPUTED[level]
        for name in requested:
            if name in computed:
                value = getattr(row, computed[name])
                out[name] = str(value) if value is not None else ""
                continue
            found = tag_value(rep.metadata, name) if rep is not None else None
            if found is not None:
                out[found[0]] = found[1]
        return out

    def first_instance_metadata(self, info: LevelInfo, row_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """Resource row id -> DICOM JSON of its first instance (the one its main tags come from)."""
        out: dict[int, dict[str, Any]] = {}
        for chunk in _chunks(list(row_ids)):
            with self.index.read() as conn:
                first = {i: i for i in chunk} if info is INSTANCES else self._first_instances(conn, info, chunk)
                reps = self._representatives(conn, set(first.values()), numbers=False)
            out.update({rid: reps[iid].metadata for rid, iid in first.items() if iid in reps})
        return out

    # -- sizes ------------------------------------------------------------------------------------

    def statistics(self, info: LevelInfo, public_id: str) -> dict[str, Any]:
        """Orthanc's ``/{level}/{id}/statistics``."""
        t = info.table
        cols = [t.c.size_bytes]
        if info is PATIENTS:
            cols += [t.c.num_studies, t.c.num_series, t.c.num_instances]
        elif info is STUDIES:
            cols += [t.c.num_series, t.c.num_instances]
        elif info is SERIES:
            cols += [t.c.num_instances]
        with self.index.read() as conn:
            row = conn.execute(select(*cols).where(t.c.public_id == public_id.strip())).first()
        if row is None:
            raise unknown(info, public_id)
        size = int(row.size_bytes or 0)
        out: dict[str, Any] = {}
        if info is PATIENTS:
            out["CountStudies"] = int(row.num_studies)
        if info in (PATIENTS, STUDIES):
            out["CountSeries"] = int(row.num_series)
        if info is not INSTANCES:
            out["CountInstances"] = int(row.num_instances)
        for key in ("DicomDiskSize", "DicomUncompressedSize", "DiskSize", "UncompressedSize"):
            out[key] = str(size)
            out[f"{key}MB"] = size // (1024 * 1024)
        return dict(sorted(out.items()))


def _row_main_tags(level: Level, row: Any) -> dict[str, str]:
    """Main tags from the index columns, for an instance whose DICOM JSON is missing."""
    out: dict[str, str] = {}
    mapping = row._mapping
    for _tag, keyword in MAIN_DICOM_TAGS[level]:
        attr = BY_KEYWORD.get(keyword)
        if attr is None or attr.column not in mapping:
            continue
        value = mapping[attr.column]
        if value not in (None, ""):
            out[keyword] = str(value)
    return dict(sorted(out.items()))


__all__ = ["ResourceReader", "file_uuid", "expected_instances", "series_status", "BY_LEVEL"]
