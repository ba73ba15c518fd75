"""Voxa's fast DICOM JSON conversion agrees with pydicom's reference conversion."""

from __future__ import annotations

import math
import os
import warnings
from typing import Any

import pydicom
import pytest

from voxa.dicom.json import BULK_PREFIX, BULK_THRESHOLD_BYTES, instance_json
from voxa.testing.synthetic import ct_chest, mr_brain


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, int | float) and isinstance(b, int | float) and math.isclose(a, b, rel_tol=1e-12)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _reference(ds: pydicom.Dataset, base: str) -> dict[str, Any]:
    out = {}
    for elem in ds:
        key = f"{int(elem.tag):08X}"
        if int(elem.tag) in (0x7FE00010, 0x7FE00008, 0x7FE00009):
            out[key] = {"vr": elem.VR, "BulkDataURI": f"{base}/frames"}
            continue
        try:
            out[key] = elem.to_json_dict(bulk_data_element_handler=lambda e: f"{base}/bulk/{int(e.tag):08X}",
                                         bulk_data_threshold=BULK_THRESHOLD_BYTES)
        except Exception:  # noqa: BLE001
            continue
    return out


def _files() -> list[str]:
    out = []
    root = os.path.join(os.path.dirname(pydicom.data.__file__), "test_files")
    for p in sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pydicom.dcmread(p)
            out.append(p)
        except Exception:  # noqa: BLE001
            pass
    return out


@pytest.mark.parametrize("path", _files(), ids=os.path.basename)
def test_matches_pydicom_on_bundled_files(path: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = instance_json(pydicom.dcmread(path), "1", "2", "3")
        ref = _reference(pydicom.dcmread(path), f"{BULK_PREFIX}studies/1/series/2/instances/3")
    mismatched = [k for k in ref if k not in ours or not _same(ours[k], ref[k])]
    assert not mismatched, {k: (ours.get(k), ref[k]) for k in mismatched[:3]}


def test_matches_pydicom_on_synthetic_ct_and_mr() -> None:
    for study in (ct_chest(1, slices=2, rows=64), mr_brain(1, slices=2, rows=32)):
        for ds in study.datasets():
            ref = _reference(ds, f"{BULK_PREFIX}studies/1/series/2/instances/3")
            assert _same(instance_json(ds, "1", "2", "3"), ref)
