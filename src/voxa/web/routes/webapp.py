"""The Voxa web application (``frontend/``, a Vite + TypeScript + Cornerstone3D build) at ``/app/``.

``scripts/build_frontend.sh`` (run by ``scripts/setup.sh``) builds ``frontend/dist``; this
module serves it as static files:

* ``/`` and ``/app`` redirect to ``/app/``;
* ``/app/<file>`` is a file of the build; a path without an extension (``/app/study/1.2.3``,
  ``/app/viewer/1.2.3?mode=mpr``) is one of the app's own routes and gets ``index.html``;
  a missing file (a path with an extension) is a plain 404;
* content-hashed files under ``assets/`` are immutable for a year, everything else
  (``index.html``, ``sw.js``, the manifest, icons) is ``no-cache``; the build writes a ``.gz``
  twin of every compressible file, sent to clients that accept gzip;
* ``404`` with the build command when the application has not been built.

Every path needs a signed-in user (``@authenticated``): a browser that is not signed in is
sent to ``/login?next=/app/...`` by the access layer and comes back after signing in. The
application itself uses only the public APIs (DICOMweb, ``/auth/me``, ``/measurements``).

Where the build is: setting ``webapp_dir`` when the settings have it, else ``VOXA_WEBAPP_DIR``,
else ``<repo>/frontend/dist`` next to this source tree.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, PlainTextResponse, RedirectResponse, Response

from voxa.web.access import authenticated

WEBAPP_PREFIX = "/app"
BUILD_HINT = "bash scripts/build_frontend.sh (scripts/setup.sh runs it)"

router = APIRouter(tags=["webapp"], include_in_schema=False)

_MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
    ".wasm": "application/wasm",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".txt": "text/plain; charset=utf-8",
}
_IMMUTABLE = "public, max-age=31536000, immutable"
_REVALIDATE = "no-cache"
_HASHED = re.compile(r"^assets/.+-[A-Za-z0-9_-]{8}\.[a-z0-9]+$")
# The page's own scripts, workers and WASM codecs, and nothing from elsewhere. Cornerstone
# compiles WASM codecs ('wasm-unsafe-eval'); images are drawn into canvases and thumbnails
# come from this server's DICOMweb.
_CSP = ("default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self' blob:; "
        "img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; connect-src 'self'; "
        "manifest-src 'self'; object-src 'none'; base-uri 'self'; frame-ancestors 'none'; form-action 'self'")


def default_webapp_dir() -> Path:
    """``<repo>/frontend/dist`` for a source checkout (``pip install -e``)."""
    return Path(__file__).resolve().parents[4] / "frontend" / "dist"


def webapp_dir(settings: Any = None) -> Path:
    """The build to serve: setting ``webapp_dir``, else ``VOXA_WEBAPP_DIR``, else the default."""
    configured = getattr(settings, "webapp_dir", None)
    if configured:
        return Path(configured)
    env = os.environ.get("VOXA_WEBAPP_DIR")
    return Path(env) if env else default_webapp_dir()


def is_built(dist: Path) -> bool:
    return (dist / "index.html").is_file()


def _resolve(dist: Path, rel: str) -> Path | None:
    """The file for ``rel`` inside ``dist``, or None (missing, hidden, or outside the folder)."""
    if not rel or rel.endswith("/"):
        return None
    parts = rel.split("/")
    if any(not p or p.startswith(".") for p in parts):
        return None
    try:
        real = (dist / rel).resolve(strict=True)
        if not real.is_relative_to(dist.resolve()) or not real.is_file():
            return None
    except (OSError, RuntimeError):
        return None
    return real


_EXTENSION = re.compile(r"\.[A-Za-z][A-Za-z0-9]{0,9}$")


def _looks_like_file(rel: str) -> bool:
    """A name with an extension, or a hidden segment: never answered with the app. (The app's
    own routes end in UIDs, whose dotted digits are no extension.)"""
    return bool(_EXTENSION.search(rel.rsplit("/", 1)[-1])) or any(p.startswith(".") for p in rel.split("/"))


def _serve(request: Request, path: Path, rel: str, *, cache_control: str) -> Response:
    suffix = path.suffix.lower()
    headers = {"Cache-Control": cache_control, "X-Content-Type-Options": "nosniff"}
    if suffix == ".html":
        headers["Content-Security-Policy"] = _CSP
        headers["X-Frame-Options"] = "DENY"
        headers["Referrer-Policy"] = "same-origin"
    gz = path.with_name(path.name + ".gz")
    if gz.is_file():
        headers["Vary"] = "Accept-Encoding"
        if "gzip" in request.headers.get("accept-encoding", "").lower():
            headers["Content-Encoding"] = "gzip"
            return FileResponse(gz, media_type=_MEDIA_TYPES.get(suffix, "application/octet-stream"), headers=headers)
    return FileResponse(path, media_type=_MEDIA_TYPES.get(suffix), headers=headers)


def _not_built(dist: Path) -> Response:
    message = (
        "The Voxa web application has not been built on this server.\n\n"
        f"Build it with:  {BUILD_HINT}\n"
        f"(npm ci and vite build in frontend/, output in {dist}),\n"
        "or point VOXA_WEBAPP_DIR at a build, then reload this page.\n"
    )
    return PlainTextResponse(message, status_code=404, headers={"Cache-Control": "no-store"})


@router.get("/", include_in_schema=False)
@authenticated
def root() -> Response:
    """The site's front page is the web application."""
    return RedirectResponse(f"{WEBAPP_PREFIX}/", status_code=307)


@router.get(WEBAPP_PREFIX, include_in_schema=False)
@authenticated
def webapp_root(request: Request) -> Response:
    """``/app`` -> ``/app/`` (the application's relative links need the slash)."""
    query = request.url.query
    return RedirectResponse(f"{WEBAPP_PREFIX}/" + (f"?{query}" if query else ""), status_code=307)


@router.api_route(WEBAPP_PREFIX + "/{rel:path}", methods=["GET", "HEAD"], include_in_schema=False)
@authenticated
def webapp_files(rel: str, request: Request) -> Response:
    """A file of the build, or ``index.html`` for one of the application's routes."""
    dist = webapp_dir(getattr(getattr(request.app.state, "runtime", None), "settings", None))
    if not is_built(dist):
        return _not_built(dist)
    path = _resolve(dist, rel)
    if path is not None and path.name != "index.html":
        return _serve(request, path, rel, cache_control=_IMMUTABLE if _HASHED.match(rel) else _REVALIDATE)
    if path is None and _looks_like_file(rel):
        return PlainTextResponse(f"not found: {WEBAPP_PREFIX}/{rel}", status_code=404)
    # the application itself: /app/, /app/index.html, /app/study/..., /app/viewer/...
    return _serve(request, dist / "index.html", "index.html", cache_control=_REVALIDATE)
