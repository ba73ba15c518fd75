"""The administration pages in headless Chromium against a real Voxa: the dashboard's numbers,
creating an account and a role, a DICOM peer added and echoed (Voxa's own DICOM listener
answers; a closed port fails with the reason shown), and the audit search finding the account's
creation; a radiologist has no administration. The only console errors allowed are the
browser's own reports of the refused password's and the failed echo's HTTP status. Screenshots:
``test-artifacts/webapp/admin-*.png``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from support import free_port
from support.browser import DESKTOP, PageWatch, check_screenshot, launch, require_chromium

from voxa.testing.synthetic import dataset_to_bytes, small_ct
from voxa.web.routes import webapp

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "webapp"


@pytest.fixture
def admin_ready() -> None:
    if not webapp.is_built(webapp.webapp_dir()):
        pytest.skip("the web application is not built (bash scripts/build_frontend.sh)")
    require_chromium()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)


def _shot(page: Any, name: str) -> None:
    path = ARTIFACTS / f"admin-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    check_screenshot(path)


def _sign_in(page: Any, base: str, user: str, password: str, target: str) -> None:
    page.add_init_script(f"localStorage.setItem('voxa.tourDone.{user}', '1')")
    page.goto(f"{base}{target}")
    page.wait_for_url(re.compile(r".*/login\?next="))
    page.fill("#username", user)
    page.fill("#password", password)
    page.click("button[type=submit]")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_admin_pages(voxa_factory: Any, admin_ready: None) -> None:
    from playwright.sync_api import sync_playwright

    voxa = voxa_factory(http=True)
    for ds in small_ct(3, slices=2).datasets():
        assert voxa.archive.ingest(dataset_to_bytes(ds), source="test").ok
    base = voxa.base_url
    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            page = browser.new_context(viewport=DESKTOP, locale="en-GB").new_page()
            page.on("dialog", lambda d: d.accept("Second-Opinion-2026!") if d.type == "prompt" else d.accept())
            watch = PageWatch(page)
            _sign_in(page, base, *voxa.auth, "/app/admin")
            # the first section the administrator may see: the dashboard
            page.wait_for_url(re.compile(r".*/app/admin/dashboard$"))
            page.locator("#tile-studies").wait_for()
            assert page.locator("#tile-studies .tile-value").inner_text() == "1"
            assert page.locator("#tile-instances .tile-value").inner_text() == "2"
            bars = page.locator("#chart-studies rect")
            assert bars.count() == 30 and bars.last.get_attribute("data-value") == "1"  # today, the last day
            assert int(page.locator("#tile-users .tile-value").inner_text()) >= 1  # this browser's session
            _shot(page, "dashboard")

            # accounts: a weak password is refused with the policy's reason, then the account is made
            page.click("#tab-accounts")
            page.wait_for_url(re.compile(r".*/app/admin/accounts$"))
            page.locator("#users-table").wait_for()
            page.fill("#new-username", "dr.house")
            page.fill("#new-display-name", "Gregory House")
            page.select_option("#new-role", "radiologist")
            page.fill("#new-password", "short")
            page.click("#create-user")
            page.wait_for_function("() => document.querySelector('#accounts-status').textContent.startsWith('Failed')")
            page.fill("#new-password", "Diagnostic-Medicine-2004")
            page.click("#create-user")
            row = page.locator('#users-table tr[data-user="dr.house"]')
            row.wait_for()
            assert row.locator(".role-select").input_value() == "radiologist" and "Enabled" in row.inner_text()
            # the role changed in place, a password reset (the prompt answers it)
            row.locator(".role-select").select_option("technologist")
            page.wait_for_function("() => document.querySelector('#accounts-status').textContent === 'Saved'")
            assert voxa.runtime.accounts.get_user("dr.house").role == "technologist"
            page.evaluate("() => { document.querySelector('#accounts-status').textContent = ''; }")
            row.get_by_role("button", name="Reset password").click()
            page.wait_for_function("() => document.querySelector('#accounts-status').textContent === 'Saved'")
            assert voxa.runtime.accounts.authenticate("dr.house", "Second-Opinion-2026!").must_change_password
            row.get_by_role("button", name="Disable").click()
            page.locator('#users-table tr[data-user="dr.house"] .badge.off').wait_for()
            _shot(page, "accounts")

            # roles: a custom role from permission boxes
            page.click("#tab-roles")
            page.locator("#role-form").wait_for()
            page.fill("#new-role-name", "archivist")
            page.check("#perm-view_study_list")
            page.check("#perm-download")
            page.click("#create-role")
            page.locator('#roles-table tr[data-role="archivist"]').wait_for()
            assert "download" in page.locator('#roles-table tr[data-role="archivist"]').inner_text()

            # patient access: a patient assigned to a referring physician, then removed; a family
            # member's request verified (active), then revoked
            voxa.runtime.accounts.create_user("dr.ref", "Referring-Passw0rd!", role="referring_physician")
            voxa.runtime.accounts.create_user("daughter", "Family-Member-Passw0rd!", role="family_member")
            page.click("#tab-access")
            page.locator("#assign-form").wait_for()
            page.select_option("#assign-user", "dr.ref")
            page.fill("#assign-patient", "PAT-0042")
            page.click("#assign-button")
            page.locator('#assignments-table tr[data-patient="PAT-0042"]').wait_for()
            assert [a.patient_id for a in voxa.runtime.accounts.assignments("dr.ref")] == ["PAT-0042"]
            page.select_option("#grant-user", "daughter")
            page.fill("#grant-patient", "PAT-0042")
            page.fill("#grant-expires", "2099-12-31")
            page.fill("#grant-note", "ID checked at the front desk")
            page.click("#grant-button")
            row = page.locator('#grants-table tr[data-status="requested"]')
            row.wait_for()
            row.get_by_role("button", name="Verify").click()
            page.locator('#grants-table tr[data-status="active"]').wait_for()
            _shot(page, "access")
            page.locator('#grants-table tr[data-status="active"]').get_by_role("button", name="Revoke").click()
            page.locator('#grants-table tr[data-status="revoked"]').wait_for()
            page.locator('#assignments-table tr[data-patient="PAT-0042"]').get_by_role("button", name="Remove").click()
            page.wait_for_function("() => !document.querySelector('#assignments-table tr[data-patient=\"PAT-0042\"]')")

            # peers: Voxa's own DICOM listener answers the echo; a closed port does not
            page.click("#tab-peers")
            page.locator("#peer-form").wait_for()
            for name, port in (("self", voxa.dicom_port), ("nowhere", free_port())):
                page.fill("#peer-name", name)
                page.fill("#peer-aet", voxa.aet if name == "self" else "NOWHERE")
                page.fill("#peer-host", "127.0.0.1")
                page.fill("#peer-port", str(port))
                page.click("#save-peer")
                page.locator(f'#peers-table tr[data-peer="{name}"]').wait_for()
            page.locator('#peers-table tr[data-peer="self"]').get_by_role("button", name="Echo").click()
            page.wait_for_function("() => /Echo answered in/.test(document.querySelector("
                                   "'#peers-table tr[data-peer=self] .echo-result').textContent)")
            page.locator('#peers-table tr[data-peer="nowhere"]').get_by_role("button", name="Echo").click()
            page.wait_for_function("() => /Echo failed: .+/.test(document.querySelector("
                                   "'#peers-table tr[data-peer=nowhere] .echo-result').textContent)", timeout=60_000)
            _shot(page, "peers")

            # the audit trail: the account's creation is there, and the chain verifies
            page.click("#tab-audit")
            page.locator("#audit-table").wait_for()
            page.fill("#audit-action", "account_change")
            page.click("#audit-search")
            page.wait_for_function("() => document.querySelector('#audit-status').textContent === 'Records found'")
            assert "user:dr.house" in page.locator("#audit-table").inner_text()
            assert page.locator(".export-links a").count() == 3
            page.click("#audit-verify")
            page.wait_for_function("() => /Hash chain intact: \\d+ records/.test("
                                   "document.querySelector('#audit-status').textContent)")
            _shot(page, "audit")
            # the refused password (422) and the failed echo (502/504) are reported by the browser
            # itself as console errors; nothing else may be
            others = [e for e in watch.console_errors if not re.search(r"status of (422|50[24])", e)]
            assert not watch.page_errors and not others, watch.problems()

            # a radiologist sees no Administration link and is told so at its address
            voxa.runtime.accounts.create_user("rad", "Radiologist-Passw0rd!", role="radiologist")
            other = browser.new_context(viewport=DESKTOP, locale="en-GB").new_page()
            _sign_in(other, base, "rad", "Radiologist-Passw0rd!", "/app/admin")
            other.wait_for_url(re.compile(r".*/app/admin$"))
            other.locator(".error-box").wait_for()
            assert other.locator("#nav-admin").count() == 0
        finally:
            browser.close()
