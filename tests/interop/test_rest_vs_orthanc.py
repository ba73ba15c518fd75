"""Voxa's Orthanc-compatible REST API against a real Orthanc 1.10 holding the same files.

The same studies are uploaded to both over ``POST /instances``; then every resource is read
from both and compared: the ID lists at every level, each resource's keys and values
(``MainDicomTags`` above all), the instances' tags, statistics, find results, previews and
ZIP archives.  Deliberate differences are listed in the allow-lists below, each with its
reason (see also docs/rest.md).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from voxa.testing.synthetic import dataset_to_bytes, make_instance, small_ct, tiny_study

# Keys Voxa adds to resources: Orthanc 1.12 reports "Labels" (pyorthanc reads it); 1.10 does not.
# "OhifUrl" (studies) opens the study in the bundled OHIF viewer.
EXTRA_KEYS = {"Labels", "OhifUrl"}
# Keys whose values legitimately differ between two servers.
DIFFERENT_VALUES = {
    "FileUuid",  # each server names its own storage
    "LastUpdate",  # the moment each server received the instance
    "IsStable",  # the same rule (60 s without news), but the two uploads happen at different times
}
# /system: Voxa reports its own name and version, and what it does not have as Orthanc does.
SYSTEM_KEYS_VOXA_ONLY = {"Product", "IndexBackend"}


def _studies() -> list[bytes]:
    parts = [dataset_to_bytes(ds) for ds in small_ct(61, slices=3, rows=32).datasets()]
    parts += [dataset_to_bytes(ds) for ds in tiny_study(62, series=2, instances_per_series=2).datasets()]
    parts += [dataset_to_bytes(ds) for ds in tiny_study(63, modality="MR", series=1, instances_per_series=1,
                                                         patient_name="MÜLLER^JOSÉ").datasets()]
    # DS and IS values written as real scanners write them (padding zeros, leading zeros), empty
    # values, a main tag with an empty value, and a long string
    parts.append(dataset_to_bytes(make_instance(
        patient_id="P64", patient_name="ODD^VALUES", study_instance_uid="2.25.64", series_instance_uid="2.25.64.1",
        sop_instance_uid="2.25.64.1.1", study_id="", accession_number="", instance_number=7,
        ImagePositionPatient=["-125.000000", "02.50", "1e2"], ImageOrientationPatient=["1.0", "0.0", "0", "0",
                                                                                      "1", "-0.0"],
        SeriesNumber="003", AcquisitionNumber=None, ImageComments="  spaced  ", InstitutionAddress="x" * 300,
        OperatorsName=["ONE^OP", "TWO^OP"])))
    return parts


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, orthanc_bind_shim: Path) -> Any:
    """A Voxa and an Orthanc holding the same files (shared by the tests of this module: they only read)."""
    from support.orthanc import start_orthanc
    from support.voxa import start_voxa

    voxa = start_voxa(tmp_path_factory.mktemp("voxa"), http=True)
    try:
        orthanc = start_orthanc(tmp_path_factory.mktemp("orthanc"), shim=orthanc_bind_shim)
    except Exception:
        voxa.stop()
        raise
    parts = _studies()
    try:
        with httpx.Client(base_url=voxa.base_url, timeout=60, auth=voxa.auth) as v, \
                httpx.Client(base_url=orthanc.url, timeout=60) as o:
            for p in parts:
                rv, ro = v.post("/instances", content=p), o.post("/instances", content=p)
                assert rv.status_code == 200 and ro.status_code == 200, (rv.text, ro.text)
                assert rv.json() == {k: ro.json()[k] for k in rv.json()}
            yield v, o, parts
    finally:
        orthanc.stop()
        voxa.stop()


def _compare_resource(ours: dict[str, Any], theirs: dict[str, Any], where: str) -> None:
    assert set(ours) - EXTRA_KEYS == set(theirs), where
    for key in theirs:
        if key in DIFFERENT_VALUES:
            continue
        if key in ("Studies", "Series", "Instances"):
            assert sorted(ours[key]) == sorted(theirs[key]), (where, key)
        else:
            assert ours[key] == theirs[key], (where, key)


def test_resources_match_orthanc(servers: Any) -> None:
    v, o, parts = servers
    for level in ("patients", "studies", "series", "instances"):
        ids = v.get(f"/{level}").json()
        assert sorted(ids) == sorted(o.get(f"/{level}").json()), level
        for public_id in ids:
            ours, theirs = v.get(f"/{level}/{public_id}").json(), o.get(f"/{level}/{public_id}").json()
            _compare_resource(ours, theirs, f"/{level}/{public_id}")
            assert v.get(f"/{level}/{public_id}/statistics").json() == \
                o.get(f"/{level}/{public_id}/statistics").json()
        expanded_v = {r["ID"]: r for r in v.get(f"/{level}?expand").json()}
        expanded_o = {r["ID"]: r for r in o.get(f"/{level}?expand").json()}
        for public_id, theirs in expanded_o.items():
            _compare_resource(expanded_v[public_id], theirs, f"/{level}?expand {public_id}")
    stats_v, stats_o = v.get("/statistics").json(), o.get("/statistics").json()
    assert stats_v == stats_o

    # children of each level, expanded, as Orthanc lists them
    for study in o.get("/studies").json():
        for child in ("series", "instances"):
            ours = {r["ID"]: r for r in v.get(f"/studies/{study}/{child}").json()}
            for theirs in o.get(f"/studies/{study}/{child}").json():
                _compare_resource(ours[theirs["ID"]], theirs, f"/studies/{study}/{child}")
        _compare_resource(v.get(f"/studies/{study}/patient").json(), o.get(f"/studies/{study}/patient").json(),
                          "parent patient")


def test_tags_match_orthanc(servers: Any) -> None:
    v, o, _parts = servers
    for public_id in o.get("/instances").json():
        ours, theirs = v.get(f"/instances/{public_id}/tags").json(), o.get(f"/instances/{public_id}/tags").json()
        assert ours == theirs, public_id
        simple_v = v.get(f"/instances/{public_id}/simplified-tags").json()
        simple_o = o.get(f"/instances/{public_id}/simplified-tags").json()
        assert simple_v == simple_o, public_id
        assert v.get(f"/instances/{public_id}/tags?short").json() == o.get(f"/instances/{public_id}/tags?short").json()
        # the main tags of every level read the same in both
        instance = o.get(f"/instances/{public_id}").json()
        for key, value in instance["MainDicomTags"].items():
            assert simple_v[key] == value
        assert v.get(f"/instances/{public_id}/frames").json() == o.get(f"/instances/{public_id}/frames").json()
        header_v = v.get(f"/instances/{public_id}/header?simplify").json()
        header_o = o.get(f"/instances/{public_id}/header?simplify").json()
        assert header_v == header_o


def test_previews_match_orthanc(servers: Any) -> None:
    v, o, _parts = servers
    for public_id in o.get("/instances").json():
        ours = np.asarray(Image.open(io.BytesIO(v.get(f"/instances/{public_id}/preview").content)))
        theirs = np.asarray(Image.open(io.BytesIO(o.get(f"/instances/{public_id}/preview").content)))
        assert ours.shape == theirs.shape
        assert np.array_equal(ours, theirs), public_id


def test_find_and_archives_match_orthanc(servers: Any) -> None:
    v, o, _parts = servers
    queries = [
        {"Level": "Patient", "Query": {}},
        {"Level": "Study", "Query": {"PatientName": "*^*"}},
        {"Level": "Study", "Query": {"PatientName": "odd*"}},
        {"Level": "Study", "Query": {"PatientName": "odd*"}, "CaseSensitive": True},
        {"Level": "Study", "Query": {"StudyDescription": "ct*"}},
        {"Level": "Study", "Query": {"ModalitiesInStudy": "MR\\CT"}},
        {"Level": "Series", "Query": {"Modality": "CT"}},
        {"Level": "Instance", "Query": {"InstanceNumber": "2"}},
        {"Level": "Instance", "Query": {"StudyDate": "20000101-"}},
        {"Level": "Instance", "Query": {"ImageComments": "*spaced*"}},
        {"Level": "Study", "Query": {"PatientID": "P64"}, "Expand": True},
    ]
    for query in queries:
        ours, theirs = v.post("/tools/find", json=query).json(), o.post("/tools/find", json=query).json()
        if query.get("Expand"):
            assert len(ours) == len(theirs)
            for a, b in zip(sorted(ours, key=lambda r: r["ID"]), sorted(theirs, key=lambda r: r["ID"]), strict=True):
                _compare_resource(a, b, str(query))
        else:
            assert sorted(ours) == sorted(theirs), query
    for uid in ("2.25.64", "P64", "2.25.64.1.1"):
        assert v.post("/tools/lookup", content=uid).json() == o.post("/tools/lookup", content=uid).json()

    for study in o.get("/studies").json():
        ours = zipfile.ZipFile(io.BytesIO(v.get(f"/studies/{study}/archive").content))
        theirs = zipfile.ZipFile(io.BytesIO(o.get(f"/studies/{study}/archive").content))
        names = sorted(theirs.namelist())
        if "MLLER" in names[0]:  # Orthanc drops accented letters, Voxa transliterates them
            names = [n.replace("MLLER JOS", "MULLER JOSE") for n in names]
        assert sorted(ours.namelist()) == names
        assert sorted(ours.read(n) for n in ours.namelist()) == sorted(theirs.read(n) for n in theirs.namelist())


def test_system_and_changes_look_like_orthanc(servers: Any) -> None:
    v, o, _parts = servers
    system_v, system_o = v.get("/system").json(), o.get("/system").json()
    assert set(system_v) - SYSTEM_KEYS_VOXA_ONLY == set(system_o)
    changes_v, changes_o = v.get("/changes?limit=1000").json(), o.get("/changes?limit=1000").json()
    assert set(changes_v) == set(changes_o) == {"Changes", "Done", "Last"}
    # the same events, not in the same order (Orthanc logs an instance before its series)
    key = ("ChangeType", "ID", "Path", "ResourceType")
    assert sorted(tuple(c[k] for k in key) for c in changes_v["Changes"]) == \
        sorted(tuple(c[k] for k in key) for c in changes_o["Changes"])
    assert {tuple(sorted(c)) for c in changes_v["Changes"]} == {tuple(sorted(c)) for c in changes_o["Changes"]}
    assert v.get("/changes?last").json()["Last"] == changes_v["Last"]
