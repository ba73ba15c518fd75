"""The HTTP application: one FastAPI app over a :class:`~voxa.runtime.Runtime`."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from voxa import __version__
from voxa.runtime import Runtime


class DomainError(Exception):
    """An error a client caused or can act on: answered with its status and message, never a 500."""

    def __init__(self, status_code: int, message: str):
        super().__init__(message)
        self.status_code = status_code
        self.message = message


def create_app(runtime: Runtime) -> FastAPI:
    app = FastAPI(title="Voxa", version=__version__,
                  description="PACS archive: DICOMweb, Orthanc-compatible REST, administration.")
    app.state.runtime = runtime

    @app.exception_handler(DomainError)
    async def _domain_error(_request: Request, exc: DomainError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status_code)

    from voxa.web.routes import system

    app.include_router(system.router)
    # Route modules, each with a ``router``; a module that does not exist yet is skipped.
    for name in ("peers", "jobs", "worklist", "dicomweb", "wado_uri", "rest", "metrics", "ohif"):
        module = _optional_route_module(name)
        if module is not None:
            app.include_router(module.router)
    from voxa.web.routes.metrics import install_metrics

    install_metrics(runtime)
    return app


def _optional_route_module(name: str) -> Any:
    import importlib

    try:
        return importlib.import_module(f"voxa.web.routes.{name}")
    except ModuleNotFoundError as e:
        if e.name == f"voxa.web.routes.{name}":
            return None
        raise
