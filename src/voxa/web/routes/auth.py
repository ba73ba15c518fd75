"""Signing in and out, the caller's own profile, API tokens and the second factor.

The login page is a plain HTML form (it must work before any script loads); the same
``POST /login`` takes JSON for the web app.  A successful login sets the ``voxa_session``
cookie (HTTP-only, SameSite=Lax, Secure behind HTTPS) and answers the CSRF token that
state-changing requests made with the cookie must echo in ``X-CSRF-Token``.
"""

from __future__ import annotations

import datetime as dt
import html
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from voxa.security.accounts import AuthenticationFailed, AuthFailure, InvalidValue, User
from voxa.security.audit import AuditAction, AuditEvent, AuditInterface, AuditOutcome
from voxa.security.passwords import WeakPassword
from voxa.web.access import (
    CSRF_HEADER,
    SESSION_COOKIE,
    PrincipalDep,
    auth_context,
    authenticated,
    check_origin,
    client_address,
    failure_message,
    public,
)
from voxa.web.app import DomainError

router = APIRouter(tags=["auth"])


class LoginRequest(BaseModel):
    username: str = Field(max_length=128)
    password: str = Field(max_length=1024)
    totp: str | None = Field(None, max_length=16, description="One-time code when the account has a second factor.")


class TokenRequest(BaseModel):
    name: str = Field("", max_length=128)
    expires_days: int | None = Field(None, ge=1, le=3650, description="Lifetime in days; none: until revoked.")


class PasswordChange(BaseModel):
    current_password: str = Field(max_length=1024)
    new_password: str = Field(max_length=1024)


class TotpConfirm(BaseModel):
    secret: str = Field(max_length=64)
    code: str = Field(max_length=16)


def user_json(user: User) -> dict[str, Any]:
    return {
        "username": user.username, "display_name": user.display_name, "email": user.email, "role": user.role,
        "permissions": sorted(p.value for p in user.permissions), "patient_scope": user.scope.value,
        "totp_enabled": user.totp_enabled, "must_change_password": user.must_change_password,
        "referring_physician_name": user.referring_physician_name,
        "last_login": user.last_login.isoformat() if user.last_login else None,
    }


def _safe_next(target: str | None) -> str:
    """Only a path on this server: an open redirect would help phishing."""
    if not target or not target.startswith("/") or target.startswith("//") or urlsplit(target).netloc:
        return "/"
    return target


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in — Voxa</title>
<style>
body{{font-family:system-ui,sans-serif;background:#0f172a;color:#e2e8f0;display:flex;min-height:100vh;
align-items:center;justify-content:center;margin:0}}
form{{background:#1e293b;padding:2rem;border-radius:12px;width:min(22rem,90vw);box-shadow:0 10px 30px #0008}}
h1{{margin:0 0 1.2rem;font-size:1.4rem}} label{{display:block;margin:.8rem 0 .3rem;font-size:.9rem}}
input{{width:100%;box-sizing:border-box;padding:.6rem;border-radius:6px;border:1px solid #475569;
background:#0f172a;color:#e2e8f0;font-size:1rem}}
button{{margin-top:1.2rem;width:100%;padding:.7rem;border:0;border-radius:6px;background:#2563eb;color:#fff;
font-size:1rem;cursor:pointer}} .error{{background:#7f1d1d;padding:.6rem;border-radius:6px;margin-bottom:.6rem}}
small{{color:#94a3b8}} .sso{{display:block;margin-top:1rem;padding:.6rem;border:1px solid #475569;
border-radius:6px;color:#e2e8f0;text-align:center;text-decoration:none}}
</style></head>
<body><form method="post" action="/login">
<h1>Voxa</h1>{error}
<input type="hidden" name="next" value="{next}">
<label for="username">Username</label><input id="username" name="username" autocomplete="username" required autofocus>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<label for="totp">One-time code <small>(if your account has one)</small></label>
<input id="totp" name="totp" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9]*">
<button type="submit">Sign in</button>{sso}
</form></body></html>"""


def _sso_label(request: Request) -> str | None:
    """The single sign-on link's text when OpenID Connect is configured (see routes/oidc.py)."""
    settings = request.app.state.runtime.settings
    return str(settings.oidc_button_label) if settings.oidc_issuer and settings.oidc_client_id else None


def _login_page(next_path: str, error: str = "", status: int = 200, sso: str | None = None) -> HTMLResponse:
    err = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    link = (f'<a class="sso" href="/auth/oidc/login?next={html.escape(quote(_safe_next(next_path), safe=""))}">'
            f'{html.escape(sso)}</a>') if sso else ""
    return HTMLResponse(_PAGE.format(error=err, next=html.escape(_safe_next(next_path)), sso=link),
                        status_code=status,
                        headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                                 "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                                            "form-action 'self'; frame-ancestors 'none'"})


@router.get("/login", include_in_schema=False)
@public
def login_page(request: Request, next: str = "/") -> HTMLResponse:  # noqa: A002 - the query parameter's name
    return _login_page(next, sso=_sso_label(request))


def _attempt(request: Request, username: str, password: str, totp: str | None) -> tuple[User, str, str]:
    ctx = auth_context(request)
    source = client_address(request)
    try:
        user = ctx.accounts.authenticate(username, password, totp or None)
    except AuthenticationFailed as e:
        ctx.audit.record(AuditEvent(actor=username.strip().lower()[:64] or "anonymous",
                                    action=AuditAction.LOGIN_FAILED, source=source, interface=AuditInterface.HTTP,
                                    outcome=AuditOutcome.FAILURE, outcome_detail=e.reason.value,
                                    detail={"method": "password"}))
        raise
    session_id, csrf = ctx.accounts.create_session(user, source)
    ctx.audit.record(AuditEvent(actor=user.username, actor_role=user.role, action=AuditAction.LOGIN, source=source,
                                interface=AuditInterface.HTTP, detail={"method": "password"}))
    return user, session_id, csrf


def _set_session_cookie(request: Request, response: Response, session_id: str) -> None:
    ctx = auth_context(request)
    response.set_cookie(SESSION_COOKIE, session_id, httponly=True, samesite="lax", secure=ctx.cookie_secure,
                        path="/", max_age=int(ctx.accounts.session_max.total_seconds()))


_LOGIN_STATUS = {AuthFailure.LOCKED: 403, AuthFailure.DISABLED: 403}


@router.post("/login", responses={401: {"description": "Wrong credentials"}, 403: {"description": "Locked"}})
@public
async def login(request: Request) -> Response:
    """Sign in with a form (the login page) or JSON ``{"username", "password", "totp"}``."""
    check_origin(request)
    is_json = request.headers.get("content-type", "").startswith("application/json")
    if is_json:
        try:
            body = LoginRequest.model_validate(await request.json())
        except Exception as e:  # noqa: BLE001 - any malformed body is the client's error
            raise DomainError(422, f"login needs JSON {{username, password[, totp]}}: {type(e).__name__}") from None
        username, password, totp, next_path = body.username, body.password, body.totp, "/"
    else:
        form = await request.form()
        username, password = str(form.get("username", "")), str(form.get("password", ""))
        totp, next_path = str(form.get("totp", "") or "") or None, str(form.get("next", "/"))
    try:
        user, session_id, csrf = await run_in_threadpool(_attempt, request, username, password, totp)
    except AuthenticationFailed as e:
        status = _LOGIN_STATUS.get(e.reason, 401)
        if is_json:
            return JSONResponse({"error": failure_message(e.reason), "reason": e.reason.value}, status_code=status)
        return _login_page(next_path, failure_message(e.reason), status, sso=_sso_label(request))
    response: Response
    if is_json:
        response = JSONResponse({"user": user_json(user), "csrf_token": csrf})
    else:
        response = RedirectResponse(_safe_next(next_path), status_code=303)
    _set_session_cookie(request, response, session_id)
    return response


@router.post("/logout")
@authenticated
def logout(request: Request, principal: PrincipalDep) -> Response:
    """Ends the session. ``{"signed_out": true}``, and for a single sign-on session
    ``"end_session"``: the provider's logout address (with ``id_token_hint`` and a
    ``post_logout_redirect_uri`` of Voxa's login page) where the browser goes next, so the
    provider's own session ends too."""
    from voxa.web.routes.oidc import oidc_client

    ctx = auth_context(request)
    cookie = request.cookies.get(SESSION_COOKIE)
    id_token = ctx.accounts.revoke_session(cookie) if cookie else None
    ctx.audit.record(AuditEvent(actor=principal.actor, actor_role=principal.role, action=AuditAction.LOGOUT,
                                source=principal.source, interface=AuditInterface.HTTP,
                                detail={"method": principal.method, **({"oidc": True} if id_token else {})}))
    answer: dict[str, Any] = {"signed_out": True}
    client = oidc_client(request) if id_token else None
    end_session = client.end_session_url(request, id_token) if client and id_token else None
    if end_session:
        answer["end_session"] = end_session
    response = JSONResponse(answer)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/auth/me")
@authenticated
def me(principal: PrincipalDep) -> dict[str, Any]:
    """The signed-in user, their permissions and (for a web session) the CSRF token."""
    assert principal.user is not None
    return {"user": user_json(principal.user), "csrf_token": principal.csrf_token, "auth_method": principal.method,
            "csrf_header": CSRF_HEADER}


@router.post("/auth/password")
@authenticated
def change_password(body: PasswordChange, request: Request, principal: PrincipalDep) -> dict[str, Any]:
    assert principal.user is not None
    ctx = auth_context(request)
    try:
        ctx.accounts.authenticate(principal.user.username, body.current_password, None)
    except AuthenticationFailed as e:
        if e.reason is not AuthFailure.TOTP_REQUIRED:
            raise DomainError(403, "current password is wrong") from None
    try:
        ctx.accounts.set_password(principal.user, body.new_password)
    except (InvalidValue, WeakPassword) as e:
        raise DomainError(422, str(e)) from None
    ctx.audit.record(AuditEvent(actor=principal.actor, actor_role=principal.role, action=AuditAction.ACCOUNT_CHANGE,
                                source=principal.source, interface=AuditInterface.HTTP,
                                resource=f"user:{principal.actor}", detail={"change": "password"}))
    ctx.forget()
    return {"changed": True}


@router.get("/auth/tokens")
@authenticated
def list_tokens(request: Request, principal: PrincipalDep) -> list[dict[str, Any]]:
    """Your API tokens (never their secrets)."""
    assert principal.user is not None
    return [_token_json(t) for t in auth_context(request).accounts.list_tokens(principal.user)]


@router.post("/auth/tokens", status_code=201)
@authenticated
def create_token(body: TokenRequest, request: Request, principal: PrincipalDep) -> dict[str, Any]:
    """A bearer token for scripts: the secret is shown once."""
    assert principal.user is not None
    ctx = auth_context(request)
    expires = dt.timedelta(days=body.expires_days) if body.expires_days else None
    secret, info = ctx.accounts.create_token(principal.user, body.name, expires)
    ctx.audit.record(AuditEvent(actor=principal.actor, actor_role=principal.role, action=AuditAction.ACCOUNT_CHANGE,
                                source=principal.source, interface=AuditInterface.HTTP,
                                resource=f"token:{info.prefix}", detail={"change": "token created"}))
    return {**_token_json(info), "token": secret}


@router.delete("/auth/tokens/{token_id}")
@authenticated
def revoke_token(token_id: int, request: Request, principal: PrincipalDep) -> dict[str, Any]:
    assert principal.user is not None
    ctx = auth_context(request)
    mine = {t.id: t for t in ctx.accounts.list_tokens(principal.user)}
    if token_id not in mine:
        raise DomainError(404, f"you have no API token {token_id}")
    ctx.accounts.revoke_token(token_id)
    ctx.audit.record(AuditEvent(actor=principal.actor, actor_role=principal.role, action=AuditAction.ACCOUNT_CHANGE,
                                source=principal.source, interface=AuditInterface.HTTP,
                                resource=f"token:{mine[token_id].prefix}", detail={"change": "token revoked"}))
    return {"revoked": token_id}


@router.post("/auth/totp/enrol")
@authenticated
def totp_enrol(request: Request, principal: PrincipalDep) -> dict[str, str]:
    """A new secret and its otpauth:// URI; nothing changes until confirmed with a code."""
    assert principal.user is not None
    enrolment = auth_context(request).accounts.totp_enrol(principal.user)
    return {"secret": enrolment.secret, "uri": enrolment.provisioning_uri}


@router.post("/auth/totp/confirm")
@authenticated
def totp_confirm(body: TotpConfirm, request: Request, principal: PrincipalDep) -> dict[str, bool]:
    assert principal.user is not None
    ctx = auth_context(request)
    try:
        ctx.accounts.totp_confirm(principal.user, body.secret, body.code)
    except AuthenticationFailed:
        raise DomainError(422, "that code does not match the secret; check the authenticator's clock") from None
    ctx.audit.record(AuditEvent(actor=principal.actor, actor_role=principal.role, action=AuditAction.ACCOUNT_CHANGE,
                                source=principal.source, interface=AuditInterface.HTTP,
                                resource=f"user:{principal.actor}", detail={"change": "second factor enabled"}))
    return {"totp_enabled": True}


def _token_json(t: Any) -> dict[str, Any]:
    def iso(v: dt.datetime | None) -> str | None:
        return v.isoformat() if v else None
    return {"id": t.id, "name": t.name, "prefix": t.prefix, "created_at": iso(t.created_at),
            "expires_at": iso(t.expires_at), "last_used_at": iso(t.last_used_at), "revoked_at": iso(t.revoked_at)}


