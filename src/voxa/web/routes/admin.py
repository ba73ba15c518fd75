"""Administration over REST: accounts, roles, patient assignments, family access grants,
teaching flags and the audit trail (search, export, verify).

Every change is recorded in the audit trail by the route's declaration (``audit=``); the
outcome follows the response status.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy import update

from voxa.archive.models import Study, table_of
from voxa.archive.resources import UnknownResource, resolve_public_id
from voxa.security import audit as audit_mod
from voxa.security.accounts import AccountError, Conflict, FamilyGrantInfo, InvalidValue, NotFound, RoleInfo
from voxa.security.audit import AuditAction
from voxa.security.audit_export import to_csv, to_dicom_audit_xml, to_fhir_audit_events
from voxa.security.passwords import WeakPassword
from voxa.security.permissions import Permission as Perm
from voxa.web.access import PrincipalDep, auth_context, note_access, requires
from voxa.web.app import DomainError
from voxa.web.deps import MAX_DB_INT, RowId, RuntimeDep
from voxa.web.routes.auth import user_json

router = APIRouter(tags=["admin"])
ST = table_of(Study)


def _error(e: AccountError | WeakPassword) -> DomainError:
    if isinstance(e, NotFound):
        return DomainError(404, str(e))
    if isinstance(e, Conflict):
        return DomainError(409, str(e))
    return DomainError(422, str(e))


def _changed(request: Request, what: str, **detail: Any) -> None:
    """Name the changed object in the audit record and drop cached credentials/access."""
    event = getattr(request.state, "audit", None)
    if event is not None:
        event.resource = what
        event.detail = {**event.detail, **detail}
    auth_context(request).forget()


# --------------------------------------------------------------------------- users


class UserCreate(BaseModel):
    username: str = Field(max_length=64)
    password: str = Field(max_length=1024)
    role: str = Field(max_length=64)
    display_name: str = Field("", max_length=128)
    email: str = Field("", max_length=254)
    referring_physician_name: str = Field("", max_length=324,
                                          description="DICOM PN (Family^Given) matched against studies.")
    must_change_password: bool = False


class UserUpdate(BaseModel):
    role: str | None = Field(None, max_length=64)
    display_name: str | None = Field(None, max_length=128)
    email: str | None = Field(None, max_length=254)
    referring_physician_name: str | None = Field(None, max_length=324)
    disabled: bool | None = None
    password: str | None = Field(None, max_length=1024, description="A new password (resets a lockout).")
    must_change_password: bool | None = None


@router.get("/admin/users")
@requires(Perm.MANAGE_USERS)
def list_users(request: Request) -> list[dict[str, Any]]:
    return [_admin_user_json(u) for u in auth_context(request).accounts.list_users()]


@router.post("/admin/users", status_code=201)
@requires(Perm.MANAGE_USERS, audit=AuditAction.ACCOUNT_CHANGE)
def create_user(body: UserCreate, request: Request) -> dict[str, Any]:
    _changed(request, f"user:{body.username.strip().lower()}", change="created", role=body.role)
    try:
        user = auth_context(request).accounts.create_user(
            body.username, body.password, role=body.role, display_name=body.display_name, email=body.email,
            referring_physician_name=body.referring_physician_name, must_change_password=body.must_change_password)
    except (AccountError, WeakPassword) as e:
        raise _error(e) from None
    return _admin_user_json(user)


@router.get("/admin/users/{username}")
@requires(Perm.MANAGE_USERS)
def get_user(username: str, request: Request) -> dict[str, Any]:
    try:
        return _admin_user_json(auth_context(request).accounts.get_user(username))
    except AccountError as e:
        raise _error(e) from None


@router.patch("/admin/users/{username}")
@requires(Perm.MANAGE_USERS, audit=AuditAction.ACCOUNT_CHANGE)
def update_user(username: str, body: UserUpdate, request: Request) -> dict[str, Any]:
    accounts = auth_context(request).accounts
    changed = sorted(k for k, v in body.model_dump().items() if v is not None)
    _changed(request, f"user:{username.lower()}", change="updated", fields=changed)
    try:
        user = accounts.update_user(username, display_name=body.display_name, email=body.email, role=body.role,
                                    referring_physician_name=body.referring_physician_name,
                                    must_change_password=body.must_change_password)
        if body.password is not None:
            accounts.set_password(user, body.password, must_change_password=bool(body.must_change_password))
        if body.disabled is True:
            accounts.disable(user)
        elif body.disabled is False:
            accounts.enable(user)
        return _admin_user_json(accounts.get_user(user.id))
    except (AccountError, WeakPassword) as e:
        raise _error(e) from None


@router.post("/admin/users/{username}/unlock")
@requires(Perm.MANAGE_USERS, audit=AuditAction.ACCOUNT_CHANGE)
def unlock_user(username: str, request: Request) -> dict[str, Any]:
    _changed(request, f"user:{username.lower()}", change="unlocked")
    try:
        auth_context(request).accounts.unlock(username)
        return _admin_user_json(auth_context(request).accounts.get_user(username))
    except AccountError as e:
        raise _error(e) from None


@router.delete("/admin/users/{username}")
@requires(Perm.MANAGE_USERS, audit=AuditAction.ACCOUNT_CHANGE)
def delete_user(username: str, request: Request, principal: PrincipalDep) -> dict[str, Any]:
    if principal.user is not None and principal.user.username == username.strip().lower():
        raise DomainError(409, "you cannot delete your own account")
    _changed(request, f"user:{username.lower()}", change="deleted")
    try:
        auth_context(request).accounts.delete_user(username)
    except AccountError as e:
        raise _error(e) from None
    return {"deleted": username.lower()}


@router.get("/admin/users/{username}/tokens")
@requires(Perm.MANAGE_USERS)
def user_tokens(username: str, request: Request) -> list[dict[str, Any]]:
    from voxa.web.routes.auth import _token_json

    try:
        return [_token_json(t) for t in auth_context(request).accounts.list_tokens(username)]
    except AccountError as e:
        raise _error(e) from None


@router.delete("/admin/tokens/{token_id}")
@requires(Perm.MANAGE_USERS, audit=AuditAction.ACCOUNT_CHANGE)
def revoke_any_token(token_id: RowId, request: Request) -> dict[str, Any]:
    _changed(request, f"token:{token_id}", change="token revoked")
    try:
        auth_context(request).accounts.revoke_token(token_id)
    except AccountError as e:
        raise _error(e) from None
    return {"revoked": token_id}


def _admin_user_json(user: Any) -> dict[str, Any]:
    out = user_json(user)
    out.update(disabled=user.disabled, failed_logins=user.failed_logins,
               locked_until=user.locked_until.isoformat() if user.locked_until else None,
               created_at=user.created_at.isoformat())
    return out


# --------------------------------------------------------------------------- roles


class RoleCreate(BaseModel):
    name: str = Field(max_length=64)
    permissions: list[str]
    description: str = Field("", max_length=256)
    patient_scope: str = Field("all", description="all | assigned | teaching_only")


class RoleUpdate(BaseModel):
    permissions: list[str] | None = None
    description: str | None = Field(None, max_length=256)
    patient_scope: str | None = None
    name: str | None = Field(None, max_length=64)


def _role_json(r: RoleInfo) -> dict[str, Any]:
    return {"name": r.name, "description": r.description, "builtin": r.builtin,
            "permissions": sorted(p.value for p in r.permissions), "patient_scope": r.scope.value}


@router.get("/admin/roles")
@requires(Perm.MANAGE_ROLES, Perm.MANAGE_USERS)
def list_roles(request: Request) -> list[dict[str, Any]]:
    return [_role_json(r) for r in auth_context(request).accounts.list_roles()]


@router.post("/admin/roles", status_code=201)
@requires(Perm.MANAGE_ROLES, audit=AuditAction.ROLE_CHANGE)
def create_role(body: RoleCreate, request: Request) -> dict[str, Any]:
    _changed(request, f"role:{body.name.strip().lower()}", change="created", permissions=sorted(body.permissions))
    try:
        return _role_json(auth_context(request).accounts.create_role(body.name, body.permissions, body.description,
                                                                     body.patient_scope))
    except (AccountError, ValueError) as e:
        raise (_error(e) if isinstance(e, AccountError) else DomainError(422, str(e))) from None


@router.get("/admin/roles/{name}")
@requires(Perm.MANAGE_ROLES, Perm.MANAGE_USERS)
def get_role(name: str, request: Request) -> dict[str, Any]:
    try:
        return _role_json(auth_context(request).accounts.get_role(name))
    except AccountError as e:
        raise _error(e) from None


@router.patch("/admin/roles/{name}")
@requires(Perm.MANAGE_ROLES, audit=AuditAction.ROLE_CHANGE)
def update_role(name: str, body: RoleUpdate, request: Request) -> dict[str, Any]:
    _changed(request, f"role:{name.lower()}", change="updated",
             fields=sorted(k for k, v in body.model_dump().items() if v is not None))
    try:
        return _role_json(auth_context(request).accounts.update_role(
            name, permissions=body.permissions, description=body.description, scope=body.patient_scope,
            new_name=body.name))
    except (AccountError, ValueError) as e:
        raise (_error(e) if isinstance(e, AccountError) else DomainError(422, str(e))) from None


@router.delete("/admin/roles/{name}")
@requires(Perm.MANAGE_ROLES, audit=AuditAction.ROLE_CHANGE)
def delete_role(name: str, request: Request) -> dict[str, Any]:
    _changed(request, f"role:{name.lower()}", change="deleted")
    try:
        auth_context(request).accounts.delete_role(name)
    except AccountError as e:
        raise _error(e) from None
    return {"deleted": name.lower()}


# --------------------------------------------------------------------------- patient access


class AssignmentBody(BaseModel):
    patient_id: str = Field(min_length=1, max_length=64)
    issuer_of_patient_id: str = Field("", max_length=64)


@router.get("/admin/users/{username}/patients")
@requires(Perm.ASSIGN_PATIENTS, Perm.MANAGE_USERS)
def list_assignments(username: str, request: Request) -> list[dict[str, Any]]:
    try:
        return [{"patient_id": a.patient_id, "issuer_of_patient_id": a.issuer_of_patient_id,
                 "created_at": a.created_at.isoformat()} for a in auth_context(request).accounts.assignments(username)]
    except AccountError as e:
        raise _error(e) from None


@router.post("/admin/users/{username}/patients", status_code=201)
@requires(Perm.ASSIGN_PATIENTS, audit=AuditAction.GRANT_CHANGE)
def assign_patient(username: str, body: AssignmentBody, request: Request, principal: PrincipalDep) -> dict[str, Any]:
    _changed(request, f"user:{username.lower()}", change="patient assigned")
    note_access(request, patient_ids=body.patient_id)
    try:
        a = auth_context(request).accounts.assign_patient(username, body.patient_id, body.issuer_of_patient_id,
                                                          by=principal.user)
    except AccountError as e:
        raise _error(e) from None
    return {"patient_id": a.patient_id, "issuer_of_patient_id": a.issuer_of_patient_id}


@router.delete("/admin/users/{username}/patients/{patient_id}")
@requires(Perm.ASSIGN_PATIENTS, audit=AuditAction.GRANT_CHANGE)
def unassign_patient(username: str, patient_id: str, request: Request, issuer: str = "") -> dict[str, Any]:
    _changed(request, f"user:{username.lower()}", change="patient unassigned")
    note_access(request, patient_ids=patient_id)
    try:
        auth_context(request).accounts.unassign_patient(username, patient_id, issuer)
    except AccountError as e:
        raise _error(e) from None
    return {"unassigned": patient_id}


class FamilyRequest(BaseModel):
    username: str = Field(max_length=64, description="The family member's account.")
    patient_id: str = Field(min_length=1, max_length=64)
    issuer_of_patient_id: str = Field("", max_length=64)
    expires_at: dt.datetime = Field(description="When access ends (ISO 8601 with a time zone).")
    note: str = Field("", max_length=2000, description="How the relationship was established.")


def _grant_json(g: FamilyGrantInfo, usernames: dict[int, str]) -> dict[str, Any]:
    def iso(v: dt.datetime | None) -> str | None:
        return v.isoformat() if v else None
    return {"id": g.id, "username": usernames.get(g.user_id, str(g.user_id)), "patient_id": g.patient_id,
            "issuer_of_patient_id": g.issuer_of_patient_id, "status": g.status.value, "note": g.note,
            "requested_at": iso(g.requested_at), "verified_by": usernames.get(g.verified_by or -1),
            "verified_at": iso(g.verified_at), "expires_at": iso(g.expires_at), "revoked_at": iso(g.revoked_at)}


def _usernames(request: Request) -> dict[int, str]:
    return {u.id: u.username for u in auth_context(request).accounts.list_users()}


@router.get("/admin/family-grants")
@requires(Perm.ASSIGN_PATIENTS, Perm.MANAGE_USERS)
def list_family_grants(request: Request, status: str | None = None) -> list[dict[str, Any]]:
    try:
        grants = auth_context(request).accounts.family_grants(status=status)
    except ValueError:
        raise DomainError(422, "status must be requested, active, expired or revoked") from None
    names = _usernames(request)
    return [_grant_json(g, names) for g in grants]


@router.post("/admin/family-grants", status_code=201)
@requires(Perm.ASSIGN_PATIENTS, audit=AuditAction.GRANT_CHANGE)
def request_family_grant(body: FamilyRequest, request: Request) -> dict[str, Any]:
    """Record a family member's request; it gives no access until an administrator verifies it."""
    _changed(request, f"user:{body.username.lower()}", change="family access requested")
    note_access(request, patient_ids=body.patient_id)
    accounts = auth_context(request).accounts
    try:
        if accounts.get_user(body.username).role != "family_member":
            raise InvalidValue(f"{body.username} does not have the family_member role")
        g = accounts.request_family_access(body.username, body.patient_id, expires_at=body.expires_at,
                                           issuer=body.issuer_of_patient_id, note=body.note)
    except AccountError as e:
        raise _error(e) from None
    return _grant_json(g, _usernames(request))


@router.post("/admin/family-grants/{grant_id}/verify")
@requires(Perm.MANAGE_USERS, audit=AuditAction.GRANT_CHANGE)
def verify_family_grant(grant_id: RowId, request: Request, principal: PrincipalDep) -> dict[str, Any]:
    _changed(request, f"family-grant:{grant_id}", change="verified")
    try:
        g = auth_context(request).accounts.verify_family_access(grant_id, principal.user or 0)
    except AccountError as e:
        raise _error(e) from None
    note_access(request, patient_ids=g.patient_id)
    return _grant_json(g, _usernames(request))


@router.post("/admin/family-grants/{grant_id}/revoke")
@requires(Perm.ASSIGN_PATIENTS, Perm.MANAGE_USERS, audit=AuditAction.GRANT_CHANGE)
def revoke_family_grant(grant_id: RowId, request: Request) -> dict[str, Any]:
    _changed(request, f"family-grant:{grant_id}", change="revoked")
    try:
        g = auth_context(request).accounts.revoke_family_access(grant_id)
    except AccountError as e:
        raise _error(e) from None
    note_access(request, patient_ids=g.patient_id)
    return _grant_json(g, _usernames(request))


# --------------------------------------------------------------------------- teaching flag


class TeachingFlag(BaseModel):
    teaching: bool


@router.put("/studies/{id}/teaching")
@requires(Perm.MODIFY, audit=AuditAction.MODIFY)
def set_teaching(id: str, body: TeachingFlag, rt: RuntimeDep, request: Request) -> dict[str, Any]:  # noqa: A002
    """Flag a study as a teaching case (students see it, always de-identified) or unflag it."""
    try:
        ref = resolve_public_id(rt.archive.index, id)
    except UnknownResource:
        raise DomainError(404, f"no study {id}") from None
    if not ref.study_instance_uid or ref.series_instance_uid:
        raise DomainError(422, f"{id} is a {ref.orthanc_level.lower()}, not a study")
    with rt.archive.index.write() as conn:
        conn.execute(update(ST).where(ST.c.study_instance_uid == ref.study_instance_uid).values(teaching=body.teaching))
    _changed(request, f"study:{id}", change="teaching flag", teaching=body.teaching)
    return {"ID": id, "StudyInstanceUID": ref.study_instance_uid, "Teaching": body.teaching}


# --------------------------------------------------------------------------- audit trail


AuditFilters = dict[str, Any]


def _audit_filters(actor: str | None, patient_id: str | None, study_uid: str | None, action: str | None,
                   outcome: str | None, interface: str | None, since: str | None, until: str | None) -> AuditFilters:
    def when(v: str | None, what: str) -> dt.datetime | None:
        if not v:
            return None
        try:
            t = dt.datetime.fromisoformat(v)
        except ValueError:
            raise DomainError(422, f"{what} must be an ISO 8601 date or time, got {v!r}") from None
        return t if t.tzinfo else t.replace(tzinfo=dt.UTC)
    return {"actor": actor, "patient_id": patient_id, "study_uid": study_uid,
            "action": action.split(",") if action else None, "outcome": outcome, "interface": interface,
            "since": when(since, "since"), "until": when(until, "until")}


Str = Annotated[str | None, Query()]


@router.get("/audit")
@requires(Perm.VIEW_AUDIT, audit=AuditAction.AUDIT_QUERY)
def search_audit(rt: RuntimeDep, request: Request, actor: Str = None, patient_id: Str = None, study_uid: Str = None,
                 action: Str = None, outcome: Str = None, interface: Str = None, since: Str = None,
                 until: Str = None, limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
                 offset: Annotated[int, Query(ge=0, le=MAX_DB_INT)] = 0, newest_first: bool = True) -> list[dict[str, Any]]:
    """Audit records matching every given filter (``action`` may list several, comma-separated)."""
    filters = _audit_filters(actor, patient_id, study_uid, action, outcome, interface, since, until)
    _changed(request, "audit", filters={k: str(v) for k, v in filters.items() if v})
    try:
        rows = audit_mod.search(rt.archive.index, **filters, limit=limit, offset=offset, newest_first=newest_first)
    except ValueError as e:
        raise DomainError(422, str(e)) from None
    return [r.as_dict() for r in rows]


@router.get("/audit/export")
@requires(Perm.VIEW_AUDIT, audit=AuditAction.AUDIT_EXPORT)
def export_audit(rt: RuntimeDep, request: Request, format: str = "csv",  # noqa: A002
                 actor: Str = None, patient_id: Str = None, study_uid: Str = None, action: Str = None,
                 outcome: Str = None, interface: Str = None, since: Str = None, until: Str = None,
                 limit: Annotated[int, Query(ge=1, le=1_000_000)] = 100_000) -> Response:
    """The matching records as ``csv``, ``fhir`` (a Bundle of AuditEvent) or ``dicom`` (PS3.15 A.5 XML)."""
    filters = _audit_filters(actor, patient_id, study_uid, action, outcome, interface, since, until)
    _changed(request, "audit", format=format)
    try:
        rows = audit_mod.search(rt.archive.index, **filters, limit=limit)
    except ValueError as e:
        raise DomainError(422, str(e)) from None
    if format == "csv":
        return Response(to_csv(rows), media_type="text/csv",
                        headers={"Content-Disposition": 'attachment; filename="voxa-audit.csv"'})
    if format == "fhir":
        return JSONResponse(to_fhir_audit_events(rows), media_type="application/fhir+json")
    if format == "dicom":
        return Response(to_dicom_audit_xml(rows), media_type="application/xml")
    raise DomainError(422, f"format must be csv, fhir or dicom, got {format!r}")


@router.get("/audit/verify")
@requires(Perm.VIEW_AUDIT)
def verify_audit(rt: RuntimeDep) -> dict[str, Any]:
    """Walk the hash chain: every altered or missing record is named."""
    report = audit_mod.verify(rt.archive.index)
    return {"ok": report.ok, "records": report.records, "last_seq": report.last_seq, "bad_records": report.bad_seqs,
            "messages": report.lines()}
