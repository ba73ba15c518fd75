"""The HTTP application: one FastAPI app over a :class:`~voxa.runtime.Runtime`."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from voxa import __version__
from voxa.runtime import Runtime


class DomainError(Exception):
    """An error a client caused or can act on: answered with its status and message, never a 500."""

    def __init__(self, status_code: int, message: str):
        super().__init__(message)
        self.status_code = status_code
        self.message = message


ROUTE_MODULES = ("auth", "oidc", "admin", "dashboard", "peers", "jobs", "worklist", "dicomweb", "wado_uri", "rest", "metrics", "imaging",
                 "measurements", "analyses", "reports", "ohif", "webapp")


def create_app(runtime: Runtime) -> FastAPI:
    from starlette.exceptions import HTTPException

    from voxa.web.access import (
        AuditMiddleware,
        AuthContext,
        authenticated,
        authorise,
        authorise_before_error,
        undeclared_routes,
    )

    settings = runtime.settings
    # Every route passes authorise(): it enforces the route's declared permission and
    # refuses routes that declare none.  FastAPI's own documentation routes would bypass
    # it, so they are replaced by declared ones below.
    app = FastAPI(title="Voxa", version=__version__, openapi_url=None, docs_url=None, redoc_url=None,
                  dependencies=[Depends(authorise)],
                  description="PACS archive: DICOMweb, Orthanc-compatible REST, administration. "
                              "Authenticate with HTTP Basic, a bearer API token, or a web session.")
    app.state.runtime = runtime
    secure = settings.cookie_secure
    if secure is None:
        secure = bool(settings.public_url and settings.public_url.startswith("https"))
    app.state.auth = AuthContext(runtime.accounts, runtime.audit, cookie_secure=secure,
                                 coalesce_s=float(settings.audit_coalesce_s))
    app.add_middleware(AuditMiddleware)

    @app.exception_handler(DomainError)
    async def _domain_error(_request: Request, exc: DomainError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status_code)

    # a malformed body is refused before authorise() runs: authorise first (see there)
    app.add_exception_handler(RequestValidationError, authorise_before_error)
    app.add_exception_handler(HTTPException, authorise_before_error)

    from voxa.web.routes import system

    app.include_router(system.router)
    # Route modules, each with a ``router``; a module that does not exist yet is skipped.
    for name in ROUTE_MODULES:
        module = _optional_route_module(name)
        if module is not None:
            app.include_router(module.router)

    @app.get("/openapi.json", include_in_schema=False)
    @authenticated
    def openapi_document() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    @authenticated
    def api_docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="Voxa API")

    from voxa.web.routes.metrics import install_metrics

    install_metrics(runtime)
    missing = undeclared_routes(app)
    if missing:
        # They are refused at request time anyway; say so loudly at start-up.
        import logging

        logging.getLogger(__name__).error("routes without a declared permission (refused): %s", ", ".join(missing))
    return app


def _optional_route_module(name: str) -> Any:
    import importlib

    try:
        return importlib.import_module(f"voxa.web.routes.{name}")
    except ModuleNotFoundError as e:
        if e.name == f"voxa.web.routes.{name}":
            return None
        raise
