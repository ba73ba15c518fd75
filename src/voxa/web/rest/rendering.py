"""One frame of a stored instance as an 8-bit PNG or JPEG, for ``/preview`` and ``/rendered``.

``/preview`` does what Orthanc's does: grayscale frames are stretched from their own minimum
to their maximum (``floor((v - min) * 255 / (max - min) + 0.5)``: the same pixels as Orthanc
1.10), MONOCHROME1 is inverted, colour frames are shown as RGB.  ``/rendered`` applies the
modality LUT (rescale) and a window: the one asked for, else the file's first
WindowCenter/WindowWidth, else the frame's range; it can also scale the image down.

Only the requested frame is decoded (pydicom reads one frame of a multi-frame file).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
from pydicom import Dataset
from pydicom.multival import MultiValue


class RenderError(ValueError):
    """The frame cannot be rendered (no pixel data, unknown compression, bad frame number)."""


@dataclass(frozen=True)
class Window:
    center: float
    width: float


def _first_number(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, MultiValue | list | tuple):
        value = value[0] if value else None
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def read_frame(fp: BinaryIO, frame: int) -> tuple[np.ndarray, Dataset]:
    """Frame ``frame`` (0-based) of the file and the dataset's other elements."""
    from pydicom.pixels import pixel_array

    header = Dataset()
    try:
        array = pixel_array(fp, ds_out=header, index=frame)
    except (ValueError, IndexError) as e:
        message = str(e)
        if "frame" in message.lower() and "index" in message.lower():
            raise RenderError(f"no frame {frame}: {message}") from None
        raise RenderError(f"cannot decode the pixel data: {message}") from None
    except (RuntimeError, NotImplementedError, AttributeError, KeyError, TypeError) as e:
        raise RenderError(f"cannot decode the pixel data: {type(e).__name__}: {e}") from None
    return array, header


def _stretch(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.float64)
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.clip(np.floor((values - lo) * 255.0 / (hi - lo) + 0.5), 0, 255).astype(np.uint8)


def _apply_window(values: np.ndarray, window: Window) -> np.ndarray:
    """DICOM's linear VOI function (PS3.3 C.11.2.1.2.1) to 0..255."""
    c, w = window.center, max(window.width, 1.0)
    scaled = ((values.astype(np.float64) - (c - 0.5)) / (w - 1.0 if w > 1 else 1.0) + 0.5) * 255.0
    return np.clip(np.floor(scaled + 0.5), 0, 255).astype(np.uint8)


def _is_color(array: np.ndarray, header: Dataset) -> bool:
    return int(header.get("SamplesPerPixel", 1) or 1) > 1 or array.ndim == 3


def _to_rgb8(array: np.ndarray, header: Dataset) -> np.ndarray:
    if str(header.get("PhotometricInterpretation", "")) == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        array = apply_color_lut(array, header)
    if array.dtype != np.uint8:
        bits = int(header.get("BitsStored", 8) or 8)
        array = np.clip(array.astype(np.float64) * 255.0 / ((1 << bits) - 1), 0, 255).astype(np.uint8)
    return array


def preview_frame(array: np.ndarray, header: Dataset) -> np.ndarray:
    """Orthanc's ``/preview`` pixels: min-max stretch for grayscale, RGB for colour."""
    if str(header.get("PhotometricInterpretation", "")) == "PALETTE COLOR" or _is_color(array, header):
        return _to_rgb8(array, header)
    out = _stretch(array)
    if str(header.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        out = 255 - out
    return out


def rendered_frame(array: np.ndarray, header: Dataset, window: Window | None = None) -> np.ndarray:
    """``/rendered`` pixels: rescale, then the given window, the file's first window, or the range."""
    if str(header.get("PhotometricInterpretation", "")) == "PALETTE COLOR" or _is_color(array, header):
        return _to_rgb8(array, header)
    slope = _first_number(header.get("RescaleSlope")) or 1.0
    intercept = _first_number(header.get("RescaleIntercept")) or 0.0
    values = array.astype(np.float64) * slope + intercept
    if window is None:
        center = _first_number(header.get("WindowCenter"))
        width = _first_number(header.get("WindowWidth"))
        if center is not None and width is not None and width > 0:
            window = Window(center, width)
    out = _apply_window(values, window) if window is not None else _stretch(values)
    if str(header.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        out = 255 - out
    return out


MAX_RENDERED_SIZE = 8192  # pixels per side of a rendered image, as DICOMweb's viewport


def encode(pixels: np.ndarray, *, jpeg: bool = False, quality: int = 90,
           max_size: tuple[int | None, int | None] = (None, None)) -> tuple[bytes, str]:
    """PNG (default) or JPEG bytes and their media type; ``max_size`` scales, keeping the aspect
    (never beyond ``MAX_RENDERED_SIZE`` a side: a long thin image must not blow up the memory)."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(pixels))
    width, height = max_size
    if width or height:
        w = width or image.width * (height or image.height) // image.height
        h = height or image.height * w // image.width
        scale = min(w / image.width, h / image.height, MAX_RENDERED_SIZE / image.width,
                    MAX_RENDERED_SIZE / image.height)
        if scale != 1:
            image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                                 Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    if jpeg:
        image.save(buf, format="JPEG", quality=quality)
        return buf.getvalue(), "image/jpeg"
    image.save(buf, format="PNG")
    return buf.getvalue(), "image/png"
