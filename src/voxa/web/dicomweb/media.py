"""Media types, transfer syntaxes and the headers that negotiate them (PS3.18 8.7).

Accept headers are parsed by hand: clients send ``type`` with and without quotes (OHIF's
``omitQuotationForMultipartRequest``), ``transfer-syntax=*``, quality values, and several
ranges in one header.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pydicom import uid as _uid

ELE = str(_uid.ExplicitVRLittleEndian)
ILE = str(_uid.ImplicitVRLittleEndian)
EBE = str(_uid.ExplicitVRBigEndian)
DEFLATED = str(_uid.DeflatedExplicitVRLittleEndian)
NATIVE_SYNTAXES = frozenset({ELE, ILE, EBE, DEFLATED})

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
OCTET_STREAM = "application/octet-stream"
MULTIPART = "multipart/related"

# PS3.18 Table 8.7.3-2 (pixel data and frames): media type -> transfer syntaxes, default first.
PIXEL_MEDIA_TYPES: dict[str, tuple[str, ...]] = {
    OCTET_STREAM: (ELE, "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.8.1"),
    "image/jpeg": ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
                   "1.2.840.10008.1.2.4.70"),
    "image/dicom-rle": ("1.2.840.10008.1.2.5",),
    "image/x-dicom-rle": ("1.2.840.10008.1.2.5",),
    "image/jls": ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"),
    "image/x-jls": ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"),
    "image/jp2": ("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"),
    "image/jpx": ("1.2.840.10008.1.2.4.92", "1.2.840.10008.1.2.4.93"),
    "image/jphc": ("1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203"),
    "image/jxl": ("1.2.840.10008.1.2.4.110", "1.2.840.10008.1.2.4.111", "1.2.840.10008.1.2.4.112"),
    "video/mpeg": ("1.2.840.10008.1.2.4.100", "1.2.840.10008.1.2.4.101"),
    "video/mpeg2": ("1.2.840.10008.1.2.4.100", "1.2.840.10008.1.2.4.101"),
    "video/mp4": ("1.2.840.10008.1.2.4.102", "1.2.840.10008.1.2.4.103", "1.2.840.10008.1.2.4.104",
                  "1.2.840.10008.1.2.4.105", "1.2.840.10008.1.2.4.106"),
    "video/h265": ("1.2.840.10008.1.2.4.107", "1.2.840.10008.1.2.4.108"),
}

# The media type that names each stored encapsulated syntax in a response.
_MEDIA_TYPE_OF: dict[str, str] = {}
for _mt in ("image/jpeg", "image/dicom-rle", "image/jls", "image/jp2", "image/jpx", "image/jphc", "image/jxl",
            "video/mpeg", "video/mp4", "video/h265"):
    for _ts in PIXEL_MEDIA_TYPES[_mt]:
        _MEDIA_TYPE_OF.setdefault(_ts, _mt)
_MEDIA_TYPE_OF["1.2.840.10008.1.2.8.1"] = OCTET_STREAM


def pixel_media_type(transfer_syntax: str) -> str:
    """The media type of frames stored in ``transfer_syntax`` (octet-stream for native data)."""
    return _MEDIA_TYPE_OF.get(transfer_syntax, OCTET_STREAM)


def is_native(transfer_syntax: str) -> bool:
    return transfer_syntax in NATIVE_SYNTAXES


@dataclass(frozen=True)
class MediaRange:
    """One entry of an Accept header: ``multipart/related; type=...; transfer-syntax=...``
    is kept as its inner ``type`` with ``multipart`` set."""

    type: str  # lower case, e.g. "application/dicom", "image/*", "*/*"
    multipart: bool = False
    transfer_syntax: str | None = None  # None: not given; "*": any
    q: float = 1.0
    params: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    def matches(self, media_type: str) -> bool:
        """Whether this range accepts ``media_type`` (wildcards allowed on either side)."""
        if self.type in ("*/*", "*"):
            return True
        major, _, minor = self.type.partition("/")
        t_major, _, t_minor = media_type.lower().partition("/")
        return major == t_major and minor in ("*", "", t_minor)


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    out: list[str] = []
    buf: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            out.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    out.append("".join(buf))
    return out


def parse_accept(header: str | None) -> list[MediaRange]:
    """Media ranges of an Accept header, best first (stable for equal quality).

    An absent or empty header gives ``[*/*]``.  Ranges with ``q=0`` are dropped.
    """
    if not header or not header.strip():
        return [MediaRange("*/*")]
    ranges: list[MediaRange] = []
    for item in _split_outside_quotes(header, ","):
        pieces = [p.strip() for p in _split_outside_quotes(item, ";")]
        if not pieces or not pieces[0]:
            continue
        main = pieces[0].lower()
        params: dict[str, str] = {}
        for p in pieces[1:]:
            name, eq, value = p.partition("=")
            if not eq:
                continue
            params[name.strip().lower()] = value.strip().strip('"').strip()
        try:
            q = float(params.get("q", "1"))
        except ValueError:
            q = 1.0
        if q <= 0:
            continue
        ts = params.get("transfer-syntax") or None
        if main == MULTIPART:
            inner = params.get("type", "").lower() or "*/*"
            ranges.append(MediaRange(inner, True, ts, q, params))
        else:
            ranges.append(MediaRange(main, False, ts, q, params))
    ranges.sort(key=lambda r: -r.q)  # sort is stable: equal q keep the client's order
    return ranges or [MediaRange("*/*")]


def content_type_params(header: str | None) -> tuple[str, dict[str, str]]:
    """``(media type, {param: value})`` of a Content-Type header (quotes removed)."""
    if not header:
        return "", {}
    pieces = [p.strip() for p in _split_outside_quotes(header, ";")]
    params = {}
    for p in pieces[1:]:
        name, eq, value = p.partition("=")
        if eq:
            params[name.strip().lower()] = value.strip().strip('"')
    return pieces[0].lower(), params


def accepts_gzip(accept_encoding: str | None) -> bool:
    if not accept_encoding:
        return False
    for item in accept_encoding.split(","):
        name, _, params = item.strip().partition(";")
        if name.strip().lower() in ("gzip", "x-gzip", "*"):
            m = re.search(r"q\s*=\s*([0-9.]+)", params)
            return not (m and float(m.group(1)) == 0)
    return False


_RANGE_RE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


class RangeNotSatisfiable(ValueError):
    pass


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end_inclusive)`` of a single-range ``Range: bytes=...`` header.

    ``None`` when there is no header, or a form we serve in full (several ranges, other
    units: RFC 9110 lets a server ignore Range).  Raises :class:`RangeNotSatisfiable`.
    """
    if not header:
        return None
    m = _RANGE_RE.match(header)
    if not m:
        return None
    first, last = m.group(1), m.group(2)
    if first == "" and last == "":
        return None
    if first == "":  # suffix range: the last N bytes
        n = int(last)
        if n == 0:
            raise RangeNotSatisfiable(f"empty suffix range of a {size}-byte value")
        return max(0, size - n), size - 1
    start = int(first)
    end = size - 1 if last == "" else min(int(last), size - 1)
    if start >= size or (last != "" and int(last) < start):
        raise RangeNotSatisfiable(f"range {header.strip()} is outside the {size}-byte value")
    return start, end
