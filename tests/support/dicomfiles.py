"""Helpers for comparing DICOM files."""

from __future__ import annotations


def dataset_bytes(data: bytes) -> bytes:
    """The dataset after the Part-10 header: what crosses the network, byte for byte.

    The file meta group is written by each application for itself (PS3.10 7.1), so
    comparisons across applications compare what follows it.
    """
    assert data[128:132] == b"DICM", "not a Part-10 file"
    group_len = int.from_bytes(data[140:144], "little")
    return data[144 + group_len :]
