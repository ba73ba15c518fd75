"""What the DICOMweb routes share: settings with their defaults, URLs, and index look-ups."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request
from sqlalchemy import select

from voxa.archive.index import Index
from voxa.archive.models import Instance, Series, Study, table_of
from voxa.web.app import DomainError

IN, SE, ST = table_of(Instance), table_of(Series), table_of(Study)

# Defaults of the settings this package reads (``Settings`` fields of the same name win
# once they exist; see docs/dicomweb.md).
QIDO_MAX_RESULTS = 1000
RENDERED_CACHE_MB = 512
RENDERED_JPEG_QUALITY = 90
THUMBNAIL_SIZE = 128
STOW_MAX_PART_MB = 2048
METADATA_GZIP_MIN_BYTES = 2048


def setting(request: Request, name: str, default: Any) -> Any:
    value = getattr(request.app.state.runtime.settings, name, None)
    return default if value is None else value


def dicomweb_root(request: Request) -> str:
    """Absolute URL of the DICOMweb root, without a trailing slash: ``public_url`` when
    configured (behind a proxy, or for clients that send ``Host`` without the port, as
    dicomweb-client does), else as the client reached this server."""
    public = setting(request, "public_url", None)
    base = str(public) if public else str(request.base_url)
    return base.rstrip("/") + "/dicom-web"


def study_url(root: str, study: str) -> str:
    return f"{root}/studies/{study}"


def series_url(root: str, study: str, series: str) -> str:
    return f"{root}/studies/{study}/series/{series}"


def instance_url(root: str, study: str, series: str, sop: str) -> str:
    return f"{root}/studies/{study}/series/{series}/instances/{sop}"


@dataclass(frozen=True)
class InstanceRow:
    """A stored instance with what retrieve, frames and rendering need from the index."""

    id: int
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    blob_key: str
    size_bytes: int
    dataset_offset: int
    rows: int | None
    columns: int | None
    number_of_frames: int | None
    instance_number: int | None
    series_instance_uid: str
    series_number: int | None
    study_instance_uid: str

    @property
    def is_image(self) -> bool:
        return bool(self.rows) and bool(self.columns)

    @property
    def frames(self) -> int:
        return max(1, int(self.number_of_frames or 1))


_INSTANCE_COLUMNS = (
    IN.c.id, IN.c.sop_instance_uid, IN.c.sop_class_uid, IN.c.transfer_syntax_uid, IN.c.blob_key, IN.c.size_bytes,
    IN.c.dataset_offset, IN.c.rows, IN.c.columns, IN.c.number_of_frames, IN.c.instance_number,
    SE.c.series_instance_uid, SE.c.series_number, ST.c.study_instance_uid,
)


def hierarchy_order() -> tuple[Any, ...]:
    """Series number, then instance number (unnumbered last on every back-end), then arrival."""
    return (SE.c.series_number.asc().nulls_last(), SE.c.id, IN.c.instance_number.asc().nulls_last(), IN.c.id)


def instances(index: Index, study: str, series: str | None = None, sop: str | None = None) -> list[InstanceRow]:
    """The instances under a study / series / instance, in display order; 404 when none."""
    q = (select(*_INSTANCE_COLUMNS).join(SE, SE.c.id == IN.c.series_fk).join(ST, ST.c.id == SE.c.study_fk)
         .where(ST.c.study_instance_uid == study))
    if series is not None:
        q = q.where(SE.c.series_instance_uid == series)
    if sop is not None:
        q = q.where(IN.c.sop_instance_uid == sop)
    q = q.order_by(*hierarchy_order())
    with index.read() as conn:
        rows = [InstanceRow(**r._asdict()) for r in conn.execute(q)]
    if not rows:
        raise DomainError(404, not_found_message(study, series, sop))
    return rows


def one_instance(index: Index, study: str, series: str, sop: str) -> InstanceRow:
    return instances(index, study, series, sop)[0]


def not_found_message(study: str, series: str | None = None, sop: str | None = None) -> str:
    if sop is not None:
        return f"no instance {sop} in series {series} of study {study}"
    if series is not None:
        return f"no series {series} in study {study}"
    return f"no study {study}"


def middle(rows: list[InstanceRow]) -> InstanceRow:
    """The instance a thumbnail shows: the middle image of the first series that has images."""
    images = [r for r in rows if r.is_image]
    if not images:
        raise DomainError(406, "no image in this resource: nothing to render")
    first_series = images[0].series_instance_uid
    in_series = [r for r in images if r.series_instance_uid == first_series]
    return in_series[len(in_series) // 2]
