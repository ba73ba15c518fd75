"""The diagnostic reports a study holds, and the studies by report status.

Until Voxa writes reports itself, a study's reports are the report documents stored in it, as a
RIS or a reporting system sends them: DICOM SR documents whose title is a LOINC report title
(the codes of CID 7000 "Diagnostic Imaging Report Document Titles" — "Imaging Measurement
Report", dose reports, CAD and Voxa's own analysis SRs are other titles and are not reports), and
encapsulated PDF and CDA documents. A report is **final** when its Verification Flag (0040,A493)
is VERIFIED, **preliminary** when it is UNVERIFIED (or an SR without it); an encapsulated
document without the flag counts as final (a rendered, released document). A study's status is
its best report's: final, preliminary, or none. A family member (role ``family_member``: "one
patient's signed reports and images") is shown final reports only.

* ``GET /reports?status=final|preliminary`` — ``{"studies": {StudyInstanceUID: status}}`` for
  the studies the caller may see that have reports (of that status);
* ``GET /reports/studies/{study}`` — ``{"study_instance_uid", "status", "reports": [...]}``,
  newest first: title, kind (sr, pdf, cda), status, completion and verification flags, date and
  time, verifying observer, the series and SOP Instance UIDs;
* ``GET /reports/studies/{study}/documents/{sop}`` — an encapsulated report as its own media
  type (``application/pdf``, ``text/xml``), to read in the browser.
"""

from __future__ import annotations

import io
import json
import zlib
from dataclasses import asdict, dataclass
from typing import Any

import pydicom
from fastapi import APIRouter, Response
from sqlalchemy import select

from voxa.archive.access import study_condition
from voxa.archive.blobstore import BlobNotFound
from voxa.archive.index import Index
from voxa.archive.models import Instance, Series, Study, table_of
from voxa.security.audit import AuditAction
from voxa.security.permissions import Permission as Perm
from voxa.web.access import PrincipalDep, requires
from voxa.web.app import DomainError
from voxa.web.deps import RuntimeDep

router = APIRouter(tags=["reports"])
ST, SE, IN = table_of(Study), table_of(Series), table_of(Instance)

SR_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.88.11",  # Basic Text SR
    "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.88.34",  # Comprehensive 3D SR
    "1.2.840.10008.5.1.4.1.1.88.35",  # Extensible SR
})
DOCUMENT_CLASSES = {"1.2.840.10008.5.1.4.1.1.104.1": "pdf", "1.2.840.10008.5.1.4.1.1.104.2": "cda"}
STATUSES = ("final", "preliminary")


@dataclass(frozen=True)
class ReportDocument:
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    kind: str  # sr, pdf, cda
    title: str
    status: str  # final, preliminary
    completion_flag: str
    verification_flag: str
    date: str
    time: str
    verifying_observer: str

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _value(attrs: dict[str, Any], tag: str) -> Any:
    values = (attrs.get(tag) or {}).get("Value") or []
    return values[0] if values else None


def _text(attrs: dict[str, Any], tag: str) -> str:
    v = _value(attrs, tag)
    if isinstance(v, dict):  # a person name
        return str(v.get("Alphabetic") or "")
    return "" if v is None else str(v)


def report_document(sop_class: str, study: str, series: str, sop: str, attrs: dict[str, Any]) -> ReportDocument | None:
    """The report an instance's DICOM JSON describes; None when it is not a report."""
    title_code = _value(attrs, "0040A043") or {}
    if sop_class in SR_CLASSES:
        if not isinstance(title_code, dict) or _text(title_code, "00080102") != "LN":
            return None
        kind = "sr"
    elif sop_class in DOCUMENT_CLASSES:
        kind = DOCUMENT_CLASSES[sop_class]
    else:
        return None
    title = (_text(title_code, "00080104") if isinstance(title_code, dict) else "") or _text(attrs, "00420010")
    verification = _text(attrs, "0040A493").upper()
    completion = _text(attrs, "0040A491").upper()
    if verification == "VERIFIED":
        status = "final"
    elif verification == "UNVERIFIED" or kind == "sr":
        status = "preliminary"
    else:
        status = "final"
    observer = _value(attrs, "0040A073")
    return ReportDocument(
        study_instance_uid=study, series_instance_uid=series, sop_instance_uid=sop, kind=kind,
        title=title or "Report", status=status, completion_flag=completion, verification_flag=verification,
        date=_text(attrs, "00080023") or _text(attrs, "00080021"), time=_text(attrs, "00080033") or _text(attrs, "00080031"),
        verifying_observer=_text(observer, "0040A075") if isinstance(observer, dict) else "")


def report_documents(index: Index, *, study: str | None = None, access: Any = None) -> list[ReportDocument]:
    """The report documents of one study or of every study ``access`` shows, newest first."""
    q = (select(IN.c.sop_class_uid, ST.c.study_instance_uid, SE.c.series_instance_uid, IN.c.sop_instance_uid,
                IN.c.metadata_json)
         .join(SE, SE.c.id == IN.c.series_fk).join(ST, ST.c.id == SE.c.study_fk)
         .where(IN.c.sop_class_uid.in_(sorted(SR_CLASSES | set(DOCUMENT_CLASSES)))))
    if study is not None:
        q = q.where(ST.c.study_instance_uid == study)
    restriction = study_condition(access, ST)
    if restriction is not None:
        q = q.where(restriction)
    found = []
    with index.read() as conn:
        for sop_class, st, se, sop, packed in conn.execute(q):
            attrs = json.loads(zlib.decompress(packed)) if packed else {}
            doc = report_document(sop_class, st, se, sop, attrs)
            if doc is not None:
                found.append(doc)
    found.sort(key=lambda d: (d.date, d.time), reverse=True)
    return found


SIGNED_ONLY_ROLES = frozenset({"family_member"})


def _for(principal: Any, documents: list[ReportDocument]) -> list[ReportDocument]:
    """What of ``documents`` the caller is shown: everything, or the final reports only."""
    if principal.role in SIGNED_ONLY_ROLES:
        return [d for d in documents if d.status == "final"]
    return documents


def study_status(documents: list[ReportDocument]) -> str:
    statuses = {d.status for d in documents}
    return next((s for s in STATUSES if s in statuses), "none")


def _require_study(index: Index, study: str) -> None:
    if len(study) > 64 or "\x00" in study:
        raise DomainError(404, "no such study")
    with index.read() as conn:
        if conn.execute(select(ST.c.id).where(ST.c.study_instance_uid == study)).first() is None:
            raise DomainError(404, f"no study {study}")


@router.get("/reports", response_model=None)
@requires(Perm.VIEW_REPORT, audit=AuditAction.QUERY)
def studies_with_reports(rt: RuntimeDep, principal: PrincipalDep, status: str | None = None) -> dict[str, Any]:
    """The studies (that the caller may see) with reports, each with its status; ``status``
    (final, preliminary) keeps the studies of that status."""
    if status not in (None, "", *STATUSES):
        raise DomainError(422, f"status must be final or preliminary, got {(status or '')[:32]!r}")
    by_study: dict[str, list[ReportDocument]] = {}
    for doc in _for(principal, report_documents(rt.archive.index, access=principal.access)):
        by_study.setdefault(doc.study_instance_uid, []).append(doc)
    studies = {uid: study_status(docs) for uid, docs in by_study.items()}
    if status:
        studies = {uid: s for uid, s in studies.items() if s == status}
    return {"studies": studies}


@router.get("/reports/studies/{study}", response_model=None)
@requires(Perm.VIEW_REPORT, audit=AuditAction.VIEW)
def study_reports(study: str, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    """The study's reports, newest first, and the study's report status."""
    _require_study(rt.archive.index, study)
    docs = _for(principal, report_documents(rt.archive.index, study=study))
    return {"study_instance_uid": study, "status": study_status(docs), "reports": [d.as_json() for d in docs]}


@router.get("/reports/studies/{study}/documents/{sop}", response_class=Response)
@requires(Perm.VIEW_REPORT, audit=AuditAction.VIEW)
def report_document_body(study: str, sop: str, rt: RuntimeDep, principal: PrincipalDep) -> Response:
    """An encapsulated report (PDF, CDA) as its own media type."""
    _require_study(rt.archive.index, study)
    if principal.role in SIGNED_ONLY_ROLES and sop not in {
            d.sop_instance_uid for d in _for(principal, report_documents(rt.archive.index, study=study))}:
        raise DomainError(404, f"no final report {sop[:64]} in study {study}")
    q = (select(IN.c.sop_class_uid, IN.c.blob_key).join(SE, SE.c.id == IN.c.series_fk)
         .join(ST, ST.c.id == SE.c.study_fk)
         .where(ST.c.study_instance_uid == study, IN.c.sop_instance_uid == sop))
    with rt.archive.index.read() as conn:
        row = conn.execute(q).first()
    if row is None:
        raise DomainError(404, f"no instance {sop[:64]} in study {study}")
    if row.sop_class_uid not in DOCUMENT_CLASSES:
        raise DomainError(406, f"instance {sop} is not an encapsulated document (an SR is read in a viewer)")
    try:
        data = rt.archive.blobs.read(row.blob_key)
    except BlobNotFound:
        raise DomainError(404, f"the stored file of instance {sop} is missing") from None
    ds = pydicom.dcmread(io.BytesIO(data))
    body = bytes(ds.get("EncapsulatedDocument") or b"")
    length = ds.get("EncapsulatedDocumentLength")
    if length is not None and 0 < int(length) <= len(body):
        body = body[:int(length)]  # the value is padded to an even length
    media = str(ds.get("MIMETypeOfEncapsulatedDocument") or "application/octet-stream").strip()
    name = "report.pdf" if DOCUMENT_CLASSES[row.sop_class_uid] == "pdf" else "report.xml"
    return Response(body, media_type=media, headers={"Content-Disposition": f'inline; filename="{name}"'})
