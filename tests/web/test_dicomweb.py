"""DICOMweb (QIDO-RS, WADO-RS, STOW-RS, rendered, WADO-URI) against an in-process Voxa,
with the real dicomweb-client and with raw HTTP where bytes must be compared exactly."""

from __future__ import annotations

import gzip
import io
import re
from typing import Any

import httpx
import numpy as np
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from dicomweb_client.session_utils import create_session_from_user_pass
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.encaps import generate_frames

from voxa.archive.attributes import Level
from voxa.testing.synthetic import dataset_to_bytes, make_instance, small_ct, tiny_study, xa_run

ELE = "1.2.840.10008.1.2.1"
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"


# -- helpers -------------------------------------------------------------------------------------


def _ingest(archive: Any, datasets: Any) -> list[bytes]:
    out = []
    for ds in datasets:
        data = dataset_to_bytes(ds) if isinstance(ds, pydicom.Dataset) else ds
        result = archive.ingest(data, source="test")
        assert result.ok, result.reason
        out.append(data)
    return out


def _ingest_file(archive: Any, name: str) -> pydicom.Dataset:
    path = get_testdata_file(name)
    assert path, f"pydicom test file {name} is missing"
    with open(path, "rb") as f:
        data = f.read()
    result = archive.ingest(data, source="test")
    assert result.ok, result.reason
    return pydicom.dcmread(io.BytesIO(data))


def _client(v: Any) -> DICOMwebClient:
    return DICOMwebClient(url=f"{v.base_url}/dicom-web", session=create_session_from_user_pass(*v.auth))


def _http(v: Any) -> httpx.Client:
    return httpx.Client(base_url=f"{v.base_url}/dicom-web", timeout=30, auth=v.auth)


def _parts(response: httpx.Response) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a multipart/related response (an independent, strict parser)."""
    ctype = response.headers["content-type"]
    assert ctype.startswith("multipart/related"), ctype
    m = re.search(r'boundary="?([^";]+)"?', ctype)
    assert m, ctype
    delim = b"--" + m.group(1).encode()
    body = response.content
    assert body.startswith(delim + b"\r\n"), body[:80]
    assert body.rstrip(b"\r\n").endswith(delim + b"--")
    out = []
    for chunk in body.split(b"\r\n" + delim)[0:]:
        if chunk.startswith(delim):
            chunk = chunk[len(delim):]
        if chunk.startswith(b"--"):
            break
        head, _, content = chunk[2:].partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            k, _, val = line.partition(":")
            headers[k.strip().lower()] = val.strip()
        out.append((headers, content))
    return out


def _values(result: dict[str, Any], tag: str) -> list[Any]:
    return result.get(tag, {}).get("Value", [])


def _uids(results: list[dict[str, Any]], tag: str) -> list[str]:
    return [_values(r, tag)[0] for r in results]


STUDY_UID, SERIES_UID, SOP_UID = "0020000D", "0020000E", "00080018"


def _three_studies(archive: Any) -> list[Any]:
    studies = [
        tiny_study(1, patient_name="DOE^JOHN", patient_id="P1", study_date="20230105", accession_number="ACC1",
                   study_description="CHEST CT", series=2, instances_per_series=2),
        tiny_study(2, patient_name="DOE^JANE", patient_id="P2", study_date="20230610", accession_number="ACC2",
                   modality="MR", series=1, instances_per_series=3),
        tiny_study(3, patient_name="SMITH^ANNA^MARIA", patient_id="P3", study_date="20240301",
                   accession_number="ACC3", series=1, instances_per_series=1),
    ]
    for s in studies:
        _ingest(archive, s.datasets())
    return studies


# -- QIDO-RS ---------------------------------------------------------------------------------------


def test_qido_search(voxa_factory: Any, database_url: str) -> None:
    v = voxa_factory(http=True, database_url=database_url)
    ct, mr, smith = _three_studies(v.archive)
    client = _client(v)

    studies = client.search_for_studies()
    assert sorted(_uids(studies, STUDY_UID)) == sorted(s.study_instance_uid for s in (ct, mr, smith))
    john = next(s for s in studies if _values(s, STUDY_UID) == [ct.study_instance_uid])
    assert _values(john, "00100010") == [{"Alphabetic": "DOE^JOHN"}]
    assert _values(john, "00201206") == [2] and _values(john, "00201208") == [4]  # series, instances
    assert _values(john, "00080061") == ["CT"] and _values(john, "00080050") == ["ACC1"]
    # dicomweb-client sends "Host: 127.0.0.1" without the port, so only the path can be compared here
    assert _values(john, "00081190")[0].endswith(f"/dicom-web/studies/{ct.study_instance_uid}")

    def study_uids(**filters: Any) -> list[str]:
        return sorted(_uids(client.search_for_studies(**filters), STUDY_UID))

    assert study_uids(search_filters={"PatientID": "P2"}) == [mr.study_instance_uid]
    assert study_uids(search_filters={"00100020": "P3"}) == [smith.study_instance_uid]  # by tag
    assert study_uids(search_filters={"PatientName": "doe*"}) == sorted([ct.study_instance_uid,
                                                                         mr.study_instance_uid])
    assert study_uids(search_filters={"StudyDate": "20230101-20231231"}) == sorted([ct.study_instance_uid,
                                                                                     mr.study_instance_uid])
    assert study_uids(search_filters={"ModalitiesInStudy": "MR"}) == [mr.study_instance_uid]
    assert study_uids(search_filters={"Modality": "MR"}) == [mr.study_instance_uid]  # answered at study level
    assert study_uids(search_filters={"AccessionNumber": "ACC3"}) == [smith.study_instance_uid]
    # fuzzy: a name component's beginning, in any case
    assert study_uids(search_filters={"PatientName": "mar"}) == []
    assert study_uids(fuzzymatching=True, search_filters={"PatientName": "mar"}) == [smith.study_instance_uid]

    # includefield: keywords, tags, comma lists (as OHIF sends them), all
    found = client.search_for_studies(fields=["StudyDescription", "00080062"], search_filters={"PatientID": "P1"})
    assert _values(found[0], "00081030") == ["CHEST CT"] and "00080062" in found[0]
    with _http(v) as http:
        r = http.get("/studies", params={"PatientID": "P1", "includefield": "00080062,InstitutionName"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/dicom+json")
        assert {"00080062", "00080080"} <= set(r.json()[0])
        r = http.get("/studies?PatientID=P1&includefield=00080062%2C00080080")
        assert {"00080062", "00080080"} <= set(r.json()[0])
        full = http.get("/studies", params={"PatientID": "P1", "includefield": "all"}).json()[0]
        assert {"00080062", "00080080", "00101010", "00100040"} <= set(full)

        # limit / offset
        page1 = client.search_for_studies(limit=2)
        page2 = client.search_for_studies(limit=2, offset=2)
        assert len(page1) == 2 and len(page2) == 1
        assert sorted(_uids(page1 + page2, STUDY_UID)) == study_uids()
        assert len(client.search_for_studies(limit=1, get_remaining=True)) == 3

        # series and instances, at every entry point
        series = client.search_for_series(ct.study_instance_uid)
        assert [_values(s, "00200011") for s in series] == [[1], [2]]
        assert all(_values(s, STUDY_UID) == [ct.study_instance_uid] for s in series)
        assert _values(series[0], "00201209") == [2]
        series_uid = _values(series[1], SERIES_UID)[0]
        r = http.get(f"/studies/{ct.study_instance_uid}/series", params={"SeriesNumber": 2})
        assert _values(r.json()[0], "00081190") == [
            f"{v.base_url}/dicom-web/studies/{ct.study_instance_uid}/series/{series_uid}"]
        assert len(client.search_for_series(search_filters={"Modality": "MR"})) == 1
        assert _uids(client.search_for_series(search_filters={"PatientID": "P1", "SeriesNumber": 2}),
                     SERIES_UID) == [series_uid]
        instances = client.search_for_instances(ct.study_instance_uid, series_uid)
        assert [_values(i, "00200013") for i in instances] == [[1], [2]]
        assert _values(instances[0], "00280010") == [16] and _values(instances[0], SERIES_UID) == [series_uid]
        assert len(client.search_for_instances(ct.study_instance_uid)) == 4
        assert len(client.search_for_instances(search_filters={"PatientID": "P2"})) == 3
        sop = _values(instances[1], SOP_UID)[0]
        assert _uids(client.search_for_instances(search_filters={"SOPInstanceUID": sop}), SOP_UID) == [sop]
        assert client.search_for_studies(search_filters={"PatientID": "NOBODY"}) == []
        assert http.get("/studies/1.2.3/series").json() == []

        # malformed values and parameters: 400 with the reason
        for params, words in (({"StudyDate": "2023"}, "not a date"), ({"limit": "-1"}, "limit"),
                              ({"limit": "x"}, "limit"), ({"SeriesNumber": "two"}, "not an integer"),
                              ({"StudyInstanceUID": "1.2.*"}, "wildcards"), ({"includefield": "NoSuchThing"},
                                                                              "includefield"),
                              ({"NotAnAttribute": "1"}, "unknown query parameter"),
                              ({"fuzzymatching": "maybe"}, "fuzzymatching")):
            r = http.get("/series" if "SeriesNumber" in params else "/studies", params=params)
            assert r.status_code == 400, (params, r.text)
            assert words in r.json()["error"], (params, r.json())
        # an attribute the index does not keep is not matched, and a Warning says so
        r = http.get("/studies", params={"PatientWeight": "70"})
        assert r.status_code == 200 and len(r.json()) == 3 and "PatientWeight" in r.headers["warning"]
        assert http.get("/studies", headers={"Accept": "application/dicom+xml"}).status_code == 406


def test_qido_server_limit_warns(voxa_factory: Any) -> None:
    v = voxa_factory(http=True, qido_max_results=2)
    _three_studies(v.archive)
    with _http(v) as http:
        r = http.get("/studies")
        assert r.status_code == 200 and len(r.json()) == 2
        assert r.headers["warning"].startswith("299 ") and "Additional results can be requested" in r.headers[
            "warning"]
        r = http.get("/studies", params={"limit": 2})  # the client's own limit: no warning
        assert len(r.json()) == 2 and "warning" not in r.headers
        r = http.get("/studies", params={"offset": 2})
        assert len(r.json()) == 1 and "warning" not in r.headers


# -- WADO-RS: instances ---------------------------------------------------------------------------


def test_retrieve_is_byte_identical(voxa_factory: Any) -> None:
    v = voxa_factory(http=True)
    study = tiny_study(5, series=2, instances_per_series=2)
    _ingest(v.archive, study.datasets())
    stored = {loc.sop_instance_uid: v.archive.blobs.read(loc.blob_key)
              for loc in v.archive.index.locate(study_uid=study.study_instance_uid)}
    locs = v.archive.index.locate(study_uid=study.study_instance_uid)
    client = _client(v)

    assert sorted(ds.SOPInstanceUID for ds in client.retrieve_study(study.study_instance_uid)) == sorted(stored)
    series = client.retrieve_series(study.study_instance_uid, locs[0].series_instance_uid)
    assert [ds.SOPInstanceUID for ds in series] == [loc.sop_instance_uid for loc in locs[:2]]
    one = client.retrieve_instance(study.study_instance_uid, locs[0].series_instance_uid, locs[0].sop_instance_uid)
    assert one.SOPInstanceUID == locs[0].sop_instance_uid

    with _http(v) as http:
        for accept in ('multipart/related; type="application/dicom"',
                       "multipart/related; type=application/dicom; transfer-syntax=*",
                       f'multipart/related; type="application/dicom"; transfer-syntax={ELE}', "*/*"):
            r = http.get(f"/studies/{study.study_instance_uid}", headers={"Accept": accept})
            assert r.status_code == 200, (accept, r.text)
            parts = _parts(r)
            assert [h["content-type"] for h, _ in parts] == [f"application/dicom; transfer-syntax={ELE}"] * 4
            assert [p for _, p in parts] == [stored[loc.sop_instance_uid] for loc in locs], accept
        loc = locs[3]
        r = http.get(f"/studies/{study.study_instance_uid}/series/{loc.series_instance_uid}/instances/"
                     f"{loc.sop_instance_uid}", headers={"Accept": "application/dicom"})
        assert r.status_code == 200 and r.content == stored[loc.sop_instance_uid]

        assert http.get("/studies/1.2.3.4").status_code == 404
        r = http.get(f"/studies/{study.study_instance_uid}/series/1.2.3")
        assert r.status_code == 404 and "no series" in r.json()["error"]
        r = http.get(f"/studies/{study.study_instance_uid}",
                     headers={"Accept": 'multipart/related; type="application/octet-stream"'})
        assert r.status_code == 406


def test_transcoding(voxa_factory: Any) -> None:
    v = voxa_factory(http=True)
    j2k = _ingest_file(v.archive, "MR_small_jp2klossless.dcm")
    client = _client(v)
    study, series, sop = j2k.StudyInstanceUID, j2k.SeriesInstanceUID, j2k.SOPInstanceUID
    expected = j2k.pixel_array

    ds = client.retrieve_instance(study, series, sop, media_types=(("application/dicom", ELE),))
    assert ds.file_meta.TransferSyntaxUID == ELE and ds.SOPInstanceUID == sop
    assert np.array_equal(ds.pixel_array, expected)
    # as stored when any syntax is accepted
    ds = client.retrieve_instance(study, series, sop, media_types=(("application/dicom", "*"),))
    assert ds.file_meta.TransferSyntaxUID == j2k.file_meta.TransferSyntaxUID

    # native to JPEG 2000 lossless and back to the same pixels
    ct = tiny_study(6, series=1, instances_per_series=1, rows=64)  # OpenJPEG needs 32 pixels or more
    [native] = list(ct.datasets())
    _ingest(v.archive, [native])
    ds = client.retrieve_instance(ct.study_instance_uid, native.SeriesInstanceUID, native.SOPInstanceUID,
                                  media_types=(("application/dicom", J2K_LOSSLESS),))
    assert ds.file_meta.TransferSyntaxUID == J2K_LOSSLESS
    assert np.array_equal(ds.pixel_array, native.pixel_array)

    with _http(v) as http:
        url = f"/studies/{ct.study_instance_uid}/series/{native.SeriesInstanceUID}/instances/{native.SOPInstanceUID}"
        for ts in ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.100"):  # no encoder for JPEG baseline, MPEG-2
            r = http.get(url, headers={"Accept": f'multipart/related; type="application/dicom"; transfer-syntax={ts}'})
            assert r.status_code == 406, r.text
            assert "cannot encode" in r.json()["error"]
        # the first acceptable choice wins
        r = http.get(url, headers={"Accept": 'multipart/related; type="application/dicom"; '
                                             'transfer-syntax=1.2.840.10008.1.2.4.50, '
                                             f'multipart/related; type="application/dicom"; transfer-syntax={ELE}'})
        assert r.status_code == 200 and _parts(r)[0][0]["content-type"].endswith(ELE)


# -- WADO-RS: metadata -------------------------------------------------------------------------------


def test_metadata(voxa_factory: Any, database_url: str) -> None:
    v = voxa_factory(http=True, database_url=database_url)
    study = tiny_study(7, series=2, instances_per_series=3)
    datasets = list(study.datasets())
    datasets[1].add_new(0x60003000, "OW", b"\x01" * 4096)  # Overlay Data: bulk data besides the pixels
    _ingest(v.archive, reversed(datasets))  # arrival order must not matter
    client = _client(v)
    series_uid = datasets[0].SeriesInstanceUID

    meta = client.retrieve_series_metadata(study.study_instance_uid, series_uid)
    assert [m["00200013"]["Value"][0] for m in meta] == [1, 2, 3]
    pixel_uri = meta[0]["7FE00010"]["BulkDataURI"]
    # dicomweb-client sends "Host: 127.0.0.1" without the port: compare the path here, the URL below
    assert pixel_uri.endswith(f"/dicom-web/studies/{study.study_instance_uid}/series/{series_uid}/instances/"
                              f"{datasets[0].SOPInstanceUID}/frames")
    assert pydicom.Dataset.from_json(meta[0], bulk_data_uri_handler=lambda *a: b"").PatientID == study.patient_id

    study_meta = client.retrieve_study_metadata(study.study_instance_uid)
    assert [(m["00200011"]["Value"][0], m["00200013"]["Value"][0]) for m in study_meta] == \
        [(s, i) for s in (1, 2) for i in (1, 2, 3)]
    one = client.retrieve_instance_metadata(study.study_instance_uid, series_uid, datasets[1].SOPInstanceUID)
    assert one["60003000"]["BulkDataURI"].endswith(f"/instances/{datasets[1].SOPInstanceUID}/bulk/60003000")

    with _http(v) as http:
        r = http.get(f"/studies/{study.study_instance_uid}/metadata", headers={"Accept-Encoding": "gzip"})
        assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"
        raw = http.get(f"/studies/{study.study_instance_uid}/metadata", headers={"Accept-Encoding": "identity"})
        assert "content-encoding" not in raw.headers and raw.json() == r.json()  # httpx inflated the first
        assert [m[SOP_UID] for m in r.json()] == [m[SOP_UID] for m in study_meta]
        one = http.get(f"/studies/{study.study_instance_uid}/series/{series_uid}/instances/"
                       f"{datasets[1].SOPInstanceUID}/metadata").json()[0]
        overlay_uri = one["60003000"]["BulkDataURI"]
        assert overlay_uri == (f"{v.base_url}/dicom-web/studies/{study.study_instance_uid}/series/{series_uid}/"
                               f"instances/{datasets[1].SOPInstanceUID}/bulk/60003000")
        pixel_uri = one["7FE00010"]["BulkDataURI"]
        assert http.get("/studies/1.2.3/metadata").status_code == 404
        assert http.get(f"/studies/{study.study_instance_uid}/series/1.2.3/metadata").status_code == 404

        # bulk data: whole, through dicomweb-client, and byte ranges
        assert client.retrieve_bulkdata(overlay_uri) == [b"\x01" * 4096]
        r = http.get(overlay_uri, headers={"Accept": "application/octet-stream", "Range": "bytes=10-19"})
        assert r.status_code == 206 and r.content == b"\x01" * 10
        assert r.headers["content-range"] == "bytes 10-19/4096"
        r = http.get(overlay_uri, headers={"Accept": "application/octet-stream", "Range": "bytes=-100"})
        assert r.status_code == 206 and len(r.content) == 100
        r = http.get(overlay_uri, headers={"Range": "bytes=0-9"})  # default: multipart, still ranged
        assert r.status_code == 206 and _parts(r)[0][1] == b"\x01" * 10
        r = http.get(overlay_uri, headers={"Accept": "application/octet-stream", "Range": "bytes=5000-"})
        assert r.status_code == 416
        assert http.get(overlay_uri.replace("60003000", "60103000")).status_code == 404
        # the pixel data's BulkDataURI answers its frames
        assert client.retrieve_bulkdata(pixel_uri) == [datasets[1].PixelData]


# -- WADO-RS: frames --------------------------------------------------------------------------------


def test_frames(voxa_factory: Any) -> None:
    v = voxa_factory(http=True)
    client = _client(v)
    # native multi-frame
    xa = xa_run(2, frames=4, size=64)
    [xa_ds] = list(xa.datasets())
    _ingest(v.archive, [xa_ds])
    frame_len = 64 * 64
    got = client.retrieve_instance_frames(xa.study_instance_uid, xa_ds.SeriesInstanceUID, xa_ds.SOPInstanceUID,
                                          [2, 4])
    assert got == [xa_ds.PixelData[frame_len:2 * frame_len], xa_ds.PixelData[3 * frame_len:]]
    url = f"/studies/{xa.study_instance_uid}/series/{xa_ds.SeriesInstanceUID}/instances/{xa_ds.SOPInstanceUID}"

    # RLE multi-frame: raw fragments when any syntax is accepted, decoded bytes otherwise
    rle = _ingest_file(v.archive, "SC_rgb_rle_2frame.dcm")
    rle_url = f"/studies/{rle.StudyInstanceUID}/series/{rle.SeriesInstanceUID}/instances/{rle.SOPInstanceUID}"
    encoded = list(generate_frames(rle.PixelData, number_of_frames=2))
    decoded = rle.pixel_array
    with _http(v) as http:
        # OHIF's header: no quotes around the type
        r = http.get(rle_url + "/frames/1,2",
                     headers={"Accept": "multipart/related; type=application/octet-stream; transfer-syntax=*"})
        assert r.status_code == 200, r.text
        parts = _parts(r)
        assert [p for _, p in parts] == encoded
        assert parts[0][0]["content-type"] == "image/dicom-rle; transfer-syntax=1.2.840.10008.1.2.5"
        r = http.get(rle_url + "/frames/2", headers={"Accept": 'multipart/related; type="application/octet-stream"'})
        [(headers, body)] = _parts(r)
        assert headers["content-type"] == f"application/octet-stream; transfer-syntax={ELE}"
        assert body == decoded[1].tobytes()
        r = http.get(rle_url + "/frames/1", headers={"Accept": 'multipart/related; type="image/jp2"'})
        assert r.status_code == 200  # re-encoded in JPEG 2000 (lossless, the default of image/jp2)
        [(headers, body)] = _parts(r)
        assert headers["content-type"] == f"image/jp2; transfer-syntax={J2K_LOSSLESS}"
        assert body[:4] in (b"\xff\x4f\xff\x51", b"\x00\x00\x00\x0c")  # J2K codestream or JP2 box
        r = http.get(rle_url + "/frames/1", headers={"Accept": 'multipart/related; type="image/jpeg"'})
        assert r.status_code == 406 and "cannot encode" in r.json()["error"]

        # native data as asked by OHIF and by a plain octet-stream request
        r = http.get(url + "/frames/3",
                     headers={"Accept": "multipart/related; type=application/octet-stream; transfer-syntax=*"})
        assert _parts(r)[0][1] == xa_ds.PixelData[2 * frame_len:3 * frame_len]
        r = http.get(url + "/frames/1", headers={"Accept": "application/octet-stream"})
        assert r.status_code == 200 and r.content == xa_ds.PixelData[:frame_len]

        # the web viewer's header: a bare single part first (no boundary to search), multipart next
        viewer_accept = ("application/octet-stream; transfer-syntax=*, "
                         "multipart/related; type=application/octet-stream; transfer-syntax=*; q=0.9")
        r = http.get(url + "/frames/2", headers={"Accept": viewer_accept})
        assert r.headers["content-type"] == f"application/octet-stream; transfer-syntax={ELE}"
        assert r.content == xa_ds.PixelData[frame_len:2 * frame_len]
        r = http.get(rle_url + "/frames/2", headers={"Accept": viewer_accept})
        assert r.headers["content-type"] == "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.5"
        assert r.content == encoded[1]
        r = http.get(rle_url + "/frames/1,2", headers={"Accept": viewer_accept})  # two frames need multipart
        assert [p for _, p in _parts(r)] == encoded
        r = http.get(url + "/frames/2", headers={"Accept": "multipart/related; type=application/octet-stream, "
                                                           "application/octet-stream; q=0.5"})
        assert _parts(r)[0][1] == xa_ds.PixelData[frame_len:2 * frame_len]

        assert http.get(url + "/frames/5").status_code == 404
        assert "4 frames" in http.get(url + "/frames/5").json()["error"]
        assert http.get(url + "/frames/0").status_code == 400
        assert http.get(url + "/frames/a").status_code == 400


def test_pixel_data_of_a_series_and_a_study(voxa_factory: Any) -> None:
    """PS3.18 Pixel Data resources: every frame of a series in one response, display order,
    each part named by its frame's URL and as long as it says."""
    v = voxa_factory(http=True)
    ct = small_ct(3, slices=4)
    datasets = sorted(ct.datasets(), key=lambda d: int(d.InstanceNumber))
    _ingest(v.archive, datasets)
    xa = xa_run(3, frames=3, size=32)
    [xa_ds] = list(xa.datasets())
    _ingest(v.archive, [xa_ds])
    series = f"/studies/{ct.study_instance_uid}/series/{datasets[0].SeriesInstanceUID}"
    accept = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
    with _http(v) as http:
        r = http.get(series + "/pixeldata", headers={"Accept": accept})
        assert r.status_code == 200, r.text
        parts = _parts(r)
        assert [h["content-location"] for h, _ in parts] == [
            f"{v.base_url}/dicom-web{series}/instances/{d.SOPInstanceUID}/frames/1" for d in datasets]
        assert [body for _, body in parts] == [d.PixelData for d in datasets]
        assert all(int(h["content-length"]) == len(body) for h, body in parts)
        assert parts[0][0]["content-type"] == f"application/octet-stream; transfer-syntax={ELE}"
        # an instance's frames, and a study's: the same parts as asking frame by frame
        xa_url = f"/studies/{xa.study_instance_uid}/series/{xa_ds.SeriesInstanceUID}/instances/{xa_ds.SOPInstanceUID}"
        frames = _parts(http.get(xa_url + "/pixeldata", headers={"Accept": accept}))
        assert [b for _, b in frames] == [xa_ds.PixelData[i * 1024:(i + 1) * 1024] for i in range(3)]
        assert [b for _, b in _parts(http.get(f"/studies/{xa.study_instance_uid}/pixeldata"))] == [b for _, b in frames]
        # compressed images come as stored when any syntax will do, decoded otherwise
        rle = _ingest_file(v.archive, "SC_rgb_rle_2frame.dcm")
        rle_url = f"/studies/{rle.StudyInstanceUID}/series/{rle.SeriesInstanceUID}/pixeldata"
        stored = _parts(http.get(rle_url, headers={"Accept": accept}))
        assert [b for _, b in stored] == list(generate_frames(rle.PixelData, number_of_frames=2))
        assert stored[0][0]["content-type"] == "image/dicom-rle; transfer-syntax=1.2.840.10008.1.2.5"
        native = _parts(http.get(rle_url, headers={"Accept": 'multipart/related; type="application/octet-stream"'}))
        assert [b for _, b in native] == [f.tobytes() for f in rle.pixel_array]
        # refusals say why
        r = http.get(series + "/pixeldata", headers={"Accept": "application/octet-stream"})
        assert r.status_code == 406 and "multipart/related" in r.json()["error"]
        r = http.get(rle_url, headers={"Accept": 'multipart/related; type="image/jpeg"'})
        assert r.status_code == 406 and "cannot encode" in r.json()["error"]
        r = http.get(series + "/pixeldata", headers={"Accept": 'multipart/related; type="image/png"'})
        assert r.status_code == 406 and "cannot be sent" in r.json()["error"]
        assert http.get(f"/studies/{ct.study_instance_uid}/series/1.2.3/pixeldata").status_code == 404


def test_bit_packed_frames_off_byte_boundaries(voxa_factory: Any) -> None:
    """A binary SEG-like instance of 5x5 frames (25 bits: frames packed back to back, most
    starting inside a byte): each frame comes back as its own bits from bit 0, zero-padded."""
    from pydicom.pixels import pack_bits

    v = voxa_factory(http=True)
    xa = xa_run(2, frames=1, size=8)
    [ds] = list(xa.datasets())
    rng = np.random.default_rng(7)
    frames = rng.integers(0, 2, size=(3, 5, 5), dtype=np.uint8)
    ds.Rows = ds.Columns = 5
    ds.NumberOfFrames = 3
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 1, 0, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = pack_bits(frames)
    for keyword in ("WindowCenter", "WindowWidth", "FrameIncrementPointer", "FrameTime"):
        if keyword in ds:
            delattr(ds, keyword)
    _ingest(v.archive, [ds])
    url = f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    with _http(v) as http:
        r = http.get(url + "/frames/1,2,3",
                     headers={"Accept": "multipart/related; type=application/octet-stream; transfer-syntax=*"})
        assert r.status_code == 200, r.text
        parts = [body for _, body in _parts(r)]
    assert [len(p) for p in parts] == [4, 4, 4]  # 25 bits -> 4 bytes each
    for frame, body in zip(frames, parts, strict=True):
        bits = np.unpackbits(np.frombuffer(body, dtype=np.uint8), bitorder="little")
        assert bits[:25].tolist() == frame.ravel().tolist()
        assert not bits[25:].any()


# -- rendered --------------------------------------------------------------------------------------


def _image(data: bytes, fmt: str = "JPEG") -> Image.Image:
    img = Image.open(io.BytesIO(data))
    assert img.format == fmt
    img.load()
    return img


def test_rendered(voxa_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from voxa.web.dicomweb import cache as cache_module

    monkeypatch.setattr(cache_module, "_SYNC_EVERY_S", 0.0)
    v = voxa_factory(http=True)
    ct = small_ct(8, slices=5, rows=64)
    datasets = list(ct.datasets())
    _ingest(v.archive, datasets)
    client = _client(v)
    study, series = ct.study_instance_uid, datasets[0].SeriesInstanceUID
    sop = datasets[2].SOPInstanceUID

    img = _image(client.retrieve_instance_rendered(study, series, sop, media_types=("image/jpeg",)))
    assert img.size == (64, 64) and np.asarray(img).std() > 10  # not blank
    img = _image(client.retrieve_instance_rendered(study, series, sop, media_types=("image/png",),
                                                   params={"viewport": "128,128"}), "PNG")
    assert img.size == (128, 128)
    series_img = _image(client.retrieve_series_rendered(study, series))
    assert series_img.size == (64, 64)

    with _http(v) as http:
        base = f"/studies/{study}/series/{series}/instances/{sop}"
        # OHIF encodes the comma of the viewport
        r = http.get(base + "/rendered?viewport=256%2C256")
        assert r.status_code == 200 and _image(r.content).size == (256, 256)
        narrow = np.asarray(_image(http.get(base + "/rendered", params={"window": "40,1"}).content), dtype=float)
        wide = np.asarray(_image(http.get(base + "/rendered", params={"window": "40,4000"}).content), dtype=float)
        assert narrow.std() > wide.std() and abs(narrow.std() - wide.std()) > 5
        crop = _image(http.get(base + "/rendered", params={"viewport": "32,32,0,0,32,32"}).content)
        assert crop.size == (32, 32)
        for bad in ({"window": "40"}, {"window": "a,b"}, {"viewport": "0,10"}, {"quality": "500"},
                    {"window": "40,100,cubic"}):
            r = http.get(base + "/rendered", params=bad)
            assert r.status_code == 400, (bad, r.text)
        assert http.get(base + "/rendered", headers={"Accept": "image/gif"}).status_code == 406

        for path in (f"/studies/{study}/thumbnail", f"/studies/{study}/series/{series}/thumbnail",
                     base + "/thumbnail", base + "/frames/1/thumbnail"):
            r = http.get(path)
            assert r.status_code == 200, (path, r.text)
            assert max(_image(r.content).size) <= 128
        r = http.get(f"/studies/{study}/rendered", headers={"Accept": 'multipart/related; type="image/jpeg"'})
        assert len(_parts(r)) == 5
        assert http.get(base + "/frames/1/rendered").status_code == 200
        assert http.get(base + "/frames/2/rendered").status_code == 404

        # the cache: same bytes, an ETag, 304 on revalidation
        first = http.get(base + "/rendered", params={"viewport": "48,48"})
        again = http.get(base + "/rendered", params={"viewport": "48,48"})
        assert first.content == again.content and first.headers["etag"] == again.headers["etag"]
        assert http.get(base + "/rendered", params={"viewport": "48,48"},
                        headers={"If-None-Match": first.headers["etag"]}).status_code == 304
        cache_dir = v.data_dir / "cache" / "rendered"
        cached = [p for p in cache_dir.rglob("*") if p.is_file()]
        assert cached

        # deleting the instance: 404, and its cached renderings are removed
        public_id = next(loc.public_id for loc in v.archive.index.locate(sop_uid=sop))
        v.archive.delete(Level.IMAGE, public_id)
        assert http.get(base + "/rendered", params={"viewport": "48,48"}).status_code == 404
        other = datasets[0].SOPInstanceUID
        assert http.get(f"/studies/{study}/series/{series}/instances/{other}/rendered").status_code == 200
        from voxa.web.dicomweb.cache import _h

        assert not (cache_dir / _h(sop)[:2] / _h(sop)).exists()


def test_rendered_multiframe_and_colour(voxa_factory: Any) -> None:
    v = voxa_factory(http=True)
    rle = _ingest_file(v.archive, "SC_rgb_rle_2frame.dcm")
    xa = xa_run(3, frames=3, size=64)
    [xa_ds] = list(xa.datasets())
    _ingest(v.archive, [xa_ds])
    with _http(v) as http:
        base = f"/studies/{rle.StudyInstanceUID}/series/{rle.SeriesInstanceUID}/instances/{rle.SOPInstanceUID}"
        img = _image(http.get(base + "/frames/2/rendered").content)
        assert img.mode == "RGB" and img.size == (100, 100)
        png = _image(http.get(base + "/frames/2/rendered", headers={"Accept": "image/png"}).content, "PNG")
        assert np.array_equal(np.asarray(png), rle.pixel_array[1])  # lossless: exactly the RGB pixels
        xa_base = f"/studies/{xa.study_instance_uid}/series/{xa_ds.SeriesInstanceUID}/instances/{xa_ds.SOPInstanceUID}"
        f1 = http.get(xa_base + "/frames/1/rendered", headers={"Accept": "image/png"}).content
        f3 = http.get(xa_base + "/frames/3/rendered", headers={"Accept": "image/png"}).content
        assert f1 != f3


# -- STOW-RS ---------------------------------------------------------------------------------------


def _multipart_body(parts: list[bytes], boundary: str = "XXboundaryXX") -> tuple[bytes, str]:
    body = b"".join(b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n"
                    for p in parts) + b"--" + boundary.encode() + b"--\r\n"
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def test_stow(voxa_factory: Any, database_url: str) -> None:
    v = voxa_factory(http=True, database_url=database_url)
    client = _client(v)
    study = tiny_study(9, series=1, instances_per_series=4)
    datasets = list(study.datasets())

    answer = client.store_instances(datasets[:2])
    refs = answer.ReferencedSOPSequence
    assert [r.ReferencedSOPInstanceUID for r in refs] == [ds.SOPInstanceUID for ds in datasets[:2]]
    assert refs[0].RetrieveURL.endswith(f"/dicom-web/studies/{study.study_instance_uid}/series/"
                                        f"{datasets[0].SeriesInstanceUID}/instances/{datasets[0].SOPInstanceUID}")
    assert answer.RetrieveURL.endswith(f"/dicom-web/studies/{study.study_instance_uid}")
    assert "FailedSOPSequence" not in answer
    assert len(client.search_for_instances(study.study_instance_uid)) == 2

    # a new instance, a corrupt one, and one already stored: 202
    new = dataset_to_bytes(datasets[2])
    corrupt = dataset_to_bytes(datasets[3])[:-500]
    body, ctype = _multipart_body([new, corrupt, dataset_to_bytes(datasets[0])])
    with _http(v) as http:
        r = http.post("/studies", content=body, headers={"Content-Type": ctype})
        assert r.status_code == 202, r.text
        assert r.headers["content-type"].startswith("application/dicom+json")
        answer = pydicom.Dataset.from_json(r.json())
        assert [x.ReferencedSOPInstanceUID for x in answer.ReferencedSOPSequence] == [
            datasets[2].SOPInstanceUID, datasets[0].SOPInstanceUID]
        assert "WarningReason" not in answer.ReferencedSOPSequence[0]
        assert answer.ReferencedSOPSequence[1].WarningReason == 0xB000
        [failed] = answer.FailedSOPSequence
        assert failed.FailureReason == 0xC000 and failed.ReferencedSOPInstanceUID == datasets[3].SOPInstanceUID
        assert "corrupt" in r.headers["warning"] and "part 2" in r.headers["warning"]
        # stored byte for byte
        loc = v.archive.index.locate(sop_uid=datasets[2].SOPInstanceUID)[0]
        assert v.archive.blobs.read(loc.blob_key) == new

        # nothing stored: 409 (dicomweb-client raises)
        body, ctype = _multipart_body([b"not dicom at all", corrupt])
        r = http.post("/studies", content=body, headers={"Content-Type": ctype})
        assert r.status_code == 409
        assert [f["00081197"]["Value"][0] for f in r.json()["00081198"]["Value"]] == [0xC000, 0xC000]
        with pytest.raises(requests.HTTPError):
            client.store_instances([pydicom.dcmread(io.BytesIO(corrupt), force=True)], study_instance_uid="1.2.3")

        # POST /studies/{study} refuses instances of another study
        other = tiny_study(10, series=1, instances_per_series=1)
        body, ctype = _multipart_body([dataset_to_bytes(next(other.datasets()))])
        r = http.post(f"/studies/{study.study_instance_uid}", content=body, headers={"Content-Type": ctype})
        assert r.status_code == 409
        assert r.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xA900]
        assert not v.archive.index.locate(study_uid=other.study_instance_uid)
        body, ctype = _multipart_body([dataset_to_bytes(datasets[3])])
        r = http.post(f"/studies/{study.study_instance_uid}", content=body, headers={"Content-Type": ctype})
        assert r.status_code == 200

        # a bare application/dicom body is one instance; other media types are refused
        solo = tiny_study(11, series=1, instances_per_series=1)
        r = http.post("/studies", content=dataset_to_bytes(next(solo.datasets())),
                      headers={"Content-Type": "application/dicom"})
        assert r.status_code == 200
        assert http.post("/studies", content=b"{}", headers={"Content-Type": "application/json"}).status_code == 415
        r = http.post("/studies", content=b"--x\r\n\r\n{}\r\n--x--",
                      headers={"Content-Type": 'multipart/related; type="application/dicom+json"; boundary=x'})
        assert r.status_code == 415
        r = http.post("/studies", content=b"garbage", headers={"Content-Type": "multipart/related; boundary=zz"})
        assert r.status_code == 400 and "multipart" in r.json()["error"]
        r = http.post("/studies", content=b"", headers={"Content-Type": 'multipart/related; type="application/dicom"'})
        assert r.status_code == 400 and "boundary" in r.json()["error"]


# -- WADO-URI --------------------------------------------------------------------------------------


def test_wado_uri(voxa_factory: Any) -> None:
    v = voxa_factory(http=True)
    study = tiny_study(12, series=1, instances_per_series=1, rows=48)
    [ds] = list(study.datasets())
    [data] = _ingest(v.archive, [ds])
    q = {"requestType": "WADO", "studyUID": study.study_instance_uid, "seriesUID": ds.SeriesInstanceUID,
         "objectUID": ds.SOPInstanceUID}
    with httpx.Client(base_url=v.base_url, timeout=30, auth=v.auth) as http:
        r = http.get("/wado", params={**q, "contentType": "application/dicom"})
        assert r.status_code == 200 and r.content == data and r.headers["content-type"] == "application/dicom"
        r = http.get("/wado", params={**q, "contentType": "application/dicom", "transferSyntax": J2K_LOSSLESS})
        back = pydicom.dcmread(io.BytesIO(r.content))
        assert back.file_meta.TransferSyntaxUID == J2K_LOSSLESS and np.array_equal(back.pixel_array, ds.pixel_array)
        img = _image(http.get("/wado", params=q).content)
        assert img.size == (48, 48)
        img = _image(http.get("/wado", params={**q, "contentType": "image/png", "rows": 64, "columns": 64,
                                               "windowCenter": 40, "windowWidth": 400}).content, "PNG")
        assert img.size == (64, 64)
        r = http.get("/wado", params={"requestType": "WADO", "objectUID": ds.SOPInstanceUID})  # UIDs optional
        assert r.status_code == 200
        assert http.get("/wado", params={**q, "requestType": "X"}).status_code == 400
        assert http.get("/wado", params={**q, "objectUID": "1.2.3"}).status_code == 404
        assert http.get("/wado", params={**q, "studyUID": "1.2.3"}).status_code == 404
        assert http.get("/wado", params={**q, "contentType": "text/html"}).status_code == 406
        assert http.get("/wado", params={**q, "windowCenter": "40"}).status_code == 400


# -- pieces without a server ----------------------------------------------------------------------


def test_accept_parsing() -> None:
    from voxa.web.dicomweb.media import parse_accept, parse_range

    [r] = parse_accept("multipart/related; type=application/octet-stream; transfer-syntax=*")
    assert (r.type, r.multipart, r.transfer_syntax) == ("application/octet-stream", True, "*")
    [r] = parse_accept('multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1')
    assert (r.type, r.transfer_syntax) == ("application/dicom", ELE)
    ranges = parse_accept('image/png;q=0.5, multipart/related; type="image/jpeg", */*;q=0.1, image/gif;q=0')
    assert [(x.type, x.multipart) for x in ranges] == [("image/jpeg", True), ("image/png", False), ("*/*", False)]
    assert parse_accept(None)[0].type == "*/*"
    assert parse_range("bytes=0-9", 100) == (0, 9)
    assert parse_range("bytes=90-", 100) == (90, 99)
    assert parse_range("bytes=-5", 100) == (95, 99)
    assert parse_range("bytes=0-1,5-6", 100) is None  # several ranges: served whole


def test_multipart_reader_in_any_chunks() -> None:
    from voxa.web.dicomweb import multipart

    payloads = [b"first\r\n--not-the-boundary", b"", b"\x00" * 3000 + b"end"]
    body = b"".join(multipart.encode([({"Content-Type": "application/dicom"}, (p,)) for p in payloads], "bnd"))
    for size in (1, 7, 100, len(body)):
        reader = multipart.MultipartReader("bnd")
        parts = []
        for i in range(0, len(body), size):
            parts.extend(reader.feed(body[i:i + size]))
        reader.finish()
        assert [p.body for p in parts] == payloads, size
        assert parts[0].content_type == "application/dicom"
    reader = multipart.MultipartReader("bnd")
    reader.feed(body[:-20])
    with pytest.raises(multipart.MultipartError):
        reader.finish()


def test_window_and_monochrome1() -> None:
    from voxa.web.dicomweb.render import Window, apply_window, render_array

    values = np.array([-1000.0, 39.0, 40.0, 1000.0], dtype=np.float32)
    assert apply_window(values, Window(40, 400)).tolist() == [0, 127, 128, 255]
    assert apply_window(values, Window(40, 1)).tolist() == [0, 0, 255, 255]
    sig = apply_window(values, Window(40, 400, "SIGMOID"))
    assert sig[0] < 5 and sig[-1] > 250

    class _File:  # the small part of InstanceFile that render_array uses
        def __init__(self, ds: pydicom.Dataset):
            self.ds = ds

        def decoded_frame(self, index: int, as_rgb: bool = True) -> tuple[np.ndarray, dict[str, Any]]:
            return self.ds.pixel_array, {"photometric_interpretation": self.ds.PhotometricInterpretation,
                                         "samples_per_pixel": 1}

    ds = make_instance(patient_id="P", patient_name="N", study_instance_uid="1.2.3", series_instance_uid="1.2.3.4",
                       sop_instance_uid="1.2.3.4.5", modality="CT", rows=16)
    ds.WindowCenter, ds.WindowWidth = "40", "400"
    mono2 = render_array(_File(ds), 0, None)  # type: ignore[arg-type]
    ds.PhotometricInterpretation = "MONOCHROME1"
    mono1 = render_array(_File(ds), 0, None)  # type: ignore[arg-type]
    assert np.array_equal(mono1, 255 - mono2)
    hu = ds.pixel_array.astype(float) - 1024
    expected = np.clip(((hu - 39.5) / 399 + 0.5) * 255, 0, 255)
    assert np.abs(mono2.astype(float) - expected).max() <= 1.0


def test_gzip_helper_sanity() -> None:
    # the metadata answer is a single gzip member that any client can inflate
    from voxa.web.dicomweb.media import accepts_gzip

    assert accepts_gzip("gzip, deflate, br") and accepts_gzip("*") and not accepts_gzip("gzip;q=0")
    assert not accepts_gzip(None) and gzip.decompress(gzip.compress(b"[]", mtime=0)) == b"[]"


def test_study_search_by_a_series_attribute(voxa_factory: Any) -> None:
    """A study search naming BodyPartExamined (a series attribute) finds the studies with such a
    series; the attribute is not returned at study level. C-FIND stays hierarchical."""
    from voxa.testing.synthetic import mr_brain

    v = voxa_factory(http=True)
    chest, head = small_ct(5, slices=2), mr_brain(5, slices=2)
    for study in (chest, head):
        _ingest(v.archive, list(study.datasets()))
    with _http(v) as http:
        def uids(**params: str) -> set[str]:
            r = http.get("/studies", params=params, headers={"Accept": "application/dicom+json"})
            assert r.status_code == 200, r.text
            return {item["0020000D"]["Value"][0] for item in (r.json() if r.content else [])}

        assert uids(BodyPartExamined="CHEST") == {chest.study_instance_uid}
        assert uids(BodyPartExamined="HE*") == {head.study_instance_uid}
        assert uids(BodyPartExamined="KNEE") == set()
        assert uids() == {chest.study_instance_uid, head.study_instance_uid}
        r = http.get("/studies", params={"BodyPartExamined": "CHEST"}, headers={"Accept": "application/dicom+json"})
        assert "00180015" not in r.json()[0] and "BodyPartExamined" not in r.headers.get("Warning", "")
    # the index's hierarchical query (C-FIND) still ignores series keys at study level
    from voxa.archive.query import Query, run_query

    found = run_query(v.archive.index, Query(level=Level.STUDY, filters={"BodyPartExamined": "KNEE"}))
    assert len(found) == 2
