"""Headless Chromium for the browser tests (Voxa's web application, the bundled OHIF viewer).

One place for what every browser test needs: Debian's Chromium and its flags (software WebGL),
the skip-or-fail check for Chromium and Playwright, the Cornerstone viewport pixel probe that
judges whether a canvas holds an image, and the screenshot check (not blank).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from . import skip_or_fail

CHROMIUM = Path("/usr/bin/chromium")
# software WebGL (SwiftShader): the test machines have no GPU
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
    "--disable-dev-shm-usage",
]  # fmt: skip
DESKTOP = {"width": 1400, "height": 900}
PHONE = {"width": 390, "height": 844}

# a viewport canvas "holds an image" when its pixels vary this much (grey levels 0-255) and this
# share of them is not black
MIN_PIXEL_STD = 12.0
MIN_NONBLACK_SHARE = 0.02

# Each Cornerstone viewport's canvas summarised (size, mean, standard deviation, share of
# non-black pixels), and the load state of each cached volume. Works in any page that exposes
# Cornerstone as window.cornerstone (Voxa's application and OHIF both do).
VIEWPORT_PIXELS_JS = """
() => {
  const cs = window.cornerstone;
  if (!cs || !cs.getRenderingEngines) return {viewports: [], volumes: []};
  const viewports = [];
  for (const engine of cs.getRenderingEngines() || []) {
    for (const vp of engine.getViewports()) {
      const canvas = vp.getCanvas ? vp.getCanvas() : vp.canvas;
      const item = {id: vp.id, type: String(vp.type), width: canvas ? canvas.width : 0,
                    height: canvas ? canvas.height : 0, mean: 0, std: 0, nonblack: 0};
      viewports.push(item);
      if (!canvas || !canvas.width || !canvas.height) continue;
      const w = Math.min(canvas.width, 400), h = Math.min(canvas.height, 400);
      const probe = document.createElement('canvas');
      probe.width = w; probe.height = h;
      const ctx = probe.getContext('2d', {willReadFrequently: true});
      ctx.drawImage(canvas, 0, 0, w, h);
      const d = ctx.getImageData(0, 0, w, h).data;
      let n = 0, s = 0, s2 = 0, nonblack = 0;
      for (let i = 0; i < d.length; i += 4) {
        const g = (d[i] + d[i + 1] + d[i + 2]) / 3;
        n++; s += g; s2 += g * g; if (g > 16) nonblack++;
      }
      item.mean = Math.round(s / n * 10) / 10;
      item.std = Math.round(Math.sqrt(Math.max(0, s2 / n - (s / n) * (s / n))) * 10) / 10;
      item.nonblack = Math.round(nonblack / n * 1000) / 1000;
    }
  }
  const volumes = ((cs.cache && cs.cache.getVolumes && cs.cache.getVolumes()) || []).map(v => ({
    id: v.volumeId, loaded: Boolean(v.loadStatus && v.loadStatus.loaded),
    frames: v.framesProcessed === undefined ? null : v.framesProcessed,
    total: v.totalNumFrames === undefined ? null : v.totalNumFrames,
  }));
  return {viewports, volumes};
}
"""


def require_chromium() -> None:
    """Skip the test (or fail it under ``VOXA_REQUIRE_INTEROP=1``) without Chromium or Playwright."""
    if not CHROMIUM.exists():
        skip_or_fail(f"{CHROMIUM} is not installed (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        skip_or_fail("the playwright Python package is not installed (pip install -e '.[test]')")


def launch(playwright: Any) -> Any:
    """Debian's Chromium, headless, with software WebGL."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)


def rendered(stats: dict[str, Any], *, min_std: float = MIN_PIXEL_STD,
             min_nonblack: float = MIN_NONBLACK_SHARE) -> list[dict[str, Any]]:
    """The viewports of a ``VIEWPORT_PIXELS_JS`` result that hold an image."""
    return [v for v in stats["viewports"] if v["std"] >= min_std and v["nonblack"] >= min_nonblack]


def wait_for_viewports(page: Any, count: int, timeout_s: float, problems: Callable[[], str], *,
                       volumes_loaded: bool = False) -> dict[str, Any]:
    """Poll until ``count`` viewport canvases hold an image (and, with ``volumes_loaded``, every
    volume has all its frames, then one more frame is drawn); fail naming what was seen."""
    deadline = time.monotonic() + timeout_s
    stats: dict[str, Any] = {"viewports": [], "volumes": []}
    while time.monotonic() < deadline:
        stats = page.evaluate(VIEWPORT_PIXELS_JS)
        ready = len(rendered(stats)) >= count
        if volumes_loaded:
            ready = ready and bool(stats["volumes"]) and all(v["loaded"] for v in stats["volumes"])
        if ready:
            if not volumes_loaded:
                return stats
            page.wait_for_timeout(1000)  # the last slices are drawn after the volume is complete
            return page.evaluate(VIEWPORT_PIXELS_JS)  # type: ignore[no-any-return]
        page.wait_for_timeout(500)
    pytest.fail(f"after {timeout_s:.0f} s, {len(rendered(stats))} of {count} viewports hold an image "
                f"(volumes: {stats['volumes']}); viewports: {json.dumps(stats['viewports'])}; {problems()}")


def check_screenshot(path: Path, *, min_std: float = 8.0) -> dict[str, float]:
    """The screenshot is not blank: its grey levels vary, and no one level covers almost all of it."""
    from PIL import Image, ImageStat

    with Image.open(path) as im:
        grey = im.convert("L")
        stat = ImageStat.Stat(grey)
        histogram = grey.histogram()
    top_share = max(histogram) / sum(histogram)
    assert stat.stddev[0] >= min_std and top_share < 0.97, f"{path.name} looks blank: std {stat.stddev[0]:.1f}, " \
                                                             f"one grey level covers {top_share:.0%}"
    return {"std": round(stat.stddev[0], 1), "top_share": round(top_share, 3)}


class PageWatch:
    """Collects a page's uncaught errors, console errors and failed requests, for assertions and
    failure messages."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.page_errors: list[str] = []
        self.console_errors: list[str] = []
        self.http_errors: list[str] = []
        self.console: list[str] = []
        page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))
        page.on("console", self._on_console)
        page.on("response", self._on_response)
        page.on("requestfailed", lambda r: self.http_errors.append(f"failed {r.method} {r.url}: {r.failure}"))

    def _on_response(self, response: Any) -> None:
        if response.status >= 400:
            self.http_errors.append(f"{response.status} {response.request.method} {response.url}")

    def _on_console(self, msg: Any) -> None:
        self.console.append(f"{msg.type}: {msg.text}")
        if msg.type == "error":
            self.console_errors.append(msg.text)

    def problems(self) -> str:
        return (f"page errors: {self.page_errors[:5]}; console errors: {self.console_errors[:10]}; "
                f"failed requests: {self.http_errors[:10]}")

    def assert_no_errors(self, step: str) -> None:
        """No uncaught error and no console error so far (the web application's acceptance rule)."""
        assert not self.page_errors and not self.console_errors, f"after {step}: {self.problems()}"
