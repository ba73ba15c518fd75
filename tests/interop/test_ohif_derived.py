"""The DICOM objects Voxa derives from a study, shown by the OHIF viewer in headless Chromium.

Acceptance point of the imaging work: every DICOM object Voxa produces is shown by OHIF. A real
Voxa (HTTP, in process) stores a small non-contrast chest CT with coronary calcifications, runs
the calcium tool on it (in the heart region: a DICOM SEG with one segment per coronary artery, a
TID 1500 Comprehensive 3D SR of the scores per artery, and a second TID 1500 SR with one outlined
region per lesion are written into the archive), and two lengths are drawn through the
measurements API and exported as a TID 1500 SR. Then, in OHIF, as a person would:

1. the study panel lists the SEG and the three SRs next to the CT (modality labels on the thumbnails);
2. the SEG: double-click its thumbnail, answer "Yes" to "Do you want to open this Segmentation?",
   the segmentation panel lists the SEG's segment labels, a click on "LAD calcium" jumps to a slice
   the segment covers and the viewport canvas holds pixels of the segment's colour, all of them in
   the heart (none on the patient table, which the calcium tool scored before it had a heart region);
3. the measurement SR: double-click its thumbnail; OHIF draws both lengths (its annotations carry
   the measurements' Tracking Unique Identifiers and the values in mm) on the image they were drawn on;
4. the calcium lesion SR (its own test): OHIF draws every lesion's outline with its artery and its
   values (Calcium score, Calcium Volume, peak Attenuation Coefficient) on the image where the
   lesion is largest;
5. the per-artery calcium SR (its own test): one annotation per calcified artery and one for the
   total, outlined, with the scores.

An uncaught page error fails a test, and so does any DICOMweb request of OHIF that Voxa answers
with a status >= 400 (URL, Accept header, status and body in the message). Screenshots, the
browser console, every DICOMweb request and a summary go to ``test-artifacts/ohif-derived/``.
Chromium, Playwright or the viewer missing: skipped, or failed under ``VOXA_REQUIRE_INTEROP=1``.
"""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import highdicom as hd
import httpx
import numpy as np
import pydicom
import pytest
from support import skip_or_fail
from support.browser import CHROMIUM, CHROMIUM_ARGS, require_chromium

from voxa.analysis import results as analysis_results
from voxa.analysis import tools
from voxa.testing.synthetic import ct_chest, dataset_to_bytes
from voxa.web.routes import ohif

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ohif-derived"
VIEWPORT: Any = {"width": 1400, "height": 900}  # a playwright ViewportSize
SEG_SERIES_NUMBER = 910  # voxa.analysis.dicom_outputs.CALCIUM_SEG_SERIES_NUMBER
CALCIUM_SR_SERIES_NUMBER = 911  # voxa.analysis.dicom_outputs.CALCIUM_SR_SERIES_NUMBER
LESION_SR_SERIES_NUMBER = 913  # voxa.analysis.dicom_outputs.CALCIUM_LESION_SR_SERIES_NUMBER
CALCIUM_SR_DESCRIPTION = "Coronary calcium report (Voxa)"
LESION_SR_DESCRIPTION = "Coronary calcium lesions (Voxa)"
MEASUREMENT_SR_SERIES_NUMBER = 901  # voxa.measurements.sr.SERIES_NUMBER
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"

# the viewport canvas "holds an image": grey-level standard deviation and share of non-black pixels
MIN_PIXEL_STD = 12.0
MIN_NONBLACK_SHARE = 0.05
# pixels of a segment's colour on the viewport canvas once OHIF draws the SEG over the CT (an LAD
# lesion of the test CT covers about 90 canvas pixels at 1400x900); the CT alone has none.
MIN_SEGMENT_PIXELS = 40
# the patient table lies behind (below, on screen) y = 135 mm (LPS): the body's back is above it
TABLE_Y_MM = 135.0


# --------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture
def browser_ready() -> Path:
    """The installed viewer's dist folder; skips (or fails) when Chromium, Playwright or the viewer is missing."""
    require_chromium()
    dist = ohif.ohif_dir()
    if ohif.installed_version(dist) is None:
        skip_or_fail(f"the OHIF viewer is not installed in {dist} (bash scripts/install_ohif.sh)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return dist


@dataclass
class DerivedStudy:
    """A CT stored in Voxa with the calcium tool's SEG and SR, and optionally a measurement SR."""

    voxa: Any
    study_uid: str
    ct_series_uid: str
    seg: pydicom.Dataset
    calcium_sr_sop_uid: str
    lesion_sr_sop_uid: str
    result: dict[str, Any]
    truths: tuple[Any, ...]
    measurements: list[dict[str, Any]] = field(default_factory=list)
    measurement_sr: dict[str, Any] | None = None

    @property
    def segment_labels(self) -> list[str]:
        return [str(item.SegmentLabel) for item in self.seg.SegmentSequence]

    def source_images_of_segment(self, number: int) -> set[str]:
        """SOP Instance UIDs of the CT images that segment ``number`` of the SEG covers."""
        found: set[str] = set()
        for frame in self.seg.PerFrameFunctionalGroupsSequence:
            if int(frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber) != number:
                continue
            for derivation in frame.DerivationImageSequence:
                found.update(str(src.ReferencedSOPInstanceUID) for src in derivation.SourceImageSequence)
        return found

    def segment_points_mm(self) -> Any:
        """Patient coordinates (LPS mm) of every pixel of every segment of the SEG, (N, 3)."""
        shared = self.seg.SharedFunctionalGroupsSequence[0]
        row_dir, col_dir = (np.asarray(shared.PlaneOrientationSequence[0].ImageOrientationPatient[i:i + 3],
                                       dtype=float) for i in (0, 3))
        spacing_row, spacing_col = (float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing)
        frames = self.seg.pixel_array.reshape(-1, int(self.seg.Rows), int(self.seg.Columns))
        points = []
        for frame, pixels in zip(self.seg.PerFrameFunctionalGroupsSequence, frames, strict=True):
            origin = np.asarray(frame.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
            r, c = np.nonzero(pixels)
            points.append(origin + np.outer(c * spacing_col, row_dir) + np.outer(r * spacing_row, col_dir))
        return np.vstack(points)


def _stored_dataset(voxa: Any, sop_instance_uid: str) -> pydicom.Dataset:
    locations = voxa.archive.index.locate(sop_uid=sop_instance_uid)
    assert len(locations) == 1, f"instance {sop_instance_uid} is stored {len(locations)} times"
    return pydicom.dcmread(io.BytesIO(voxa.archive.read_instance(locations[0].blob_key)))


def _derived_study(voxa_factory: Any, *, with_measurements: bool) -> DerivedStudy:
    """Voxa over HTTP with a calcium-scoring CT, the calcium tool's outputs, and (optionally) two
    lengths exported as a measurement SR."""
    voxa = voxa_factory(http=True, accept_unknown_peers=True)
    ct = ct_chest(0, slices=40, rows=256, slice_thickness_mm=3.0, contrast=False)
    datasets = list(ct.datasets())
    for ds in datasets:
        assert voxa.archive.ingest(dataset_to_bytes(ds), source="test").ok
    series_uid = str(datasets[0].SeriesInstanceUID)

    submitted = tools.submit_analysis(voxa.runtime, tool="calcium", study_instance_uid=ct.study_instance_uid,
                                      series=series_uid, params={}, created_by=voxa.auth[0])
    voxa.runtime.jobs.wait(submitted.job_id, timeout=120)
    done = analysis_results.get_result(voxa.archive.index, submitted.id)
    assert done is not None and done.status is analysis_results.ResultStatus.DONE, done
    outputs = {o["series_description"]: o for o in done.outputs}
    assert sorted(outputs) == sorted(["Coronary calcium (Voxa)", CALCIUM_SR_DESCRIPTION, LESION_SR_DESCRIPTION]), \
        f"the calcium tool wrote {done.outputs} (notes: {done.result.get('notes')})"
    derived = DerivedStudy(voxa=voxa, study_uid=ct.study_instance_uid, ct_series_uid=series_uid,
                           seg=_stored_dataset(voxa, outputs["Coronary calcium (Voxa)"]["sop_instance_uid"]),
                           calcium_sr_sop_uid=outputs[CALCIUM_SR_DESCRIPTION]["sop_instance_uid"],
                           lesion_sr_sop_uid=outputs[LESION_SR_DESCRIPTION]["sop_instance_uid"],
                           result=dict(done.result), truths=ct.calcifications)
    if not with_measurements:
        return derived

    # two lengths on a slice through the heart, as a viewer would send them (image coordinates)
    image = datasets[len(datasets) // 2]
    base, study = voxa.base_url, ct.study_instance_uid
    for label, points in (("Length A", [[100.0, 120.0], [160.0, 120.0]]), ("Length B", [[128.0, 80.0], [128.0, 150.0]])):
        r = httpx.post(f"{base}/measurements/studies/{study}", auth=voxa.auth, timeout=30,
                       json={"kind": "distance", "label": label, "sop_instance_uid": str(image.SOPInstanceUID),
                             "points": points})
        assert r.status_code == 201, f"POST /measurements/studies/{study} answered {r.status_code}: {r.text[:500]}"
        derived.measurements.append(r.json())
    r = httpx.post(f"{base}/measurements/studies/{study}/export-sr", auth=voxa.auth, timeout=30)
    assert r.status_code == 201, f"POST /measurements/studies/{study}/export-sr answered {r.status_code}: {r.text[:500]}"
    derived.measurement_sr = r.json()
    assert derived.measurement_sr["measurements"] == 2
    return derived


class Browser:
    """One Chromium page signed in to Voxa, with its console, page errors and DICOMweb requests recorded."""

    def __init__(self, page: Any, base: str):
        self.page = page
        self.base = base
        self.console: list[str] = []
        self.page_errors: list[str] = []
        self.dicomweb: list[str] = []
        self.failed: list[Any] = []  # responses with a status >= 400
        self.network_failures: list[str] = []
        page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))
        page.on("console", lambda msg: self.console.append(f"{msg.type}: {msg.text}"))
        page.on("response", self._on_response)
        page.on("requestfailed", lambda req: self.network_failures.append(f"{req.method} {req.url}: {req.failure}"))

    def _on_response(self, response: Any) -> None:
        if "/dicom-web" in response.url or "/wado" in response.url:
            accept = response.request.headers.get("accept", "")
            self.dicomweb.append(f"{response.status} {response.request.method} {response.url} [Accept: {accept}]")
        if response.status >= 400:
            self.failed.append(response)

    def failed_dicomweb(self) -> list[str]:
        """Each DICOMweb request Voxa answered with an error: method, URL, Accept header, status, body."""
        out = []
        for response in self.failed:
            if "/dicom-web" not in response.url and "/wado" not in response.url:
                continue
            try:
                body = response.text()[:500]
            except Exception as e:  # noqa: BLE001 - the body may be gone; say so
                body = f"<body not available: {e}>"
            out.append(f"{response.request.method} {response.url} [Accept: {response.request.headers.get('accept', '')}]"
                       f" -> {response.status}: {body}")
        return out

    def other_failures(self) -> list[str]:
        return [f"{r.status} {r.request.method} {r.url}" for r in self.failed
                if "/dicom-web" not in r.url and "/wado" not in r.url]

    def problems(self) -> str:
        errors = [c for c in self.console if c.startswith(("error", "warning")) or "Error Boundary" in c]
        return (f"page errors: {self.page_errors[:5]}; failed DICOMweb requests: {self.failed_dicomweb()[:5]}; "
                f"console errors/warnings: {errors[-15:]}")

    def shot(self, name: str) -> None:
        self.page.mouse.move(5, VIEWPORT["height"] - 5)  # no hover tooltip over the viewport
        self.page.wait_for_timeout(300)
        self.page.screenshot(path=str(ARTIFACTS / name))

    def sign_in(self, user: str, password: str) -> None:
        self.page.goto(f"{self.base}/ohif/")
        self.page.wait_for_url(re.compile(r".*/login\?next=%2Fohif%2F$"), timeout=30_000)
        self.page.fill("#username", user)
        self.page.fill("#password", password)
        self.page.click("button[type=submit]")
        self.page.wait_for_url(re.compile(r".*/ohif/.*"), timeout=30_000)

    def open_study(self, study_uid: str, series_numbers: tuple[int, ...], *,
                   min_nonblack: float = MIN_NONBLACK_SHARE) -> dict[int, dict[str, str]]:
        """Open the study in the viewer; wait until the CT is drawn and the study panel lists the
        derived series; their thumbnails' modality and description labels by series number."""
        self.page.goto(f"{self.base}{ohif.ohif_study_url(study_uid)}")
        self.wait_for_image(90, min_nonblack=min_nonblack)
        thumbnails: dict[int, dict[str, str]] = {}
        for number in series_numbers:
            thumb = self.page.locator(f'[data-series="{number}"]').first
            try:
                thumb.wait_for(timeout=30_000)
            except Exception:  # noqa: BLE001 - turned into a failure with the details
                self.shot("study-panel-missing-series.png")
                pytest.fail(f"series {number} is not in OHIF's study panel; {self.problems()}")
            thumbnails[number] = {
                "modality": thumb.locator('[data-cy="series-modality-label"]').inner_text().strip(),
                "description": thumb.locator('[data-cy="series-description-label"]').inner_text().strip(),
            }
        return thumbnails

    def viewport_stats(self, segment_index: int = 0) -> list[dict[str, Any]]:
        return self.page.evaluate(_VIEWPORT_JS, [segment_index, TABLE_Y_MM])  # type: ignore[no-any-return]

    def wait_for_image(self, timeout_s: float, *, min_nonblack: float = MIN_NONBLACK_SHARE) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        stats: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            stats = self.viewport_stats()
            if stats and stats[0]["std"] >= MIN_PIXEL_STD and stats[0]["nonblack"] >= min_nonblack:
                return stats[0]
            self.page.wait_for_timeout(500)
        self.shot("no-image.png")
        pytest.fail(f"after {timeout_s:.0f} s the viewport holds no image: {stats}; {self.problems()}")

    def poll(self, what: str, timeout_s: float, check: Any, screenshot: str) -> Any:
        """Call ``check()`` until it returns something true; fail with ``what`` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while time.monotonic() < deadline:
            last = check()
            if last:
                return last
            if self.page_errors:
                break
            self.page.wait_for_timeout(500)
        self.shot(screenshot)
        pytest.fail(f"{what} (after {timeout_s:.0f} s; last seen: {last!r}); {self.problems()}")

    def open_report(self, study_uid: str, series_number: int, groups: dict[str, dict[str, Any]], name: str, *,
                    min_nonblack: float = MIN_NONBLACK_SHARE) -> tuple[dict[str, str], list[dict[str, Any]]]:
        """Open the study, double-click the SR: its thumbnail's labels, and every group of
        ``groups`` loaded as a DICOMSRDisplay annotation on the image of its (first) region."""
        thumbnails = self.open_study(study_uid, (series_number,), min_nonblack=min_nonblack)
        self.page.dblclick(f'[data-series="{series_number}"]')

        def all_loaded() -> list[dict[str, Any]]:
            found = [a for a in self.page.evaluate(_ANNOTATIONS_JS) if a["uid"] in groups]
            return found if len(found) == len(groups) else []

        annotations = self.poll(f"OHIF does not load the {name}'s measurements", 60, all_loaded,
                                f"{name}-not-loaded.png")
        for a in annotations:
            assert a["tool"] == "DICOMSRDisplay", a
            assert groups[a["uid"]]["sop_instance_uid"] in a["imageId"], f"annotation on the wrong image: {a}"
        return thumbnails[series_number], annotations

    def values_drawn(self, marker: str) -> list[str]:
        """The viewport texts holding ``marker``; the pointer first crosses the image, as a
        reader's does: cornerstone draws the annotations of the image shown at its next render,
        which the movement brings about."""
        pane = self.page.locator('[data-cy="viewport-pane"]').first.bounding_box()
        assert pane is not None
        self.page.mouse.move(pane["x"] + pane["width"] * 0.1, pane["y"] + pane["height"] * 0.9)
        self.page.mouse.move(pane["x"] + pane["width"] * 0.12, pane["y"] + pane["height"] * 0.88)
        return [x for x in self.page.evaluate(_VIEWPORT_TEXT_JS) if marker in x]

    def first_values(self, marker: str, name: str, screenshot: str, *,
                     min_nonblack: float = MIN_NONBLACK_SHARE) -> tuple[dict[str, Any], list[str], str | None]:
        """The SR viewport's first image and the values drawn over it. OHIF 3.13 sometimes shows
        the SR's first image before it has told the viewport which measurements to draw (a race
        inside OHIF's SR viewport, about one time in three on two cores): the reader's way out is
        the viewport's arrows, which jump to a measurement and set them. When every measurement
        lies on one image the arrows do not move the image, and nothing is drawn again until the
        image is: the reader scrolls one image away and back. The image shown bare then is
        returned, so that the caller can record it."""
        drawn = self.wait_for_image(30, min_nonblack=min_nonblack)
        bare = None
        if not self.poll_quietly(10, lambda: self.values_drawn(marker)):
            bare = drawn["imageId"].split("/instances/")[-1]
            self.page.click('[data-cy="viewport-action-arrows-right"] svg')
            self.page.wait_for_timeout(800)
            self.page.click('[data-cy="viewport-action-arrows-left"] svg')
            self.page.wait_for_timeout(800)
            drawn = self.wait_for_image(30, min_nonblack=min_nonblack)
            if not self.poll_quietly(5, lambda: self.values_drawn(marker)):
                pane = self.page.locator('[data-cy="viewport-pane"]').first.bounding_box()
                assert pane is not None
                self.page.mouse.move(pane["x"] + pane["width"] / 2, pane["y"] + pane["height"] / 2)
                for wheel in (120, -120):
                    self.page.mouse.wheel(0, wheel)
                    self.page.wait_for_timeout(800)
                drawn = self.wait_for_image(30, min_nonblack=min_nonblack)
        text = self.poll(f"the {name}'s values are not drawn over the image {drawn['imageId']}", 30,
                         lambda: self.values_drawn(marker), screenshot)
        return drawn, text, bare

    def outlines(self) -> list[dict[str, Any]]:
        return [shape for shape in self.page.evaluate(_SVG_OUTLINES_JS) if shape["w"] > 0 or shape["h"] > 0]

    def poll_quietly(self, timeout_s: float, check: Any) -> Any:
        """Call ``check()`` until it returns something true or ``timeout_s`` passes; no failure."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = check()
            if found or time.monotonic() >= deadline or self.page_errors:
                return found
            self.page.wait_for_timeout(500)

    def assert_clean(self) -> None:
        assert not self.page_errors, f"uncaught errors in the page: {self.problems()}"
        failed = self.failed_dicomweb()
        assert not failed, "Voxa answered DICOMweb requests of OHIF with an error:\n" + "\n".join(failed)

    def save_logs(self, prefix: str) -> None:
        (ARTIFACTS / f"{prefix}console.log").write_text(
            "\n".join(self.console + ["", "page errors:"] + self.page_errors + ["", "failed DICOMweb requests:"]
                      + self.failed_dicomweb() + ["", "other failed requests:"] + self.other_failures()
                      + ["", "network failures:"] + self.network_failures) + "\n")
        (ARTIFACTS / f"{prefix}dicomweb-requests.log").write_text("\n".join(self.dicomweb) + "\n")


@contextmanager
def _browser(tmp_path: Path, base: str) -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_ARGS, viewport=VIEWPORT,
        )
        try:
            yield Browser(context.new_page(), base)
        finally:
            context.close()


# For each cornerstone viewport: the grey-level statistics of its canvas, how many pixels are
# coloured (the CT is grey; a SEG overlay is not), how many of those have the hue of segment
# ``segmentIndex`` of the first segmentation (its colour in that viewport), and the image shown.
_VIEWPORT_JS = """
([segmentIndex, tableYmm]) => {
  const cs = window.cornerstone, ct = window.cornerstoneTools;
  if (!cs || !cs.getRenderingEngines) return [];
  const out = [];
  for (const engine of cs.getRenderingEngines() || []) {
    for (const vp of engine.getViewports()) {
      const canvas = vp.getCanvas ? vp.getCanvas() : vp.canvas;
      const item = {id: vp.id, width: canvas ? canvas.width : 0, height: canvas ? canvas.height : 0, std: 0,
                    nonblack: 0, coloured: 0, segmentPixels: 0, segmentColor: null, colouredBelowTable: 0,
                    tableRow: null, imageId: vp.getCurrentImageId ? (vp.getCurrentImageId() || '') : ''};
      try {  // the canvas row of y = tableYmm (LPS) on the image shown: the table lies below it
        const focal = vp.getCamera().focalPoint;
        const ratio = canvas.width / (canvas.clientWidth || canvas.width);
        item.tableRow = Math.round(vp.worldToCanvas([focal[0], tableYmm, focal[2]])[1] * ratio);
      } catch (e) { item.tableRow = null; }
      out.push(item);
      if (!canvas || !canvas.width || !canvas.height) continue;
      let color = null;
      if (segmentIndex && ct && ct.segmentation) {
        try {
          const segs = ct.segmentation.state.getSegmentations();
          if (segs.length) color = Array.from(ct.segmentation.config.color.getSegmentIndexColor(
            vp.id, segs[0].segmentationId, segmentIndex) || []).slice(0, 3);
        } catch (e) { color = null; }
      }
      item.segmentColor = color;
      const w = canvas.width, h = canvas.height;
      const probe = document.createElement('canvas');
      probe.width = w; probe.height = h;
      const ctx = probe.getContext('2d', {willReadFrequently: true});
      ctx.drawImage(canvas, 0, 0);
      const d = ctx.getImageData(0, 0, w, h).data;
      let n = 0, s = 0, s2 = 0, nonblack = 0, coloured = 0, match = 0;
      let cref = null;
      if (color && color.length === 3) {
        const m = Math.min(...color);
        cref = [color[0] - m, color[1] - m, color[2] - m];
        if (!Math.hypot(...cref)) cref = null;
      }
      for (let i = 0; i < d.length; i += 4) {
        const r = d[i], g = d[i + 1], b = d[i + 2];
        const grey = (r + g + b) / 3;
        n++; s += grey; s2 += grey * grey; if (grey > 16) nonblack++;
        const mn = Math.min(r, g, b), mx = Math.max(r, g, b);
        if (mx - mn < 40) continue;
        coloured++;
        if (item.tableRow !== null && (i / 4) / w >= item.tableRow) item.colouredBelowTable++;
        if (cref) {
          const a = [r - mn, g - mn, b - mn];
          const cos = (a[0] * cref[0] + a[1] * cref[1] + a[2] * cref[2]) / (Math.hypot(...a) * Math.hypot(...cref));
          if (cos > 0.95) match++;
        }
      }
      item.std = Math.round(Math.sqrt(Math.max(0, s2 / n - (s / n) * (s / n))) * 10) / 10;
      item.nonblack = Math.round(nonblack / n * 1000) / 1000;
      item.coloured = coloured;
      item.segmentPixels = match;
    }
  }
  return out;
}
"""

# the segmentations cornerstone holds: id, label and segments (index, label)
_SEGMENTATIONS_JS = """
() => {
  const ct = window.cornerstoneTools;
  if (!ct || !ct.segmentation) return [];
  return ct.segmentation.state.getSegmentations().map(s => ({
    id: s.segmentationId, label: s.label,
    segments: Object.values(s.segments || {}).filter(x => x).map(x => ({index: x.segmentIndex, label: x.label})),
  }));
}
"""

# the annotations cornerstone holds: uid, tool, label, text lines (the SR display tool's labels)
_ANNOTATIONS_JS = """
() => {
  const ct = window.cornerstoneTools;
  if (!ct || !ct.annotation) return [];
  return (ct.annotation.state.getAllAnnotations() || []).map(a => ({
    uid: a.annotationUID, tool: a.metadata && a.metadata.toolName,
    imageId: (a.metadata && a.metadata.referencedImageId) || '',
    labels: ((a.data && a.data.labels) || []).map(l => `${l.label}: ${l.value}`),
  }));
}
"""

# the text drawn over the viewports (annotation text boxes are SVG)
_VIEWPORT_TEXT_JS = """
() => Array.from(document.querySelectorAll('[data-cy="viewport-pane"] svg text')).map(t => t.textContent.trim())
"""


# --------------------------------------------------------------------------- SEG and measurement SR


@pytest.mark.slow
@pytest.mark.interop
@pytest.mark.timeout(300)
def test_ohif_shows_calcium_seg_and_measurement_sr(voxa_factory: Any, browser_ready: Path, tmp_path: Path) -> None:
    timings: dict[str, float] = {}
    summary: dict[str, Any] = {}
    t0 = time.monotonic()
    study = _derived_study(voxa_factory, with_measurements=True)
    voxa = study.voxa
    timings["store CT, calcium tool, measurements"] = time.monotonic() - t0
    labels = study.segment_labels
    assert "LAD calcium" in labels, labels
    lad_segment = labels.index("LAD calcium") + 1
    lad_images = study.source_images_of_segment(lad_segment)
    assert lad_images, "the SEG's LAD segment covers no image: the test CT has no LAD calcium to show"
    # the SEG holds the painted calcifications and nothing else: no table, rib or spine
    points = study.segment_points_mm()
    centres = np.array([t.centre_mm for t in study.truths])
    radii = np.array([t.radius_mm for t in study.truths])
    off = (np.linalg.norm(points[:, None, :] - centres[None], axis=2) - radii[None]).min(axis=1)
    assert (off < 2.0).all(), f"SEG pixels away from every calcification: {np.round(points[off >= 2.0][:5], 1)}"
    summary["SEG pixels"] = len(points)

    # the archive answers QIDO-RS with the derived series, as OHIF will ask
    r = httpx.get(f"{voxa.base_url}/dicom-web/studies/{study.study_uid}/series", auth=voxa.auth, timeout=30,
                  headers={"Accept": "application/dicom+json"})
    assert r.status_code == 200, r.text[:300]
    numbers = {int(s["00200011"]["Value"][0]): s["00080060"]["Value"][0] for s in r.json()}
    derived_numbers = (SEG_SERIES_NUMBER, CALCIUM_SR_SERIES_NUMBER, LESION_SR_SERIES_NUMBER, MEASUREMENT_SR_SERIES_NUMBER)
    assert {n: numbers.get(n) for n in derived_numbers} == {SEG_SERIES_NUMBER: "SEG", CALCIUM_SR_SERIES_NUMBER: "SR",
                                                            LESION_SR_SERIES_NUMBER: "SR",
                                                            MEASUREMENT_SR_SERIES_NUMBER: "SR"}, numbers

    with _browser(tmp_path, voxa.base_url) as b:
        page = b.page
        try:
            b.sign_in(*voxa.auth)

            # 1. the study panel lists the SEG and both SRs next to the CT
            t = time.monotonic()
            thumbnails = b.open_study(study.study_uid, (SEG_SERIES_NUMBER, CALCIUM_SR_SERIES_NUMBER,
                                                        LESION_SR_SERIES_NUMBER, MEASUREMENT_SR_SERIES_NUMBER))
            b.shot("01-study-panel.png")
            summary["thumbnails"] = thumbnails
            assert thumbnails[SEG_SERIES_NUMBER] == {"modality": "SEG", "description": "Coronary calcium (Voxa)"}
            assert thumbnails[CALCIUM_SR_SERIES_NUMBER] == {"modality": "SR", "description": CALCIUM_SR_DESCRIPTION}
            assert thumbnails[LESION_SR_SERIES_NUMBER] == {"modality": "SR", "description": LESION_SR_DESCRIPTION}
            assert thumbnails[MEASUREMENT_SR_SERIES_NUMBER] == {"modality": "SR", "description": "Measurements"}
            before = b.viewport_stats(lad_segment)[0]
            assert before["coloured"] == 0, f"coloured pixels before any SEG is loaded: {before}"
            timings["viewer and study panel"] = time.monotonic() - t
            b.assert_clean()

            # 2. the SEG: load it as a user does, see its segments listed and drawn
            t = time.monotonic()
            page.dblclick(f'[data-series="{SEG_SERIES_NUMBER}"]')
            prompt = page.get_by_text("Do you want to open this Segmentation?")
            b.poll("OHIF neither offers to open the SEG nor loads it", 30,
                   lambda: prompt.is_visible() or page.evaluate(_SEGMENTATIONS_JS), "02-seg-prompt.png")
            b.shot("02-seg-prompt.png")
            if prompt.is_visible():
                page.get_by_role("button", name="Yes").click()
            segmentations = b.poll(
                "OHIF did not load the SEG's segments", 60,
                lambda: [s for s in page.evaluate(_SEGMENTATIONS_JS) if len(s["segments"]) == len(labels)],
                "03-seg-not-loaded.png")
            summary["segmentations"] = segmentations
            assert [s["label"] for s in segmentations[0]["segments"]] == labels, segmentations
            if not page.get_by_text("LAD calcium").first.is_visible():
                page.click('[data-cy="panelSegmentation-btn"]')
            for label in labels:
                b.poll(f"the segmentation panel does not list {label!r}", 15,
                       lambda label=label: page.get_by_text(label, exact=True).first.is_visible(), "03-seg-panel.png")
            b.shot("03-seg-panel.png")

            # a click on the LAD segment jumps to its centre; the segment has two lesions, so the
            # centre may lie on an image between them: from there the reader scrolls to an image the
            # segment covers, where its colour is drawn
            page.get_by_text("LAD calcium", exact=True).first.click()
            b.poll("OHIF does not jump to the LAD segment", 30,
                   lambda: b.viewport_stats(lad_segment)[0]["imageId"] != before["imageId"], "04-seg-lad.png")
            page.wait_for_timeout(1000)

            def lad_drawn() -> list[dict[str, Any]]:
                return [v for v in b.viewport_stats(lad_segment) if v["segmentPixels"] >= MIN_SEGMENT_PIXELS
                        and v["imageId"].split("/instances/")[-1].split("/")[0] in lad_images]

            pane = page.locator('[data-cy="viewport-pane"]').first.bounding_box()
            assert pane is not None
            page.mouse.move(pane["x"] + pane["width"] / 2, pane["y"] + pane["height"] / 2)
            scrolled = 0
            for wheel in [120] * 3 + [-120] * 6 + [120] * 40:  # down 3, up 6 (3 above the start), then down
                if lad_drawn():
                    break
                page.mouse.wheel(0, wheel)
                page.wait_for_timeout(400)
                scrolled += 1
            summary["scrolled to the LAD images"] = scrolled
            shown = b.poll("the LAD segment is not drawn over the CT", 30, lad_drawn, "04-seg-lad.png")[0]
            b.shot("04-seg-lad.png")
            summary["seg viewport"] = shown
            # no segment drawn on the table (the calcium tool once scored its edges as RCA/LCX lesions)
            assert shown["tableRow"] is not None and 0 < shown["tableRow"] < shown["height"], shown
            assert shown["colouredBelowTable"] == 0, f"segment colour on the table: {shown}"
            shown_sop = shown["imageId"].split("/instances/")[-1].split("/")[0]
            assert shown_sop in lad_images, (f"OHIF shows image {shown_sop} for the LAD segment, which covers "
                                             f"{sorted(lad_images)}")
            assert shown["std"] >= MIN_PIXEL_STD, f"the CT under the SEG is not drawn: {shown}"
            timings["SEG"] = time.monotonic() - t
            b.assert_clean()

            # 3. the measurement SR, in a fresh viewer (as a reader opening the study again)
            t = time.monotonic()
            b.open_study(study.study_uid, (MEASUREMENT_SR_SERIES_NUMBER,))
            page.dblclick(f'[data-series="{MEASUREMENT_SR_SERIES_NUMBER}"]')
            expected = {m["tracking_uid"]: f"{m['values']['length']['value']:.2f} mm" for m in study.measurements}
            measured_sop = study.measurements[0]["sop_instance_uid"]

            def sr_drawn() -> list[dict[str, Any]]:
                found = [a for a in page.evaluate(_ANNOTATIONS_JS) if a["uid"] in expected]
                return found if len(found) == len(expected) else []

            annotations = b.poll("OHIF does not draw the measurement SR's lengths", 60, sr_drawn, "05-measurement-sr.png")
            summary["measurement SR annotations"] = annotations
            for a in annotations:
                assert f"Length: {expected[a['uid']]}" in a["labels"], (a, expected)
                assert measured_sop in a["imageId"], f"annotation on the wrong image: {a}"
            # the SR viewport shows the CT's first image until it has jumped to the measured one
            b.poll("OHIF's SR viewport does not show the measured image", 30,
                   lambda: measured_sop in b.viewport_stats()[0]["imageId"], "05-measurement-sr.png")
            drawn, text, bare = b.first_values("mm", "lengths", "05-measurement-sr.png")
            summary["measurement SR first shown bare"] = bare
            for value in expected.values():
                assert any(value in x for x in text), (value, text)
            assert measured_sop in drawn["imageId"], f"the SR viewport shows {drawn['imageId']}, not {measured_sop}"
            b.shot("05-measurement-sr.png")
            summary["measurement SR text"] = text
            # what the measurement panel makes of it (OHIF tracks only SRs it can rehydrate: recorded)
            page.click('[data-cy="trackedMeasurements-btn"]')
            page.wait_for_timeout(1500)
            b.shot("06-measurement-panel.png")
            panel = page.get_by_text(re.compile(r"^Measurements \(\d+\)$"))
            summary["measurement panel"] = panel.first.inner_text() if panel.count() else "not found"
            timings["measurement SR"] = time.monotonic() - t
            b.assert_clean()
        finally:
            b.save_logs("")
            timings["total"] = time.monotonic() - t0
            summary["timings_s"] = {k: round(v, 1) for k, v in timings.items()}
            summary["other failed requests"] = b.other_failures()
            (ARTIFACTS / "summary.json").write_text(json.dumps(summary, indent=2, default=str))


# --------------------------------------------------------------------------- the calcium lesion SR

# the outlines drawn over the viewport: the SVG polylines of the SR display tool (green), with
# their extent on screen
_SVG_OUTLINES_JS = """
() => Array.from(document.querySelectorAll('[data-cy="viewport-pane"] svg polyline')).map(el => {
  const box = el.getBBox();
  return {stroke: el.getAttribute('stroke'), points: (el.getAttribute('points') || '').trim().split(/\\s+/).length,
          x: Math.round(box.x), y: Math.round(box.y), w: Math.round(box.width), h: Math.round(box.height)};
})
"""


def _lesion_groups(sr: pydicom.Dataset) -> dict[str, dict[str, Any]]:
    """The lesion SR's groups by Tracking Unique Identifier: identifier, referenced image, outline."""
    report = hd.sr.srread(io.BytesIO(dataset_to_bytes(sr))).content
    assert isinstance(report, hd.sr.MeasurementReport)
    groups: dict[str, dict[str, Any]] = {}
    for group in report.get_planar_roi_measurement_groups():
        region = group.roi
        assert region is not None, "a lesion group without an image region"
        groups[str(group.tracking_uid)] = {
            "identifier": str(group.tracking_identifier),
            "sop_instance_uid": str(region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID),
            "outline": np.asarray(region.value, dtype=float),
            "site": str(group.finding_sites[0].value.meaning),
        }
    return groups


@pytest.mark.slow
@pytest.mark.interop
@pytest.mark.timeout(300)
def test_ohif_shows_calcium_lesion_sr(voxa_factory: Any, browser_ready: Path, tmp_path: Path) -> None:
    """OHIF draws each lesion of the lesion SR: its outline on the image where the lesion is
    largest, with the artery and the values as the annotation's text."""
    summary: dict[str, Any] = {}
    study = _derived_study(voxa_factory, with_measurements=False)
    lesions = {f"{lesion['artery']} lesion {lesion['label']}": lesion for lesion in study.result["lesions"]}
    groups = _lesion_groups(_stored_dataset(study.voxa, study.lesion_sr_sop_uid))
    assert sorted(g["identifier"] for g in groups.values()) == sorted(lesions), (groups, lesions)
    with _browser(tmp_path, study.voxa.base_url) as b:
        page = b.page
        try:
            b.sign_in(*study.voxa.auth)
            thumbnail, annotations = b.open_report(study.study_uid, LESION_SR_SERIES_NUMBER, groups, "lesion SR")
            assert thumbnail == {"modality": "SR", "description": LESION_SR_DESCRIPTION}
            summary["annotations"] = annotations
            for a in annotations:
                group = groups[a["uid"]]
                lesion = lesions[group["identifier"]]
                assert a["tool"] == "DICOMSRDisplay", a
                assert group["sop_instance_uid"] in a["imageId"], f"annotation on the wrong image: {a}"
                for want in (f"Calcium score: {lesion['agatston']:.2f} 1",
                             f"Calcium Volume: {lesion['volume_mm3']:.2f} mm3",
                             f"Attenuation Coefficient: {lesion['peak_hu']:.2f} [hnsf'U]"):
                    assert want in a["labels"], (want, a["labels"])
                assert any(group["site"] in label for label in a["labels"]), (group["site"], a["labels"])
            # the lesions one after the other (the viewport's arrows), the largest first: each
            # lesion's image, its outline in the SR colour and its values over it
            seen: dict[str, list[str]] = {}
            for step in range(len(groups)):
                shot = f"09-lesion-sr-{step + 1}.png"
                if step == 0:
                    drawn, text, bare = b.first_values("Calcium score", "lesion SR", shot)
                    if bare:
                        summary["first image shown bare, arrows used"] = bare
                else:
                    drawn = b.wait_for_image(30)
                    text = b.poll(f"the lesions' values are not drawn over the image {drawn['imageId']}", 30,
                                  lambda: b.values_drawn("Calcium score"), shot)
                outlines = b.outlines()
                on_image = [uid for uid, g in groups.items() if g["sop_instance_uid"] in drawn["imageId"]]
                assert on_image, f"the SR viewport shows {drawn['imageId']}, none of the lesions' images"
                assert len(outlines) >= len(on_image), (outlines, on_image)
                for uid in on_image:
                    lesion = lesions[groups[uid]["identifier"]]
                    assert any(f"Calcium score: {lesion['agatston']:.2f}" in x for x in text), (lesion, text)
                    seen[groups[uid]["identifier"]] = text
                if step == 0:
                    first = lesions[groups[next(iter(groups))]["identifier"]]
                    assert any(f"{first['agatston']:.2f}" in x for x in text), "the largest lesion is not shown first"
                b.shot(shot)
                summary[f"step {step + 1}"] = {"image": drawn["imageId"].split("/instances/")[-1], "text": text,
                                               "outlines": outlines}
                page.click('[data-cy="viewport-action-arrows-right"] svg')
                page.wait_for_timeout(800)
            assert sorted(seen) == sorted(lesions), f"lesions shown: {sorted(seen)}, in the SR: {sorted(lesions)}"
            b.assert_clean()
        finally:
            b.save_logs("lesion-sr-")
            (ARTIFACTS / "lesion-sr-summary.json").write_text(json.dumps(summary, indent=2, default=str))


# --------------------------------------------------------------------------- the calcium SR


def _volumetric_groups(sr: pydicom.Dataset) -> dict[str, dict[str, Any]]:
    """The calcium SR's TID 1411 groups by Tracking Unique Identifier: identifier, the image of
    the first region (the one OHIF draws), the number of regions."""
    report = hd.sr.srread(io.BytesIO(dataset_to_bytes(sr))).content
    assert isinstance(report, hd.sr.MeasurementReport)
    groups: dict[str, dict[str, Any]] = {}
    for group in report.get_volumetric_roi_measurement_groups():
        regions = group.roi
        assert isinstance(regions, list) and regions, "a group without image regions"
        groups[str(group.tracking_uid)] = {
            "identifier": str(group.tracking_identifier),
            "sop_instance_uid": str(regions[0].ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID),
            "regions": len(regions),
        }
    return groups


@pytest.mark.slow
@pytest.mark.interop
@pytest.mark.timeout(300)
def test_ohif_shows_calcium_sr(voxa_factory: Any, browser_ready: Path, tmp_path: Path) -> None:
    """OHIF draws the per-artery calcium report: one annotation per calcified artery and one for
    the total, each outlined where that calcium is largest, with the scores as its text. (Its
    groups are TID 1411 volumes given by outlines on the CT images: a report whose groups carry
    no image coordinates cannot be displayed by OHIF 3.13, OHIF/Viewers#3390.)"""
    summary: dict[str, Any] = {}
    study = _derived_study(voxa_factory, with_measurements=False)
    groups = _volumetric_groups(_stored_dataset(study.voxa, study.calcium_sr_sop_uid))
    per_artery = study.result["per_artery"]
    calcified = {f"{name} calcium" for name, v in per_artery.items() if v["lesion_count"]}
    assert {g["identifier"] for g in groups.values()} == {*calcified, "Total coronary calcium"}, groups
    wanted = {name: f"Calcium score: {v['agatston']:.2f} 1" for name, v in per_artery.items() if v["lesion_count"]}
    with _browser(tmp_path, study.voxa.base_url) as b:
        try:
            b.sign_in(*study.voxa.auth)
            thumbnail, annotations = b.open_report(study.study_uid, CALCIUM_SR_SERIES_NUMBER, groups, "calcium SR")
            assert thumbnail == {"modality": "SR", "description": CALCIUM_SR_DESCRIPTION}
            summary["annotations"] = annotations
            for a in annotations:
                group = groups[a["uid"]]
                assert a["tool"] == "DICOMSRDisplay", a
                assert group["sop_instance_uid"] in a["imageId"], f"annotation on the wrong image: {a}"
                name = group["identifier"].removesuffix(" calcium")
                if name in wanted:
                    assert wanted[name] in a["labels"], (wanted[name], a["labels"])
                else:  # the total
                    total = f"Calcium score: {study.result['agatston_total']:.2f} 1"
                    assert total in a["labels"], (total, a["labels"])
            _, text, bare = b.first_values("Calcium score", "calcium SR", "07-calcium-sr.png")
            if bare:
                summary["first image shown bare, arrows used"] = bare
            outlines = b.outlines()
            assert outlines, "no outline drawn"
            summary["text"], summary["outlines"] = text, outlines
            b.shot("07-calcium-sr.png")
            b.assert_clean()
        finally:
            b.save_logs("calcium-sr-")
            (ARTIFACTS / "calcium-sr-summary.json").write_text(json.dumps(summary, indent=2, default=str))


# --------------------------------------------------------------------------- cardiac and vessel reports


def _run_tool(voxa: Any, tool: str, study_uid: str, series_uid: str, params: dict[str, Any]) -> dict[str, Any]:
    """Run an analysis tool on a stored series; its outputs by series description."""
    submitted = tools.submit_analysis(voxa.runtime, tool=tool, study_instance_uid=study_uid, series=series_uid,
                                      params=params, created_by=voxa.auth[0])
    voxa.runtime.jobs.wait(submitted.job_id, timeout=120)
    done = analysis_results.get_result(voxa.archive.index, submitted.id)
    assert done is not None and done.status is analysis_results.ResultStatus.DONE, done
    return {o["series_description"]: o for o in done.outputs}


def _show_report(b: Browser, study_uid: str, series_number: int, groups: dict[str, dict[str, Any]],
                 marker: str, name: str, *, min_nonblack: float = MIN_NONBLACK_SHARE) -> dict[str, Any]:
    """Open the study in OHIF, double-click the SR: every group loaded as an annotation on the
    image of its first region, and the values of the one shown drawn over the image."""
    _, annotations = b.open_report(study_uid, series_number, groups, name, min_nonblack=min_nonblack)
    drawn, text, _ = b.first_values(marker, name, f"10-{name}.png", min_nonblack=min_nonblack)
    assert b.outlines(), f"no outline of the {name} drawn"
    b.shot(f"10-{name}.png")
    return {"annotations": len(annotations), "text": text, "image": drawn["imageId"].split("/instances/")[-1]}


def _show_seg(b: Browser, series_number: int, labels: list[str], name: str) -> dict[str, Any]:
    """In the open study, double-click the SEG (answering OHIF's prompt): its segments listed and,
    after a click on the first, its colour drawn over the image."""
    page = b.page
    page.dblclick(f'[data-series="{series_number}"]')
    prompt = page.get_by_text("Do you want to open this Segmentation?")
    b.poll(f"OHIF neither offers to open the {name} nor loads it", 30,
           lambda: prompt.is_visible() or page.evaluate(_SEGMENTATIONS_JS), f"11-{name}-prompt.png")
    if prompt.is_visible():
        page.get_by_role("button", name="Yes").click()
    segmentations = b.poll(f"OHIF did not load the {name}'s segments", 60,
                           lambda: [s for s in page.evaluate(_SEGMENTATIONS_JS) if len(s["segments"]) == len(labels)],
                           f"11-{name}-not-loaded.png")
    assert [s["label"] for s in segmentations[0]["segments"]] == labels, segmentations
    if not page.get_by_text(labels[0], exact=True).first.is_visible():
        page.click('[data-cy="panelSegmentation-btn"]')
    page.get_by_text(labels[0], exact=True).first.click()
    shown = b.poll(f"the {name}'s first segment is not drawn over the image", 30,
                   lambda: [v for v in b.viewport_stats(0) if v["coloured"] >= MIN_SEGMENT_PIXELS],
                   f"11-{name}.png")[0]
    b.shot(f"11-{name}.png")
    return {"segments": [s["label"] for s in segmentations[0]["segments"]], "coloured": shown["coloured"]}


@pytest.mark.slow
@pytest.mark.interop
@pytest.mark.timeout(400)
def test_ohif_shows_cardiac_and_vessel_reports(voxa_factory: Any, browser_ready: Path, tmp_path: Path) -> None:
    """The cardiac tool's SEG and SR (chambers, myocardium, AHA segments) and the vessels tool's
    SEG and SR (lumen, stenosis), each on its own phantom study: OHIF loads every group of the
    reports and draws the values, and draws the SEGs' segments."""
    from analysis.phantom_series import ingest_series, volume_series

    from voxa.testing.heart_phantom import beating_heart_phantom
    from voxa.testing.vessel_phantom import StenosisSpec, StraightTube, vessel_phantom

    voxa = voxa_factory(http=True, accept_unknown_peers=True)
    summary: dict[str, Any] = {}
    heart_study, heart_series = "2.25.4701", "2.25.4702"
    heart = beating_heart_phantom(phases_percent=(0, 40), spacing_mm=(2.0, 2.0, 2.0))
    datasets = []
    for pct, volume in heart.phases.items():
        datasets += volume_series(volume, study_uid=heart_study, series_uid=heart_series,
                                  uid_prefix=f"{heart_series}.{int(pct) + 1}", NominalPercentageOfCardiacPhase=float(pct),
                                  PatientSex="M", patient_id="OHIF-HEART")
    ingest_series(voxa.archive, datasets)
    cardiac = _run_tool(voxa, "cardiac", heart_study, heart_series, {"heart_rate_bpm": 60})
    assert set(cardiac) == {"Cardiac chambers at end-diastole (Voxa)", "Cardiac function report (Voxa)"}, cardiac
    cardiac_groups = _volumetric_groups(_stored_dataset(voxa, cardiac["Cardiac function report (Voxa)"]["sop_instance_uid"]))

    vessel_study, vessel_series = "2.25.4711", "2.25.4712"
    tube = StraightTube(start_mm=(4.0, 16.0, 16.0), direction=(1.0, 0.0, 0.0), length_mm=24.0, radius_mm=2.5,
                        hu=400.0, stenoses=(StenosisSpec(centre_mm=12.0, length_mm=6.0, percent=50.0),))
    phantom = vessel_phantom([tube], shape=(40, 64, 64), spacing_mm=(0.8, 0.5, 0.5), origin_mm=(-16.0, -16.0, 0.0))
    ingest_series(voxa.archive, volume_series(phantom.volume, study_uid=vessel_study, series_uid=vessel_series,
                                              patient_id="OHIF-VESSEL"))
    start, end = phantom.frame_to_patient(tube.point_at(1.0)), phantom.frame_to_patient(tube.point_at(23.0))
    vessels = _run_tool(voxa, "vessels", vessel_study, vessel_series,
                        {"start": [float(x) for x in start], "end": [float(x) for x in end]})
    assert set(vessels) == {"Vessel lumen (Voxa)", "Vessel analysis report (Voxa)"}, vessels
    vessel_sr = _stored_dataset(voxa, vessels["Vessel analysis report (Voxa)"]["sop_instance_uid"])
    report = hd.sr.srread(io.BytesIO(dataset_to_bytes(vessel_sr))).content
    vessel_groups = _volumetric_groups(vessel_sr)
    for group in report.get_planar_roi_measurement_groups():  # the stenosis, outlined where it is narrowest
        vessel_groups[str(group.tracking_uid)] = {
            "identifier": str(group.tracking_identifier),
            "sop_instance_uid": str(group.roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID)}
    assert {g["identifier"] for g in vessel_groups.values()} == {"Vessel", "Stenosis"}

    with _browser(tmp_path, voxa.base_url) as b:
        try:
            b.sign_in(*voxa.auth)
            summary["cardiac"] = _show_report(b, heart_study, 921, cardiac_groups, "ml", "cardiac-sr")
            assert any("Left ventricular ejection fraction" in t or "ml" in t for t in summary["cardiac"]["text"])
            summary["cardiac seg"] = _show_seg(b, 920, ["LV blood pool", "RV blood pool", "LA", "RA", "LV myocardium"],
                                               "cardiac-seg")
            summary["vessels"] = _show_report(b, vessel_study, 915, vessel_groups, "mm", "vessel-sr",
                                              min_nonblack=0.005)  # a thin tube on a dark background
            summary["vessel seg"] = _show_seg(b, 912, ["Vessel lumen"], "vessel-seg")
            b.assert_clean()
        finally:
            b.save_logs("cardiac-vessel-")
            (ARTIFACTS / "cardiac-vessel-summary.json").write_text(json.dumps(summary, indent=2, default=str))
