"""Priors in the viewer, in headless Chromium against a real Voxa: the patient's other study is
listed under the series, its series opens beside the current one (1×2) with scrolling linked by
position across the two frames of reference, and a measurement drawn on the prior is refused
with a message instead of being saved to the wrong study. Any console error fails the test.
Screenshot: ``test-artifacts/webapp/viewer-prior.png``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.browser import DESKTOP, PageWatch, check_screenshot, launch, require_chromium, wait_for_viewports

from voxa.testing.synthetic import dataset_to_bytes, small_ct
from voxa.web.routes import webapp

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "webapp"


def _state(page: Any) -> dict[str, Any]:
    return page.evaluate("() => window.voxaViewer.state()")  # type: ignore[no-any-return]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_prior_beside_the_current_study_with_linked_scrolling(voxa_factory: Any) -> None:
    if not webapp.is_built(webapp.webapp_dir()):
        pytest.skip("the web application is not built (bash scripts/build_frontend.sh)")
    require_chromium()
    from playwright.sync_api import sync_playwright

    voxa = voxa_factory(http=True)
    current = list(small_ct(8, slices=20, rows=128, slice_thickness_mm=2.5).datasets())
    prior = list(small_ct(9, slices=20, rows=128, slice_thickness_mm=2.5).datasets())
    assert current[0].FrameOfReferenceUID != prior[0].FrameOfReferenceUID
    assert current[0].StudyInstanceUID != prior[0].StudyInstanceUID
    for ds in prior:  # the same patient a year earlier, lying 100 mm further along the table
        for keyword in ("PatientID", "IssuerOfPatientID", "PatientName", "PatientBirthDate", "PatientSex"):
            setattr(ds, keyword, current[0].get(keyword))
        ds.StudyDate = ds.SeriesDate = "20230301"
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z + 100.0]
    other = list(small_ct(10, slices=3, rows=64).datasets())  # another patient: not a prior
    for ds in current + prior + other:
        assert voxa.archive.ingest(dataset_to_bytes(ds), source="test").ok
    study = current[0].StudyInstanceUID
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            page = browser.new_context(viewport=DESKTOP, locale="en-GB").new_page()
            watch = PageWatch(page)
            page.add_init_script(f"localStorage.setItem('voxa.tourDone.{voxa.auth[0]}', '1')")
            page.goto(f"{voxa.base_url}/app/viewer/{study}")
            page.wait_for_url(re.compile(r".*/login\?next="))
            page.fill("#username", voxa.auth[0])
            page.fill("#password", voxa.auth[1])
            page.click("button[type=submit]")
            page.locator("#viewer[data-first-image=true]").wait_for()

            # the prior, and only it, under the series
            page.locator(".priors details").first.wait_for()
            assert page.locator(".priors details").count() == 1
            assert page.get_attribute(".priors details", "data-study") == prior[0].StudyInstanceUID
            assert "Mar 1, 2023" in page.inner_text(".priors summary")
            page.click(".priors summary")
            page.click(f".priors [data-series='{prior[0].SeriesInstanceUID}']")
            page.wait_for_function(f"""() => {{ const c = window.voxaViewer.state().cells;
                return c.length === 2 && c[1].series === '{prior[0].SeriesInstanceUID}'; }}""")
            state = _state(page)
            assert state["layout"] == "1x2" and state["cells"][0]["series"] == current[0].SeriesInstanceUID
            assert page.is_checked("#sync-scroll")
            wait_for_viewports(page, 2, 60, watch.problems)

            # scrolling the current study moves the prior to the same position (linked where shown)
            page.click(".viewport-cell[data-index='0']")
            for _ in range(6):
                page.keyboard.press("ArrowDown")
            page.wait_for_function("() => window.voxaViewer.state().cells[0].index === 6")
            page.wait_for_function("() => window.voxaViewer.state().cells[1].index === 6")
            page.click(".viewport-cell[data-index='1']")
            page.keyboard.press("End")
            page.wait_for_function("() => window.voxaViewer.state().cells[0].index === 19")

            # a length on the prior is not saved with this study
            box = page.locator(".viewport-cell[data-index='1'] > .viewport-element").bounding_box()
            assert box is not None
            page.click("#tool-length")
            cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            page.mouse.move(cx - 40, cy)
            page.mouse.down()
            page.mouse.move(cx + 40, cy, steps=5)
            page.mouse.up()
            page.locator(".toast[data-i18n='viewer.priorNotSaved']").wait_for()
            r = httpx.get(f"{voxa.base_url}/measurements/studies/{study}", auth=voxa.auth, timeout=30)
            assert r.status_code == 200 and r.json() == []
            path = ARTIFACTS / "viewer-prior.png"
            page.screenshot(path=str(path))
            check_screenshot(path)
            watch.assert_no_errors("priors")
        finally:
            browser.close()
