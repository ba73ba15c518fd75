"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from voxa import __version__
from voxa.security.permissions import Permission as Perm
from voxa.web.access import public, requires
from voxa.web.deps import RuntimeDep

router = APIRouter(tags=["system"])


@router.get("/health")
@public
def health() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok", "version": __version__}


@router.get("/ready", response_model=None)
@requires(Perm.MANAGE_SETTINGS)
def ready(rt: RuntimeDep) -> Any:
    """Ready to serve: the index answers, storage is writable, the DICOM listener is up."""
    checks: dict[str, str] = {}
    try:
        with rt.archive.index.read() as conn:
            conn.execute(text("SELECT 1"))
        checks["index"] = "ok"
    except Exception as e:  # noqa: BLE001
        checks["index"] = f"error: {type(e).__name__}"
    free = rt.archive.blobs.free_bytes()
    checks["storage"] = "ok" if free is None or free > rt.archive.min_free_bytes else "full"
    checks["dicom"] = "ok" if rt.dicom is not None else "not listening"
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)
