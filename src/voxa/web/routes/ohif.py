"""The OHIF viewer: the prebuilt ``@ohif/app`` served at ``/ohif/`` over Voxa's own DICOMweb.

``scripts/install_ohif.sh`` puts the published build (``package/dist`` of the npm tarball) in
``third_party/ohif/dist``; this module serves it as static files, with

* ``/ohif/app-config.js`` generated here (``window.config``: ``routerBasename`` ``/ohif`` and
  one DICOMweb data source on the same origin, ``/dicom-web`` and ``/wado``), never the
  shipped file, which points at a public demo server;
* a fallback to ``index.html`` for the app's own routes (``/ohif/viewer``, ``/ohif/segmentation``,
  ...), while a missing file (a path with an extension) is a plain 404;
* the build rebased from ``/`` to ``/ohif/`` as it is served: the published build is made for the
  root of a site (``index.html`` names ``/app.bundle.….js``, ``window.PUBLIC_URL="/"``, and every
  webpack runtime sets ``__webpack_require__.p = "/"``, so lazy chunks, workers and codecs would be
  fetched from ``/``). The few literal root paths are rewritten in memory; the files on disk are
  never changed;
* cache headers: content-hashed files (``*.<16 hex>.js``, ``<16 hex>.wasm``) are immutable for a
  year, everything else (``index.html``, ``app-config.js``, unhashed CSS and assets) is
  ``no-cache`` with an ETag, so a new install is picked up at once; text is gzip-compressed
  once and kept in memory;
* ``503`` with the install command when the viewer is not installed.

Where the build is: setting ``ohif_dir`` when the settings have it, else ``VOXA_OHIF_DIR``, else
``<repo>/third_party/ohif/dist`` next to this source tree.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, PlainTextResponse, RedirectResponse, Response

from voxa.security.permissions import Permission as Perm
from voxa.web.access import requires

OHIF_PREFIX = "/ohif"
"""Where the viewer is mounted; also its ``routerBasename``."""

OHIF_VERSION = "3.13.2"
"""The ``@ohif/app`` version that ``scripts/install_ohif.sh`` installs (keep the two in step)."""

VERSION_MARKER = ".voxa-ohif-version"
"""File in the dist folder, written by the install script, holding the installed version."""

DICOMWEB_ROOT = "/dicom-web"
WADO_URI_ROOT = "/wado"

INSTALL_HINT = "bash scripts/install_ohif.sh (scripts/setup.sh runs it)"

router = APIRouter(tags=["ohif"], include_in_schema=False)


# --------------------------------------------------------------------------- public helpers


def ohif_study_url(study_uid: str) -> str:
    """Path of the OHIF viewer opened on one study, for "open in OHIF" links."""
    return f"{OHIF_PREFIX}/viewer?StudyInstanceUIDs={quote(study_uid, safe='.')}"


def default_ohif_dir() -> Path:
    """``<repo>/third_party/ohif/dist`` for a source checkout (``pip install -e``)."""
    return Path(__file__).resolve().parents[4] / "third_party" / "ohif" / "dist"


def ohif_dir(settings: Any = None) -> Path:
    """The dist folder to serve: setting ``ohif_dir``, else ``VOXA_OHIF_DIR``, else the default."""
    configured = getattr(settings, "ohif_dir", None)
    if configured:
        return Path(configured)
    env = os.environ.get("VOXA_OHIF_DIR")
    return Path(env) if env else default_ohif_dir()


def installed_version(dist: Path) -> str | None:
    """The installed viewer's version (from the install marker), or None when not installed."""
    if not (dist / "index.html").is_file():
        return None
    try:
        return (dist / VERSION_MARKER).read_text().strip() or "unknown"
    except OSError:
        return "unknown"  # a dist folder installed by other means


def app_config() -> dict[str, Any]:
    """OHIF's ``window.config``, less the data source roots (absolute, computed in the browser)."""
    return {
        "routerBasename": OHIF_PREFIX,
        "investigationalUseDialog": {"option": "never"},  # otherwise a dialog covers the viewport
        "maxNumberOfWebWorkers": 2,
        "extensions": [],  # extensions and modes are compiled into the bundle
        "modes": [],
        "customizationService": {"ohif.tours": {"$set": []}},  # no onboarding tour over the viewport
        "showStudyList": True,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": True,
        "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True,
        "maxNumRequests": {"interaction": 100, "thumbnail": 5, "prefetch": 25},
        "showErrorDetails": "always",
        "defaultDataSourceName": "dicomweb",
        "dataSources": [
            {
                "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
                "sourceName": "dicomweb",
                "configuration": {
                    "friendlyName": "Voxa",
                    "name": "voxa",
                    "qidoSupportsIncludeField": True,
                    "imageRendering": "wadors",
                    "thumbnailRendering": "wadors",
                    "enableStudyLazyLoad": True,
                    "supportsFuzzyMatching": True,
                    "supportsWildcard": True,
                    "omitQuotationForMultipartRequest": True,
                    "dicomUploadEnabled": True,
                    "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
                },
            }
        ],
    }


def app_config_js() -> str:
    """``app-config.js``: ``window.config`` with DICOMweb roots on the page's own origin."""
    config = json.dumps(app_config(), indent=2)
    return (
        "/* Generated by Voxa (voxa.web.routes.ohif): the OHIF viewer over this server's DICOMweb. */\n"
        "(function () {\n"
        "  var origin = window.location.origin;\n"
        f"  var config = {config};\n"
        "  var source = config.dataSources[0].configuration;\n"
        f"  source.qidoRoot = origin + {json.dumps(DICOMWEB_ROOT)};\n"
        f"  source.wadoRoot = origin + {json.dumps(DICOMWEB_ROOT)};\n"
        f"  source.wadoUriRoot = origin + {json.dumps(WADO_URI_ROOT)};\n"
        "  window.config = config;\n"
        "})();\n"
    )


# --------------------------------------------------------------------------- rebasing the build


_P = OHIF_PREFIX.encode()
_HTML_ROOT_ATTR = re.compile(rb'(\s(?:src|href|content)=")/(?!/)')
_REBASE_JS = (
    (b'__webpack_require__.p = "/";', b'__webpack_require__.p = "' + _P + b'/";'),
    (b"'/dicom-microscopy-viewer/", b"'" + _P + b"/dicom-microscopy-viewer/"),
    (b"'/silent-refresh.html'", b"'" + _P + b"/silent-refresh.html'"),
)
_CSS_ROOT_URL = re.compile(rb"url\(([\"']?)/(?!/)")
_JSON_ROOT_PATH = re.compile(rb'("(?:src|logo|start_url)"\s*:\s*")/(?!/)')


def rebase(name: str, data: bytes) -> bytes:
    """The file's bytes with its root-relative references moved under :data:`OHIF_PREFIX`."""
    if name == "index.html":
        data = _HTML_ROOT_ATTR.sub(rb"\1" + _P + b"/", data)
        # Browsers fetch the web app manifest without cookies unless told otherwise, and every
        # file here needs a signed-in user.
        data = data.replace(b'<link rel="manifest" ', b'<link rel="manifest" crossorigin="use-credentials" ')
        return data.replace(b'window.PUBLIC_URL="/"', b'window.PUBLIC_URL="' + _P + b'/"')
    if name.endswith((".js", ".mjs")):
        for old, new in _REBASE_JS:
            data = data.replace(old, new)
        return data
    if name.endswith(".css"):
        return _CSS_ROOT_URL.sub(rb"url(\1" + _P + b"/", data)
    if name.endswith(".json"):
        return _JSON_ROOT_PATH.sub(rb"\1" + _P + b"/", data)
    return data


# --------------------------------------------------------------------------- serving


_HASHED = re.compile(r"(^|\.)[0-9a-f]{16}\.(js|mjs|wasm|woff2?|css)$")
_IMMUTABLE = "public, max-age=31536000, immutable"
_REVALIDATE = "no-cache"
_COMPRESSIBLE = (".js", ".mjs", ".css", ".html", ".json", ".jsonc", ".wasm", ".svg", ".map", ".txt", ".xml")
_REBASED = (".js", ".mjs", ".css", ".json", ".html")
_MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
    ".jsonc": "application/json",
    ".wasm": "application/wasm",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".woff": "font/woff",
    ".xml": "application/xml",
    ".txt": "text/plain; charset=utf-8",
    ".map": "application/json",
}
# files of the published build that must not be served from Voxa
_HIDDEN = frozenset({"app-config.js", "sw.js", "_headers", "_redirects", "serve.json", VERSION_MARKER})


@dataclass(frozen=True)
class _Body:
    data: bytes
    etag: str


class _BodyCache:
    """Rebased and gzip-compressed file bodies, built once per file version, bounded in bytes."""

    def __init__(self, max_bytes: int = 160 * 1024 * 1024):
        self._max_bytes = max_bytes
        self._bytes = 0
        self._items: OrderedDict[tuple[Any, ...], _Body] = OrderedDict()
        self._lock = threading.Lock()
        self._building: dict[tuple[Any, ...], threading.Lock] = {}

    def get(self, path: Path, stat: os.stat_result, gz: bool) -> _Body:
        key = (str(path), stat.st_ino, stat.st_mtime_ns, stat.st_size, gz)
        with self._lock:
            body = self._items.get(key)
            if body is not None:
                self._items.move_to_end(key)
                return body
            build_lock = self._building.setdefault(key, threading.Lock())
        with build_lock:  # one thread builds a given body; the others wait for it
            with self._lock:
                body = self._items.get(key)
            if body is None:
                body = self._build(path, stat, gz)
                self._put(key, body)
        with self._lock:
            self._building.pop(key, None)
        return body

    def _build(self, path: Path, stat: os.stat_result, gz: bool) -> _Body:
        data = path.read_bytes()
        if path.name.endswith(_REBASED):
            data = rebase(path.name, data)
        tag = f"{stat.st_mtime_ns:x}-{stat.st_size:x}-{len(data):x}"
        if gz:
            data = gzip.compress(data, compresslevel=6, mtime=0)
            tag += "-gz"
        return _Body(data, f'"{tag}"')

    def _put(self, key: tuple[Any, ...], body: _Body) -> None:
        with self._lock:
            if key in self._items:
                return
            self._items[key] = body
            self._bytes += len(body.data)
            while self._bytes > self._max_bytes and len(self._items) > 1:
                _, old = self._items.popitem(last=False)
                self._bytes -= len(old.data)


_cache = _BodyCache()


def _not_installed(dist: Path) -> Response:
    message = (
        "The OHIF viewer is not installed on this server.\n\n"
        f"Install it with:  {INSTALL_HINT}\n"
        f"(it fetches @ohif/app@{OHIF_VERSION} from the npm registry into {dist}),\n"
        "or point VOXA_OHIF_DIR at the dist folder of an @ohif/app build, then reload this page.\n"
    )
    return PlainTextResponse(message, status_code=503, headers={"Cache-Control": "no-store", "Retry-After": "60"})


def _resolve(dist: Path, rel: str) -> Path | None:
    """The file for ``rel`` inside ``dist``, or None (missing, hidden, or outside the folder)."""
    if not rel or rel.endswith("/"):
        return None  # a folder: the app's fallback
    parts = rel.split("/")
    if any(not p or p.startswith(".") for p in parts) or (len(parts) == 1 and parts[0] in _HIDDEN):
        return None
    path = dist / rel
    try:
        real = path.resolve(strict=True)
        if not real.is_relative_to(dist.resolve()) or not real.is_file():
            return None
    except (OSError, RuntimeError):
        return None
    return real


def _looks_like_file(rel: str) -> bool:
    """A name with an extension, or a hidden or dot segment: never answered with the app."""
    parts = rel.split("/")
    return "." in parts[-1] or any(p.startswith(".") for p in parts)


def _accepts_gzip(request: Request) -> bool:
    return "gzip" in request.headers.get("accept-encoding", "").lower()


def _serve_file(request: Request, path: Path, *, cache_control: str) -> Response:
    name = path.name
    suffix = path.suffix.lower()
    media_type = _MEDIA_TYPES.get(suffix)
    stat = path.stat()
    gz = suffix in _COMPRESSIBLE and stat.st_size >= 1024 and _accepts_gzip(request)
    headers = {"Cache-Control": cache_control, "X-Content-Type-Options": "nosniff"}
    if suffix in _COMPRESSIBLE:
        headers["Vary"] = "Accept-Encoding"
    if not gz and not name.endswith(_REBASED):
        return FileResponse(path, media_type=media_type, headers=headers)
    body = _cache.get(path, stat, gz)
    headers["ETag"] = body.etag
    if gz:
        headers["Content-Encoding"] = "gzip"
    if body.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(body.data, media_type=media_type, headers=headers)


@router.get(OHIF_PREFIX, include_in_schema=False)
@requires(Perm.VIEW_IMAGES, Perm.TEACHING_VIEW)
def ohif_root(request: Request) -> Response:
    """``/ohif`` -> ``/ohif/`` (the viewer's relative links need the slash)."""
    query = request.url.query
    return RedirectResponse(f"{OHIF_PREFIX}/" + (f"?{query}" if query else ""), status_code=307)


@router.get(f"{OHIF_PREFIX}/app-config.js", include_in_schema=False)
@requires(Perm.VIEW_IMAGES, Perm.TEACHING_VIEW)
def ohif_app_config() -> Response:
    """OHIF's ``window.config`` for this server (the shipped ``app-config.js`` is never served)."""
    return Response(app_config_js(), media_type=_MEDIA_TYPES[".js"],
                    headers={"Cache-Control": _REVALIDATE, "X-Content-Type-Options": "nosniff"})


@router.api_route(OHIF_PREFIX + "/{rel:path}", methods=["GET", "HEAD"], include_in_schema=False)
@requires(Perm.VIEW_IMAGES, Perm.TEACHING_VIEW)
def ohif_files(rel: str, request: Request) -> Response:
    """A file of the viewer build, or ``index.html`` for one of the app's routes."""
    dist = ohif_dir(getattr(getattr(request.app.state, "runtime", None), "settings", None))
    if not (dist / "index.html").is_file():
        return _not_installed(dist)
    path = _resolve(dist, rel)
    if path is not None and path.name != "index.html":
        cache = _IMMUTABLE if _HASHED.search(path.name) else _REVALIDATE
        return _serve_file(request, path, cache_control=cache)
    if path is None and _looks_like_file(rel):
        return PlainTextResponse(f"not found: {OHIF_PREFIX}/{rel}", status_code=404)
    # the app itself: /ohif/, /ohif/index.html, /ohif/viewer, /ohif/segmentation, ...
    return _serve_file(request, dist / "index.html", cache_control=_REVALIDATE)
