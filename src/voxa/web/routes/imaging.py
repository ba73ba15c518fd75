"""Server-side rendering of a series' volume: MPR, slabs, curved MPR, volume rendering,
rotating MIP, and the volume's geometry — for thin clients, reports and key images.

All under ``/imaging/studies/{study}/series/{series}/``: ``geometry`` (JSON), ``mpr``,
``curved-mpr`` (GET or POST), ``volume-render`` (PNG or JPEG), ``rotating-mip`` (a ZIP of PNG
frames with a ``manifest.json``). Parameters and conventions: ``docs/rendering.md``.

The endpoints are synchronous (FastAPI runs them in its thread pool): the work is CPU-bound and
must not block the event loop. The series is loaded with
:func:`~voxa.imaging.series.load_series_volume` (memory-mapped disk cache) and the last
:data:`CACHED_VOLUMES` volumes stay in an in-process LRU, with their statistics and down-sampled
copies, so consecutive slices only cost the reslicing. Errors: a malformed parameter answers
400, a series that is not in the study 404, a series that is not a volume 422.
"""

from __future__ import annotations

import io
import json
import math
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from PIL import Image

from voxa.imaging import mpr
from voxa.imaging.assemble import AssemblyError
from voxa.imaging.mpr import Plane
from voxa.imaging.series import load_series_volume, series_fingerprint
from voxa.imaging.volume import F32, Volume
from voxa.imaging.volume_render import PRESETS, render_volume
from voxa.security.audit import AuditAction
from voxa.security.permissions import Permission as Perm
from voxa.web.access import requires
from voxa.web.app import DomainError
from voxa.web.deps import RuntimeDep
from voxa.web.dicomweb.render import (
    JPEG,
    PNG,
    RenderParamError,
    RenderParams,
    Viewport,
    Window,
    apply_window,
    encode_image,
    parse_quality,
    to_image,
)

router = APIRouter(prefix="/imaging", tags=["imaging"])

PREFIX = "/studies/{study}/series/{series}"
CACHED_VOLUMES = 2  # loaded volumes kept in memory (a 512x512x300 CT is 300 MB, memory-mapped)
RENDER_MAX_DIM = 256  # voxels per axis for volume rendering and rotating MIPs
MAX_IMAGE_SIZE = 2048
MAX_ROTATING_PIXELS = 72 * 256 * 256  # frames x size^2 of one rotating MIP
PLANE_HEADER = "X-Voxa-Plane"

Q = Annotated[str | None, Query()]


# --------------------------------------------------------------------------------------------
# The in-process volume cache


@dataclass(eq=False)
class LoadedVolume:
    volume: Volume
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _range: tuple[float, float] | None = None
    _window: Window | None = None
    _small: dict[int, Volume] = field(default_factory=dict)

    def value_range(self) -> tuple[float, float]:
        with self._lock:
            if self._range is None:
                vox = np.asarray(self.volume.voxels)
                self._range = (float(vox.min()), float(vox.max()))
            return self._range

    def default_window(self) -> Window:
        """Soft tissue (40/400) for CT; else the 1st..99th percentile range."""
        with self._lock:
            if self._window is None:
                v = self.volume
                if v.units == "HU" or v.modality == "CT":
                    self._window = Window(40.0, 400.0)
                else:
                    vox = np.asarray(v.voxels)
                    stride = max(1, round((vox.size / 2_000_000) ** (1 / 3)))
                    p1, p99 = (float(x) for x in np.percentile(vox[::stride, ::stride, ::stride], [1, 99]))
                    self._window = Window((p1 + p99) / 2.0, max(p99 - p1, 1.0))
            return self._window

    def small(self, max_dim: int = RENDER_MAX_DIM) -> Volume:
        with self._lock:
            found = self._small.get(max_dim)
            if found is None:
                found = self._small[max_dim] = mpr.downsample(self.volume, max_dim)
            return found


_Key = tuple[str, str, str]  # (data folder, series UID, fingerprint)


class VolumeCache:
    """The last ``capacity`` loaded volumes; a series being loaded is loaded once."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._items: OrderedDict[_Key, LoadedVolume] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[_Key, threading.Lock] = {}

    def get(self, key: _Key, load: Callable[[], Volume]) -> LoadedVolume:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
                return found
            gate = self._loading.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                found = self._items.get(key)
                if found is not None:
                    return found
            try:
                entry = LoadedVolume(load())
            finally:
                with self._lock:
                    self._loading.pop(key, None)
            with self._lock:
                for other in [k for k in self._items if k[:2] == key[:2]]:
                    del self._items[other]  # an older version of the series
                self._items[key] = entry
                while len(self._items) > self.capacity:
                    self._items.popitem(last=False)
            return entry

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


volumes = VolumeCache(CACHED_VOLUMES)


def _load(rt: Any, study: str, series: str) -> LoadedVolume:
    locations = rt.archive.index.locate(study_uid=study, series_uid=series)
    if not locations:
        raise DomainError(404, f"no series {series} in study {study}")
    key = (str(rt.settings.data_dir), series, series_fingerprint(locations))
    try:
        entry = volumes.get(key, lambda: load_series_volume(rt.archive, series, max_cache_bytes=rt.settings.volume_cache_max_bytes))
    except AssemblyError as e:
        raise DomainError(422, f"series {series} is not a volume: {e.reason}") from None
    except ValueError as e:  # malformed attributes of a stored image
        raise DomainError(422, f"series {series} cannot be assembled into a volume: {e}") from None
    if entry.volume.shape[0] < 2:
        raise DomainError(422, f"series {series} is not a volume: it has a single image")
    return entry


# --------------------------------------------------------------------------------------------
# Parameters


def _bad(message: str) -> DomainError:
    return DomainError(400, message)


def _float(name: str, text: str | None, default: float | None = None, *,
           lo: float | None = None, hi: float | None = None) -> float | None:
    if text is None or not text.strip():
        return default
    try:
        value = float(text)
    except ValueError:
        raise _bad(f"{name}={text!r} is not a number") from None
    if not math.isfinite(value):
        raise _bad(f"{name}={text!r} must be finite")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise _bad(f"{name}={text!r} must be between {lo:g} and {hi:g}" if lo is not None and hi is not None
                   else f"{name}={text!r} must be at least {lo:g}" if lo is not None
                   else f"{name}={text!r} must be at most {hi:g}")
    return value


def _int(name: str, text: str | None, default: int | None, *, lo: int, hi: int) -> int | None:
    if text is None or not text.strip():
        return default
    try:
        value = int(text)
    except ValueError:
        raise _bad(f"{name}={text!r} is not an integer") from None
    if not lo <= value <= hi:
        raise _bad(f"{name}={text!r} must be between {lo} and {hi}")
    return value


def _vector(name: str, text: str | None) -> np.ndarray | None:
    if text is None or not text.strip():
        return None
    parts = text.replace("%2C", ",").replace("%2c", ",").split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise _bad(f"{name}={text!r}: expected three numbers x,y,z") from None
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise _bad(f"{name}={text!r}: expected three finite numbers x,y,z")
    return np.asarray(values, dtype=np.float64)


def _choice(name: str, text: str | None, choices: tuple[str, ...], default: str) -> str:
    if text is None or not text.strip():
        return default
    value = text.strip().lower()
    if value not in choices:
        raise _bad(f"{name}={text!r} must be one of {', '.join(choices)}")
    return value


def _media_type(text: str | None) -> str:
    value = _choice("format", text, ("png", "jpeg", "jpg", "image/png", "image/jpeg"), "png")
    return PNG if "png" in value else JPEG


def _quality(text: str | None) -> int:
    try:
        return parse_quality(text, 90)
    except RenderParamError as e:
        raise _bad(str(e)) from None


def _window(entry: LoadedVolume, center: str | None, width: str | None) -> Window:
    default = entry.default_window()
    c = _float("window-center", center, default.center, lo=-1e7, hi=1e7)
    w = _float("window-width", width, default.width, lo=1.0, hi=1e7)
    assert c is not None and w is not None
    return Window(c, w)


def _size(text: str | None, default: int | None) -> int | None:
    return _int("size", text, default, lo=8, hi=MAX_IMAGE_SIZE)


def _domain(fn: Callable[[], Any]) -> Any:
    """Run ``fn``; a ValueError from the imaging functions is the client's parameters: 400."""
    try:
        return fn()
    except ValueError as e:
        raise _bad(str(e)) from None


# --------------------------------------------------------------------------------------------
# Encoding


def _gray_response(image: F32, plane: Plane | None, window: Window, size: int | None, media_type: str,
                   quality: int, headers: dict[str, str] | None = None) -> Response:
    gray = apply_window(image, window)
    aspect = 1.0
    if plane is not None:
        aspect = plane.pixel_spacing_mm[0] / plane.pixel_spacing_mm[1]
    img = to_image(gray, Viewport(size, size) if size else None, aspect)
    data = encode_image(img, RenderParams(media_type=media_type, quality=quality))
    out = dict(headers or {})
    if plane is not None:
        out[PLANE_HEADER] = json.dumps(plane.resized(img.height, img.width).to_json(), separators=(",", ":"))
    out["X-Voxa-Window"] = f"{window.center:g},{window.width:g}"
    return Response(data, media_type=media_type, headers=out)


# --------------------------------------------------------------------------------------------
# Routes


@router.get(PREFIX + "/geometry")
@requires(Perm.VIEW_IMAGES, Perm.TEACHING_VIEW, audit=AuditAction.VIEW)
def geometry(study: str, series: str, rt: RuntimeDep) -> JSONResponse:
    """What a client needs to place planes: shape, spacing, origin, direction, affine, value range."""
    entry = _load(rt, study, series)
    v = entry.volume
    corners = mpr.volume_corners_mm(v)
    lo, hi = entry.value_range()
    window = entry.default_window()
    planes = {}
    for name in mpr.ORIENTATIONS:
        p = mpr.standard_plane(v, name)
        axis = {"axial": 2, "coronal": 1, "sagittal": 0}[name]
        a_n = mpr.closest_axis(v, np.eye(3)[axis])
        planes[name] = {
            "position_axis": "xyz"[axis],
            "position_range_mm": [round(float(corners[:, axis].min()), 4), round(float(corners[:, axis].max()), 4)],
            "slices": v.shape[a_n],
            "plane": p.to_json(),
        }
    body = {
        "series_instance_uid": series,
        "modality": v.modality,
        "units": v.units,
        "shape": list(v.shape),
        "index_order": "z,y,x",
        "spacing_mm": list(v.spacing_mm),
        "origin_mm": list(v.origin_mm),
        "direction": np.asarray(v.direction).tolist(),
        "affine": v.affine.tolist(),
        "value_range": [lo, hi],
        "hu_range": [lo, hi] if v.units == "HU" else None,
        "default_window": {"center": window.center, "width": window.width},
        "center_mm": mpr.volume_center_mm(v).tolist(),
        "extent_mm": {"min": corners.min(axis=0).tolist(), "max": corners.max(axis=0).tolist()},
        "diagonal_mm": mpr.volume_diagonal_mm(v),
        "standard_planes": planes,
        "presets": list(PRESETS),
        "tilt_deg": v.tilt_deg,
        "notes": list(v.notes),
    }
    return JSONResponse(body)


@router.get(PREFIX + "/mpr")
@requires(Perm.VIEW_IMAGES, Perm.TEACHING_VIEW, audit=AuditAction.VIEW)
def mpr_image(
    study: str,
    series: str,
    rt: RuntimeDep,
    plane: Q = None,
    position: Q = None,
    index: Q = None,
    center: Q = None,
    normal: Q = None,
    up: Q = None,
    fov: Q = None,
    slab: Q = None,
    mode: Q = None,
    window_center: Annotated[str | None, Query(alias="window-center")] = None,
    window_width: Annotated[str | None, Query(alias="window-width")] = None,
    size: Q = None,
    format: Q = None,
    quality: Q = None,
) -> Response:
    """One MPR image: ``plane=axial|sagittal|coronal`` at ``position`` (mm) or ``index``, or
    ``plane=oblique`` through ``center`` with ``normal`` and optional ``up``; ``slab`` mm thick
    reduced with ``mode``; windowed; ``size`` fits the image in size x size pixels."""
    kind = _choice("plane", plane, (*mpr.ORIENTATIONS, "oblique"), "axial")
    slab_mm = _float("slab", slab, 0.0, lo=0.0, hi=500.0)
    slab_mode = _choice("mode", mode, mpr.SLAB_MODES, "mip")
    out_size = _size(size, None)
    media_type, q = _media_type(format), _quality(quality)
    position_mm = _float("position", position)
    slice_index = _int("index", index, None, lo=-(2**31), hi=2**31)
    center_mm, normal_v, up_v = _vector("center", center), _vector("normal", normal), _vector("up", up)
    fov_mm = _float("fov", fov, None, lo=1.0, hi=5000.0)
    if kind == "oblique":
        if normal_v is None:
            raise _bad("plane=oblique needs normal=x,y,z")
        if position_mm is not None or slice_index is not None:
            raise _bad("position and index are for axial, sagittal and coronal planes; give center= for oblique")
    elif normal_v is not None or up_v is not None or center_mm is not None:
        raise _bad(f"center, normal and up are for plane=oblique, not plane={kind}")
    entry = _load(rt, study, series)
    window = _window(entry, window_center, window_width)
    v = entry.volume
    assert slab_mm is not None
    if kind == "oblique":
        assert normal_v is not None
        centre = center_mm if center_mm is not None else mpr.volume_center_mm(v)
        the_plane = _domain(lambda: mpr.oblique_plane(v, centre, normal_v, up_v, size=out_size or 512, fov_mm=fov_mm))
    else:
        the_plane = _domain(lambda: mpr.standard_plane(v, kind, position_mm=position_mm, index=slice_index))
    image, the_plane = _domain(lambda: mpr.reslice(v, the_plane, slab_mm=slab_mm, mode=slab_mode))
    return _gray_response(image, the_plane, window, out_size, media_type, q)


async def _raw_body(request: Request) -> bytes:
    return await request.body()


def _points(text: str | bytes | None) -> tuple[np.ndarray, dict[str, Any]]:
    """Centreline points from JSON: ``[[x,y,z], ...]`` or ``{"points": [[x,y,z], ...], ...}``."""
    if text is None or not text.strip():
        raise _bad("give the centreline as JSON: points=[[x,y,z],...] (GET) or a JSON body (POST)")
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise _bad("the centreline is not valid JSON: expected [[x,y,z],...]") from None
    options: dict[str, Any] = {}
    if isinstance(doc, dict):
        options = {k: v for k, v in doc.items() if k != "points"}
        doc = doc.get("points")
    if not isinstance(doc, list) or len(doc) < 2 or len(doc) > 10_000:
        raise _bad("the centreline must be a JSON list of 2 to 10000 [x,y,z] points")
    try:
        pts = np.asarray(doc, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise _bad("the centreline points must be [x,y,z] numbers") from None
    if pts.ndim != 2 or pts.shape[1] != 3 or not np.all(np.isfinite(pts)):
        raise _bad("the centreline points must be [x,y,z] with finite numbers")
    return pts, options


def _curved(rt: Any, study: str, series: str, points: str | bytes | None, params: dict[str, str | None]) -> Response:
    pts, options = _points(points)
    merged = {k: (str(options[k]) if params.get(k) is None and k in options else params.get(k))
              for k in ("width", "spacing", "slab", "mode", "lateral", "size", "format", "quality",
                        "window-center", "window-width")}
    lateral = options.get("lateral") if isinstance(options.get("lateral"), list) else None
    width_mm = _float("width", merged["width"], 40.0, lo=0.0, hi=1000.0)
    spacing_mm = _float("spacing", merged["spacing"], None, lo=0.05, hi=50.0)
    slab_mm = _float("slab", merged["slab"], 0.0, lo=0.0, hi=500.0)
    slab_mode = _choice("mode", merged["mode"], mpr.SLAB_MODES, "mip")
    lateral_v = _vector("lateral", merged["lateral"]) if lateral is None else _vector(
        "lateral", ",".join(str(x) for x in lateral))
    out_size = _size(merged["size"], None)
    media_type, q = _media_type(merged["format"]), _quality(merged["quality"])
    entry = _load(rt, study, series)
    window = _window(entry, merged["window-center"], merged["window-width"])
    assert width_mm is not None and slab_mm is not None
    image, cp = _domain(lambda: mpr.curved_mpr(entry.volume, pts, width_mm=width_mm, spacing_mm=spacing_mm,
                                               lateral=lateral_v, slab_mm=slab_mm, mode=slab_mode))
    headers = {"X-Voxa-Curved": json.dumps(cp.to_json(), separators=(",", ":"))}
    return _gray_response(image, None, window, out_size, media_type, q, headers)


@router.get(PREFIX + "/curved-mpr")
@requires(Perm.VIEW_IMAGES, Perm.TEACHING_VIEW, audit=AuditAction.VIEW)
def curved_mpr_get(
    study: str,
    series: str,
    rt: RuntimeDep,
    points: Q = None,
    width: Q = None,
    spacing: Q = None,
    slab: Q = None,
    mode: Q = None,
    lateral: Q = None,
    window_center: Annotated[str | None, Query(alias="window-center")] = None,
    window_width: Annotated[str | None, Query(alias="window-width")] = None,
    size: Q = None,
    format: Q = None,
    quality: Q = None,
) -> Response:
    """A straightened curved MPR along ``points`` (JSON ``[[x,y,z],...]``, patient mm)."""
    return _curved(rt, study, series, points, {
        "width": width, "spacing": spacing, "slab": slab, "mode": mode, "lateral": lateral, "size": size,
        "format": format, "quality": quality, "window-center": window_center, "window-width": window_width})


_CENTERLINE_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"oneOf": [
            {"type": "array", "items": {"type": "array", "items": {"type": "number"}, "minItems": 3, "maxItems": 3},
             "minItems": 2},
            {"type": "object", "required": ["points"], "properties": {
                "points": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
                "width": {"type": "number"}, "spacing": {"type": "number"}, "slab": {"type": "number"},
                "mode": {"type": "string", "enum": list(mpr.SLAB_MODES)},
                "lateral": {"type": "array", "items": {"type": "number"}}}},
        ]}}},
    },
}


@router.post(PREFIX + "/curved-mpr", openapi_extra=_CENTERLINE_BODY)
@requires(Perm.VIEW_IMAGES, Perm.TEACHING_VIEW, audit=AuditAction.VIEW)
def curved_mpr_post(
    study: str,
    series: str,
    rt: RuntimeDep,
    body: Annotated[bytes, Depends(_raw_body)],
    width: Q = None,
    spacing: Q = None,
    slab: Q = None,
    mode: Q = None,
    lateral: Q = None,
    window_center: Annotated[str | None, Query(alias="window-center")] = None,
    window_width: Annotated[str | None, Query(alias="window-width")] = None,
    size: Q = None,
    format: Q = None,
    quality: Q = None,
) -> Response:
    """As the GET, with the centreline (and optionally the other parameters) in a JSON body:
    ``[[x,y,z],...]`` or ``{"points": [[x,y,z],...], "width": 40, ...}``."""
    return _curved(rt, study, series, body, {
        "width": width, "spacing": spacing, "slab": slab, "mode": mode, "lateral": lateral, "size": size,
        "format": format, "quality": quality, "window-center": window_center, "window-width": window_width})


@router.get(PREFIX + "/volume-render")
@requires(Perm.VIEW_IMAGES, Perm.TEACHING_VIEW, audit=AuditAction.VIEW)
def volume_render_image(
    study: str,
    series: str,
    rt: RuntimeDep,
    preset: Q = None,
    azimuth: Q = None,
    elevation: Q = None,
    size: Q = None,
    shading: Q = None,
    format: Q = None,
    quality: Q = None,
) -> Response:
    """A volume rendering with a transfer-function ``preset``, seen from ``azimuth``/``elevation``
    degrees (0/0: anterior view)."""
    entry_preset = _choice("preset", preset, tuple(PRESETS), "")
    az = _float("azimuth", azimuth, 0.0, lo=-3600.0, hi=3600.0)
    el = _float("elevation", elevation, 0.0, lo=-90.0, hi=90.0)
    out_size = _size(size, 512)
    shade = _choice("shading", shading, ("true", "false", "1", "0", "yes", "no", "on", "off"), "true")
    media_type, q = _media_type(format), _quality(quality)
    entry = _load(rt, study, series)
    v = entry.volume
    name = entry_preset or ("ct-bone" if v.units == "HU" or v.modality == "CT" else "mr-default")
    assert az is not None and el is not None and out_size is not None
    rgb = _domain(lambda: render_volume(entry.small(), preset=name, azimuth_deg=az, elevation_deg=el,
                                        size=out_size, shading=shade in ("true", "1", "yes", "on"),
                                        fov_mm=mpr.volume_diagonal_mm(v)))
    data = encode_image(Image.fromarray(rgb, "RGB"), RenderParams(media_type=media_type, quality=q))
    return Response(data, media_type=media_type, headers={"X-Voxa-Preset": name})


@router.get(PREFIX + "/rotating-mip")
@requires(Perm.VIEW_IMAGES, Perm.TEACHING_VIEW, audit=AuditAction.VIEW)
def rotating_mip_zip(
    study: str,
    series: str,
    rt: RuntimeDep,
    frames: Q = None,
    size: Q = None,
    axis: Q = None,
    elevation: Q = None,
    mode: Q = None,
    window_center: Annotated[str | None, Query(alias="window-center")] = None,
    window_width: Annotated[str | None, Query(alias="window-width")] = None,
) -> Response:
    """``frames`` MIPs over a full turn about ``axis`` (z: the body axis), as a ZIP of PNGs
    ``frame-000.png`` ... and ``manifest.json`` (angles, cameras, window)."""
    n = _int("frames", frames, 36, lo=1, hi=120)
    out_size = _int("size", size, 256, lo=16, hi=512)
    assert n is not None and out_size is not None
    if n * out_size * out_size > MAX_ROTATING_PIXELS:
        raise _bad(f"frames={n} of size={out_size}: at most {MAX_ROTATING_PIXELS} pixels in all "
                   f"(e.g. 72 frames of 256, 18 of 512)")
    rot_axis = _choice("axis", axis, ("z", "x", "y"), "z")
    el = _float("elevation", elevation, 0.0, lo=-90.0, hi=90.0)
    proj_mode = _choice("mode", mode, mpr.SLAB_MODES, "mip")
    assert el is not None
    entry = _load(rt, study, series)
    window = _window(entry, window_center, window_width)
    small = entry.small(min(RENDER_MAX_DIM, max(out_size, 64)))
    stack, views = _domain(lambda: mpr.rotating_mip(small, n, rot_axis, out_size, mode=proj_mode,
                                                     elevation_deg=el))
    buf = io.BytesIO()
    manifest: dict[str, Any] = {"frames": [], "axis": rot_axis, "mode": proj_mode, "size": [out_size, out_size],
                "window": {"center": window.center, "width": window.width}}
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for i, (frame, view) in enumerate(zip(stack, views, strict=True)):
            name = f"frame-{i:03d}.png"
            png = encode_image(Image.fromarray(apply_window(frame, window), "L"), RenderParams(media_type=PNG))
            zf.writestr(name, png)
            manifest["frames"].append({"file": name, "angle_deg": round(360.0 * i / n, 4), **view.to_json()})
        zf.writestr("manifest.json", json.dumps(manifest, indent=1))
    return Response(buf.getvalue(), media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="rotating-mip-{series}.zip"'})
