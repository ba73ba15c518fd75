"""Serving the web application build (``frontend/dist``) at ``/app/``, without a browser.

A fake build in ``tmp_path`` stands in for ``frontend/dist`` (``VOXA_WEBAPP_DIR``); the real
build, when present, is checked for what the server relies on (index.html, sw.js, hashed
assets, .gz twins)."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from voxa.web.routes import webapp


def _client() -> TestClient:
    app = FastAPI()
    app.include_router(webapp.router)
    return TestClient(app)


@pytest.fixture
def fake_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "icons").mkdir()
    (dist / "index.html").write_text('<!doctype html><html><head><script type="module" src="/app/assets/index-AbCd1234.js">'
                                     "</script></head><body><div id=app></div></body></html>")
    script = "console.log('voxa');\n" * 200
    (dist / "assets" / "index-AbCd1234.js").write_text(script)
    (dist / "assets" / "index-AbCd1234.js.gz").write_bytes(gzip.compress(script.encode()))
    (dist / "assets" / "openjphjs-C-BUUy4a.wasm").write_bytes(b"\0asm" + b"\0" * 100)
    (dist / "sw.js").write_text("self.addEventListener('fetch', () => {});")
    (dist / "manifest.webmanifest").write_text('{"name": "Voxa"}')
    (dist / "icons" / "icon.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    (dist / ".voxa-source-hash").write_text("secret-ish\n")
    monkeypatch.setenv("VOXA_WEBAPP_DIR", str(dist))
    return dist


def test_root_and_prefix_redirect(fake_dist: Path) -> None:
    client = _client()
    assert client.get("/", follow_redirects=False).headers["location"] == "/app/"
    r = client.get("/app?x=1", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "/app/?x=1"


def test_app_routes_get_index_html(fake_dist: Path) -> None:
    client = _client()
    for path in ("/app/", "/app/index.html", "/app/study/1.2.840.113619.2.5.1762583153",
                 "/app/viewer/2.25.123456789?mode=mpr&series=2.25.1", "/app/anything/else"):
        r = client.get(path)
        assert r.status_code == 200, path
        assert r.headers["content-type"].startswith("text/html")
        assert r.headers["cache-control"] == "no-cache"
        assert "default-src 'self'" in r.headers["content-security-policy"]
        assert '<div id=app>' in r.text


def test_assets_cached_compressed_and_typed(fake_dist: Path) -> None:
    client = _client()
    r = client.get("/app/assets/index-AbCd1234.js")
    assert r.status_code == 200
    assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert r.headers["content-encoding"] == "gzip" and r.headers["content-type"].startswith("text/javascript")
    assert r.text.startswith("console.log")  # decoded by the client
    plain = client.get("/app/assets/index-AbCd1234.js", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.text.startswith("console.log")
    wasm = client.get("/app/assets/openjphjs-C-BUUy4a.wasm")
    assert wasm.headers["content-type"] == "application/wasm"
    sw = client.get("/app/sw.js")
    assert sw.headers["cache-control"] == "no-cache" and sw.headers["content-type"].startswith("text/javascript")
    manifest = client.get("/app/manifest.webmanifest")
    assert manifest.headers["content-type"].startswith("application/manifest+json")


def test_missing_hidden_and_outside_files_are_404(fake_dist: Path) -> None:
    client = _client()
    for path in ("/app/missing.js", "/app/assets/missing-AbCd1234.css", "/app/.voxa-source-hash",
                 "/app/..%2F..%2Fetc%2Fpasswd", "/app/%2E%2E/index.html", "/app/icons/nope.png"):
        assert client.get(path).status_code == 404, path


def test_not_built_answers_404_with_the_build_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOXA_WEBAPP_DIR", str(tmp_path / "nowhere"))
    r = _client().get("/app/")
    assert r.status_code == 404 and "scripts/build_frontend.sh" in r.text and "VOXA_WEBAPP_DIR" in r.text


def test_behind_the_login(voxa_factory: Any, fake_dist: Path) -> None:
    """Every path of the application needs a signed-in user; a browser is sent to the login page."""
    v = voxa_factory(http=True)
    for path in ("/", "/app/", "/app/viewer/1.2.3", "/app/assets/index-AbCd1234.js"):
        r = httpx.get(v.base_url + path, headers={"Accept": "text/html"}, follow_redirects=False)
        assert r.status_code == 303, path
        assert r.headers["location"].startswith("/login?next=")
        assert httpx.get(v.base_url + path, follow_redirects=False).status_code == 401, path
    with httpx.Client(base_url=v.base_url) as client:
        login = client.post("/login", data={"username": v.auth[0], "password": v.auth[1], "next": "/app/viewer/1.2.3"},
                            follow_redirects=False)
        assert login.status_code == 303 and login.headers["location"] == "/app/viewer/1.2.3"
        assert client.get("/app/viewer/1.2.3").status_code == 200
        assert client.get("/", follow_redirects=True).url.path == "/app/"


def test_the_real_build_when_present() -> None:
    dist = webapp.webapp_dir()
    if not webapp.is_built(dist):
        pytest.skip(f"the web application is not built in {dist} (bash scripts/build_frontend.sh)")
    index = (dist / "index.html").read_text()
    assert 'src="/app/assets/index-' in index and 'href="/app/manifest.webmanifest"' in index
    assert (dist / "sw.js").is_file() and "voxa-shell-" in (dist / "sw.js").read_text()
    assets = sorted(p.name for p in (dist / "assets").iterdir())
    assert any(n.startswith("decodeImageFrameWorker-") for n in assets), "the image decoder worker is missing"
    assert any(n.endswith(".wasm") for n in assets), "the WASM codecs are missing"
    assert any(n.startswith("viewer-") and n.endswith(".js.gz") for n in assets), "no .gz twins"
    client = _client()
    for name in assets:
        if name.endswith(".gz"):
            continue
        r = client.get(f"/app/assets/{name}")
        assert r.status_code == 200 and r.headers["cache-control"].endswith("immutable"), name
