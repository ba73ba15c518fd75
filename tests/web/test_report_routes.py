"""Reports a study holds (LOINC-titled SR documents, encapsulated PDF) over REST: per study, by
status across the studies a user may see, and a PDF to read; what is not a report (a TID 1500
measurement SR) is left out; errors say what was wrong."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from pydicom.uid import generate_uid

from voxa.testing.synthetic import dataset_to_bytes, make_instance, report_pdf, report_sr

PASSWORD = "Correct-Horse-7-battery"
PDF_BYTES = b"%PDF-1.4\n% a synthetic one-page report\n%%EOF\n"


@pytest.fixture
def server(voxa_factory: Any) -> Any:
    v = voxa_factory(http=True)
    studies = {}
    for n, pid in ((1, "PAT-R1"), (2, "PAT-R2"), (3, "PAT-R3"), (4, "PAT-R4")):
        ds = make_instance(patient_id=pid, patient_name=f"Report^Patient{n}", study_instance_uid=generate_uid(),
                           series_instance_uid=generate_uid(), sop_instance_uid=generate_uid(), modality="CT")
        studies[n] = ds
    docs = [
        report_sr(studies[1], "20240102", verified=False),  # preliminary, then the final one
        report_sr(studies[1], "20240103", verified=True),
        report_sr(studies[2], "20240105", verified=False, title=("18747-6", "LN", "CT Report")),
        # not a report: a measurement SR (TID 1500) as Voxa's analyses write them
        report_sr(studies[3], "20240106", verified=True, title=("126000", "DCM", "Imaging Measurement Report")),
        report_pdf(studies[4], "20240107", PDF_BYTES),
    ]
    for ds in [*studies.values(), *docs]:
        result = v.archive.ingest(dataset_to_bytes(ds), source="test")
        assert result.ok, result.reason
    v.runtime.accounts.create_user("ref", PASSWORD, role="referring_physician")
    v.runtime.accounts.assign_patient("ref", "PAT-R2")
    v.runtime.accounts.create_user("fam", PASSWORD, role="family_member")
    for pid in ("PAT-R1", "PAT-R2"):
        v.runtime.accounts.assign_patient("fam", pid)
    v.studies, v.docs = studies, docs
    return v


def _client(v: Any, user: str | None = None) -> httpx.Client:
    auth = (user, PASSWORD) if user else v.auth
    return httpx.Client(base_url=v.base_url, auth=auth, timeout=30)


def test_reports_by_study_and_status(server: Any) -> None:
    uid = {n: ds.StudyInstanceUID for n, ds in server.studies.items()}
    with _client(server) as c:
        r = c.get("/reports")
        assert r.status_code == 200, r.text
        assert r.json()["studies"] == {uid[1]: "final", uid[2]: "preliminary", uid[4]: "final"}
        assert c.get("/reports", params={"status": "preliminary"}).json()["studies"] == {uid[2]: "preliminary"}
        assert set(c.get("/reports", params={"status": "final"}).json()["studies"]) == {uid[1], uid[4]}

        one = c.get(f"/reports/studies/{uid[1]}").json()
        assert one["status"] == "final"
        assert [(d["status"], d["date"], d["kind"]) for d in one["reports"]] == [
            ("final", "20240103", "sr"), ("preliminary", "20240102", "sr")]
        final = one["reports"][0]
        assert final["title"] == "Diagnostic Imaging Report" and final["verifying_observer"] == "Reader^Rita"
        assert final["verification_flag"] == "VERIFIED" and final["completion_flag"] == "COMPLETE"
        assert final["sop_instance_uid"] == server.docs[1].SOPInstanceUID
        assert c.get(f"/reports/studies/{uid[3]}").json() == {"study_instance_uid": uid[3], "status": "none",
                                                             "reports": []}

        pdf = c.get(f"/reports/studies/{uid[4]}").json()["reports"]
        assert [(d["kind"], d["title"], d["status"]) for d in pdf] == [("pdf", "Radiology report", "final")]
        body = c.get(f"/reports/studies/{uid[4]}/documents/{pdf[0]['sop_instance_uid']}")
        assert body.status_code == 200 and body.content == PDF_BYTES
        assert body.headers["content-type"] == "application/pdf"

        # errors
        r = c.get("/reports", params={"status": "signed"})
        assert r.status_code == 422 and "final or preliminary" in r.json()["error"]
        assert c.get("/reports/studies/1.2.3").status_code == 404
        assert c.get(f"/reports/studies/{uid[4]}/documents/1.2.3").status_code == 404
        r = c.get(f"/reports/studies/{uid[1]}/documents/{final['sop_instance_uid']}")
        assert r.status_code == 406 and "not an encapsulated document" in r.json()["error"]


def test_reports_only_of_the_patients_a_user_may_see(server: Any) -> None:
    uid = {n: ds.StudyInstanceUID for n, ds in server.studies.items()}
    with _client(server, "ref") as c:
        assert c.get("/reports").json()["studies"] == {uid[2]: "preliminary"}
        assert c.get(f"/reports/studies/{uid[2]}").status_code == 200
        assert c.get(f"/reports/studies/{uid[1]}").status_code in (403, 404)


def test_a_family_member_sees_final_reports_only(server: Any) -> None:
    uid = {n: ds.StudyInstanceUID for n, ds in server.studies.items()}
    with _client(server, "fam") as c:
        assert c.get("/reports").json()["studies"] == {uid[1]: "final"}  # study 2's report is preliminary
        one = c.get(f"/reports/studies/{uid[1]}").json()
        assert [d["status"] for d in one["reports"]] == ["final"]
        assert c.get(f"/reports/studies/{uid[2]}").json()["status"] == "none"
        assert c.get(f"/reports/studies/{uid[4]}").status_code in (403, 404)  # not their patient

