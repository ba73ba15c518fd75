"""DICOM JSON (PS3.18 F.2) for stored instances, without bulk data.

Bulk data (pixel data and any binary value over a threshold) is replaced by a
``BulkDataURI`` that starts with :data:`BULK_PREFIX`; the web layer swaps that prefix for
its own base URL when it serves the metadata, so the stored JSON does not depend on the
host name a client used.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

from pydicom import Dataset
from pydicom.dataelem import DataElement

BULK_PREFIX = "voxa-bulk:"
BULK_THRESHOLD_BYTES = 1024
_PIXEL_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}


def instance_json(ds: Dataset, study_uid: str, series_uid: str, sop_uid: str) -> dict[str, Any]:
    base = f"{BULK_PREFIX}studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"

    def bulk_uri(elem: DataElement) -> str:
        # Top-level pixel data is addressed as frames by WADO-RS clients; everything else
        # (nested or not) through the bulk endpoint, by tag path.
        if elem.tag in _PIXEL_TAGS:
            return f"{base}/frames"
        return f"{base}/bulk/{int(elem.tag):08X}"

    def handler(elem: DataElement) -> str:
        return bulk_uri(elem)

    result: dict[str, Any] = {}
    for elem in ds:
        if elem.tag in _PIXEL_TAGS:
            # Do not touch the value: it may be large or compressed.
            result[f"{int(elem.tag):08X}"] = {"vr": elem.VR, "BulkDataURI": bulk_uri(elem)}
            continue
        try:
            result[f"{int(elem.tag):08X}"] = elem.to_json_dict(
                bulk_data_element_handler=handler, bulk_data_threshold=BULK_THRESHOLD_BYTES
            )
        except Exception:  # noqa: BLE001 - one unconvertible private element must not lose the rest
            continue
    return result


def pack_json(obj: dict[str, Any]) -> bytes:
    return zlib.compress(json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8"), 1)


def unpack_json_bytes(blob: bytes) -> bytes:
    return zlib.decompress(blob)
