"""Rendering a frame to a consumer image (PS3.18 8.3.5 rendered resources).

Grayscale: Modality LUT (Rescale Slope/Intercept, per frame for enhanced objects, or a
Modality LUT Sequence), then VOI (the request's ``window``, else the file's Window Center /
Width, else its VOI LUT Sequence, else the frame's range), then MONOCHROME1 inversion.
Colour: YCbCr is converted to RGB by the decoder, palette colour through its LUTs.
Then crop (``viewport`` source rectangle), correction of non-square pixels, scaling to fit the
viewport with the aspect ratio kept, and JPEG or PNG encoding.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from pydicom import Dataset
from pydicom.multival import MultiValue

from voxa.web.dicomweb.pixels import InstanceFile

JPEG = "image/jpeg"
PNG = "image/png"
RENDERED_MEDIA_TYPES = (JPEG, PNG)
_MAX_VIEWPORT = 8192
_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")


class RenderParamError(ValueError):
    """A malformed rendering parameter (answered with 400)."""


@dataclass(frozen=True)
class Window:
    center: float
    width: float
    function: str = "LINEAR"


@dataclass(frozen=True)
class Viewport:
    width: int
    height: int
    # Source rectangle (sx, sy, sw, sh) in pixels of the frame; negative sw/sh flip.
    source: tuple[int, int, int, int] | None = None


@dataclass(frozen=True)
class RenderParams:
    media_type: str = JPEG
    quality: int = 90
    window: Window | None = None
    viewport: Viewport | None = None

    def token(self) -> str:
        """A stable text form, part of the rendered-cache key."""
        w = f"{self.window.center:g},{self.window.width:g},{self.window.function}" if self.window else "-"
        v = (f"{self.viewport.width}x{self.viewport.height}:{self.viewport.source}" if self.viewport else "-")
        q = self.quality if self.media_type == JPEG else 0
        return f"{self.media_type}|{q}|{w}|{v}"


def _numbers(text: str) -> list[str]:
    return [p.strip() for p in text.replace("%2C", ",").replace("%2c", ",").split(",")]


def parse_window(text: str | None) -> Window | None:
    if text is None or not text.strip():
        return None
    parts = _numbers(text)
    if len(parts) not in (2, 3):
        raise RenderParamError(f"window={text!r}: expected center,width[,function]")
    try:
        center, width = float(parts[0]), float(parts[1])
    except ValueError:
        raise RenderParamError(f"window={text!r}: center and width must be numbers") from None
    if not (math.isfinite(center) and math.isfinite(width)):
        raise RenderParamError(f"window={text!r}: center and width must be finite")
    function = parts[2].upper() if len(parts) == 3 and parts[2] else "LINEAR"
    if function not in _FUNCTIONS:
        raise RenderParamError(f"window={text!r}: the function must be linear, linear_exact or sigmoid")
    if width <= 0 or (function == "LINEAR" and width < 1):
        raise RenderParamError(f"window={text!r}: the width must be at least 1 (greater than 0 for "
                               "linear_exact and sigmoid)")
    return Window(center, width, function)


def parse_viewport(text: str | None) -> Viewport | None:
    if text is None or not text.strip():
        return None
    parts = _numbers(text)
    if len(parts) not in (2, 6):
        raise RenderParamError(f"viewport={text!r}: expected vw,vh or vw,vh,sx,sy,sw,sh")
    try:
        nums = [int(float(p)) if p else 0 for p in parts]
    except ValueError:
        raise RenderParamError(f"viewport={text!r}: values must be integers") from None
    vw, vh = nums[0], nums[1]
    if not (0 < vw <= _MAX_VIEWPORT and 0 < vh <= _MAX_VIEWPORT):
        raise RenderParamError(f"viewport={text!r}: width and height must be between 1 and {_MAX_VIEWPORT}")
    source = None
    if len(nums) == 6:
        if nums[4] == 0 or nums[5] == 0 or nums[2] < 0 or nums[3] < 0:
            raise RenderParamError(f"viewport={text!r}: the source rectangle is empty or starts outside the image")
        source = (nums[2], nums[3], nums[4], nums[5])
    return Viewport(vw, vh, source)


def parse_quality(text: str | None, default: int) -> int:
    if text is None or not text.strip():
        return default
    try:
        q = int(text)
    except ValueError:
        raise RenderParamError(f"quality={text!r} is not an integer") from None
    if not 1 <= q <= 100:
        raise RenderParamError(f"quality={text!r} must be between 1 and 100")
    return q


def _first_number(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        if isinstance(value, MultiValue | list | tuple):
            value = value[0]
        return float(value)
    except (TypeError, ValueError, IndexError):
        return None


def frame_attribute(ds: Dataset, frame: int, sequence: str, keyword: str) -> Any:
    """``keyword`` for one frame: top level, else the per-frame functional group, else the
    shared one (enhanced multi-frame objects)."""
    if keyword in ds:
        return ds[keyword].value
    for group_kw, pick in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        groups = ds.get(group_kw)
        if not groups or pick >= len(groups):
            continue
        seq = groups[pick].get(sequence)
        if seq and keyword in seq[0]:
            return seq[0][keyword].value
    return None


def modality_values(arr: np.ndarray, ds: Dataset, frame: int) -> np.ndarray:
    """Stored values to modality values (e.g. Hounsfield units) as float32."""
    if "ModalityLUTSequence" in ds:
        from pydicom.pixels.processing import apply_modality_lut

        return np.asarray(apply_modality_lut(arr, ds), dtype=np.float32)
    slope = _first_number(frame_attribute(ds, frame, "PixelValueTransformationSequence", "RescaleSlope"))
    intercept = _first_number(frame_attribute(ds, frame, "PixelValueTransformationSequence", "RescaleIntercept"))
    out = arr.astype(np.float32)
    if slope is not None and slope != 1.0:
        out *= np.float32(slope)
    if intercept:
        out += np.float32(intercept)
    return out


def file_window(ds: Dataset, frame: int) -> Window | None:
    center = _first_number(frame_attribute(ds, frame, "FrameVOILUTSequence", "WindowCenter"))
    width = _first_number(frame_attribute(ds, frame, "FrameVOILUTSequence", "WindowWidth"))
    if center is None or width is None or width <= 0:
        return None
    function = frame_attribute(ds, frame, "FrameVOILUTSequence", "VOILUTFunction")
    function = str(function).upper() if function else "LINEAR"
    if function not in _FUNCTIONS:
        function = "LINEAR"
    if function == "LINEAR" and width < 1:
        width = 1.0
    return Window(center, width, function)


def apply_window(values: np.ndarray, w: Window) -> np.ndarray:
    """Modality values to 0..255 (PS3.3 C.11.2.1.2)."""
    c, width = np.float32(w.center), np.float32(w.width)
    if w.function == "SIGMOID":
        y = np.float32(255.0) / (np.float32(1.0) + np.exp(np.float32(-4.0) * (values - c) / width))
    elif w.function == "LINEAR_EXACT":
        y = ((values - c) / width + np.float32(0.5)) * np.float32(255.0)
    else:
        if width <= 1:
            return np.where(values > c - np.float32(0.5), np.uint8(255), np.uint8(0)).astype(np.uint8)
        y = ((values - (c - np.float32(0.5))) / (width - np.float32(1.0)) + np.float32(0.5)) * np.float32(255.0)
    np.clip(y, 0, 255, out=y)
    y += np.float32(0.5)
    return y.astype(np.uint8)


def _auto_window(values: np.ndarray) -> Window:
    lo, hi = float(values.min()), float(values.max())
    return Window((lo + hi) / 2.0 + 0.5, max(hi - lo + 1.0, 1.0), "LINEAR")


def _to_uint8(arr: np.ndarray, bits_stored: int) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    shift = max(0, bits_stored - 8)
    return np.clip(arr.astype(np.int64) >> shift, 0, 255).astype(np.uint8)


def render_array(f: InstanceFile, frame: int, window: Window | None) -> np.ndarray:
    """Frame ``frame`` (0-based) as an 8-bit grayscale (H, W) or RGB (H, W, 3) array."""
    ds = f.ds
    arr, meta = f.decoded_frame(frame, as_rgb=True)
    photometric = str(meta.get("photometric_interpretation", ds.get("PhotometricInterpretation", ""))).upper()
    samples = int(meta.get("samples_per_pixel", 1) or 1)
    bits_stored = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 8)
    if samples == 1 and photometric == "PALETTE COLOR":
        from pydicom.pixels.processing import apply_color_lut

        rgb = apply_color_lut(arr, ds)
        return _to_uint8(rgb, 16 if rgb.dtype != np.uint8 else 8)
    if samples != 1:
        return _to_uint8(arr, bits_stored)
    values = modality_values(arr, ds, frame)
    if window is None:
        window = file_window(ds, frame)
    if window is None and "VOILUTSequence" in ds:
        from pydicom.pixels.processing import apply_voi

        lut = apply_voi(values, ds, index=0)
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2] or 16)
        out = (np.asarray(lut, dtype=np.float32) * np.float32(255.0 / (2 ** bits - 1)) + np.float32(0.5))
        gray = np.clip(out, 0, 255).astype(np.uint8)
    else:
        gray = apply_window(values, window or _auto_window(values))
    if photometric == "MONOCHROME1":
        gray = np.uint8(255) - gray
    return gray


def _pixel_aspect(ds: Dataset, frame: int) -> float:
    """Row spacing / column spacing (1 for square or unknown pixels)."""
    spacing = frame_attribute(ds, frame, "PixelMeasuresSequence", "PixelSpacing")
    if spacing is None:
        spacing = ds.get("ImagerPixelSpacing")
    ratio = ds.get("PixelAspectRatio")
    try:
        if spacing is not None and len(spacing) == 2 and float(spacing[0]) > 0 and float(spacing[1]) > 0:
            return float(spacing[0]) / float(spacing[1])
        if ratio is not None and len(ratio) == 2 and float(ratio[1]) > 0:
            return float(ratio[0]) / float(ratio[1])
    except (TypeError, ValueError):
        pass
    return 1.0


def to_image(gray_or_rgb: np.ndarray, viewport: Viewport | None, aspect: float = 1.0) -> Image.Image:
    arr = gray_or_rgb
    if viewport is not None and viewport.source is not None:
        sx, sy, sw, sh = viewport.source
        h, w = arr.shape[:2]
        x0, x1 = (sx, min(w, sx + sw)) if sw > 0 else (max(0, sx + sw), min(w, sx))
        y0, y1 = (sy, min(h, sy + sh)) if sh > 0 else (max(0, sy + sh), min(h, sy))
        if x1 <= x0 or y1 <= y0:
            raise RenderParamError("viewport: the source rectangle lies outside the image")
        arr = arr[y0:y1, x0:x1]
        if sw < 0:
            arr = arr[:, ::-1]
        if sh < 0:
            arr = arr[::-1]
    img = Image.fromarray(np.ascontiguousarray(arr), "RGB" if arr.ndim == 3 else "L")
    w, h = img.size
    eff_h = h * aspect if abs(aspect - 1.0) > 0.01 else float(h)
    if viewport is not None:
        scale = min(viewport.width / w, viewport.height / eff_h)
        size = (max(1, round(w * scale)), max(1, round(eff_h * scale)))
    else:
        size = (w, max(1, round(eff_h)))
    if size != img.size:
        resample = Image.Resampling.BILINEAR
        img = img.resize(size, resample, reducing_gap=2.0 if size[0] < w else None)
    return img


def encode_image(img: Image.Image, params: RenderParams) -> bytes:
    buf = io.BytesIO()
    if params.media_type == PNG:
        img.save(buf, "PNG", compress_level=1)
    else:
        img.save(buf, "JPEG", quality=params.quality)
    return buf.getvalue()


def render(f: InstanceFile, frame: int, params: RenderParams) -> bytes:
    """Frame ``frame`` (0-based) of an opened instance, rendered and encoded."""
    arr = render_array(f, frame, params.window)
    img = to_image(arr, params.viewport, _pixel_aspect(f.ds, frame))
    return encode_image(img, params)
