"""The Orthanc-compatible REST API (``/patients``, ``/studies``, ``/instances``, ``/tools/find``,
``/changes``, ``/system``...); the routes live in :mod:`voxa.web.rest`."""

from __future__ import annotations

from voxa.web.rest import router

__all__ = ["router"]
