"""Frames read straight from a native file's tail match what parsing the file gives, and any
other layout is left to the parser."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from voxa.web.dicomweb.pixels import trailing_native_frames


def _file(tmp_path: Path, syntax: str, frames: int, dtype: str, samples: int = 1, trailer: bool = False) -> Path:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = 5, 7, samples
    ds.PhotometricInterpretation = "RGB" if samples == 3 else "MONOCHROME2"
    if samples == 3:
        ds.PlanarConfiguration = 0
    bits = np.dtype(dtype).itemsize * 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    shape = (frames, 5, 7, samples)
    ds.PixelData = np.arange(np.prod(shape), dtype=dtype).reshape(shape).tobytes()
    if trailer:
        ds.DataSetTrailingPadding = b"\0" * 8  # (FFFC,FFFC) after the pixel data
    path = tmp_path / f"{syntax}-{frames}-{dtype}-{samples}-{trailer}.dcm"
    ds.save_as(path, enforce_file_format=True, implicit_vr=syntax == ImplicitVRLittleEndian)
    return path


@pytest.mark.parametrize(("syntax", "frames", "dtype", "samples"), [
    (ExplicitVRLittleEndian, 1, "<u2", 1),
    (ImplicitVRLittleEndian, 1, "<u2", 1),
    (ExplicitVRLittleEndian, 3, "u1", 1),  # 105 bytes: the value is padded to an even length
    (ExplicitVRLittleEndian, 2, "u1", 3),
    (ImplicitVRLittleEndian, 4, "<u4", 1),
])
def test_tail_frames_are_the_stored_frames(tmp_path: Path, syntax: str, frames: int, dtype: str,
                                           samples: int) -> None:
    path = _file(tmp_path, syntax, frames, dtype, samples)
    data = path.read_bytes()
    frame = 5 * 7 * samples * np.dtype(dtype).itemsize
    pixel_bytes = np.arange(frames * 5 * 7 * samples, dtype=dtype).tobytes()
    wanted = list(range(frames))[::-1]
    got = trailing_native_frames(io.BytesIO(data), len(data), syntax, 5, 7, frames, wanted)
    assert got == [pixel_bytes[i * frame:(i + 1) * frame] for i in wanted]


def test_other_layouts_are_left_to_the_parser(tmp_path: Path) -> None:
    path = _file(tmp_path, ExplicitVRLittleEndian, 1, "<u2", trailer=True)
    data = path.read_bytes()
    assert trailing_native_frames(io.BytesIO(data), len(data), ExplicitVRLittleEndian, 5, 7, 1, [0]) is None
    path = _file(tmp_path, ExplicitVRLittleEndian, 2, "<u2")
    data = path.read_bytes()
    # the index's geometry disagreeing with the file, a frame that is not there, a syntax it does not read
    assert trailing_native_frames(io.BytesIO(data), len(data), ExplicitVRLittleEndian, 5, 8, 2, [0]) is None
    assert trailing_native_frames(io.BytesIO(data), len(data), ExplicitVRLittleEndian, 5, 7, 2, [2]) is None
    assert trailing_native_frames(io.BytesIO(data), len(data), "1.2.840.10008.1.2.2", 5, 7, 2, [0]) is None
    assert trailing_native_frames(io.BytesIO(data[:-1]), len(data) - 1, ExplicitVRLittleEndian, 5, 7, 2, [0]) is None
