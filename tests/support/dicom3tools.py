"""dicom3tools' ``dciodvfy`` as the judge of the DICOM objects Voxa writes.

A validity check that cannot fail proves nothing, so :func:`assert_valid_and_checkable` also
breaks a copy of the file and requires dciodvfy to object to it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest


def dciodvfy(path: Path) -> list[str]:
    """dciodvfy's report on ``path``, one line per item; skips the test without dicom3tools."""
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (dicom3tools) is not installed")
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return (run.stdout + run.stderr).splitlines()


def errors_in(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("Error")]


def assert_valid_and_checkable(path: Path, iod: str, break_it: str) -> None:
    """dciodvfy recognises ``path`` as ``iod`` and finds no error in it, and finds one once
    ``break_it`` (a Type 1 attribute of the IOD) is removed from a copy."""
    lines = dciodvfy(path)
    assert lines and iod in lines[0], "\n".join(lines)
    assert errors_in(lines) == [], "\n".join(lines)
    broken = pydicom.dcmread(path)
    delattr(broken, break_it)
    broken_path = path.with_name(f"broken-{path.name}")
    broken.save_as(broken_path)
    assert errors_in(dciodvfy(broken_path)), f"dciodvfy accepts {path.name} without {break_it}"
