"""DICOMweb routes (``/dicom-web/...``); the implementation lives in :mod:`voxa.web.dicomweb`."""

from __future__ import annotations

from voxa.web.dicomweb import router

__all__ = ["router"]
