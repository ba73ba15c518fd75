"""Orthanc's ``/system``, ``/statistics`` and ``/changes``."""

from __future__ import annotations

import ipaddress
from typing import Any

from fastapi import APIRouter, Request

from voxa import __version__
from voxa.security.permissions import Permission as Perm
from voxa.web.access import authenticated, requires
from voxa.web.deps import RuntimeDep
from voxa.web.rest.common import BY_NAME, int_arg, orthanc_time

router = APIRouter(tags=["orthanc system"])

#: The Orthanc REST API version Voxa's routes follow (Orthanc 1.10.1 reports 16).
API_VERSION = 16
#: Orthanc's /changes limits.
DEFAULT_CHANGES, MAX_CHANGES = 100, 10_000


def _loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@router.get("/system", response_model=None)
@authenticated
def system(rt: RuntimeDep, request: Request) -> dict[str, Any]:
    """Orthanc's description of the server, with Voxa's name and version."""
    s = rt.settings
    dicom_port = rt.dicom.port if rt.dicom is not None and rt.dicom.port else s.dicom_port
    return {
        "ApiVersion": API_VERSION,
        "CheckRevisions": False,
        "DatabaseBackendPlugin": None,
        "DatabaseVersion": 6,
        "DicomAet": s.aet,
        "DicomPort": dicom_port,
        "HttpPort": request.url.port or s.http_port,
        # Orthanc's rule: secure when only loopback clients can connect or authentication is on.
        "IsHttpServerSecure": _loopback(s.http_host),
        "Name": "Voxa",
        "PluginsEnabled": False,
        "StorageAreaPlugin": None,
        "Version": __version__,
        "Product": "Voxa",
        "IndexBackend": rt.archive.index.engine.dialect.name,
    }


@router.get("/statistics", response_model=None)
@requires(Perm.MANAGE_SETTINGS)
def statistics(rt: RuntimeDep) -> dict[str, Any]:
    """Counts and sizes of the whole archive."""
    counts = rt.archive.index.statistics()
    size = counts["size_bytes"]
    mb = size // (1024 * 1024)
    return {
        "CountInstances": counts["instances"], "CountPatients": counts["patients"],
        "CountSeries": counts["series"], "CountStudies": counts["studies"],
        "TotalDiskSize": str(size), "TotalDiskSizeMB": mb,
        "TotalUncompressedSize": str(size), "TotalUncompressedSizeMB": mb,
    }


def _change(c: dict[str, Any]) -> dict[str, Any]:
    info = BY_NAME.get(str(c["resource_type"]).lower())
    path = f"/{info.path}/{c['public_id']}" if info else ""
    return {"ChangeType": c["change_type"], "Date": orthanc_time(c["at"]), "ID": c["public_id"], "Path": path,
            "ResourceType": c["resource_type"], "Seq": int(c["seq"])}


@router.get("/changes", response_model=None)
@requires(Perm.MANAGE_SETTINGS)
def changes(rt: RuntimeDep, since: str | None = None, limit: str | None = None,
            last: str | None = None) -> dict[str, Any]:
    """The change log: ``?since=N&limit=M`` pages through it (``Done``: nothing after this page,
    ``Last``: the sequence number to pass as the next ``since``); ``?last``: the newest change."""
    index = rt.archive.index
    if last is not None:
        seq = index.last_change_seq()
        found = index.changes(seq - 1, 1) if seq else []
        return {"Changes": [_change(c) for c in found], "Done": True, "Last": seq}
    first = int_arg(since, "since", default=0) or 0
    count = min(int_arg(limit, "limit", default=DEFAULT_CHANGES) or DEFAULT_CHANGES, MAX_CHANGES)
    found = index.changes(first, count + 1)
    done = len(found) <= count
    found = found[:count]
    return {"Changes": [_change(c) for c in found], "Done": done,
            "Last": int(found[-1]["seq"]) if found else index.last_change_seq()}
