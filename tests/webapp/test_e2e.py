"""The Voxa web application end to end, in headless Chromium, against a real ``voxa serve``.

A Voxa server (HTTP, SQLite) holds the demo studies (as ``voxa serve --profile demo`` loads them,
with an 80-slice CT to keep two cores busy for minutes, not tens of minutes). Then, as a person
would: sign in on the login page, meet the first-login tour, search the study list, open the CT's
study page (thumbnails, "open in OHIF"), open the viewer, scroll, apply a window preset, draw a
length that the server stores, reload and find it drawn again, open MPR and 3D, look at it on a
phone, and switch to Arabic (right to left).

"Holds an image" is judged from each Cornerstone viewport canvas (standard deviation and share of
non-black pixels) and from the screenshot's own pixels (not blank, not an error page). Any
uncaught page error or console error fails the test. Screenshots and timings go to
``test-artifacts/webapp/``. The test skips when ``frontend/dist`` has not been built
(``bash scripts/build_frontend.sh``); a missing Chromium or Playwright skips it too, or fails it
under ``VOXA_REQUIRE_INTEROP=1``.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    DESKTOP,
    PHONE,
    VIEWPORT_PIXELS_JS,
    check_screenshot,
    rendered,
    require_chromium,
    wait_for_viewports,
)

from voxa.testing.synthetic import SyntheticStudy, dataset_to_bytes, demo_studies
from voxa.web.routes import webapp

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "webapp"
LOCALES = Path(__file__).resolve().parents[2] / "frontend" / "src" / "i18n" / "locales"
_VIEWPORT_PIXELS_JS = VIEWPORT_PIXELS_JS


@pytest.fixture
def browser_ready() -> Path:
    """The built application; skips when it is not built, or Chromium / Playwright is missing."""
    dist = webapp.webapp_dir()
    if not webapp.is_built(dist):
        pytest.skip(f"the web application is not built in {dist} (bash scripts/build_frontend.sh)")
    require_chromium()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()
    return dist


def _ingest(voxa: Any, study: SyntheticStudy) -> int:
    return sum(voxa.archive.ingest(dataset_to_bytes(ds), source="test").ok for ds in study.datasets())


_rendered = rendered
_wait_for_viewports = wait_for_viewports
_check_screenshot = check_screenshot


def _viewer_state(page: Any) -> dict[str, Any]:
    return page.evaluate("() => window.voxaViewer && window.voxaViewer.state()")  # type: ignore[no-any-return]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_webapp_end_to_end(voxa_factory: Any, browser_ready: Path) -> None:
    from playwright.sync_api import sync_playwright

    timings: dict[str, float] = {}
    checks: dict[str, Any] = {}
    t0 = time.monotonic()
    voxa = voxa_factory(http=True)
    demo = demo_studies(0, ct_slices=80)
    ct = demo[0]
    for study in demo:
        assert _ingest(voxa, study) == study.instance_count
    timings["ingest"] = time.monotonic() - t0
    base = voxa.base_url
    ct_family = ct.patient_name.split("^")[0]
    arabic = json.loads((LOCALES / "ar.json").read_text(encoding="utf-8"))

    page_errors: list[str] = []
    console_errors: list[str] = []
    http_errors: list[str] = []
    console: list[str] = []

    def problems() -> str:
        return f"page errors: {page_errors[:5]}; console errors: {console_errors[:10]}; failed requests: {http_errors[:10]}"

    def watch(page: Any) -> None:
        page.on("pageerror", lambda exc: page_errors.append(str(exc)))

        def on_console(msg: Any) -> None:
            console.append(f"{msg.type}: {msg.text}")
            if msg.type == "error":
                console_errors.append(msg.text)

        page.on("console", on_console)
        page.on("response", lambda r: r.status >= 400 and http_errors.append(f"{r.status} {r.request.method} {r.url}"))
        page.on("requestfailed", lambda r: http_errors.append(f"failed {r.method} {r.url}: {r.failure}"))

    def shot(page: Any, name: str, **kwargs: Any) -> Path:
        path = ARTIFACTS / f"{name}.png"
        page.screenshot(path=str(path), **kwargs)
        assert page.locator(".error-box").count() == 0, f"{name}: the page shows an error: " \
            f"{page.locator('.error-box').first.inner_text()}; {problems()}"
        checks[name] = _check_screenshot(path)
        return path

    def no_errors(step: str) -> None:
        assert not page_errors and not console_errors, f"after {step}: {problems()}"

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport=DESKTOP, locale="en-GB")
            context.set_default_timeout(60_000)
            page = context.new_page()
            watch(page)

            # 1. not signed in: the application sends the browser to the login page and back
            t = time.monotonic()
            page.goto(f"{base}/app/")
            page.wait_for_url(re.compile(r".*/login\?next=%2Fapp%2F$"))
            page.fill("#username", voxa.auth[0])
            page.fill("#password", voxa.auth[1])
            page.screenshot(path=str(ARTIFACTS / "01-login.png"))
            page.click("button[type=submit]")
            page.wait_for_url(re.compile(r".*/app/$"))
            page.locator(".study-row").first.wait_for()
            timings["login to study list"] = time.monotonic() - t

            # 2. the first-login tour, then the study list with every demo patient
            page.locator("#tour").wait_for()
            shot(page, "02-tour")
            page.click("#tour-skip")
            assert page.locator("#tour").count() == 0
            rows = page.locator(".study-row")
            assert rows.count() == len(demo), page.locator("#study-results").inner_text()
            for study in demo:
                assert study.patient_name.split("^")[0] in page.locator("#study-results").inner_text()
            shot(page, "03-study-list")
            no_errors("the study list")

            # 2b. a series attribute as a study filter: body part HEAD finds the MR brain only
            mr = demo[1]  # demo_studies: CT chest, MR brain, CR chest, XA
            page.fill("#f-body", "head")
            page.click("#search-button")
            page.wait_for_url(re.compile(r".*body=head.*"))
            page.wait_for_function("() => document.querySelectorAll('.study-row').length === 1")
            assert mr.patient_name.split("^")[0] in page.locator(".study-row").inner_text()
            page.fill("#f-body", "")

            # 3. search by patient name, sort by it
            t = time.monotonic()
            page.fill("#f-name", ct_family.lower())
            page.click("#search-button")
            page.wait_for_url(re.compile(rf".*name={ct_family.lower()}.*"))
            page.wait_for_function("() => document.querySelectorAll('.study-row').length === 1")
            assert ct_family in page.locator(".study-row").inner_text()
            page.click("th.col-name a.sort")
            page.wait_for_url(re.compile(r".*sort=name.*"))
            page.locator(".study-row").first.wait_for()
            assert page.locator(".chip", has_text=ct_family.lower()).count() >= 1  # a recent search
            timings["search"] = time.monotonic() - t
            shot(page, "04-search")

            # 4. the study page: series thumbnails, "open in OHIF"
            page.click(".study-row .study-link")
            page.wait_for_url(re.compile(rf".*/app/study/{re.escape(ct.study_instance_uid)}$"))
            page.locator("#series-grid img").first.wait_for()
            page.wait_for_function("() => [...document.querySelectorAll('#series-grid img')]"
                                   ".every(i => i.complete && i.naturalWidth > 0)")
            ohif_href = page.get_attribute("#open-ohif", "href")
            assert ohif_href == f"/ohif/viewer?StudyInstanceUIDs={ct.study_instance_uid}"
            ohif = page.request.get(base + ohif_href)  # the session cookie goes with it
            checks["ohif link"] = ohif.status
            assert ohif.status in (200, 503), f"open in OHIF: {ohif.status}"  # 503: OHIF not installed here
            shot(page, "05-study-page")
            no_errors("the study page")

            # 5. the viewer: the CT's first image
            t = time.monotonic()
            page.click("#open-viewer")
            page.wait_for_url(re.compile(r".*/app/viewer/.*"))
            page.locator("#viewer[data-first-image=true]").wait_for()
            stack = _wait_for_viewports(page, 1, 60, problems)
            timings["viewer first image"] = time.monotonic() - t
            state = _viewer_state(page)
            assert state["cells"][0]["total"] == 80 and state["cells"][0]["index"] == 0, state
            assert page.locator(".ov-edge.ov-left").inner_text() == "R"  # radiological convention
            assert page.locator(".ov-edge.ov-top").inner_text() == "A"
            shot(page, "06-viewer-ct")
            no_errors("opening the viewer")

            # 6. scroll: mouse wheel, then keys
            box = page.locator(".viewport-cell").first.bounding_box()
            assert box is not None
            cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            page.mouse.move(cx, cy)
            for _ in range(12):
                page.mouse.wheel(0, 120)
                page.wait_for_timeout(60)
            page.wait_for_function("() => window.voxaViewer.state().cells[0].index >= 8")
            before = _viewer_state(page)["cells"][0]["index"]
            page.keyboard.press("ArrowDown")
            page.keyboard.press("ArrowDown")
            page.wait_for_function(f"() => window.voxaViewer.state().cells[0].index === {before + 2}")
            scrolled = _viewer_state(page)["cells"][0]["index"]
            checks["scrolled to"] = scrolled

            # image actions: rotate, flip, invert, reset; cine; a 2x2 layout
            page.click("#action-rotate")
            page.click("#action-flip-h")
            page.click("#action-invert")
            page.wait_for_function("() => { const c = window.voxaViewer.state().cells[0];"
                                   " return [90, 270].includes(c.rotation) && c.flipHorizontal && c.invert; }")
            # rotated a quarter turn clockwise, then mirrored: the patient's right on top, anterior on the left
            assert [page.locator(f".ov-edge.ov-{e}").inner_text() for e in ("top", "left", "right", "bottom")] == \
                ["R", "A", "P", "L"]
            shot(page, "06b-viewer-rotated-flipped-inverted")
            page.click("#action-reset")
            page.wait_for_function("() => { const c = window.voxaViewer.state().cells[0];"
                                   " return !c.rotation && !c.flipHorizontal && !c.invert; }")
            at = _viewer_state(page)["cells"][0]["index"]
            page.fill("#cine-fps", "20")
            page.press("#cine-fps", "Enter")
            page.click("#cine-toggle")
            page.wait_for_function(f"() => window.voxaViewer.state().cells[0].index !== {at}", timeout=15_000)
            page.click("#cine-toggle")
            page.select_option("#layout-select", "2x2")
            layout = _wait_for_viewports(page, 4, 60, problems)
            assert len(layout["viewports"]) == 4, layout
            shot(page, "06c-viewer-2x2")
            page.select_option("#layout-select", "1x1")
            page.wait_for_function("() => window.voxaViewer.state().cells.length === 1")
            _wait_for_viewports(page, 1, 60, problems)
            page.mouse.move(cx, cy)
            for _ in range(12 - _viewer_state(page)["cells"][0]["index"]):
                page.keyboard.press("ArrowDown")
            page.wait_for_function("() => window.voxaViewer.state().cells[0].index === 12")
            page.keyboard.press("ArrowDown")
            page.keyboard.press("ArrowDown")
            page.wait_for_function("() => window.voxaViewer.state().cells[0].index === 14")
            scrolled = 14
            no_errors("image actions, cine and layouts")

            # 7. a window preset
            page.select_option("#wl-preset", "lung")
            page.wait_for_function("() => { const v = window.voxaViewer.state().cells[0].voi;"
                                   " return v && Math.round(v.lower) === -1350 && Math.round(v.upper) === 150; }")
            page.wait_for_timeout(500)
            assert "W 1,500 L -600" in page.locator(".ov-br").inner_text().replace("\u202f", ",")
            shot(page, "07-viewer-lung-window")

            # 8. a length measurement, stored on the server
            page.click("#tool-length")
            x1, y1, x2, y2 = cx - 150, cy - 40, cx + 150, cy + 60
            page.mouse.move(x1, y1)
            page.mouse.down()
            for i in range(1, 11):
                page.mouse.move(x1 + (x2 - x1) * i / 10, y1 + (y2 - y1) * i / 10)
            page.mouse.up()
            page.locator("#measurement-list .measurement").first.wait_for()
            stored = httpx.get(f"{base}/measurements/studies/{ct.study_instance_uid}", auth=voxa.auth, timeout=30).json()
            assert len(stored) == 1 and stored[0]["kind"] == "distance", stored
            length_mm = stored[0]["values"]["length"]["value"]
            length_id = stored[0]["id"]
            assert 50 < length_mm < 400, stored
            checks["length mm"] = length_mm
            # an ellipse ROI: the server computes its statistics in HU from the stored pixels
            page.click("#tool-ellipse")
            page.mouse.move(cx - 60, cy + 80)
            page.mouse.down()
            for i in range(1, 6):
                page.mouse.move(cx - 60 + 24 * i, cy + 80 + 10 * i)
            page.mouse.up()
            page.wait_for_function("() => document.querySelectorAll('#measurement-list .measurement').length === 2")
            stored = httpx.get(f"{base}/measurements/studies/{ct.study_instance_uid}", auth=voxa.auth, timeout=30).json()
            ellipse = next(m for m in stored if m["kind"] == "ellipse_roi")
            assert ellipse["values"]["mean"]["unit"] == "[hnsf'U]" and ellipse["values"]["area"]["value"] > 0, ellipse
            checks["ellipse"] = {k: round(v["value"], 1) for k, v in ellipse["values"].items()}
            page.wait_for_timeout(500)
            shot(page, "08-viewer-length-and-ellipse")
            # the user's measurements as a DICOM SR (TID 1500) in the study, through ingest
            page.click("#export-sr")
            page.locator(".toast", has_text="DICOM SR").wait_for()
            modalities = httpx.get(f"{base}/dicom-web/studies", params={"StudyInstanceUID": ct.study_instance_uid},
                                   headers={"Accept": "application/dicom+json"}, auth=voxa.auth, timeout=30).json()
            assert "SR" in modalities[0]["00080061"]["Value"], modalities
            no_errors("drawing measurements")

            # 9. reload: the length is drawn again, on its image
            t = time.monotonic()
            page.reload()
            page.locator("#viewer[data-first-image=true]").wait_for()
            page.locator("#measurement-list .measurement").first.wait_for()
            page.click(f"#measurement-list .measurement[data-id='{length_id}'] button.link-button")
            page.wait_for_function(f"() => window.voxaViewer.state().cells[0].index === {scrolled}")
            annotations = sorted(_viewer_state(page)["annotations"], key=lambda a: a["uid"])
            assert annotations == sorted([{"uid": f"voxa-measurement-{m['id']}",
                                           "tool": "Length" if m["kind"] == "distance" else "EllipticalROI"}
                                          for m in stored], key=lambda a: a["uid"]), annotations
            timings["reload with measurement"] = time.monotonic() - t
            page.wait_for_timeout(800)
            shot(page, "09-viewer-length-reloaded")

            # 10. MPR: three orthogonal views of the volume, with crosshairs and a slab MIP
            t = time.monotonic()
            page.click("#mode-mpr")
            page.locator("#viewer[data-volume-ready=true]").wait_for(timeout=180_000)
            timings["mpr volume ready"] = time.monotonic() - t
            mpr = _wait_for_viewports(page, 3, 120, problems)
            assert {v["type"] for v in mpr["viewports"]} == {"orthographic"}, mpr
            page.wait_for_timeout(1000)
            shot(page, "10-mpr")
            page.select_option("#slab-mode", "mip")
            page.fill("#slab-thickness", "20")
            page.press("#slab-thickness", "Enter")
            page.wait_for_timeout(1500)
            _wait_for_viewports(page, 3, 60, problems)
            shot(page, "11-mpr-mip-20mm")
            timings["mpr"] = time.monotonic() - t
            no_errors("MPR")

            # 11. 3D volume rendering (software WebGL here: a frame takes seconds)
            t = time.monotonic()
            page.click("#mode-3d")
            page.locator(".viewport-cell[data-rendered=true]").wait_for(timeout=240_000)
            vr = _wait_for_viewports(page, 1, 240, problems)
            assert vr["viewports"][0]["type"] == "volume3d", vr
            timings["3d first frame"] = time.monotonic() - t
            shot(page, "12-3d", timeout=240_000)
            no_errors("3D")

            # 12. help panel (keyboard shortcuts)
            page.click("#mode-stack")
            page.locator("#viewer[data-first-image=true]").wait_for()
            page.keyboard.press("?")
            page.locator("#help-panel").wait_for()
            shot(page, "13-help")
            page.click("#help-close")

            # 13. installable and offline: manifest, service worker, a study kept on the device
            manifest = page.request.get(f"{base}/app/manifest.webmanifest").json()
            assert manifest["start_url"] == "/app/" and manifest["display"] == "standalone", manifest
            assert page.evaluate("() => navigator.serviceWorker.ready.then(r => Boolean(r.active))")
            dx = next(s for s in demo if s.modality == "DX")
            page.goto(f"{base}/app/study/{dx.study_instance_uid}")
            page.click("#keep-offline")
            page.wait_for_function("() => document.querySelector('#offline-status').dataset.i18n === 'offline.cached'",
                                   timeout=60_000)
            page.goto(f"{base}/app/viewer/{dx.study_instance_uid}")  # the viewer's code, through the worker
            page.locator("#viewer[data-first-image=true]").wait_for()
            no_errors("keeping a study offline")
            context.set_offline(True)
            offline_errors, offline_failures = len(console_errors), len(http_errors)
            page.goto(f"{base}/app/")
            page.locator("#offline-list").wait_for()
            assert dx.patient_name.split("^")[0] in page.locator("#offline-list").inner_text()
            shot(page, "13b-offline-list")
            page.click("#offline-list a")
            page.locator("#viewer[data-first-image=true]").wait_for()
            _wait_for_viewports(page, 1, 60, problems)
            shot(page, "13c-offline-viewer")
            context.set_offline(False)
            # offline, the browser reports the requests that could not go out (session, measurements)
            assert all("ERR_INTERNET_DISCONNECTED" in e for e in http_errors[offline_failures:]), http_errors
            del console_errors[offline_errors:]
            del http_errors[offline_failures:]

            # 14. Arabic: right to left, translated, at once
            page.goto(f"{base}/app/")
            page.locator(".study-row").first.wait_for()
            page.select_option("#language-select", "ar")
            page.wait_for_function("() => document.documentElement.dir === 'rtl' && document.documentElement.lang === 'ar'")
            assert page.locator("#nav-studies").inner_text() == arabic["nav.studies"]
            assert page.locator("#search-button").inner_text() == arabic["common.search"]
            header_box = page.locator("th.col-name").bounding_box()
            assert header_box is not None and header_box["x"] > DESKTOP["width"] / 2, "the table does not start on the right"
            shot(page, "14-arabic-study-list")
            page.goto(f"{base}/app/viewer/{ct.study_instance_uid}")
            page.locator("#viewer[data-first-image=true]").wait_for()
            assert page.locator("#tool-length").inner_text() == arabic["tool.length"]
            page.wait_for_timeout(800)
            shot(page, "15-arabic-viewer")
            page.select_option("#language-select", "en")
            page.wait_for_function("() => document.documentElement.dir === 'ltr'")
            no_errors("Arabic")
            state_file = context.storage_state()
            context.close()

            # 15. a phone: the list as cards, the viewer stacked, touch
            phone = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=2,
                                        storage_state=state_file)
            phone.set_default_timeout(60_000)
            page = phone.new_page()
            watch(page)
            page.goto(f"{base}/app/")
            page.locator(".study-row").first.wait_for()
            overflow = page.evaluate("() => document.scrollingElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, f"the phone layout scrolls sideways by {overflow} px"
            assert page.locator(".study-table thead").is_hidden()
            shot(page, "16-phone-study-list")
            page.goto(f"{base}/app/viewer/{ct.study_instance_uid}")
            page.locator("#viewer[data-first-image=true]").wait_for()
            _wait_for_viewports(page, 1, 60, problems)
            cell = page.locator(".viewport-cell").first.bounding_box()
            assert cell is not None and cell["width"] >= PHONE["width"] - 4, cell
            # touch: one finger windows, two fingers pinch to zoom, a double tap resets
            x, y = cell["x"] + cell["width"] / 2, cell["y"] + cell["height"] / 2
            cdp = phone.new_cdp_session(page)

            def touch(kind: str, points: list[tuple[float, float]]) -> None:
                cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [
                    {"x": px, "y": py, "id": i} for i, (px, py) in enumerate(points)]})

            voi = _viewer_state(page)["cells"][0]["voi"]
            touch("touchStart", [(x, y)])
            for i in range(1, 11):
                touch("touchMove", [(x + 8 * i, y + 5 * i)])
                page.wait_for_timeout(30)
            touch("touchEnd", [])
            page.wait_for_function(f"() => window.voxaViewer.state().cells[0].voi.upper !== {voi['upper']}")
            touch("touchStart", [(x - 40, y), (x + 40, y)])
            for i in range(1, 11):
                touch("touchMove", [(x - 40 - 6 * i, y), (x + 40 + 6 * i, y)])
                page.wait_for_timeout(30)
            touch("touchEnd", [])
            page.wait_for_function("() => window.voxaViewer.state().cells[0].zoom > 1.2")
            checks["phone pinch zoom"] = round(_viewer_state(page)["cells"][0]["zoom"], 2)
            page.wait_for_timeout(500)
            shot(page, "17-phone-viewer")
            page.keyboard.press("r")
            page.wait_for_function("() => window.voxaViewer.state().cells[0].rotation === 90")
            page.touchscreen.tap(x, y)
            page.wait_for_timeout(80)
            page.touchscreen.tap(x, y)
            page.wait_for_function("() => { const c = window.voxaViewer.state().cells[0]; return !c.rotation && c.zoom < 1.2; }")
            no_errors("the phone layout")
            phone.close()
        finally:
            (ARTIFACTS / "console.log").write_text("\n".join(console + ["", "failed requests:"] + http_errors))
            browser.close()

    timings["total"] = time.monotonic() - t0
    (ARTIFACTS / "timings.json").write_text(json.dumps(
        {"timings_s": {k: round(v, 1) for k, v in timings.items()}, "checks": checks,
         "viewports": {"stack": stack, "mpr": mpr, "3d": vr}}, indent=2))
    assert not page_errors and not console_errors, problems()
    unexpected = [e for e in http_errors if not e.startswith("503 GET") or "/ohif/" not in e]
    assert not unexpected, f"failed requests: {unexpected}"
