"""Analyses on the study page, in headless Chromium against a real Voxa: a radiologist runs the
calcium tool on the study's CT from the page, follows its progress, reads the Agatston score
with "needs review", marks the result as reviewed; the derived series are named. Any console
error fails the test. Screenshot: ``test-artifacts/webapp/study-analyses.png``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from support.browser import DESKTOP, PageWatch, check_screenshot, launch, require_chromium

from voxa.testing.synthetic import ct_chest, dataset_to_bytes
from voxa.web.routes import webapp

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "webapp"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_run_and_review_an_analysis_from_the_study_page(voxa_factory: Any) -> None:
    if not webapp.is_built(webapp.webapp_dir()):
        pytest.skip("the web application is not built (bash scripts/build_frontend.sh)")
    require_chromium()
    from playwright.sync_api import sync_playwright

    voxa = voxa_factory(http=True)
    ct = ct_chest(0, slices=40, rows=256, slice_thickness_mm=3.0, contrast=False)
    for ds in ct.datasets():
        assert voxa.archive.ingest(dataset_to_bytes(ds), source="test").ok
    voxa.runtime.accounts.create_user("rad", "Radiologist-Passw0rd!", role="radiologist")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            page = browser.new_context(viewport=DESKTOP, locale="en-GB").new_page()
            watch = PageWatch(page)
            page.add_init_script("localStorage.setItem('voxa.tourDone.rad', '1')")
            page.goto(f"{voxa.base_url}/app/study/{ct.study_instance_uid}")
            page.wait_for_url(re.compile(r".*/login\?next="))
            page.fill("#username", "rad")
            page.fill("#password", "Radiologist-Passw0rd!")
            page.click("button[type=submit]")
            page.locator("#analysis-list").wait_for()
            assert page.locator("#analysis-list").inner_text() == "No analysis yet."
            page.select_option("#analysis-tool", "calcium")
            page.click("#analysis-run")
            done = page.locator('#analysis-list li[data-tool="calcium"][data-status="done"]')
            done.wait_for(timeout=120_000)
            text = done.inner_text()
            assert re.search(r"Agatston score \d+(\.\d)?, CAC-DRS A\d", text), text
            assert "Needs review" in text and "Coronary calcium (Voxa)" in text, text
            done.get_by_role("button", name="Mark as reviewed").click()
            page.wait_for_function("() => /Reviewed by rad/.test(document.querySelector("
                                   "'#analysis-list li[data-tool=calcium]').textContent)")
            path = ARTIFACTS / "study-analyses.png"
            page.screenshot(path=str(path), full_page=True)
            check_screenshot(path)
            # the study list's analysis filter: the study has a reviewed analysis and none to review
            for state, rows in (("verified", 1), ("pending", 0), ("none", 0)):
                page.goto(f"{voxa.base_url}/app/?ana={state}")
                page.wait_for_function("() => [...document.querySelectorAll('[data-i18n]')].some(e =>"
                                       " e.dataset.i18n === 'list.count' || e.dataset.i18n === 'list.noResults')")
                assert page.locator(".study-row").count() == rows, (state, page.locator("#study-results").inner_text())
            assert page.locator("#f-ana").input_value() == "none"
            watch.assert_no_errors("the study page's analyses")
        finally:
            browser.close()
