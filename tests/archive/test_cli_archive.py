"""``voxa import``, ``voxa check`` and ``voxa send-test-studies`` as an administrator runs them."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from voxa.archive import open_archive
from voxa.cli import main
from voxa.config import Settings
from voxa.testing.synthetic import dataset_to_bytes, tiny_study, write_study


def _run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_import_folders_and_zip_with_summary_then_check(tmp_path: Path) -> None:
    src = tmp_path / "incoming"
    write_study(tiny_study(1, series=2, instances_per_series=3), src / "a")
    zipped = [dataset_to_bytes(ds) for ds in tiny_study(2, series=1, instances_per_series=4).datasets()]
    with zipfile.ZipFile(src / "b.zip", "w") as zf:
        for i, data in enumerate(zipped):
            zf.writestr(f"dir/{i}.dcm", data)
        zf.writestr("dir/readme.txt", "not DICOM")
    (src / "notes.txt").write_text("hello")
    (src / "cut.dcm").write_bytes(zipped[0][:300])
    (src / "again.dcm").write_bytes(zipped[1])  # also inside the ZIP: a duplicate
    data_dir = tmp_path / "data"

    r = _run("import", str(src), "--data-dir", str(data_dir), "--json")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout[r.stdout.index("{"):])
    assert summary["stored"] == 10
    assert summary["duplicate"] == 1
    assert summary["refused"] == 3
    reasons = {x["file"].rsplit("/", 1)[-1]: x["reason"] for x in summary["refusals"]}
    assert "not a DICOM Part 10 file" in reasons["notes.txt"]
    assert "not a DICOM Part 10 file" in reasons["readme.txt"]  # inside the ZIP
    assert any(x["file"].endswith("b.zip!dir/readme.txt") for x in summary["refusals"])
    assert "truncated" in reasons["cut.dcm"]

    r = _run("check", "--data-dir", str(data_dir))
    assert r.exit_code == 0 and "clean" in r.output

    archive = open_archive(Settings(data_dir=data_dir))
    loc = archive.index.locate()[0]
    archive.blobs.path(loc.blob_key).unlink()
    archive.index.engine.dispose()
    r = _run("check", "--data-dir", str(data_dir))
    assert r.exit_code == 1 and loc.sop_instance_uid in r.output
    r = _run("check", "--data-dir", str(data_dir), "--repair")
    assert r.exit_code == 0
    assert _run("check", "--data-dir", str(data_dir)).exit_code == 0


def test_send_test_studies_is_deterministic_for_a_seed(voxa_factory: Any) -> None:
    a = voxa_factory(accept_unknown_peers=True)
    b = voxa_factory(accept_unknown_peers=True)
    for inst in (a, b):
        r = _run("send-test-studies", "--host", "127.0.0.1", "--port", str(inst.dicom_port), "--aet", inst.aet,
                 "--seed", "7", "--ct-slices", "4", "--only", "ct-chest", "--only", "cr-chest")
        assert r.exit_code == 0, r.output
        assert "ct-chest: sent 4, failed 0" in r.output
    uids = [{loc.sop_instance_uid for loc in inst.archive.index.locate()} for inst in (a, b)]
    assert len(uids[0]) == 5 and uids[0] == uids[1]
    bytes_a = {loc.sop_instance_uid: a.archive.blobs.read(loc.blob_key)[loc.dataset_offset:]
               for loc in a.archive.index.locate()}
    for loc in b.archive.index.locate():
        assert b.archive.blobs.read(loc.blob_key)[loc.dataset_offset:] == bytes_a[loc.sop_instance_uid]
