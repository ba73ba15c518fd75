"""What every part of the Orthanc-compatible REST API shares: levels, flags, times, errors."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table

from voxa.archive.attributes import Level
from voxa.archive.models import Instance, Patient, Series, Study
from voxa.web.app import DomainError
from voxa.web.deps import MAX_DB_INT

P: Table = Patient.__table__  # type: ignore[assignment]
ST: Table = Study.__table__  # type: ignore[assignment]
SE: Table = Series.__table__  # type: ignore[assignment]
IN: Table = Instance.__table__  # type: ignore[assignment]

#: Orthanc's "StableAge" default: a resource is stable when nothing arrived for this long.
STABLE_AGE_S = 60.0


@dataclass(frozen=True)
class LevelInfo:
    """One of Orthanc's four resource levels, under its REST names."""

    level: Level
    path: str  # "studies": the URL segment
    name: str  # "Study": Orthanc's "Type" and "ResourceType"
    table: Table


PATIENTS = LevelInfo(Level.PATIENT, "patients", "Patient", P)
STUDIES = LevelInfo(Level.STUDY, "studies", "Study", ST)
SERIES = LevelInfo(Level.SERIES, "series", "Series", SE)
INSTANCES = LevelInfo(Level.IMAGE, "instances", "Instance", IN)
LEVELS: tuple[LevelInfo, ...] = (PATIENTS, STUDIES, SERIES, INSTANCES)
BY_LEVEL = {info.level: info for info in LEVELS}
BY_NAME = {info.name.lower(): info for info in LEVELS} | {"image": INSTANCES}


def level_from_name(value: Any) -> LevelInfo:
    """Orthanc's ``"Level"`` of a request body (case-insensitive)."""
    if isinstance(value, str) and value.strip().lower() in BY_NAME:
        return BY_NAME[value.strip().lower()]
    raise DomainError(400, f"Level must be Patient, Study, Series or Instance, not {value!r}")


def resource_path(info: LevelInfo, public_id: str) -> str:
    return f"/{info.path}/{public_id}"


def orthanc_time(t: dt.datetime | None) -> str:
    """Orthanc's timestamps (``LastUpdate``, change ``Date``): ``YYYYMMDDTHHMMSS`` in UTC."""
    if t is None:
        return ""
    if t.tzinfo is None:  # SQLite hands back naive datetimes; Voxa writes UTC
        t = t.replace(tzinfo=dt.UTC)
    return t.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%S")


def is_stable(updated_at: dt.datetime | None, now: dt.datetime | None = None) -> bool:
    """Orthanc's ``IsStable``: no new instance for :data:`STABLE_AGE_S` seconds."""
    if updated_at is None:
        return True
    if updated_at.tzinfo is None:
        updated_at = updated_at.replace(tzinfo=dt.UTC)
    now = now or dt.datetime.now(dt.UTC)
    return (now - updated_at).total_seconds() >= STABLE_AGE_S


def flag(value: str | None) -> bool:
    """An Orthanc flag argument: ``?expand``, ``?expand=true``; ``?expand=false`` / ``=0`` turn it off."""
    return value is not None and value.strip().lower() not in ("false", "0", "no")


def int_arg(value: str | None, name: str, *, default: int | None = None, minimum: int = 0,
            maximum: int = MAX_DB_INT) -> int | None:
    """A non-negative integer query argument, with a 400 (not FastAPI's 422) when it is not one
    (or is too large for the database)."""
    if value is None or value == "":
        return default
    try:
        n = int(value)
    except ValueError:
        raise DomainError(400, f"{name} must be an integer, not {value!r}") from None
    if n < minimum:
        raise DomainError(400, f"{name} must be at least {minimum}")
    if n > maximum:
        raise DomainError(400, f"{name} must be at most {maximum}")
    return n


def split_tags_arg(value: str | None) -> list[str]:
    """``?requestedTags=PatientName;0010,0020`` -> the names, in order."""
    if not value:
        return []
    return [t.strip() for t in value.split(";") if t.strip()]


def unknown(info: LevelInfo, public_id: str) -> DomainError:
    return DomainError(404, f"no {info.name.lower()} with ID {public_id}")
