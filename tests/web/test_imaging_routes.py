"""The server-side rendering API (/imaging/...) against an in-process Voxa over HTTP."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from voxa.imaging.series import load_series_volume
from voxa.testing.synthetic import dataset_to_bytes, make_instance, small_ct
from voxa.web.dicomweb.render import Window, apply_window


def _ingest(archive: Any, datasets: Any) -> None:
    for ds in datasets:
        result = archive.ingest(dataset_to_bytes(ds), source="test")
        assert result.ok, result.reason


def _http(v: Any) -> httpx.Client:
    return httpx.Client(base_url=f"{v.base_url}/imaging", timeout=60, auth=v.auth)


def _image(r: httpx.Response, fmt: str = "PNG") -> Image.Image:
    assert r.status_code == 200, r.text
    img = Image.open(io.BytesIO(r.content))
    assert img.format == fmt
    return img


@pytest.fixture
def ct(voxa_factory: Any) -> tuple[Any, str, str, Any]:
    v = voxa_factory(http=True)
    study = small_ct(4, slices=6, rows=64)
    datasets = list(study.datasets())
    _ingest(v.archive, datasets)
    series = str(datasets[0].SeriesInstanceUID)
    return v, study.study_instance_uid, series, load_series_volume(v.archive, series)


def test_geometry_and_mpr(ct: tuple[Any, str, str, Any]) -> None:
    v, study, series, vol = ct
    base = f"/studies/{study}/series/{series}"
    with _http(v) as http:
        geo = http.get(base + "/geometry").json()
        assert geo["shape"] == [6, 64, 64] and geo["index_order"] == "z,y,x"
        assert geo["spacing_mm"] == pytest.approx(list(vol.spacing_mm))
        assert np.allclose(geo["affine"], vol.affine) and np.allclose(geo["direction"], vol.direction)
        assert geo["hu_range"] == pytest.approx([float(vol.voxels.min()), float(vol.voxels.max())])
        assert geo["standard_planes"]["axial"]["slices"] == 6
        lo, hi = geo["standard_planes"]["axial"]["position_range_mm"]
        assert hi - lo == pytest.approx(5 * vol.spacing_mm[0])

        # axial, by index: exactly the slice's voxels through the window (PNG is lossless)
        r = http.get(base + "/mpr", params={"plane": "axial", "index": 2, "window-center": 40,
                                            "window-width": 400})
        img = _image(r)
        assert img.size == (64, 64) and img.mode == "L"
        expected = apply_window(np.asarray(vol.voxels[2]), Window(40.0, 400.0))
        np.testing.assert_array_equal(np.asarray(img), expected)
        placed = json.loads(r.headers["X-Voxa-Plane"])
        assert placed["rows"] == 64 and placed["columns"] == 64
        assert placed["origin_mm"] == pytest.approx(list(vol.index_to_patient(np.array([2.0, 0, 0]))), abs=1e-3)
        # the same slice by position in mm
        z2 = float(vol.index_to_patient(np.array([2.0, 0, 0]))[2])
        same = _image(http.get(base + "/mpr", params={"position": z2, "window-center": 40, "window-width": 400}))
        np.testing.assert_array_equal(np.asarray(same), expected)

        # sagittal, fitted into 128 x 128 with the pixel aspect corrected
        r = http.get(base + "/mpr", params={"plane": "sagittal", "size": 128})
        img = _image(r)
        placed = json.loads(r.headers["X-Voxa-Plane"])
        assert img.size == (placed["columns"], placed["rows"]) and img.width == 128
        height_mm, width_mm = 6 * vol.spacing_mm[0], 64 * vol.spacing_mm[1]
        assert img.height == round(128 * height_mm / width_mm)
        assert r.headers["X-Voxa-Window"] == "40,400"  # CT default

        # a slab MIP is at least the thin slice everywhere
        thin = np.asarray(_image(http.get(base + "/mpr", params={"plane": "coronal", "index": 30})), dtype=int)
        mip = np.asarray(_image(http.get(base + "/mpr", params={"plane": "coronal", "index": 30, "slab": 20})),
                         dtype=int)
        assert thin.shape == mip.shape and np.all(mip >= thin) and np.any(mip > thin)
        minip = np.asarray(_image(http.get(base + "/mpr", params={"plane": "coronal", "index": 30, "slab": 20,
                                                                   "mode": "minip"})), dtype=int)
        assert np.all(minip <= thin)

        # oblique, JPEG
        c = ",".join(str(x) for x in geo["center_mm"])
        img = _image(http.get(base + "/mpr", params={"plane": "oblique", "center": c, "normal": "1,1,1",
                                                      "up": "0,0,1", "size": 96, "format": "jpeg"}), "JPEG")
        assert img.size == (96, 96) and np.asarray(img).std() > 5


def test_curved_volume_render_rotating_mip(ct: tuple[Any, str, str, Any]) -> None:
    v, study, series, vol = ct
    base = f"/studies/{study}/series/{series}"
    centre = vol.index_to_patient(np.array([2.5, 31.5, 31.5]))
    line = [list(centre - [60.0, 0, 0]), list(centre + [60.0, 0, 0])]
    with _http(v) as http:
        r = http.get(base + "/curved-mpr", params={"points": json.dumps(line), "width": 20, "spacing": 2})
        img = _image(r)
        assert img.size == (11, 61)  # 20 mm / 2 mm + 1 across, 120 mm / 2 mm + 1 along
        assert json.loads(r.headers["X-Voxa-Curved"])["length_mm"] == pytest.approx(120.0)
        posted = http.post(base + "/curved-mpr", json={"points": line, "width": 20, "spacing": 2})
        assert posted.status_code == 200 and posted.content == r.content
        posted = http.post(base + "/curved-mpr?width=20&spacing=2&format=jpeg", json=line)
        assert _image(posted, "JPEG").size == (11, 61)

        r = http.get(base + "/volume-render", params={"preset": "ct-soft-tissue", "size": 96, "azimuth": 30})
        img = _image(r)
        assert img.mode == "RGB" and img.size == (96, 96) and np.asarray(img).max() > 0
        assert r.headers["X-Voxa-Preset"] == "ct-soft-tissue"
        assert _image(http.get(base + "/volume-render", params={"size": 64, "format": "jpeg"}), "JPEG").size == (64, 64)

        r = http.get(base + "/rotating-mip", params={"frames": 4, "size": 48})
        assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
        with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
            names = zf.namelist()
            assert names == ["frame-000.png", "frame-001.png", "frame-002.png", "frame-003.png", "manifest.json"]
            manifest = json.loads(zf.read("manifest.json"))
            assert [f["angle_deg"] for f in manifest["frames"]] == [0, 90, 180, 270]
            frames = [Image.open(io.BytesIO(zf.read(n))) for n in names[:4]]
            assert all(f.size == (48, 48) and f.format == "PNG" for f in frames)
            assert np.asarray(frames[0]).max() > 0


BAD_PARAMETERS = [
    ("/mpr", {"plane": "transverse"}, "plane="),
    ("/mpr", {"position": "abc"}, "not a number"),
    ("/mpr", {"position": "1e9"}, "outside the volume"),
    ("/mpr", {"index": "99"}, "outside"),
    ("/mpr", {"index": "1", "position": "0"}, "not both"),
    ("/mpr", {"slab": "-1"}, "slab="),
    ("/mpr", {"mode": "max"}, "mode="),
    ("/mpr", {"window-width": "0"}, "window-width="),
    ("/mpr", {"size": "4"}, "size="),
    ("/mpr", {"format": "gif"}, "format="),
    ("/mpr", {"quality": "500"}, "quality"),
    ("/mpr", {"plane": "oblique"}, "normal"),
    ("/mpr", {"plane": "oblique", "normal": "0,0,0"}, "zero"),
    ("/mpr", {"plane": "oblique", "normal": "0,0,1", "up": "0,0,1"}, "parallel"),
    ("/mpr", {"plane": "oblique", "normal": "1,2"}, "three"),
    ("/mpr", {"plane": "axial", "normal": "0,0,1"}, "oblique"),
    ("/curved-mpr", {}, "centreline"),
    ("/curved-mpr", {"points": "[[1,2,3]"}, "JSON"),
    ("/curved-mpr", {"points": "[[1,2,3]]"}, "2 to 10000"),
    ("/curved-mpr", {"points": "[[1,2,3],[1,2]]"}, "[x,y,z]"),
    ("/curved-mpr", {"points": "[[1,2,3],[1,2,3]]"}, "distinct"),
    ("/volume-render", {"preset": "ct-brain"}, "preset="),
    ("/volume-render", {"elevation": "100"}, "elevation="),
    ("/volume-render", {"shading": "maybe"}, "shading="),
    ("/rotating-mip", {"frames": "0"}, "frames="),
    ("/rotating-mip", {"axis": "w"}, "axis="),
]


def test_bad_parameters_are_400(ct: tuple[Any, str, str, Any]) -> None:
    v, study, series, _ = ct
    with _http(v) as http:
        for path, params, message in BAD_PARAMETERS:
            r = http.get(f"/studies/{study}/series/{series}{path}", params=params)
            assert r.status_code == 400, (path, params, r.status_code, r.text)
            assert message in r.json()["error"], (path, params, r.text)
        for body in (b"[[1,2,3]", b'{"points": 3}', b'[[1,2,3],["a",2,3]]'):
            r = http.post(f"/studies/{study}/series/{series}/curved-mpr", content=body,
                          headers={"content-type": "application/json"})
            assert r.status_code == 400, (body, r.text)


def test_missing_is_404_and_not_a_volume_is_422(voxa_factory: Any) -> None:
    v = voxa_factory(http=True)
    study = small_ct(5, slices=3, rows=32)
    datasets = list(study.datasets())
    _ingest(v.archive, datasets)
    series = str(datasets[0].SeriesInstanceUID)
    ids = {"patient_id": "P422", "patient_name": "TEST^VOLUME", "study_instance_uid": "2.25.4220"}
    single = make_instance(**ids, series_instance_uid="2.25.4221", sop_instance_uid="2.25.4221.1",
                           ImagePositionPatient=["0", "0", "0"], ImageOrientationPatient=["1", "0", "0", "0", "1", "0"],
                           PixelSpacing=["1", "1"])
    mixed = [make_instance(**ids, series_instance_uid="2.25.4222", sop_instance_uid=f"2.25.4222.{n}", rows=rows,
                           instance_number=n, ImagePositionPatient=["0", "0", str(n)],
                           ImageOrientationPatient=["1", "0", "0", "0", "1", "0"], PixelSpacing=["1", "1"])
             for n, rows in ((1, 16), (2, 20))]
    _ingest(v.archive, [single, *mixed])
    with _http(v) as http:
        for path in ("/geometry", "/mpr", "/volume-render", "/rotating-mip"):
            r = http.get(f"/studies/{study.study_instance_uid}/series/2.25.999{path}")
            assert r.status_code == 404, r.text
            # a real series named under another (real) study is not found either
            r = http.get(f"/studies/2.25.4220/series/{series}{path}")
            assert r.status_code == 404, r.text
        r = http.get("/studies/2.25.4220/series/2.25.4221/mpr")
        assert r.status_code == 422 and "single image" in r.json()["error"]
        r = http.get("/studies/2.25.4220/series/2.25.4222/geometry")
        assert r.status_code == 422 and "mixed image sizes" in r.json()["error"]
        assert http.get(f"/studies/{study.study_instance_uid}/series/{series}/geometry").status_code == 200
    with httpx.Client(base_url=f"{v.base_url}/imaging", timeout=30) as anonymous:
        r = anonymous.get(f"/studies/{study.study_instance_uid}/series/{series}/geometry")
        assert r.status_code == 401
