"""Checks that a dataset's byte stream is complete.

pydicom reads forgivingly: a file cut inside its pixel data, or between two elements,
parses without an error.  An archive must not accept such a file, so before storing we
walk the element headers (tags and lengths, no values) and require that every value
fits in the bytes received and that the stream ends exactly on an element boundary.
"""

from __future__ import annotations

import struct
import zlib

UNDEFINED = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQ_END = 0xFFFEE0DD
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


class TruncatedDataset(ValueError):
    pass


class _Walker:
    def __init__(self, buf: bytes | memoryview, little: bool):
        self.buf = buf
        self.end = len(buf)
        self.u16 = struct.Struct("<H" if little else ">H").unpack_from
        self.u32 = struct.Struct("<I" if little else ">I").unpack_from
        self.tag_fmt = struct.Struct("<HH" if little else ">HH").unpack_from
        # Items and delimiters are always little endian in LE syntaxes and big in BE.

    def need(self, pos: int, n: int, what: str) -> None:
        if pos + n > self.end:
            raise TruncatedDataset(f"data ends inside {what} at byte {pos} (needs {n} more bytes, "
                                   f"{self.end - pos} left)")

    def tag(self, pos: int) -> int:
        self.need(pos, 4, "an element tag")
        g, e = self.tag_fmt(self.buf, pos)
        return (g << 16) | e

    def elements(self, pos: int, implicit: bool, stop_at_item_end: bool) -> int:
        while pos < self.end:
            tag = self.tag(pos)
            if tag == _ITEM_END:
                if not stop_at_item_end:
                    raise TruncatedDataset(f"unexpected item delimiter at byte {pos}")
                self.need(pos, 8, "an item delimiter")
                return pos + 8
            if implicit or (tag >> 16) == 0xFFFE:
                self.need(pos, 8, f"element ({tag >> 16:04X},{tag & 0xFFFF:04X})")
                length = self.u32(self.buf, pos + 4)[0]
                pos += 8
                vr = b"UN" if length == UNDEFINED else b""
            else:
                self.need(pos, 8, f"element ({tag >> 16:04X},{tag & 0xFFFF:04X})")
                vr = bytes(self.buf[pos + 4 : pos + 6])
                if vr in _LONG_VRS:
                    self.need(pos, 12, f"element ({tag >> 16:04X},{tag & 0xFFFF:04X})")
                    length = self.u32(self.buf, pos + 8)[0]
                    pos += 12
                else:
                    length = self.u16(self.buf, pos + 6)[0]
                    pos += 8
            if length == UNDEFINED:
                # A sequence, encapsulated pixel data, or UN of undefined length (whose
                # content is implicit VR little endian).
                pos = self.items(pos, implicit or vr == b"UN")
            else:
                if pos + length > self.end:
                    raise TruncatedDataset(
                        f"value of ({tag >> 16:04X},{tag & 0xFFFF:04X}) needs {length} bytes "
                        f"but only {self.end - pos} remain: the file is truncated"
                    )
                pos += length
        if stop_at_item_end:
            raise TruncatedDataset("data ends inside an item of undefined length")
        return pos

    def items(self, pos: int, implicit: bool) -> int:
        while True:
            tag = self.tag(pos)
            self.need(pos, 8, "an item header")
            length = self.u32(self.buf, pos + 4)[0]
            pos += 8
            if tag == _SEQ_END:
                return pos
            if tag != _ITEM:
                raise TruncatedDataset(f"expected an item or sequence delimiter at byte {pos - 8}, "
                                       f"found ({tag >> 16:04X},{tag & 0xFFFF:04X})")
            if length == UNDEFINED:
                pos = self.elements(pos, implicit, stop_at_item_end=True)
            else:
                if pos + length > self.end:
                    raise TruncatedDataset(f"item at byte {pos - 8} needs {length} bytes but only "
                                           f"{self.end - pos} remain: the file is truncated")
                pos += length


def check_dataset_complete(data: bytes, offset: int, transfer_syntax: str) -> None:
    """Raise :class:`TruncatedDataset` unless ``data[offset:]`` is a whole dataset."""
    body: bytes | memoryview = memoryview(data)[offset:]
    implicit = transfer_syntax == "1.2.840.10008.1.2"
    little = transfer_syntax != "1.2.840.10008.1.2.2"
    if transfer_syntax == "1.2.840.10008.1.2.1.99":
        try:
            d = zlib.decompressobj(-zlib.MAX_WBITS)
            body = d.decompress(bytes(body))
            if not d.eof:
                raise TruncatedDataset("deflated dataset ends before the end of its compressed stream")
        except zlib.error as e:
            raise TruncatedDataset(f"deflated dataset cannot be inflated: {e}") from None
    _Walker(body, little).elements(0, implicit, stop_at_item_end=False)
