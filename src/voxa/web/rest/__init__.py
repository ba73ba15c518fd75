"""Orthanc-compatible REST API: scripts and clients written for Orthanc (``curl .../studies``,
the ``pyorthanc`` client) work against Voxa, with the same resource IDs Orthanc gives the
same files (see :mod:`voxa.archive.identifiers`).

One module per group of routes: :mod:`.resource_routes` (patients, studies, series,
instances, archives), :mod:`.instance_routes` (files, tags, previews, upload),
:mod:`.tool_routes` (find, lookup), :mod:`.system_routes` (system, statistics, changes) and
:mod:`.peer_routes` (Orthanc peers).  The differences from Orthanc are listed in
``docs/rest.md``.
"""

from __future__ import annotations

from fastapi import APIRouter

from voxa.web.rest import instance_routes, peer_routes, resource_routes, system_routes, tool_routes

router = APIRouter()
# Instance routes first: "/instances/{id}/file" and friends are more specific than the
# generic per-level routes, which match any "/{level}/{id}/{child}".
for _module in (system_routes, instance_routes, tool_routes, peer_routes, resource_routes):
    router.include_router(_module.router)

__all__ = ["router"]
