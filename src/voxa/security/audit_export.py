"""Audit records as CSV, FHIR R4 ``AuditEvent`` (a Bundle) and DICOM audit messages (PS3.15 A.5).

Event codes are DICOM's (DCM, PS3.16 CID 400-404), in both FHIR and DICOM output:

=============================  =====================================  ==============================
action                          EventID                                 EventTypeCode
=============================  =====================================  ==============================
query                           110112 Query
view, modify                    110103 DICOM Instances Accessed
retrieve, store                 110104 DICOM Instances Transferred
download, export, print         110106 Export
delete                          110105 DICOM Study Deleted
login, logout, login_failed     110114 User Authentication              110122 Login / 110123 Logout
account_change                  110113 Security Alert                   110137 User Security Attributes Changed
role_change, grant_change       110113 Security Alert                   110136 Security Roles Changed
peer_change                     110113 Security Alert                   110128 Network Configuration
settings_change                 110113 Security Alert                   110131 Software Configuration
audit_query, audit_export       110101 Audit Log Used
=============================  =====================================  ==============================
"""

from __future__ import annotations

import csv
import io
import ipaddress
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from typing import Any

from voxa.security.audit import AuditEntry, canonical_json, format_at

DCM = "http://dicom.nema.org/resources/ontology/DCM"
AUDIT_SOURCE_ID = "VOXA"

Code = tuple[str, str]  # (code, display)

_EVENT: dict[str, tuple[Code, Code | None, str]] = {
    # action: (EventID, EventTypeCode, EventActionCode C/R/U/D/E)
    "query": (("110112", "Query"), None, "E"),
    "view": (("110103", "DICOM Instances Accessed"), None, "R"),
    "retrieve": (("110104", "DICOM Instances Transferred"), None, "R"),
    "download": (("110106", "Export"), None, "R"),
    "export": (("110106", "Export"), None, "R"),
    "print": (("110106", "Export"), None, "R"),
    "store": (("110104", "DICOM Instances Transferred"), None, "C"),
    "modify": (("110103", "DICOM Instances Accessed"), None, "U"),
    "delete": (("110105", "DICOM Study Deleted"), None, "D"),
    "login": (("110114", "User Authentication"), ("110122", "Login"), "E"),
    "login_failed": (("110114", "User Authentication"), ("110122", "Login"), "E"),
    "logout": (("110114", "User Authentication"), ("110123", "Logout"), "E"),
    "account_change": (("110113", "Security Alert"), ("110137", "User Security Attributes Changed"), "U"),
    "role_change": (("110113", "Security Alert"), ("110136", "Security Roles Changed"), "U"),
    "grant_change": (("110113", "Security Alert"), ("110136", "Security Roles Changed"), "U"),
    "peer_change": (("110113", "Security Alert"), ("110128", "Network Configuration"), "U"),
    "settings_change": (("110113", "Security Alert"), ("110131", "Software Configuration"), "U"),
    "audit_query": (("110101", "Audit Log Used"), None, "R"),
    "audit_export": (("110101", "Audit Log Used"), None, "R"),
}
_DEFAULT_EVENT: tuple[Code, Code | None, str] = (("110100", "Application Activity"), None, "E")
_OUTCOME = {"success": "0", "denied": "4", "failure": "8"}
_OUTCOME_DISPLAY = {"0": "Success", "4": "Minor failure", "8": "Serious failure"}


def event_codes(action: str) -> tuple[Code, Code | None, str]:
    """(EventID, EventTypeCode or None, EventActionCode) of an audit action."""
    return _EVENT.get(action, _DEFAULT_EVENT)


def outcome_indicator(outcome: str) -> str:
    return _OUTCOME.get(outcome, "8")


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


# -- CSV -----------------------------------------------------------------------------------

CSV_COLUMNS = ["seq", "at", "actor", "actor_role", "source", "interface", "action", "outcome", "outcome_detail",
               "patient_ids", "study_instance_uids", "resource", "detail", "prev_hash", "record_hash"]


def to_csv(records: Iterable[AuditEntry]) -> str:
    """One header line, one row per record; multi-valued identifiers backslash-joined."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in records:
        d = r.as_dict()
        d["patient_ids"] = "\\".join(r.patient_ids)
        d["study_instance_uids"] = "\\".join(r.study_instance_uids)
        d["detail"] = canonical_json(r.detail)
        writer.writerow([d[c] for c in CSV_COLUMNS])
    return out.getvalue()


# -- FHIR R4 AuditEvent ----------------------------------------------------------------------


def _coding(code: Code, system: str = DCM) -> dict[str, str]:
    return {"system": system, "code": code[0], "display": code[1]}


def to_fhir_audit_event(r: AuditEntry) -> dict[str, Any]:
    event_id, event_type, action_code = event_codes(r.action)
    outcome = outcome_indicator(r.outcome)
    agent: dict[str, Any] = {
        "who": {"identifier": {"value": r.actor}, "display": r.actor},
        "requestor": True,
    }
    if r.actor_role:
        agent["role"] = [{"text": r.actor_role}]
    if r.source:
        agent["network"] = {"address": r.source, "type": "2" if _is_ip(r.source) else "1"}
    entities: list[dict[str, Any]] = []
    for pid in r.patient_ids:
        entities.append({
            "what": {"identifier": {"value": pid}},
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1",
                     "display": "Person"},
            "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1",
                     "display": "Patient"},
        })
    for uid in r.study_instance_uids:
        entities.append({
            "what": {"identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"}},
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2",
                     "display": "System Object"},
            "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "3",
                     "display": "Report"},
            "name": "StudyInstanceUID",
        })
    if r.resource:
        entities.append({"what": {"display": r.resource}, "description": "resource"})
    resource: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": f"voxa-audit-{r.seq}",
        "type": _coding(event_id),
        "action": action_code,
        "recorded": format_at(r.at),
        "outcome": outcome,
        "agent": [agent],
        "source": {"observer": {"display": "Voxa"}, "site": AUDIT_SOURCE_ID,
                   "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                             "code": "4", "display": "Application Server"}]},
        "extension": [{"url": "urn:voxa:audit:record-hash", "valueString": r.record_hash}],
    }
    if event_type is not None:
        resource["subtype"] = [_coding(event_type)]
    if r.outcome_detail or r.outcome != "success":
        resource["outcomeDesc"] = f"{r.outcome}: {r.outcome_detail}" if r.outcome_detail else r.outcome
    if entities:
        resource["entity"] = entities
    return resource


def to_fhir_audit_events(records: Iterable[AuditEntry]) -> dict[str, Any]:
    """A FHIR R4 ``Bundle`` (type ``collection``) of ``AuditEvent`` resources."""
    entries = [{"fullUrl": f"urn:uuid:voxa-audit-{r.seq}", "resource": to_fhir_audit_event(r)} for r in records]
    return {"resourceType": "Bundle", "type": "collection", "total": len(entries), "entry": entries}


# -- DICOM audit messages (PS3.15 A.5) -------------------------------------------------------


def _code_element(parent: ET.Element, tag: str, code: Code, system: str = "DCM") -> ET.Element:
    return ET.SubElement(parent, tag, {"csd-code": code[0], "codeSystemName": system, "originalText": code[1]})


def to_dicom_audit_message(r: AuditEntry) -> ET.Element:
    """One ``AuditMessage`` element (PS3.15 A.5.1)."""
    event_id, event_type, action_code = event_codes(r.action)
    msg = ET.Element("AuditMessage")
    ev = ET.SubElement(msg, "EventIdentification", {
        "EventActionCode": action_code, "EventDateTime": format_at(r.at),
        "EventOutcomeIndicator": outcome_indicator(r.outcome)})
    _code_element(ev, "EventID", event_id)
    if event_type is not None:
        _code_element(ev, "EventTypeCode", event_type)
    if r.outcome_detail:
        ET.SubElement(ev, "EventOutcomeDescription").text = r.outcome_detail
    participant = {"UserID": r.actor, "UserIsRequestor": "true"}
    if r.source:
        participant["NetworkAccessPointID"] = r.source
        participant["NetworkAccessPointTypeCode"] = "2" if _is_ip(r.source) else "1"
    ap = ET.SubElement(msg, "ActiveParticipant", participant)
    if r.actor_role:
        ET.SubElement(ap, "RoleIDCode", {"csd-code": r.actor_role, "codeSystemName": "VOXA",
                                         "originalText": r.actor_role})
    src = ET.SubElement(msg, "AuditSourceIdentification", {"AuditSourceID": AUDIT_SOURCE_ID})
    _code_element(src, "AuditSourceTypeCode", ("4", "Application Server Process"))
    for pid in r.patient_ids:
        po = ET.SubElement(msg, "ParticipantObjectIdentification", {
            "ParticipantObjectID": pid, "ParticipantObjectTypeCode": "1", "ParticipantObjectTypeCodeRole": "1"})
        _code_element(po, "ParticipantObjectIDTypeCode", ("2", "Patient Number"), "RFC-3881")
    for uid in r.study_instance_uids:
        po = ET.SubElement(msg, "ParticipantObjectIdentification", {
            "ParticipantObjectID": uid, "ParticipantObjectTypeCode": "2", "ParticipantObjectTypeCodeRole": "3"})
        _code_element(po, "ParticipantObjectIDTypeCode", ("110180", "Study Instance UID"))
    return msg


def to_dicom_audit_xml(records: Iterable[AuditEntry]) -> str:
    """The records' ``AuditMessage`` elements inside one ``AuditMessages`` root, as an XML document."""
    root = ET.Element("AuditMessages", {"AuditSourceID": AUDIT_SOURCE_ID})
    for r in records:
        root.append(to_dicom_audit_message(r))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
