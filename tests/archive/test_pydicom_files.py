"""Every file in pydicom's bundled test data: stored byte for byte, or refused with a reason.

pydicom reads forgivingly, so "pydicom reads it" is not the same as "it is a valid
instance": files that pydicom parses but that are truncated (their last value runs past
the end of the file) or that lack the identifiers an archive needs (SOP Class/Instance,
Study and Series Instance UIDs) are refused, and the test names each such file and the
reason it must carry.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pydicom
import pytest

from voxa.archive import open_archive
from voxa.archive.check import check
from voxa.archive.ingest import Outcome, RefusalCode
from voxa.config import Settings

# Files pydicom parses without complaint that are nevertheless not storable instances.
EXPECTED_REFUSALS: dict[str, RefusalCode] = {
    "MR_truncated.dcm": RefusalCode.CORRUPT,
    "rtplan_truncated.dcm": RefusalCode.CORRUPT,
    "SC_rgb_jpeg.dcm": RefusalCode.CORRUPT,  # a private value claims 23620 bytes; 4092 remain
    "JPEGLSNearLossless_08.dcm": RefusalCode.MISSING_ATTRIBUTE,
    "JPEGLSNearLossless_16.dcm": RefusalCode.MISSING_ATTRIBUTE,
    "SC_rgb_jls_lossy_line.dcm": RefusalCode.MISSING_ATTRIBUTE,
    "SC_rgb_jls_lossy_sample.dcm": RefusalCode.MISSING_ATTRIBUTE,
    "UN_sequence.dcm": RefusalCode.MISSING_ATTRIBUTE,
    "empty_charset_LEI.dcm": RefusalCode.MISSING_ATTRIBUTE,
    "nested_priv_SQ.dcm": RefusalCode.MISSING_ATTRIBUTE,
    "no_meta_group_length.dcm": RefusalCode.MISSING_ATTRIBUTE,
    "priv_SQ.dcm": RefusalCode.MISSING_ATTRIBUTE,
    "meta_missing_tsyntax.dcm": RefusalCode.MISSING_ATTRIBUTE,
}


TEST_FILES_DIR = Path(pydicom.data.__file__).parent / "test_files"


def _expected_refusal(name: str) -> RefusalCode | None:
    base = name.rsplit("/", 1)[-1]
    if base.startswith("DICOMDIR"):
        return RefusalCode.NOT_AN_INSTANCE
    return EXPECTED_REFUSALS.get(name) or EXPECTED_REFUSALS.get(base)


def _test_files() -> list[Path]:
    """Every file pydicom ships in data/test_files (subfolders included), read from the
    installed package: no network (pydicom's get_testdata_files would try to download more)."""
    return sorted(p for p in TEST_FILES_DIR.rglob("*") if p.is_file())


def _pydicom_reads(path: Path) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pydicom.dcmread(path)
        return True
    except Exception:  # noqa: BLE001
        return False


def test_every_bundled_file_is_stored_identically_or_refused_with_a_reason(tmp_path: Path,
                                                                             database_url: str) -> None:
    files = _test_files()
    assert len(files) > 50, "pydicom's test files are missing"
    pending = list(files)
    stored_count = 0
    refused: dict[str, str] = {}
    unexpected: list[str] = []
    round_no = 0
    # Several bundled files share a SOP Instance UID (the same image in other transfer
    # syntaxes); each round stores into a fresh archive the files whose UID is new there.
    while pending:
        url = database_url if round_no == 0 else f"sqlite:///{tmp_path}/round{round_no}.sqlite"
        archive = open_archive(Settings(data_dir=tmp_path / f"round{round_no}", database_url=url, fsync=False))
        later: list[Path] = []
        for path in pending:
            data = path.read_bytes()
            result = archive.ingest(data, source="test")
            readable = _pydicom_reads(path)
            name = path.relative_to(TEST_FILES_DIR).as_posix()
            if result.outcome is Outcome.DUPLICATE:
                later.append(path)
                continue
            if result.outcome is Outcome.REFUSED:
                assert result.reason, f"{path.name}: refused without a reason"
                refused[name] = result.reason
                if readable:
                    expected = _expected_refusal(name)
                    if expected is not result.code:
                        unexpected.append(f"{name}: {result.code} {result.reason}")
                continue
            assert readable, f"{path.name}: pydicom cannot read it but the archive stored it"
            assert result.outcome is Outcome.STORED
            [loc] = archive.index.locate(sop_uid=result.sop_instance_uid)
            assert archive.blobs.read(loc.blob_key) == data, f"{path.name}: stored bytes differ"
            stored_count += 1
        report = check(archive)
        assert report.clean, report.as_dict()
        archive.index.engine.dispose()
        assert len(later) < len(pending)
        pending = later
        round_no += 1
    assert not unexpected, "\n".join(unexpected)
    unreadable = [p.relative_to(TEST_FILES_DIR).as_posix() for p in files if not _pydicom_reads(p)]
    assert unreadable, "expected some files pydicom cannot read"
    for name in unreadable:
        assert name in refused, f"{name}: pydicom cannot read it, the archive must refuse it"
    assert {n for n in EXPECTED_REFUSALS if "/" not in n} <= {n.rsplit("/", 1)[-1] for n in refused}
    assert stored_count >= 50


@pytest.mark.parametrize("cut", [10, 131, 200, 1000, -2])
def test_truncated_copies_are_refused_and_leave_nothing(tmp_path: Path, cut: int) -> None:
    data = Path(pydicom.data.get_testdata_file("CT_small.dcm")).read_bytes()
    archive = open_archive(Settings(data_dir=tmp_path, fsync=False))
    result = archive.ingest(data[:cut], source="test")
    assert result.outcome is Outcome.REFUSED
    assert result.code in (RefusalCode.NOT_DICOM, RefusalCode.CORRUPT)
    assert result.reason
    assert archive.index.statistics()["instances"] == 0
    assert list(archive.blobs.keys()) == []
