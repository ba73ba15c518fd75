"""The viewer's freehand ROI and text annotation, in headless Chromium against a real Voxa: drawn
with the mouse, stored on the server (the outline's area and HU statistics computed there, the
text as the label), drawn again after a reload, and exported in the DICOM SR (the freehand
outline as a closed POLYLINE with its values). Any console error fails the test. Screenshot:
``test-artifacts/webapp/tools-freehand-text.png``."""

from __future__ import annotations

import io
import math
import re
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from support.browser import DESKTOP, PageWatch, check_screenshot, launch, require_chromium, wait_for_viewports

from voxa.testing.synthetic import dataset_to_bytes, small_ct
from voxa.web.routes import webapp

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "webapp"

_ANNOTATIONS_JS = """
() => (window.cornerstoneTools.annotation.state.getAllAnnotations() || []).map(a => ({
  uid: a.annotationUID, tool: a.metadata.toolName,
  points: a.data.contour ? a.data.contour.polyline.length : a.data.handles.points.length, label: a.data.label || ''}))
"""


def _sr_items(ds: pydicom.Dataset) -> list[pydicom.Dataset]:
    found: list[pydicom.Dataset] = []

    def walk(items: Any) -> None:
        for item in items:
            found.append(item)
            if "ContentSequence" in item:
                walk(item.ContentSequence)

    walk(ds.ContentSequence)
    return found


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_freehand_roi_and_text_saved_restored_and_exported(voxa_factory: Any) -> None:
    if not webapp.is_built(webapp.webapp_dir()):
        pytest.skip("the web application is not built (bash scripts/build_frontend.sh)")
    require_chromium()
    from playwright.sync_api import sync_playwright

    voxa = voxa_factory(http=True)
    ct = small_ct(4, slices=5, rows=256)
    for ds in ct.datasets():
        assert voxa.archive.ingest(dataset_to_bytes(ds), source="test").ok
    study = ct.study_instance_uid
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def stored() -> list[dict[str, Any]]:
        r = httpx.get(f"{voxa.base_url}/measurements/studies/{study}", auth=voxa.auth, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            page = browser.new_context(viewport=DESKTOP, locale="en-GB").new_page()
            page.on("dialog", lambda d: d.accept("Hypodense lesion"))
            watch = PageWatch(page)
            page.add_init_script(f"localStorage.setItem('voxa.tourDone.{voxa.auth[0]}', '1')")
            page.goto(f"{voxa.base_url}/app/viewer/{study}")
            page.wait_for_url(re.compile(r".*/login\?next="))
            page.fill("#username", voxa.auth[0])
            page.fill("#password", voxa.auth[1])
            page.click("button[type=submit]")
            page.locator("#viewer[data-first-image=true]").wait_for()
            wait_for_viewports(page, 1, 60, watch.problems)
            box = page.locator(".viewport-element").first.bounding_box()
            assert box is not None
            cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2

            # a freehand outline: a circle of 24 points drawn with the mouse
            page.click("#tool-freehand")
            r = min(box["width"], box["height"]) / 6
            page.mouse.move(cx + r, cy)
            page.mouse.down()
            for i in range(1, 25):
                a = 2 * math.pi * i / 24
                page.mouse.move(cx + r * math.cos(a), cy + r * math.sin(a), steps=2)
            page.mouse.up()
            page.wait_for_function("() => document.querySelectorAll('#measurement-list .measurement').length === 1")
            # a text at a point (the dialog answers "Hypodense lesion")
            page.click("#tool-text")
            page.mouse.click(cx - r, cy - r)
            page.wait_for_function("() => document.querySelectorAll('#measurement-list .measurement').length === 2")
            saved = {m["kind"]: m for m in stored()}
            assert set(saved) == {"freehand_roi", "text"}, saved
            freehand = saved["freehand_roi"]
            assert len(freehand["graphic"]["points"]) >= 12
            values = freehand["values"]
            assert values["area"]["value"] > 0 and {"mean", "sd", "min", "max"} <= set(values), values
            assert saved["text"]["label"] == "Hypodense lesion" and len(saved["text"]["graphic"]["points"]) == 1
            path = ARTIFACTS / "tools-freehand-text.png"
            page.screenshot(path=str(path))
            check_screenshot(path)

            # reload: both are drawn again, as Voxa's measurements
            page.reload()
            page.locator("#viewer[data-first-image=true]").wait_for()
            page.wait_for_function("() => window.cornerstoneTools.annotation.state.getAllAnnotations()"
                                   ".filter(a => a.annotationUID.startsWith('voxa-measurement-')).length === 2")
            drawn = {a["tool"]: a for a in page.evaluate(_ANNOTATIONS_JS)}
            assert drawn["PlanarFreehandROI"]["points"] == len(freehand["graphic"]["points"])
            assert drawn["Label"]["label"] == "Hypodense lesion"

            # the SR: the outline as a closed POLYLINE with the area
            page.click("#export-sr")
            page.wait_for_function("() => document.querySelector('#toasts') && "
                                   "/SR/.test(document.querySelector('#toasts').textContent)")
            watch.assert_no_errors("the freehand and text tools")
        finally:
            browser.close()
    r = httpx.get(f"{voxa.base_url}/dicom-web/studies/{study}", auth=voxa.auth, timeout=30,
                  headers={"Accept": 'multipart/related; type="application/dicom"'})
    assert r.status_code == 200
    srs = [ds for ds in (pydicom.dcmread(io.BytesIO(part)) for part in _parts(r)) if ds.Modality == "SR"]
    assert len(srs) == 1
    items = _sr_items(srs[0])
    polylines = [i for i in items if i.ValueType == "SCOORD" and i.GraphicType == "POLYLINE"]
    assert polylines and list(polylines[0].GraphicData[:2]) == list(polylines[0].GraphicData[-2:])  # closed
    assert any(i.ValueType == "NUM" and "Area" in str(i.ConceptNameCodeSequence[0].CodeMeaning) for i in items)


def _parts(r: httpx.Response) -> list[bytes]:
    boundary = re.search(r'boundary="?([^";]+)"?', r.headers["content-type"])
    assert boundary is not None
    out = []
    for chunk in r.content.split(b"--" + boundary.group(1).encode())[1:-1]:
        _, _, body = chunk.partition(b"\r\n\r\n")
        out.append(body[:-2] if body.endswith(b"\r\n") else body)
    return out
