"""The OHIF viewer (prebuilt ``@ohif/app``) served by Voxa at ``/ohif/``, driven in headless Chromium.

The first tests check the serving layer without a browser (a fake build in ``tmp_path``, or the
installed one when present). The browser test starts a real Voxa over HTTP, ingests a CT chest
and a small MR brain, then, as a person would:

1. opens ``/ohif/`` and finds both patients in the study list;
2. opens the CT in the viewer and waits until its viewport canvas holds an image;
3. opens the MPR layout (``&hangingprotocolId=mpr``) and waits until all three views do.

"Holds an image" is judged from the pixels of each cornerstone viewport canvas (standard
deviation and share of non-black pixels), not from a screenshot's existence. Screenshots go to
``test-artifacts/ohif/``; an uncaught page error fails the test. Chromium is Debian's
``/usr/bin/chromium`` (Playwright downloads no browser); the viewer comes from
``scripts/install_ohif.sh``. Either missing skips the test, or fails it under
``VOXA_REQUIRE_INTEROP=1``.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from support import skip_or_fail
from support.browser import CHROMIUM, CHROMIUM_ARGS, DESKTOP, rendered, require_chromium, wait_for_viewports

from voxa.testing.synthetic import SyntheticStudy, dataset_to_bytes, demo_studies
from voxa.web.routes import ohif

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ohif"
VIEWPORT = DESKTOP
# The demo CT in this test covers 80 mm of a 358 mm field, so its sagittal and coronal planes are
# a band across a tall viewport: about 4-6 % of it (tests/support/browser.py's MIN_NONBLACK_SHARE
# of 2 % accepts them); overlay text alone stays well under 1 %.


# --------------------------------------------------------------------------- serving, no browser


def _ohif_client() -> TestClient:
    app = FastAPI()
    app.include_router(ohif.router)
    return TestClient(app)


@pytest.fixture
def fake_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A minimal build with the root-relative references the published one has."""
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text(
        '<html><head><link rel="manifest" href="/manifest.json"><script src="/app-config.js"></script>'
        '<script>window.PUBLIC_URL="/"</script><script defer src="/app.bundle.0123456789abcdef.js"></script>'
        '<link href="/app.bundle.css" rel="stylesheet"><a href="https://ohif.org/">x</a></head></html>'
    )
    (dist / "app.bundle.0123456789abcdef.js").write_text(
        '(() => {\n__webpack_require__.p = "/";\n})();\n' + "var filler = 1;\n" * 200
    )
    (dist / "app.bundle.css").write_text("@font-face{src:url(/0123456789abcdef.woff2)}" + " " * 2000)
    (dist / "manifest.json").write_text(json.dumps({"icons": [{"src": "/assets/icon.png"}]}))
    (dist / "assets" / "icon.png").write_bytes(b"\x89PNG fake")
    (dist / "app-config.js").write_text("window.config = {demo: true};")
    (dist / ohif.VERSION_MARKER).write_text(ohif.OHIF_VERSION + "\n")
    monkeypatch.setenv("VOXA_OHIF_DIR", str(dist))
    return dist


def test_study_url() -> None:
    assert ohif.ohif_study_url("1.2.840.113619.2.5") == "/ohif/viewer?StudyInstanceUIDs=1.2.840.113619.2.5"


def test_not_installed_answers_503_with_the_install_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOXA_OHIF_DIR", str(tmp_path / "nowhere"))
    client = _ohif_client()
    for path in ("/ohif/", "/ohif/viewer?StudyInstanceUIDs=1.2.3", "/ohif/app.bundle.css"):
        r = client.get(path)
        assert r.status_code == 503, path
        assert "scripts/install_ohif.sh" in r.text and "VOXA_OHIF_DIR" in r.text
        assert r.headers["cache-control"] == "no-store"


def test_app_routes_get_the_rebased_index(fake_dist: Path) -> None:
    client = _ohif_client()
    assert client.get("/ohif", follow_redirects=False).headers["location"] == "/ohif/"
    for path in ("/ohif/", "/ohif/index.html", "/ohif/viewer?StudyInstanceUIDs=1.2.3", "/ohif/segmentation",
                 "/ohif/viewer/"):
        r = client.get(path)
        assert r.status_code == 200, path
        assert r.headers["content-type"].startswith("text/html")
        assert r.headers["cache-control"] == "no-cache"
        assert 'src="/ohif/app.bundle.0123456789abcdef.js"' in r.text
        assert 'src="/ohif/app-config.js"' in r.text
        assert '<link rel="manifest" crossorigin="use-credentials" href="/ohif/manifest.json">' in r.text
        assert 'window.PUBLIC_URL="/ohif/"' in r.text
        assert 'href="https://ohif.org/"' in r.text  # absolute URLs untouched
    assert (fake_dist / "index.html").read_text().count('="/ohif/') == 0  # the file on disk is unchanged


def test_assets_rebased_cached_and_compressed(fake_dist: Path) -> None:
    client = _ohif_client()
    r = client.get("/ohif/app.bundle.0123456789abcdef.js")
    assert r.status_code == 200
    assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert r.headers["content-encoding"] == "gzip" and r.headers["content-type"].startswith("text/javascript")
    assert '__webpack_require__.p = "/ohif/";' in r.text
    again = client.get("/ohif/app.bundle.0123456789abcdef.js", headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304
    raw = client.get("/ohif/app.bundle.0123456789abcdef.js", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in raw.headers and '__webpack_require__.p = "/ohif/";' in raw.text
    css = client.get("/ohif/app.bundle.css")
    assert "url(/ohif/0123456789abcdef.woff2)" in css.text and css.headers["cache-control"] == "no-cache"
    assert client.get("/ohif/manifest.json").json()["icons"][0]["src"] == "/ohif/assets/icon.png"
    png = client.get("/ohif/assets/icon.png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"


def test_config_generated_and_private_files_hidden(fake_dist: Path) -> None:
    client = _ohif_client()
    r = client.get("/ohif/app-config.js")
    assert r.status_code == 200 and r.headers["cache-control"] == "no-cache"
    assert "demo: true" not in r.text
    assert '"routerBasename": "/ohif"' in r.text
    assert "window.location.origin" in r.text and "origin + \"/dicom-web\"" in r.text
    assert "origin + \"/wado\"" in r.text
    assert '"investigationalUseDialog"' in r.text and '"ohif.tours"' in r.text
    for path in ("/ohif/.voxa-ohif-version", "/ohif/missing.js", "/ohif/assets/missing.png",
                 "/ohif/..%2F..%2Fetc%2Fpasswd", "/ohif/%2E%2E/index.html"):
        assert client.get(path).status_code == 404, path


def test_app_config_is_valid_javascript(tmp_path: Path) -> None:
    """Node, when present, evaluates the generated config as a browser would."""
    import shutil
    import subprocess

    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    script = tmp_path / "check.js"
    script.write_text(
        "global.window = {location: {origin: 'http://example.test:8042'}};\n"
        + ohif.app_config_js()
        + "\nconsole.log(JSON.stringify(window.config));\n"
    )
    out = subprocess.run([node, str(script)], capture_output=True, text=True, timeout=30, check=True).stdout
    config = json.loads(out)
    source = config["dataSources"][0]["configuration"]
    assert config["routerBasename"] == "/ohif" and config["defaultDataSourceName"] == "dicomweb"
    assert source["qidoRoot"] == source["wadoRoot"] == "http://example.test:8042/dicom-web"
    assert source["wadoUriRoot"] == "http://example.test:8042/wado"


def test_installed_build_is_rebased() -> None:
    """The real build: every webpack runtime that names a public path gets /ohif/."""
    dist = ohif.ohif_dir()
    if ohif.installed_version(dist) is None:
        skip_or_fail(f"the OHIF viewer is not installed in {dist} (bash scripts/install_ohif.sh)")
    client = _ohif_client()
    index = client.get("/ohif/").text
    scripts = re.findall(r'src="([^"]+)"', index)
    assert scripts and all(s.startswith("/ohif/") for s in scripts), scripts
    for bundle in sorted(dist.glob("*.js")):
        data = bundle.read_bytes()
        if b"webpack/runtime/public_path" not in data:
            continue
        served = client.get(f"/ohif/{bundle.name}").content  # gzip-decoded by the client
        assert b'__webpack_require__.p = "/ohif/";' in served, bundle.name


# --------------------------------------------------------------------------- the browser test


@pytest.fixture
def browser_ready() -> Path:
    """The installed viewer's dist folder; skips (or fails) when Chromium, Playwright or the viewer is missing."""
    require_chromium()
    dist = ohif.ohif_dir()
    if ohif.installed_version(dist) is None:
        skip_or_fail(f"the OHIF viewer is not installed in {dist} (bash scripts/install_ohif.sh)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return dist


def _ingest(voxa: Any, study: SyntheticStudy) -> int:
    stored = 0
    for ds in study.datasets():
        stored += voxa.archive.ingest(dataset_to_bytes(ds), source="test").ok
    return stored


# Each cornerstone viewport's canvas, drawn into a 2D canvas and summarised: size, mean, standard
# deviation and share of non-black pixels (grey levels 0-255); and the load state of each volume.
_rendered = rendered
_wait_for_viewports = wait_for_viewports


@pytest.mark.slow
@pytest.mark.interop
@pytest.mark.timeout(300)
def test_ohif_lists_and_renders_ct_in_stack_and_mpr(voxa_factory: Any, browser_ready: Path, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    timings: dict[str, float] = {}
    t0 = time.monotonic()
    voxa = voxa_factory(http=True, accept_unknown_peers=True)
    # The demo studies (as `voxa serve --profile demo` loads them), with a shorter CT: 80 slices
    # of 512x512 at 1 mm keep MPR meaningful and the run short on two cores.
    demo = demo_studies(0, ct_slices=80)
    ct = demo[0]
    for study in demo:
        assert _ingest(voxa, study) == study.instance_count
    timings["ingest"] = time.monotonic() - t0
    base = voxa.base_url
    qido = httpx.get(f"{base}/dicom-web/studies", headers={"Accept": "application/dicom+json"}, timeout=30,
                     auth=voxa.auth)
    assert qido.status_code == 200, f"DICOMweb QIDO-RS {base}/dicom-web/studies answered {qido.status_code}: {qido.text[:300]}"

    page_errors: list[str] = []
    http_errors: list[str] = []
    console: list[str] = []

    def problems() -> str:
        return (f"page errors: {page_errors[:5]}; failed requests: {http_errors[:10]}; "
                f"console errors: {[c for c in console if c.startswith('error')][:10]}")

    dicomweb_requests: list[str] = []

    def on_response(response: Any) -> None:
        if "/dicom-web" in response.url or "/wado" in response.url:
            accept = response.request.headers.get("accept", "")
            dicomweb_requests.append(f"{response.status} {response.request.method} {response.url} [Accept: {accept}]")
        if response.status >= 400:
            http_errors.append(f"{response.status} {response.request.method} {response.url}")

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_ARGS, viewport=VIEWPORT,
        )
        try:
            page = context.new_page()
            page.on("pageerror", lambda exc: page_errors.append(str(exc)))
            page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
            page.on("response", on_response)
            # A request the page itself cancels (net::ERR_ABORTED: the test navigates to the next view while
            # the viewer still prefetches frames) is not a failure of the server.
            page.on("requestfailed", lambda req: None if "ERR_ABORTED" in str(req.failure) else
                    http_errors.append(f"failed {req.method} {req.url}: {req.failure}"))

            # 0. the viewer is behind the login page: sign in as a user would
            page.goto(f"{base}/ohif/")
            page.wait_for_url(re.compile(r".*/login\?next=%2Fohif%2F$"), timeout=30_000)
            page.fill("#username", voxa.auth[0])
            page.fill("#password", voxa.auth[1])
            page.screenshot(path=str(ARTIFACTS / "login.png"))
            page.click("button[type=submit]")

            # 1. the study list shows every demo patient
            t = time.monotonic()
            page.wait_for_url(re.compile(r".*/ohif/.*"), timeout=30_000)
            for study in demo:
                family = study.patient_name.split("^")[0]
                try:
                    page.get_by_text(re.compile(re.escape(family), re.I)).first.wait_for(timeout=60_000)
                except Exception:  # noqa: BLE001 - turned into a failure with the details below
                    page.screenshot(path=str(ARTIFACTS / "study-list.png"))
                    pytest.fail(f"patient {study.patient_name!r} is not in the OHIF study list; {problems()}")
            page.screenshot(path=str(ARTIFACTS / "study-list.png"))
            timings["study list"] = time.monotonic() - t
            assert not page_errors, problems()

            # 2. the CT in the default (stack) layout
            t = time.monotonic()
            page.goto(f"{base}{ohif.ohif_study_url(ct.study_instance_uid)}")
            stack = _wait_for_viewports(page, 1, 90, problems)
            page.screenshot(path=str(ARTIFACTS / "viewer-ct.png"))
            timings["stack viewer"] = time.monotonic() - t
            assert not page_errors, problems()

            # 3. the CT in MPR: three orthographic views of the volume
            t = time.monotonic()
            page.goto(f"{base}{ohif.ohif_study_url(ct.study_instance_uid)}&hangingprotocolId=mpr")
            mpr = _wait_for_viewports(page, 3, 120, problems, volumes_loaded=True)
            page.screenshot(path=str(ARTIFACTS / "viewer-mpr.png"))
            timings["mpr viewer"] = time.monotonic() - t
            assert len(_rendered(mpr)) >= 3, f"MPR views went blank: {json.dumps(mpr)}"
            assert {v["type"] for v in mpr["viewports"]} == {"orthographic"}, mpr
            assert not page_errors, problems()
        finally:
            (ARTIFACTS / "console.log").write_text("\n".join(console + ["", "failed requests:"] + http_errors))
            (ARTIFACTS / "dicomweb-requests.log").write_text("\n".join(dicomweb_requests) + "\n")
            context.close()

    timings["total"] = time.monotonic() - t0
    (ARTIFACTS / "timings.json").write_text(json.dumps(
        {"timings_s": {k: round(v, 1) for k, v in timings.items()}, "stack": stack, "mpr": mpr}, indent=2))
    dicomweb_errors = [e for e in http_errors if "/dicom-web" in e or "/wado" in e]
    assert not dicomweb_errors, f"DICOMweb requests OHIF sent failed: {dicomweb_errors}"
    viewer_errors = [e for e in http_errors if "/ohif/" in e]  # the manifest needs the session cookie too
    assert not viewer_errors, f"requests for the viewer's own files failed: {viewer_errors}"
