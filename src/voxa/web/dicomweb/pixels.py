"""Pixel data of stored files: single frames without loading the rest, decoding, and
transcoding of whole instances to another transfer syntax.

A stored file is parsed with pydicom with large values deferred, so a frame of a big
multi-frame instance costs one seek and one read: native frames are sliced at their
offset, encapsulated ones are found through the Basic (or Extended) Offset Table.
"""

from __future__ import annotations

import io
import logging
from typing import Any, BinaryIO

import numpy as np
import pydicom
from pydicom import Dataset
from pydicom.dataelem import RawDataElement
from pydicom.encaps import get_frame
from pydicom.pixels import get_decoder, get_encoder
from pydicom.pixels.utils import as_pixel_options, get_expected_length
from pydicom.uid import UID

from voxa.archive.blobstore import BlobStore
from voxa.dicom import transfer_syntaxes
from voxa.web.dicomweb.media import DEFLATED, EBE, ELE, ILE, NATIVE_SYNTAXES

log = logging.getLogger(__name__)

_PIXEL_TAG = 0x7FE00010
_DEFER_BYTES = 16 * 1024

# Syntaxes Voxa can write a whole instance in.  Big endian is retired (PS3.5) and not produced.
PRODUCIBLE = frozenset({ELE, ILE, DEFLATED, "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.80",
                        "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"})
_LOSSY_DEFAULTS: dict[str, dict[str, Any]] = {
    "1.2.840.10008.1.2.4.81": {"jls_error": 2},
    "1.2.840.10008.1.2.4.91": {"j2k_cr": [10.0]},
}


class TranscodeError(ValueError):
    """The data cannot be given in the transfer syntax asked for; the message says why."""


def ts_name(ts: str) -> str:
    return f"{ts} ({transfer_syntaxes.name_of(ts)})"


def _has_decoder(ts: str) -> bool:
    if ts in NATIVE_SYNTAXES:
        return True
    try:
        return bool(get_decoder(ts).is_available)
    except NotImplementedError:
        return False


def _has_encoder(ts: str) -> bool:
    try:
        return bool(get_encoder(ts).is_available)
    except NotImplementedError:
        return False


def transcode_problem(source: str, target: str, *, has_pixels: bool) -> str | None:
    """Why an instance stored in ``source`` cannot be sent in ``target`` (None if it can).

    Decided from the index alone, before a response starts; encoders may still refuse a
    particular image (e.g. JPEG-LS with more than 16 bits), which :func:`transcode` reports.
    """
    if source == target:
        return None
    if not transfer_syntaxes.is_accepted(target):
        return f"{target} is not a transfer syntax Voxa knows"
    if not has_pixels:
        # Without pixel data every syntax but big endian and deflate is Explicit VR Little Endian.
        return "Voxa does not write Explicit VR Big Endian (retired)" if target == EBE else None
    if target not in PRODUCIBLE:
        return f"Voxa cannot encode pixel data in {ts_name(target)}"
    if source not in NATIVE_SYNTAXES and not _has_decoder(source):
        return f"no decoder is installed for the stored {ts_name(source)}"
    if target not in NATIVE_SYNTAXES and not _has_encoder(target):
        return f"no encoder is installed for {ts_name(target)}"
    return None


def transcode(data: bytes, source: str, target: str) -> bytes:
    """The Part-10 file ``data`` (stored in ``source``) re-encoded in ``target``."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        if _PIXEL_TAG in ds and target not in (source,):
            src_uid, tgt_uid = UID(source), UID(target)
            if src_uid.is_encapsulated:
                ds.decompress(generate_instance_uid=False)
            elif source == EBE and int(ds.get("BitsAllocated", 8) or 8) > 8:
                width = int(ds.BitsAllocated) // 8
                ds.PixelData = np.frombuffer(ds.PixelData, dtype=f">u{width}").astype(f"<u{width}").tobytes()
            if tgt_uid.is_encapsulated:
                ds.compress(tgt_uid, generate_instance_uid=False, **_LOSSY_DEFAULTS.get(target, {}))
        ds.file_meta.TransferSyntaxUID = UID(target)
        buf = io.BytesIO()
        little = target != EBE
        implicit = target == ILE
        pydicom.dcmwrite(buf, ds, implicit_vr=implicit, little_endian=little, enforce_file_format=True)
        return buf.getvalue()
    except TranscodeError:
        raise
    except Exception as e:  # noqa: BLE001 - codecs raise many kinds
        raise TranscodeError(f"cannot convert {ts_name(source)} to {ts_name(target)}: {e}") from None


_PIXEL_DATA_LE = b"\xe0\x7f\x10\x00"


def trailing_native_frames(fp: BinaryIO, size: int, transfer_syntax: str, rows: int, columns: int,
                           number_of_frames: int, indexes: list[int]) -> list[bytes] | None:
    """Frames (0-based ``indexes``) of a little-endian native file whose last element is Pixel
    Data, read without parsing the header; None when the file is not laid out so.

    A viewer asks for a CT's frames one request at a time: parsing each header costs more
    than the rest of the request. The value's length must be rows x columns x frames x a
    whole number of bytes per pixel and end the file exactly, with Pixel Data's tag, VR and
    that length in front of it, or the caller parses the file as usual."""
    if transfer_syntax not in (ELE, ILE) or rows <= 0 or columns <= 0 or number_of_frames <= 0:
        return None
    if any(not 0 <= i < number_of_frames for i in indexes):
        return None
    header = 8 if transfer_syntax == ILE else 12
    for bytes_per_pixel in (2, 1, 3, 4, 6, 8):  # samples x bytes per sample
        frame = rows * columns * bytes_per_pixel
        length = frame * number_of_frames
        padded = length + (length & 1)
        at = size - padded - header
        if at < 0:
            continue
        fp.seek(at)
        head = fp.read(header)
        if head[:4] != _PIXEL_DATA_LE or int.from_bytes(head[-4:], "little") != padded:
            continue
        if header == 12 and head[4:8] not in (b"OW\0\0", b"OB\0\0"):
            continue
        out = []
        for i in indexes:
            fp.seek(at + header + i * frame)
            data = fp.read(frame)
            if len(data) != frame:
                return None
            out.append(data)
        return out
    return None


class InstanceFile:
    """A stored instance opened for pixel access; use as a context manager."""

    def __init__(self, blobs: BlobStore, blob_key: str, transfer_syntax: str):
        self.transfer_syntax = transfer_syntax
        self._fp: BinaryIO = blobs.open(blob_key)
        try:
            deflated = transfer_syntax == DEFLATED  # offsets refer to the inflated stream
            self.ds: Dataset = pydicom.dcmread(self._fp, defer_size=None if deflated else _DEFER_BYTES)
        except Exception:
            self._fp.close()
            raise
        self._raw: Any = self.ds.get_item(_PIXEL_TAG, keep_deferred=True) if _PIXEL_TAG in self.ds else None
        self.encapsulated = UID(transfer_syntax).is_encapsulated
        try:
            self.number_of_frames = max(1, int(self.ds.get("NumberOfFrames") or 1))
        except (TypeError, ValueError):
            self.number_of_frames = 1

    def __enter__(self) -> InstanceFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._fp.close()

    @property
    def has_pixels(self) -> bool:
        return self._raw is not None

    def check_frame(self, index: int) -> None:
        if not self.has_pixels:
            raise LookupError("the instance has no pixel data")
        if not 0 <= index < self.number_of_frames:
            raise LookupError(f"frame {index + 1} does not exist: the instance has {self.number_of_frames} "
                              f"frame{'s' if self.number_of_frames != 1 else ''}")

    def element_bytes(self, elem: Any) -> bytes | None:
        """The value of a (possibly deferred) binary element, as stored."""
        if isinstance(elem, RawDataElement):
            if elem.value is None:
                self._fp.seek(elem.value_tell)
                return self._fp.read(elem.length)
            return bytes(elem.value)
        value = elem.value
        return bytes(value) if isinstance(value, bytes | bytearray) else None

    # -- raw access -----------------------------------------------------------------------

    def _pixel_buffer(self) -> BinaryIO:
        """A readable buffer positioned at the first byte of the pixel data value."""
        raw = self._raw
        if isinstance(raw, RawDataElement) and raw.value is None and self.transfer_syntax != DEFLATED:
            self._fp.seek(raw.value_tell)
            return self._fp
        value = raw.value if isinstance(raw, RawDataElement) else self.ds.PixelData
        return io.BytesIO(bytes(value or b""))

    def _extended_offsets(self) -> tuple[bytes, bytes] | None:
        eot, eotl = self.ds.get("ExtendedOffsetTable"), self.ds.get("ExtendedOffsetTableLengths")
        if eot is not None and eotl is not None:
            return bytes(eot), bytes(eotl)
        return None

    def native_frame_bits(self) -> int:
        total_bits = get_expected_length(self.ds, "pixels") * int(self.ds.BitsAllocated)
        return total_bits // self.number_of_frames

    def encoded_frame(self, index: int) -> bytes:
        """Frame ``index`` (0-based) as stored: the compressed bitstream for encapsulated
        syntaxes, little-endian pixel bytes for native ones."""
        self.check_frame(index)
        buf = self._pixel_buffer()
        if self.encapsulated:
            return get_frame(buf, index, number_of_frames=self.number_of_frames,
                             extended_offsets=self._extended_offsets())
        frame_bits = self.native_frame_bits()
        if frame_bits % 8:
            return self._bit_packed_frame(buf, index, frame_bits)
        length = frame_bits // 8
        buf.seek(buf.tell() + index * length)
        data = buf.read(length)
        if len(data) != length:
            raise TranscodeError(f"frame {index + 1} is truncated in the stored file")
        if self.transfer_syntax == EBE and int(self.ds.BitsAllocated) > 8:
            width = int(self.ds.BitsAllocated) // 8
            data = np.frombuffer(data, dtype=f">u{width}").astype(f"<u{width}").tobytes()
        return data

    def _bit_packed_frame(self, buf: BinaryIO, index: int, frame_bits: int) -> bytes:
        """A 1-bit frame that does not start on a byte boundary in the stored Pixel Data (a binary
        SEG whose rows x columns is not a multiple of 8: frames are packed back to back), as its
        own bytes: its first pixel in bit 0 of the first byte, the last byte padded with zero
        bits, as PS3.18 returns bit-packed frames."""
        start_bit = index * frame_bits
        first, last = start_bit // 8, (start_bit + frame_bits + 7) // 8
        buf.seek(buf.tell() + first)
        data = buf.read(last - first)
        if len(data) != last - first:
            raise TranscodeError(f"frame {index + 1} is truncated in the stored file")
        bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
        offset = start_bit - 8 * first
        return np.packbits(bits[offset:offset + frame_bits], bitorder="little").tobytes()

    def decoded_frame(self, index: int, *, as_rgb: bool = True) -> tuple[np.ndarray, dict[str, Any]]:
        """Frame ``index`` decoded to an array, with pydicom's description of it (the
        photometric interpretation changes when YCbCr is converted to RGB)."""
        self.check_frame(index)
        ts = self.transfer_syntax
        try:
            decoder = get_decoder(ELE if ts in (ILE, DEFLATED) else ts)
        except NotImplementedError:
            raise TranscodeError(f"no decoder for {ts_name(ts)}") from None
        if not decoder.is_available:
            raise TranscodeError(f"no decoder is installed for {ts_name(ts)}")
        opts = as_pixel_options(self.ds)
        opts["pixel_keyword"] = "PixelData"
        if self.encapsulated:
            eot = self._extended_offsets()
            if eot is not None:
                opts["extended_offsets"] = eot
            src: Any = self._pixel_buffer()
            arr, meta = decoder.as_array(src, index=index, as_rgb=as_rgb, **opts)  # type: ignore[arg-type]
        else:
            frame = self.encoded_frame(index)  # little endian now
            opts["number_of_frames"] = 1
            native = get_decoder(ELE)
            arr, meta = native.as_array(frame, index=0, as_rgb=as_rgb, **opts)  # type: ignore[arg-type]
        return arr, meta

    def decoded_frame_bytes(self, index: int) -> bytes:
        """Frame ``index`` as native little-endian pixel bytes (what ``application/octet-stream``
        with Explicit VR Little Endian means); colour comes out as interleaved RGB."""
        if not self.encapsulated:
            return self.encoded_frame(index)
        arr, _ = self.decoded_frame(index)
        bits = int(self.ds.BitsAllocated)
        if bits == 1:
            return np.packbits(arr.astype(np.uint8).ravel(), bitorder="little").tobytes()
        return np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()

    def frame_in(self, index: int, target: str) -> bytes:
        """Frame ``index`` encoded in ``target`` (an encapsulated syntax other than the stored one)."""
        try:
            encoder = get_encoder(target)
        except NotImplementedError:
            raise TranscodeError(f"Voxa cannot encode frames in {ts_name(target)}") from None
        if not encoder.is_available:
            raise TranscodeError(f"no encoder is installed for {ts_name(target)}")
        arr, meta = self.decoded_frame(index)
        opts = {k: v for k, v in as_pixel_options(self.ds).items() if k != "number_of_frames"}
        opts.update({k: meta[k] for k in ("photometric_interpretation", "planar_configuration") if k in meta})
        opts["photometric_interpretation"] = str(opts["photometric_interpretation"])
        try:
            return encoder.encode(np.ascontiguousarray(arr), number_of_frames=1,
                                  **_LOSSY_DEFAULTS.get(target, {}), **opts)
        except Exception as e:  # noqa: BLE001
            raise TranscodeError(f"cannot encode frame {index + 1} in {ts_name(target)}: {e}") from None
