"""The upload page in headless Chromium against a real Voxa: files, a ZIP, a file that is not
DICOM and a corrupt DICOM file, chosen as a technologist would; every file gets its result
(stored, already stored, refused with the server's reason, not DICOM), the instances are in the
archive, and the page links to the studies stored. Any console error fails the test.
Screenshot: ``test-artifacts/webapp/upload-*.png``."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.browser import DESKTOP, PageWatch, check_screenshot, launch, require_chromium

from voxa.testing.synthetic import dataset_to_bytes, small_ct
from voxa.web.routes import webapp

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "webapp"


@pytest.fixture
def upload_ready() -> None:
    if not webapp.is_built(webapp.webapp_dir()):
        pytest.skip("the web application is not built (bash scripts/build_frontend.sh)")
    require_chromium()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)


def _states(page: Any) -> dict[str, tuple[str, str]]:
    rows = page.evaluate("""() => [...document.querySelectorAll('#upload-results tr')].map(r =>
        [r.dataset.name, r.dataset.state, r.querySelector('.upload-state').textContent])""")
    return {name: (state, text) for name, state, text in rows}


def _finished(page: Any, timeout_ms: int = 60_000) -> dict[str, tuple[str, str]]:
    page.wait_for_function("""() => document.querySelectorAll('#upload-results tr').length > 0
        && !document.querySelector('#upload-results tr[data-state=waiting], #upload-results tr[data-state=sending]')
        && document.querySelector('#upload-summary p')""", timeout=timeout_ms)
    return _states(page)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_upload_files_zip_and_bad_files(voxa_factory: Any, upload_ready: None, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    voxa = voxa_factory(http=True)
    first, second = small_ct(1, slices=3), small_ct(2, slices=2)
    files = []
    for n, ds in enumerate(first.datasets()):
        path = tmp_path / f"ct-{n}.dcm"
        path.write_bytes(dataset_to_bytes(ds))
        files.append(path)
    zipped = tmp_path / "second-study.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        for n, ds in enumerate(second.datasets()):
            zf.writestr(f"SE1/IM{n}", dataset_to_bytes(ds))
        zf.writestr("README.txt", "exported by a CD viewer")
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image", encoding="utf-8")
    corrupt = tmp_path / "corrupt.dcm"
    corrupt.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\x14\x00" + b"garbage" * 10)

    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            page = browser.new_context(viewport=DESKTOP, locale="en-GB").new_page()
            watch = PageWatch(page)
            page.add_init_script(f"localStorage.setItem('voxa.tourDone.{voxa.auth[0]}', '1')")
            page.goto(f"{voxa.base_url}/app/upload")
            page.wait_for_url(re.compile(r".*/login\?next=%2Fapp%2Fupload$"))
            page.fill("#username", voxa.auth[0])
            page.fill("#password", voxa.auth[1])
            page.click("button[type=submit]")
            page.wait_for_url(re.compile(r".*/app/upload$"))
            page.locator("#drop-zone").wait_for()
            assert page.locator("#nav-upload").count() == 1

            page.set_input_files("#upload-files", [*map(str, files), str(zipped), str(notes), str(corrupt)])
            states = _finished(page)
            for path in files:
                assert states[path.name][0] == "stored", states
            for n in range(2):
                assert states[f"second-study.zip/SE1/IM{n}"][0] == "stored", states
            assert states["second-study.zip/README.txt"][0] == "notDicom", states
            assert states["notes.txt"] == ("notDicom", "Not a DICOM file"), states
            state, text = states["corrupt.dcm"]
            assert state == "refused" and text.startswith("Refused: ") and len(text) > 20, states
            assert float(page.locator("#upload-progress").get_attribute("value") or 0) > 0
            assert page.locator("#upload-progress-text").inner_text() == "Upload finished"
            summary = page.locator("#upload-summary").inner_text()
            assert "5 stored, 0 already stored, 1 refused, 2 not DICOM" in summary, summary
            # the studies are linked, named by their patient once the page has looked them up
            links = page.locator("#upload-summary a.study-link")
            assert links.count() == 2
            page.wait_for_function("() => [...document.querySelectorAll('#upload-summary a.study-link')]"
                                   ".every(a => !/^[0-9.]+$/.test(a.textContent))")
            path = ARTIFACTS / "upload-1-results.png"
            page.screenshot(path=str(path), full_page=True)
            check_screenshot(path)

            # in the archive, as a DICOMweb client sees it
            for study, count in ((first, 3), (second, 2)):
                r = httpx.get(f"{voxa.base_url}/dicom-web/studies/{study.study_instance_uid}/instances",
                              auth=voxa.auth, headers={"Accept": "application/dicom+json"}, timeout=30)
                assert r.status_code == 200 and len(r.json()) == count

            # the same file again: already stored
            page.set_input_files("#upload-files", [str(files[0])])
            page.wait_for_function("() => document.querySelectorAll('#upload-results tr').length === 1")
            states = _finished(page)
            assert states == {files[0].name: ("duplicate", "Already stored")}, states
            links.first.click()
            page.wait_for_url(re.compile(r".*/app/study/[0-9.]+$"))
            page.locator("#series-grid img").first.wait_for()
            watch.assert_no_errors("the upload page")
        finally:
            browser.close()
