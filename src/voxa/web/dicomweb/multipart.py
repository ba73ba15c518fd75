"""``multipart/related`` bodies (RFC 2387): written as a stream for WADO-RS, read as a
stream for STOW-RS, so that neither side holds more than one part in memory."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

CHUNK_BYTES = 1 << 20


def new_boundary() -> str:
    return uuid.uuid4().hex


def content_type(inner_type: str, boundary: str, **params: str) -> str:
    extra = "".join(f"; {k.replace('_', '-')}={v}" for k, v in params.items())
    return f'multipart/related; type="{inner_type}"; boundary={boundary}{extra}'


def part_header(boundary: str, headers: dict[str, str], first: bool) -> bytes:
    lead = b"" if first else b"\r\n"
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return lead + f"--{boundary}\r\n{lines}\r\n".encode("latin-1")


def closing(boundary: str) -> bytes:
    return f"\r\n--{boundary}--\r\n".encode("latin-1")


def encode(parts: Iterable[tuple[dict[str, str], Iterable[bytes]]], boundary: str) -> Iterator[bytes]:
    """The body of a multipart message: for each ``(headers, chunks)``, a part."""
    first = True
    for headers, chunks in parts:
        yield part_header(boundary, headers, first)
        first = False
        yield from chunks
    if first:  # no part at all: still a well-formed (empty) body
        yield f"--{boundary}--\r\n".encode("latin-1")
    else:
        yield closing(boundary)


class MultipartError(ValueError):
    """The body is not a readable multipart message."""


@dataclass
class Part:
    headers: dict[str, str]  # names lower-cased
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


class MultipartReader:
    """Incremental parser: :meth:`feed` chunks as they arrive, get the parts completed so far.

    Tolerates a preamble, LF-only line ends in part headers and transport padding after
    boundaries; bodies end at ``CRLF--boundary`` as RFC 2046 requires.
    """

    _PREAMBLE, _HEADERS, _BODY, _DONE = range(4)

    def __init__(self, boundary: str, max_part_bytes: int | None = None):
        if not boundary or len(boundary) > 200:
            raise MultipartError("the multipart boundary is missing or too long")
        self._dash = b"--" + boundary.encode("latin-1")
        self._delim = b"\r\n" + self._dash
        self._buf = bytearray()
        self._state = self._PREAMBLE
        self._headers: dict[str, str] = {}
        self._search_from = 0
        self._max_part = max_part_bytes
        self.parts_seen = 0

    @property
    def done(self) -> bool:
        return self._state == self._DONE

    def feed(self, chunk: bytes) -> list[Part]:
        if self._state == self._DONE:
            return []  # epilogue: ignored
        self._buf += chunk
        out: list[Part] = []
        while True:
            if self._state == self._PREAMBLE:
                if not self._consume_first_boundary():
                    break
            elif self._state == self._HEADERS:
                if not self._consume_headers():
                    break
            elif self._state == self._BODY:
                part = self._consume_body()
                if part is None:
                    break
                out.append(part)
            else:
                break
        return out

    def finish(self) -> None:
        if self._state != self._DONE:
            if self._state == self._PREAMBLE:
                raise MultipartError("no multipart boundary found in the body")
            raise MultipartError("the multipart body ends before its closing boundary")

    # -- states ---------------------------------------------------------------------------

    def _after_boundary(self, pos: int) -> int | None:
        """Position after the boundary line that ends at ``pos``, or -1 for the closing one;
        None when more data is needed."""
        rest = self._buf[pos:pos + 2]
        if len(rest) < 2:
            return None
        if rest == b"--":
            return -1
        eol = self._buf.find(b"\n", pos)
        if eol < 0:
            if len(self._buf) - pos > 1024:
                raise MultipartError("malformed multipart boundary line")
            return None
        if self._buf[pos:eol].strip(b" \t\r"):
            raise MultipartError("malformed multipart boundary line")
        return eol + 1

    def _consume_first_boundary(self) -> bool:
        idx = self._buf.find(self._dash)
        while idx > 0 and self._buf[idx - 1:idx] not in (b"\n",):
            idx = self._buf.find(self._dash, idx + 1)
        if idx < 0:
            if len(self._buf) > 64 * 1024:
                raise MultipartError("no multipart boundary found in the first 64 KiB of the body")
            return False
        nxt = self._after_boundary(idx + len(self._dash))
        if nxt is None:
            return False
        if nxt == -1:
            self._state = self._DONE
            return False
        del self._buf[:nxt]
        self._state = self._HEADERS
        return True

    def _consume_headers(self) -> bool:
        # An empty header block: the body starts right after the boundary line.
        if self._buf[:2] == b"\r\n" or self._buf[:1] == b"\n":
            del self._buf[: 2 if self._buf[:1] == b"\r" else 1]
            self._headers = {}
            self._state = self._BODY
            self._search_from = 0
            return True
        end, sep = self._buf.find(b"\r\n\r\n"), 4
        lf = self._buf.find(b"\n\n")
        if lf >= 0 and (end < 0 or lf < end):
            end, sep = lf, 2
        if end < 0:
            if len(self._buf) > 64 * 1024:
                raise MultipartError("multipart part headers longer than 64 KiB")
            return False
        headers: dict[str, str] = {}
        for line in bytes(self._buf[:end]).decode("latin-1").splitlines():
            name, colon, value = line.partition(":")
            if colon:
                headers[name.strip().lower()] = value.strip()
        self._headers = headers
        del self._buf[: end + sep]
        self._state = self._BODY
        self._search_from = 0
        return True

    def _consume_body(self) -> Part | None:
        idx = self._buf.find(self._delim, self._search_from)
        if idx < 0:
            self._search_from = max(0, len(self._buf) - len(self._delim) + 1)
            if self._max_part is not None and len(self._buf) > self._max_part:
                raise MultipartError(f"a part is larger than the limit of {self._max_part} bytes")
            return None
        nxt = self._after_boundary(idx + len(self._delim))
        if nxt is None:
            self._search_from = idx
            return None
        part = Part(self._headers, bytes(self._buf[:idx]))
        self.parts_seen += 1
        if nxt == -1:
            self._state = self._DONE
            self._buf.clear()
        else:
            del self._buf[:nxt]
            self._state = self._HEADERS
        return part
