"""The measurements API (voxa.web.routes.measurements) over HTTP, against an in-process Voxa."""

from __future__ import annotations

import io
from typing import Any

import highdicom as hd
import httpx
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes

from voxa.archive.attributes import Level
from voxa.measurements import store as measurement_store
from voxa.measurements.sr import sr_to_bytes
from voxa.testing.synthetic import dataset_to_bytes, tiny_study

PASSWORD = "Some-Long-Passw0rd!"


def _load(v: Any) -> tuple[str, list[pydicom.Dataset], str]:
    """Store a 3-slice CT (1 mm pixels, 5 mm apart); its study UID, datasets and study public ID."""
    study = tiny_study(11, series=1, instances_per_series=3, rows=32)
    datasets: list[pydicom.Dataset] = []
    public = ""
    for ds in study.datasets():
        data = dataset_to_bytes(ds)
        result = v.archive.ingest(data, source="test")
        assert result.ok, result.reason
        public = result.public_ids["study"]
        datasets.append(pydicom.dcmread(io.BytesIO(data)))
    return study.study_instance_uid, datasets, public


def _client(v: Any, auth: tuple[str, str] | None = None) -> httpx.Client:
    return httpx.Client(base_url=v.base_url, auth=auth or v.auth, timeout=30)


def _seg_bytes(cts: list[pydicom.Dataset]) -> tuple[bytes, str]:
    mask = np.zeros((3, 32, 32), dtype=bool)
    mask[0, 2:6, 2:6] = True
    mask[1, 2:8, 2:6] = True  # 16 + 24 = 40 voxels of 1 x 1 x 5 mm
    description = hd.seg.SegmentDescription(
        segment_number=1, segment_label="lesion", segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lesion, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
    seg = hd.seg.Segmentation(
        source_images=cts, pixel_array=mask, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description], series_instance_uid=hd.UID(), series_number=60,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="Voxa tests", manufacturer_model_name="test",
        software_versions="1", device_serial_number="1")
    return sr_to_bytes(seg), str(seg.SOPInstanceUID)


def test_measurements_crud_ownership_and_sr_export(voxa_factory: Any) -> None:
    v = voxa_factory(http=True)
    study, cts, study_public_id = _load(v)
    ct = cts[0]
    sop = str(ct.SOPInstanceUID)
    base = f"/measurements/studies/{study}"
    v.runtime.accounts.create_user("reader2", PASSWORD, role="radiologist")
    v.runtime.accounts.create_user("student", PASSWORD, role="student")

    with _client(v) as http, _client(v, ("reader2", PASSWORD)) as other, _client(v, ("student", PASSWORD)) as student:
        assert http.get(base).json() == []

        # create: the server computes the values
        r = http.post(base, json={"kind": "distance", "sop_instance_uid": sop, "points": [[2, 2], [5, 6]],
                                  "label": "aorta"})
        assert r.status_code == 201, r.text
        distance = r.json()
        assert distance["values"] == {"length": {"value": pytest.approx(5.0), "unit": "mm"}}
        assert (distance["user"], distance["kind"], distance["label"]) == ("admin", "distance", "aorta")
        assert distance["series_instance_uid"] == ct.SeriesInstanceUID and distance["frame_number"] is None

        r = http.post(base, json={"kind": "rectangle_roi", "sop_instance_uid": sop, "points": [[4, 4], [12, 10]]})
        assert r.status_code == 201, r.text
        roi = r.json()["values"]
        hu = ct.pixel_array.astype(float) * float(ct.RescaleSlope) + float(ct.RescaleIntercept)
        inside = hu[4:10, 4:12]  # pixel centres 4.5 .. 11.5 x 4.5 .. 9.5
        assert roi["mean"] == {"value": pytest.approx(inside.mean()), "unit": "[hnsf'U]"}
        assert roi["sd"]["value"] == pytest.approx(inside.std())
        assert (roi["min"]["value"], roi["max"]["value"]) == (inside.min(), inside.max())
        assert roi["area"] == {"value": pytest.approx(48.0), "unit": "mm2"}

        r = http.post(base, json={"kind": "volume", "contours": [
            {"sop_instance_uid": str(s.SOPInstanceUID), "points": [[2, 2], [12, 2], [12, 12], [2, 12]]} for s in cts]})
        assert r.status_code == 201, r.text
        assert r.json()["values"]["volume"] == {"value": pytest.approx(3 * 100 * 5 / 1000), "unit": "ml"}

        seg_data, seg_uid = _seg_bytes(cts)
        assert v.archive.ingest(seg_data, source="test").ok
        r = http.post(base, json={"kind": "volume", "segment": {"sop_instance_uid": seg_uid, "segment_number": 1}})
        assert r.status_code == 201, r.text
        assert r.json()["values"]["volume"]["value"] == pytest.approx(40 * 5 / 1000)
        assert r.json()["series_instance_uid"] != ct.SeriesInstanceUID

        r = http.post(base, json={"kind": "text", "sop_instance_uid": sop, "points": [[20, 20]], "label": "see prior"})
        assert r.status_code == 201 and r.json()["values"] == {}

        # refusals name the problem
        for body, message in [
            ({"kind": "distance", "sop_instance_uid": sop, "points": [[1, 1]]}, "needs 2 points"),
            ({"kind": "distance", "sop_instance_uid": "1.2.3.999", "points": [[1, 1], [2, 2]]}, "no instance"),
            ({"kind": "distance", "points": [[1, 1], [2, 2]]}, "sop_instance_uid is required"),
            ({"kind": "probe", "sop_instance_uid": sop, "points": [[99, 1]]}, "outside"),
            ({"kind": "text", "sop_instance_uid": sop, "points": [[1, 1]]}, "text"),
            ({"kind": "freehand_roi", "sop_instance_uid": sop, "points_mm": [[0, 0, 0], [1, 0, 0], [0, 1, 0]]},
             "drawn on the image"),
            ({"kind": "distance", "sop_instance_uid": sop, "points": [[1, 1], [2, 2]], "frame_number": 2},
             "frame_number"),
        ]:
            r = http.post(base, json=body)
            assert r.status_code == 422 and message in r.json()["error"], (body, r.text)
        assert http.post(base, json={"kind": "nonsense"}).status_code == 422
        assert http.get("/measurements/studies/1.2.3.4.5").status_code == 404

        # the owner sees their own; others see them only with all_users
        mine = http.get(base).json()
        assert [m["kind"] for m in mine] == ["distance", "rectangle_roi", "volume", "volume", "text"]
        assert other.get(base).json() == []
        assert len(other.get(base, params={"all_users": "true"}).json()) == 5
        r = other.post(base, json={"kind": "angle", "sop_instance_uid": sop, "points": [[10, 2], [2, 2], [2, 10]]})
        assert r.status_code == 201 and r.json()["values"]["angle"]["value"] == pytest.approx(90.0)
        theirs = r.json()["id"]
        assert [m["id"] for m in http.get(base).json()] == [m["id"] for m in mine]
        assert len(http.get(base, params={"all_users": "true"}).json()) == 6

        # update and delete: own measurements only
        r = http.put(f"{base}/{distance['id']}", json={"kind": "distance", "sop_instance_uid": sop,
                                                       "points": [[2, 2], [8, 10]], "label": "aorta, redrawn"})
        assert r.status_code == 200, r.text
        updated = r.json()
        assert updated["values"]["length"]["value"] == pytest.approx(10.0)
        assert updated["tracking_uid"] == distance["tracking_uid"] and updated["label"] == "aorta, redrawn"
        body = {"kind": "distance", "sop_instance_uid": sop, "points": [[0, 0], [1, 1]]}
        assert other.put(f"{base}/{distance['id']}", json=body).status_code == 404
        assert other.delete(f"{base}/{distance['id']}").status_code == 404
        assert http.put(f"{base}/{theirs}", json=body).status_code == 404
        assert http.delete(f"{base}/99999").status_code == 404
        assert other.delete(f"{base}/{theirs}").json() == {"deleted": theirs}
        assert other.get(base).json() == []

        # export: the caller's measurements as a TID 1500 SR, stored through ingest
        # declared as @requires(CREATE_REPORT, VIEW_IMAGES): a user with neither is refused
        assert student.post(f"{base}/export-sr").status_code == 403
        assert student.get(base).status_code == 403
        assert other.post(f"{base}/export-sr").status_code == 422  # nothing of theirs to export
        r = http.post(f"{base}/export-sr")
        assert r.status_code == 201, r.text
        exported = r.json()
        assert exported["measurements"] == 5 and exported["study_instance_uid"] == study

        found = http.get(f"/dicom-web/studies/{study}/series", params={"Modality": "SR"})
        assert found.status_code == 200, found.text
        series = [s["0020000E"]["Value"][0] for s in found.json()]
        assert series == [exported["series_instance_uid"]]
        assert found.json()[0]["00080060"]["Value"] == ["SR"]

    (loc,) = v.archive.index.locate(sop_uid=exported["sop_instance_uid"])
    sr = hd.sr.srread(io.BytesIO(v.archive.read_instance(loc.blob_key)))
    assert isinstance(sr, hd.sr.Comprehensive3DSR)
    report = sr.content
    assert isinstance(report, hd.sr.MeasurementReport)
    assert len(report.get_image_measurement_groups()) == 1
    assert len(report.get_planar_roi_measurement_groups()) == 2
    assert len(report.get_volumetric_roi_measurement_groups()) == 2
    (length,) = report.get_image_measurement_groups()[0].get_measurements()
    assert length.value == pytest.approx(10.0)

    # deleting the study deletes its measurements
    v.archive.delete(Level.STUDY, study_public_id)
    assert measurement_store.list_measurements(v.archive.index, study_instance_uid=study) == []


def test_measurements_survive_a_restart(voxa_factory: Any) -> None:
    v = voxa_factory(http=True)
    study, cts, _ = _load(v)
    with _client(v) as http:
        r = http.post(f"/measurements/studies/{study}",
                      json={"kind": "probe", "sop_instance_uid": str(cts[1].SOPInstanceUID), "points": [[3.5, 4.5]]})
        assert r.status_code == 201, r.text
        created = r.json()
    expected = float(cts[1].pixel_array[4, 3]) * float(cts[1].RescaleSlope) + float(cts[1].RescaleIntercept)
    assert created["values"]["value"] == {"value": expected, "unit": "[hnsf'U]"}
    v.stop()
    again = voxa_factory(http=True, data_dir=v.data_dir, database_url=v.runtime.settings.database_url)
    with _client(again) as http:
        assert http.get(f"/measurements/studies/{study}").json() == [created]
