#!/usr/bin/env python3
"""bench_browser.py - the web application in headless Chromium: time to first image and time until
the volume is ready for MPR, for the 300-slice demo CT over loopback.

Starts ``voxa serve --profile demo`` on free loopback ports with a fresh data folder (the demo CT:
300 slices of 512x512, uncompressed), or uses a running server (``--url``, ``--user``,
``--password``), signs in once, then for each of ``--repeat`` runs opens a fresh browser context
(empty HTTP cache, no service worker) and measures, from the page's navigation start
(``performance.now()`` in the page):

* ``first_image_ms``: ``/app/viewer/<CT>`` until Cornerstone has drawn the first image of the stack
  (metadata request, image loader start-up, first frame fetched, decoded and rendered);
* ``mpr_ready_ms``: ``/app/viewer/<CT>?mode=mpr`` until every slice of the volume is loaded (the
  three MPR views can then be scrolled and resliced freely);
* ``mpr_after_stack_ms``: in the stack viewer, from the click on MPR until the volume is loaded
  (the slices the stack already prefetched are reused);
* ``first_image_app_cached_ms``: as ``first_image_ms``, in the same browser after two more visits:
  the application's code comes from the HTTP cache and V8's code cache (a reading-room
  workstation); the study's metadata and frames are fetched again (DICOMweb answers carry no
  caching headers).

Targets (issue 6): first image under 1 s, volume ready under 3 s. Chromium is Debian's
``/usr/bin/chromium``; WebGL runs in software here, which matters for rendering, little for loading.
Prints one JSON object and writes it to ``--out``. Not a test: ``.venv/bin/python bench/bench_browser.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
    "--disable-dev-shm-usage",
]  # fmt: skip
DEMO_USER, DEMO_PASSWORD = "admin", "voxa-demo-password"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_demo_server(data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    http_port, dicom_port = _free_port(), _free_port()
    voxa = shutil.which("voxa", path=str(ROOT / ".venv" / "bin")) or shutil.which("voxa")
    if voxa is None:
        sys.exit("voxa is not installed (bash scripts/setup.sh)")
    log = open(data_dir.parent / "serve.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([voxa, "serve", "--profile", "demo", "--data-dir", str(data_dir), "--host", "127.0.0.1",
                             "--http-port", str(http_port), "--dicom-port", str(dicom_port), "--log-level", "warning"],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{http_port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # the demo studies are loaded before the HTTP port opens
        if proc.poll() is not None:
            sys.exit(f"voxa serve exited with {proc.returncode}; see {data_dir.parent / 'serve.log'}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.terminate()
    sys.exit("voxa serve did not answer /health within 300 s")


def _find_ct(url: str, auth: tuple[str, str]) -> tuple[str, int]:
    found = httpx.get(f"{url}/dicom-web/studies", params={"ModalitiesInStudy": "CT", "includefield": "00201208"},
                      auth=auth, headers={"Accept": "application/dicom+json"}, timeout=60).json()
    if not found:
        sys.exit("no CT study on the server")
    study = max(found, key=lambda s: int(s.get("00201208", {}).get("Value", [0])[0]))
    return study["0020000D"]["Value"][0], int(study.get("00201208", {}).get("Value", [0])[0])


def _summary(runs: list[float]) -> dict[str, Any]:
    return {"p50_ms": round(statistics.median(runs)), "min_ms": round(min(runs)), "max_ms": round(max(runs)),
            "runs_ms": [round(r) for r in runs]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running Voxa (default: start voxa serve --profile demo)")
    parser.add_argument("--user", default=DEMO_USER)
    parser.add_argument("--password", default=DEMO_PASSWORD)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--timeout-s", type=float, default=180)
    parser.add_argument("--out", type=Path, default=ROOT / "test-artifacts" / "bench" / "browser.json")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    if not (ROOT / "frontend" / "dist" / "index.html").is_file():
        sys.exit("the web application is not built (bash scripts/build_frontend.sh)")
    tmp = Path(tempfile.mkdtemp(prefix="voxa-bench-browser-"))
    proc = None
    try:
        t = time.monotonic()
        if args.url:
            url = args.url.rstrip("/")
        else:
            proc, url = _start_demo_server(tmp / "data")
        startup_s = time.monotonic() - t
        auth = (args.user, args.password)
        # the demo profile stores its studies in the background after start-up: wait until the
        # CT is complete (its instance count stops growing), or the runs measure a partial series
        study, slices = _find_ct(url, auth)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            time.sleep(2.0)
            again, more = _find_ct(url, auth)
            if (again, more) == (study, slices) and slices >= 200:
                break
            study, slices = again, more
        else:
            sys.exit(f"the CT study is still growing ({slices} slices) after 300 s")
        results: dict[str, list[float]] = {"first_image_ms": [], "first_image_app_cached_ms": [], "mpr_ready_ms": [],
                                           "mpr_after_stack_ms": []}
        timeout_ms = args.timeout_s * 1000
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            login = browser.new_context()
            page = login.new_page()
            page.goto(f"{url}/login?next=%2Fapp%2F")
            page.fill("#username", args.user)
            page.fill("#password", args.password)
            page.click("button[type=submit]")
            page.wait_for_url("**/app/**")
            state = login.storage_state()
            login.close()

            def fresh() -> Any:
                context = browser.new_context(storage_state=state, viewport={"width": 1400, "height": 900},
                                              service_workers="block")
                context.set_default_timeout(timeout_ms)
                # no first-login tour over the viewer
                context.add_init_script(f"localStorage.setItem('voxa.tourDone.{args.user}', 'bench')")
                return context

            for _ in range(args.repeat):
                context = fresh()
                page = context.new_page()
                page.goto(f"{url}/app/viewer/{study}")
                page.wait_for_function("() => window.voxaViewer && window.voxaViewer.timings.firstImageMs")
                results["first_image_ms"].append(page.evaluate("() => window.voxaViewer.timings.firstImageMs"))
                page.click("#mode-mpr")
                page.wait_for_function("() => window.voxaViewer.timings.volumeReadyMs")
                results["mpr_after_stack_ms"].append(page.evaluate(
                    "() => window.voxaViewer.timings.volumeReadyMs - window.voxaViewer.timings.volumeStartMs"))
                # the reading-room case: the application already on this workstation (HTTP and V8
                # code caches warm from the visits before), the study's images not in the browser
                for _visit in range(2):
                    page.goto(f"{url}/app/")
                    page.goto(f"{url}/app/viewer/{study}")
                    page.wait_for_function("() => window.voxaViewer && window.voxaViewer.timings.firstImageMs")
                results["first_image_app_cached_ms"].append(
                    page.evaluate("() => window.voxaViewer.timings.firstImageMs"))
                context.close()

                context = fresh()
                page = context.new_page()
                page.goto(f"{url}/app/viewer/{study}?mode=mpr")
                page.wait_for_function("() => window.voxaViewer && window.voxaViewer.timings.volumeReadyMs")
                results["mpr_ready_ms"].append(page.evaluate("() => window.voxaViewer.timings.volumeReadyMs"))
                context.close()
            version = browser.version
            browser.close()
        report = {
            "benchmark": "bench_browser",
            "study": {"slices": slices, "rows": 512, "columns": 512, "transfer_syntax": "Explicit VR Little Endian"},
            "server": url if args.url else "voxa serve --profile demo (loopback)",
            "startup_s": round(startup_s, 1),
            "browser": f"Chromium {version} headless, software WebGL (SwiftShader)",
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
            "targets_ms": {"first_image_ms": 1000, "mpr_ready_ms": 3000},
            **{k: _summary(v) for k, v in results.items()},
        }
        text = json.dumps(report, indent=2)
        print(text)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
