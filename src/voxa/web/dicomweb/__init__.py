"""DICOMweb (PS3.18) under ``/dicom-web``: QIDO-RS, WADO-RS (instances, metadata, frames,
bulk data, rendered images, thumbnails) and STOW-RS.  See docs/dicomweb.md.

Modules: :mod:`.qido`, :mod:`.wado`, :mod:`.rendered`, :mod:`.stow` (routes);
:mod:`.media` (Accept and media types), :mod:`.multipart` (bodies), :mod:`.pixels` (frames,
transcoding), :mod:`.render` (windowing and encoding), :mod:`.cache` (rendered-image cache),
:mod:`.common` (settings, URLs, index look-ups).
"""

from __future__ import annotations

from fastapi import APIRouter

from voxa.web.dicomweb import qido, rendered, stow, wado


def build_router() -> APIRouter:
    router = APIRouter(prefix="/dicom-web", tags=["dicomweb"])
    # Rendered and thumbnail routes first: their paths end in literals that would otherwise
    # never be confused, but keeping the more specific routes first is cheap insurance.
    for module in (rendered, qido, wado, stow):
        router.include_router(module.router)
    return router


router = build_router()

__all__ = ["router", "build_router"]
