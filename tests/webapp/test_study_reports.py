"""Reports in the web application, in headless Chromium against a real Voxa: the study page
lists a study's reports (final and preliminary SR reports, a PDF that opens as a PDF) and the
study list filters by report status (final, preliminary, none). Any console error fails the
test. Screenshot: ``test-artifacts/webapp/study-reports.png``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import generate_uid
from support.browser import DESKTOP, PageWatch, check_screenshot, launch, require_chromium

from voxa.testing.synthetic import dataset_to_bytes, make_instance, report_pdf, report_sr
from voxa.web.routes import webapp

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "webapp"
PDF = b"%PDF-1.4\n% a synthetic report\n%%EOF\n"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_reports_on_the_study_page_and_the_report_filter(voxa_factory: Any) -> None:
    if not webapp.is_built(webapp.webapp_dir()):
        pytest.skip("the web application is not built (bash scripts/build_frontend.sh)")
    require_chromium()
    from playwright.sync_api import sync_playwright

    voxa = voxa_factory(http=True)
    studies = {name: make_instance(patient_id=f"PAT-{name.upper()}", patient_name=f"Report^{name.title()}",
                                   study_instance_uid=generate_uid(), series_instance_uid=generate_uid(),
                                   sop_instance_uid=generate_uid(), modality="CT")
               for name in ("signed", "pdf", "draft", "unread")}
    documents = [report_sr(studies["signed"], "20240102", verified=False, text="Draft."),
                 report_sr(studies["signed"], "20240103", verified=True, text="No acute abnormality."),
                 report_pdf(studies["pdf"], "20240104", PDF),
                 report_sr(studies["draft"], "20240105", verified=False)]
    for ds in [*studies.values(), *documents]:
        assert voxa.archive.ingest(dataset_to_bytes(ds), source="test").ok
    uid = {name: ds.StudyInstanceUID for name, ds in studies.items()}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            page = browser.new_context(viewport=DESKTOP, locale="en-GB").new_page()
            watch = PageWatch(page)
            page.add_init_script(f"localStorage.setItem('voxa.tourDone.{voxa.auth[0]}', '1')")
            page.goto(f"{voxa.base_url}/app/study/{uid['signed']}")
            page.wait_for_url(re.compile(r".*/login\?next="))
            page.fill("#username", voxa.auth[0])
            page.fill("#password", voxa.auth[1])
            page.click("button[type=submit]")

            # the study page: newest first, the final one signed, the draft preliminary
            page.locator("#study-reports .report").first.wait_for()
            assert page.get_attribute("#study-reports", "data-status") == "final"
            reports = page.locator("#study-reports .report")
            assert reports.count() == 2
            first, second = reports.nth(0).inner_text(), reports.nth(1).inner_text()
            assert "Final" in first and "Diagnostic Imaging Report" in first and "Signed by" in first, first
            assert "Rita" in first and "Preliminary" in second, (first, second)
            path = ARTIFACTS / "study-reports.png"
            page.screenshot(path=str(path), full_page=True)
            check_screenshot(path)

            # a PDF report opens as a PDF
            page.goto(f"{voxa.base_url}/app/study/{uid['pdf']}")
            link = page.locator("#study-reports .report a")
            link.wait_for()
            assert link.inner_text() == "Open document"
            answer = page.request.get(f"{voxa.base_url}{link.get_attribute('href')}")
            assert answer.status == 200 and answer.headers["content-type"] == "application/pdf"
            assert answer.body() == PDF
            page.goto(f"{voxa.base_url}/app/study/{uid['unread']}")
            page.locator("#study-reports[data-status=none]").wait_for()
            assert "No report in this study yet." in page.inner_text("#study-reports")

            # the study list's report filter
            for state, expected in (("final", {"signed", "pdf"}), ("preliminary", {"draft"}), ("none", {"unread"})):
                page.goto(f"{voxa.base_url}/app/?rep={state}")
                page.wait_for_function("() => [...document.querySelectorAll('[data-i18n]')].some(e =>"
                                       " e.dataset.i18n === 'list.count' || e.dataset.i18n === 'list.noResults')")
                shown = {row.get_attribute("data-uid") for row in page.locator(".study-row").all()}
                assert shown == {uid[name] for name in expected}, (state, page.locator("#study-results").inner_text())
            assert page.locator("#f-rep").input_value() == "none"
            watch.assert_no_errors("reports")
        finally:
            browser.close()
