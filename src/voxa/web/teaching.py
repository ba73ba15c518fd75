"""Teaching access: what a teaching-only user (a student) receives is de-identified with the
PS3.15 Basic Application Level Confidentiality Profile (see :mod:`voxa.deid`).

UIDs are kept (the profile's Retain UIDs Option) so that the viewer can navigate from the
study list to series, instances and frames with the UIDs it was given; Patient IDs become
stable pseudonyms keyed by a secret kept in the data folder, so one patient's teaching
cases stay grouped without revealing who they are.
"""

from __future__ import annotations

import io
import os
import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
from fastapi import Request

from voxa.deid import deidentify_dataset, deidentify_json, make_pseudonym

_lock = threading.Lock()


def _secret(data_dir: Path) -> bytes:
    path = data_dir / "secrets" / "teaching-pseudonym.key"
    with _lock:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(32))
        return path.read_bytes()


def pseudonym_for(request: Request) -> Callable[[str], str]:
    state = request.app.state
    fn = getattr(state, "teaching_pseudonym", None)
    if fn is None:
        fn = make_pseudonym(_secret(Path(state.runtime.settings.data_dir)))
        state.teaching_pseudonym = fn
    return fn  # type: ignore[no-any-return]


def teaching_json(request: Request, attrs: dict[str, Any]) -> dict[str, Any]:
    """A DICOM JSON object (QIDO-RS result, WADO-RS metadata) de-identified."""
    return deidentify_json(attrs, pseudonym=pseudonym_for(request), retain_uids=True)


def teaching_bytes(request: Request, data: bytes) -> bytes:
    """A stored Part-10 file de-identified, in the same transfer syntax."""
    ds = pydicom.dcmread(io.BytesIO(data))
    clean = deidentify_dataset(ds, pseudonym=pseudonym_for(request), retain_uids=True)
    out = io.BytesIO()
    clean.save_as(out, enforce_file_format=True)
    return out.getvalue()
