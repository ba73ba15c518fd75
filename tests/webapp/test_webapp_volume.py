"""MPR and 3D in headless Chromium against a real Voxa: the volume arrives in one request (the
series' WADO-RS Pixel Data resource, no request per frame) with the stored values in Hounsfield
units; dragging a crosshair's rotation handle turns the other two views oblique; the 3D clip box
cuts the volume where its face is dragged, and reset removes it. Any console error fails the
tests. Screenshots: ``test-artifacts/webapp/mpr-oblique.png``, ``3d-clip-box.png``."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
from support.browser import DESKTOP, PageWatch, check_screenshot, launch, require_chromium, wait_for_viewports

from voxa.testing.synthetic import dataset_to_bytes, small_ct
from voxa.web.routes import webapp

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "webapp"

# voxel (i, j, k) of the volume: k is the slice whose image id names the SOP instance
_VOXELS_JS = """
([series, sop, points]) => {
  const volume = window.cornerstone.cache.getVolume('cornerstoneStreamingImageVolume:' + series);
  const k = volume.imageIds.findIndex((id) => id.includes('/instances/' + sop + '/'));
  return points.map(([i, j]) => volume.voxelManager.getAtIJK(i, j, k));
}
"""

# page coordinates of the axial view's first rotation handle and of the crosshairs' centre
_HANDLE_JS = """
() => {
  const engine = window.cornerstone.getRenderingEngines()[0];
  const vp = engine.getViewport('mpr-axial');
  const [crosshairs] = window.cornerstoneTools.annotation.state.getAnnotations('Crosshairs', vp.element);
  const box = vp.element.getBoundingClientRect();
  const page = (world) => { const [x, y] = vp.worldToCanvas(world); return [box.left + x, box.top + y]; };
  return {handle: page(crosshairs.data.handles.rotationPoints[0][0]), centre: page(crosshairs.data.handles.toolCenter)};
}
"""


# the clip box of the 3D view: its planes on the volume's mapper, and its handles in page coordinates
_CLIP_JS = """
() => {
  const vp = window.cornerstone.getRenderingEngines()[0].getViewport('vr-3d');
  const tool = window.cornerstoneTools.ToolGroupManager.getToolGroup('voxa-3d').getToolInstance('VolumeCropping');
  const box = vp.element.getBoundingClientRect();
  const mapper = vp.getActors()[0].actor.getMapper();
  return {
    planes: mapper.getClippingPlanes().map((p) => ({origin: Array.from(p.getOrigin()), normal: Array.from(p.getNormal())})),
    faces: (tool.sphereStates || []).filter((s) => !s.isCorner).map((s) => {
      const [x, y] = vp.worldToCanvas(s.point);
      return {axis: s.axis, page: [box.left + x, box.top + y], world: Array.from(s.point)};
    }),
    centre: [box.left + box.width / 2, box.top + box.height / 2],
  };
}
"""


# each MPR view's blend mode (vtk: 1 maximum, 2 minimum, 3 average intensity) and slab thickness
_SLAB_JS = """
() => Object.fromEntries(window.cornerstone.getRenderingEngines()[0].getViewports().map((vp) =>
  [vp.id, {blend: vp.getBlendMode(), slab: Math.round(vp.getSlabThickness())}]))
"""


def _sign_in(page: Any, voxa: Any, path: str) -> None:
    page.add_init_script(f"localStorage.setItem('voxa.tourDone.{voxa.auth[0]}', '1')")
    page.goto(f"{voxa.base_url}{path}")
    page.wait_for_url(re.compile(r".*/login\?next="))
    page.fill("#username", voxa.auth[0])
    page.fill("#password", voxa.auth[1])
    page.click("button[type=submit]")


def _canvas_pixels(page: Any) -> str:
    return str(page.evaluate("() => document.querySelector('#viewer canvas').toDataURL()"))


def _normals(page: Any) -> dict[str, list[float]]:
    state = page.evaluate("() => window.voxaViewer.state()")
    return {c["id"]: c["viewPlaneNormal"] for c in state["cells"]}


def _oblique(normal: list[float]) -> bool:
    return max(abs(x) for x in normal) < 0.99


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_mpr_volume_in_one_request_and_oblique_rotation(voxa_factory: Any) -> None:
    if not webapp.is_built(webapp.webapp_dir()):
        pytest.skip("the web application is not built (bash scripts/build_frontend.sh)")
    require_chromium()
    from playwright.sync_api import sync_playwright

    voxa = voxa_factory(http=True)
    ct = small_ct(6, slices=40, rows=128, slice_thickness_mm=2.5)
    datasets = list(ct.datasets())
    for ds in datasets:
        assert voxa.archive.ingest(dataset_to_bytes(ds), source="test").ok
    series = datasets[0].SeriesInstanceUID
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            page = browser.new_context(viewport=DESKTOP, locale="en-GB").new_page()
            watch = PageWatch(page)
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            _sign_in(page, voxa, f"/app/viewer/{ct.study_instance_uid}?mode=mpr")
            page.locator("#viewer[data-volume-ready=true]").wait_for(timeout=120_000)
            wait_for_viewports(page, 3, 60, watch.problems)

            # one request for the volume's 40 frames, none frame by frame
            assert sum("/pixeldata" in u for u in requests) == 1, [u for u in requests if "/pixeldata" in u]
            assert not [u for u in requests if "/frames/" in u], [u for u in requests if "/frames/" in u][:5]
            # and the voxels are the stored values in HU (rescale applied)
            for ds in (datasets[0], datasets[17], datasets[-1]):
                points = [(0, 0), (64, 64), (100, 37)]
                got = page.evaluate(_VOXELS_JS, [series, ds.SOPInstanceUID, points])
                hu = ds.pixel_array.astype(float) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
                assert got == [hu[j, i] for i, j in points], (ds.InstanceNumber, got)

            # oblique MPR: drag the axial view's rotation handle 30 degrees around the centre
            before = _normals(page)
            assert not any(_oblique(n) for n in before.values()), before
            where = page.evaluate(_HANDLE_JS)
            (hx, hy), (cx, cy) = where["handle"], where["centre"]
            page.mouse.move(hx, hy, steps=4)  # hovering the line shows its handles
            page.wait_for_timeout(300)
            page.mouse.down()
            radius, start = math.hypot(hx - cx, hy - cy), math.atan2(hy - cy, hx - cx)
            for step in range(1, 11):
                a = start + math.radians(3 * step)
                page.mouse.move(cx + radius * math.cos(a), cy + radius * math.sin(a), steps=2)
            page.mouse.up()
            page.wait_for_timeout(800)
            after = _normals(page)
            assert after["mpr-axial"] == pytest.approx(before["mpr-axial"], abs=1e-6)  # the axial stays
            turned = [v for v in ("mpr-sagittal", "mpr-coronal") if _oblique(after[v])]
            assert turned, after
            for view in turned:
                cos = sum(a * b for a, b in zip(after[view], before[view], strict=True))
                assert 10 < math.degrees(math.acos(min(1.0, abs(cos)))) < 50, (view, before[view], after[view])
            wait_for_viewports(page, 3, 60, watch.problems)
            path = ARTIFACTS / "mpr-oblique.png"
            page.screenshot(path=str(path))
            check_screenshot(path)

            # 20 mm slabs: MIP brighter than the average, the average brighter than MinIP
            means = {}
            for mode, blend in (("mip", 1), ("avg", 3), ("minip", 2)):
                page.select_option("#slab-mode", mode)
                page.fill("#slab-thickness", "20")
                page.press("#slab-thickness", "Enter")
                page.wait_for_timeout(1200)
                got = page.evaluate(_SLAB_JS)
                assert all(v == {"blend": blend, "slab": 20} for v in got.values()), (mode, got)
                shown = wait_for_viewports(page, 3, 60, watch.problems)
                means[mode] = next(v["mean"] for v in shown["viewports"] if v["id"] == "mpr-axial")
            assert means["mip"] > means["avg"] > means["minip"], means
            watch.assert_no_errors("MPR: one request, oblique rotation, slabs")
        finally:
            browser.close()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_3d_clip_box(voxa_factory: Any) -> None:
    if not webapp.is_built(webapp.webapp_dir()):
        pytest.skip("the web application is not built (bash scripts/build_frontend.sh)")
    require_chromium()
    from playwright.sync_api import sync_playwright

    voxa = voxa_factory(http=True)
    ct = small_ct(7, slices=40, rows=128, slice_thickness_mm=2.5)
    for ds in ct.datasets():
        assert voxa.archive.ingest(dataset_to_bytes(ds), source="test").ok
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            page = browser.new_context(viewport=DESKTOP, locale="en-GB").new_page()
            watch = PageWatch(page)
            _sign_in(page, voxa, f"/app/viewer/{ct.study_instance_uid}?mode=3d")
            page.locator("#viewer[data-volume-ready=true]").wait_for(timeout=120_000)
            wait_for_viewports(page, 1, 60, watch.problems)
            assert page.evaluate(_CLIP_JS)["planes"] == []
            unclipped = _canvas_pixels(page)

            # the clip box: six planes, a handle on each face
            page.click("#tool-clip")
            page.wait_for_function("() => document.querySelector('#tool-clip').getAttribute('aria-pressed') === 'true'")
            clip = page.evaluate(_CLIP_JS)
            assert len(clip["planes"]) == 6 and len(clip["faces"]) == 6, clip
            # drag the face handle farthest from the centre of the view halfway to it
            cx, cy = clip["centre"]
            face = max(clip["faces"], key=lambda f: math.hypot(f["page"][0] - cx, f["page"][1] - cy))
            (fx, fy) = face["page"]
            page.mouse.move(fx, fy)
            page.mouse.down()
            page.mouse.move((fx + cx) / 2, (fy + cy) / 2, steps=8)
            page.mouse.up()
            page.wait_for_timeout(1500)
            moved = page.evaluate(_CLIP_JS)
            after = next(f for f in moved["faces"] if f["axis"] == face["axis"]
                         and math.dist(f["world"], face["world"]) > 1.0)
            assert math.dist(after["world"], face["world"]) > 5.0, (face, after)  # millimetres
            assert moved["planes"] != clip["planes"]
            wait_for_viewports(page, 1, 60, watch.problems)
            clipped = _canvas_pixels(page)
            assert clipped != unclipped
            path = ARTIFACTS / "3d-clip-box.png"
            page.screenshot(path=str(path))
            check_screenshot(path)

            # reset: the whole volume again, the rotate tool back
            page.click("#action-reset")
            page.wait_for_timeout(1000)
            assert page.evaluate(_CLIP_JS)["planes"] == []
            assert page.get_attribute("#tool-trackball", "aria-pressed") == "true"
            watch.assert_no_errors("3D clip box")
        finally:
            browser.close()
