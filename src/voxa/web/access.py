"""Who is calling, and may they: authentication, route permissions and the HTTP audit.

Deny by default.  Every endpoint declares what it needs with one of the decorators below;
an app-wide dependency (:func:`authorise`) reads that declaration for the matched route
and refuses a route that declares nothing::

    @router.get("/studies/{id}")
    @requires(P.VIEW_STUDY_LIST, audit=AuditAction.VIEW)
    def get_study(...): ...

* ``@public`` — no credentials (``/health`` and the login page only).
* ``@authenticated`` — any signed-in user (their own profile, logout, the API document).
* ``@requires(p1, p2, ..., audit=action)`` — a signed-in user holding *any* of the
  permissions.  ``audit`` marks the route as touching patient data: the access is
  recorded (see :class:`HttpAuditor`) and path parameters naming a study (``study``) or
  an Orthanc resource (``id``) are checked against the user's patient-level access —
  a resource the user may not see answers 404, as if it did not exist.

Credentials, in order: ``Authorization: Bearer <API token>``, ``Authorization: Basic``
(DICOMweb and REST clients such as OHIF, curl, dicomweb-client, pyorthanc), the
``voxa_session`` cookie of a web login.  Requests that change something and carry the
session cookie must echo the session's CSRF token in ``X-CSRF-Token``; any request that
changes something and names a foreign ``Origin`` is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar
from urllib.parse import quote, urlsplit

import anyio
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voxa.archive.access import patient_visible, study_visible, visible_study_uids
from voxa.archive.resources import UnknownResource, resolve_public_id
from voxa.security.accounts import AccessFilter, Accounts, AuthenticationFailed, AuthFailure, User
from voxa.security.audit import (
    AuditAction,
    AuditEvent,
    AuditInterface,
    AuditOutcome,
    AuditTrail,
    AuditUnavailable,
)
from voxa.security.permissions import PatientScope, Permission

log = logging.getLogger(__name__)

SESSION_COOKIE = "voxa_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_ATTR = "__voxa_requirement__"

F = TypeVar("F", bound=Callable[..., Any])


# --------------------------------------------------------------------------- declarations


@dataclass(frozen=True)
class Requirement:
    public: bool = False
    permissions: frozenset[Permission] = frozenset()  # any of them; empty: any signed-in user
    audit: AuditAction | None = None  # set: the route serves or changes patient data

    def describe(self) -> str:
        if self.public:
            return "public"
        if not self.permissions:
            return "authenticated"
        return " | ".join(sorted(p.value for p in self.permissions))


def _declare(requirement: Requirement) -> Callable[[F], F]:
    def mark(fn: F) -> F:
        setattr(fn, _ATTR, requirement)
        return fn
    return mark


def requires(*permissions: Permission, audit: AuditAction | None = None) -> Callable[[F], F]:
    if not permissions:
        raise ValueError("requires() needs at least one permission; use @authenticated for any user")
    return _declare(Requirement(permissions=frozenset(permissions), audit=audit))


def public(fn: F) -> F:
    return _declare(Requirement(public=True))(fn)


def authenticated(fn: F) -> F:
    return _declare(Requirement())(fn)


def requirement_of(endpoint: Any) -> Requirement | None:
    return getattr(endpoint, _ATTR, None)


def iter_routes(app: FastAPI) -> Iterator[tuple[str, frozenset[str], APIRoute]]:
    """(path, methods, route) of every API route, included routers flattened."""
    def walk(routes: list[Any], prefix: str) -> Iterator[tuple[str, frozenset[str], APIRoute]]:
        for r in routes:
            original = getattr(r, "original_router", None)
            if original is not None:  # an included router (FastAPI keeps them as branches)
                yield from walk(original.routes, prefix + getattr(r.include_context, "prefix", ""))
            elif isinstance(r, APIRoute):
                yield prefix + r.path, frozenset(r.methods or ()), r
            elif hasattr(r, "routes"):
                yield from walk(list(r.routes), prefix + getattr(r, "path", ""))
    yield from walk(list(app.router.routes), "")


def undeclared_routes(app: FastAPI) -> list[str]:
    return sorted(f"{','.join(sorted(m))} {p}" for p, m, r in iter_routes(app) if requirement_of(r.endpoint) is None)


# --------------------------------------------------------------------------- the caller


@dataclass(frozen=True)
class Principal:
    """The caller of one request."""

    user: User | None
    source: str  # client address
    method: str  # "session" | "token" | "basic" | "public"
    access: AccessFilter = field(default_factory=AccessFilter)
    csrf_token: str | None = None

    @property
    def actor(self) -> str:
        return self.user.username if self.user else "anonymous"

    @property
    def role(self) -> str:
        return self.user.role if self.user else ""

    def has(self, permission: Permission) -> bool:
        return self.user is not None and self.user.has(permission)

    @property
    def teaching_only(self) -> bool:
        """The caller sees de-identified teaching cases only."""
        return self.access.teaching_only and not self.access.all


class AuthContext:
    """Per-app authentication state: accounts, the audit trail and short-lived caches."""

    BASIC_CACHE_S = 60.0
    ACCESS_CACHE_S = 5.0

    def __init__(self, accounts: Accounts, audit: AuditTrail, *, cookie_secure: bool, coalesce_s: float):
        self.accounts = accounts
        self.audit = audit
        self.cookie_secure = cookie_secure
        self.auditor = HttpAuditor(audit, coalesce_s)
        self._lock = threading.Lock()
        # Verifying argon2 on every request of a Basic-auth client would cost tens of ms each:
        # a verified (user, password) pair is trusted for BASIC_CACHE_S, keyed by a salted hash.
        self._salt = secrets.token_bytes(16)
        self._basic: OrderedDict[bytes, tuple[float, int]] = OrderedDict()
        self._access: OrderedDict[int, tuple[float, AccessFilter]] = OrderedDict()

    def forget(self) -> None:
        """Drop cached credentials and access (after account, role or grant changes)."""
        with self._lock:
            self._basic.clear()
            self._access.clear()

    def access_for(self, user: User) -> AccessFilter:
        now = time.monotonic()
        with self._lock:
            hit = self._access.get(user.id)
            if hit and now - hit[0] < self.ACCESS_CACHE_S:
                return hit[1]
        if user.scope == PatientScope.ALL and not user.disabled:
            access = AccessFilter(all=True)
        else:
            access = self.accounts.patient_filter(user)
        with self._lock:
            self._access[user.id] = (now, access)
            while len(self._access) > 1024:
                self._access.popitem(last=False)
        return access

    def basic_user(self, username: str, password: str, source: str) -> User:
        key = hashlib.sha256(self._salt + username.strip().lower().encode() + b"\0" + password.encode()).digest()
        now = time.monotonic()
        with self._lock:
            hit = self._basic.get(key)
        if hit and now - hit[0] < self.BASIC_CACHE_S:
            user = self.accounts.get_user(hit[1])
            locked = user.locked_until is not None and user.locked_until > self.accounts.now()
            if not user.disabled and not locked:
                return user
        try:
            user = self.accounts.authenticate(username, password)
        except AuthenticationFailed as e:
            self.audit.record(AuditEvent(actor=username.strip().lower()[:64] or "anonymous",
                                         action=AuditAction.LOGIN_FAILED, source=source,
                                         interface=AuditInterface.HTTP, outcome=AuditOutcome.FAILURE,
                                         outcome_detail=e.reason.value, detail={"method": "basic"}))
            raise
        self.audit.record(AuditEvent(actor=user.username, actor_role=user.role, action=AuditAction.LOGIN,
                                     source=source, interface=AuditInterface.HTTP, detail={"method": "basic"}))
        with self._lock:
            self._basic[key] = (now, user.id)
            while len(self._basic) > 1024:
                self._basic.popitem(last=False)
        return user


def auth_context(request: Request) -> AuthContext:
    return request.app.state.auth  # type: ignore[no-any-return]


def client_address(request: Request) -> str:
    return request.client.host if request.client else ""


def _unauthorised(request: Request, message: str) -> HTTPException:
    accepts_html = "text/html" in request.headers.get("accept", "")
    if request.method == "GET" and accepts_html and "authorization" not in request.headers:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return HTTPException(303, "sign in first", headers={"Location": f"/login?next={quote(target, safe='')}"})
    return HTTPException(401, message, headers={"WWW-Authenticate": 'Basic realm="Voxa", charset="UTF-8"'})


_FAILURE_MESSAGES = {
    AuthFailure.LOCKED: "account locked after repeated failures; try again later or ask an administrator",
    AuthFailure.DISABLED: "account disabled",
    AuthFailure.TOTP_REQUIRED: "a one-time code is required for this account; sign in on the login page",
    AuthFailure.TOKEN_REVOKED: "API token revoked",
    AuthFailure.TOKEN_EXPIRED: "API token expired",
}


def failure_message(reason: AuthFailure) -> str:
    return _FAILURE_MESSAGES.get(reason, "wrong username, password or token")


def authenticate(request: Request) -> Principal | None:
    """The caller's principal from the request's credentials; None when it carries none.
    Raises ``HTTPException(401)`` for wrong ones."""
    ctx = auth_context(request)
    source = client_address(request)
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    user: User | None = None
    try:
        if scheme == "bearer" and value.strip():
            user, method, csrf = ctx.accounts.verify_token(value.strip()), "token", None
        elif scheme == "basic" and value.strip():
            try:
                username, _, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise _unauthorised(request, "malformed Basic credentials") from None
            user, method, csrf = ctx.basic_user(username, password, source), "basic", None
        elif header:
            raise _unauthorised(request, f"unsupported Authorization scheme {scheme!r} (use Basic or Bearer)")
        else:
            cookie = request.cookies.get(SESSION_COOKIE)
            if not cookie:
                return None
            session = ctx.accounts.get_session(cookie)
            if session is None:
                raise _unauthorised(request, "session expired or signed out; sign in again")
            user, method, csrf = session.user, "session", session.csrf_token
    except AuthenticationFailed as e:
        raise _unauthorised(request, failure_message(e.reason)) from None
    assert user is not None
    return Principal(user=user, source=source, method=method, access=ctx.access_for(user), csrf_token=csrf)


def _same_origin(request: Request, origin: str) -> bool:
    if origin in ("null", ""):
        return False
    o = urlsplit(origin)
    host = request.headers.get("host", "")
    if o.netloc == host:
        return True
    public_url = getattr(request.app.state.runtime.settings, "public_url", None)
    return bool(public_url) and o.netloc == urlsplit(public_url).netloc


def check_origin(request: Request) -> None:
    """Refuse a state-changing request sent by another site's page."""
    if request.method in SAFE_METHODS:
        return
    origin = request.headers.get("origin")
    if origin is not None and not _same_origin(request, origin):
        raise HTTPException(403, f"cross-site request refused (Origin {origin!r})")


def _deny(request: Request, principal: Principal, requirement: Requirement, status: int, message: str,
          *, study_uids: tuple[str, ...] = (), patient_ids: tuple[str, ...] = ()) -> HTTPException:
    if requirement.audit is not None:
        request.state.audit = AuditEvent(
            actor=principal.actor, actor_role=principal.role, action=requirement.audit, source=principal.source,
            interface=AuditInterface.HTTP, outcome=AuditOutcome.DENIED, outcome_detail=message,
            study_instance_uids=study_uids, patient_ids=patient_ids, resource=request.url.path)
    return HTTPException(status, message)


def authorise(request: Request) -> Principal:
    """App-wide dependency: the declared requirement of the matched route, enforced.

    Once per request: a second call answers the first one's principal or refusal again
    (without authenticating, counting a failed login or auditing twice)."""
    refused = getattr(request.state, "refused", None)
    if refused is not None:
        raise refused
    try:
        return _authorise(request)
    except HTTPException as e:
        request.state.refused = e
        raise


async def authorise_before_error(request: Request, exc: Exception) -> Response:
    """Exception handler for request errors (HTTPException, RequestValidationError).

    FastAPI reads and decodes a request's body before it runs the app-wide dependencies, so a
    malformed body (not JSON, not UTF-8) is refused with 400/422 before :func:`authorise` ran.
    Authorise first, so that a caller who may not use the route hears 401/303/403 (or 404),
    not what its body lacks.  Requests that matched no route (404, 405) are answered as is."""
    from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
    from fastapi.exceptions import RequestValidationError

    if requirement_of(request.scope.get("endpoint")) is not None:
        try:
            await anyio.to_thread.run_sync(authorise, request)
        except HTTPException as refusal:
            return await http_exception_handler(request, refusal)
    if isinstance(exc, RequestValidationError):
        return await request_validation_exception_handler(request, exc)
    assert isinstance(exc, StarletteHTTPException)
    return await http_exception_handler(request, exc)


def _authorise(request: Request) -> Principal:
    endpoint = request.scope.get("endpoint")
    requirement = requirement_of(endpoint)
    if requirement is None:
        log.error("route %s %s declares no permission: refused", request.method, request.url.path)
        raise HTTPException(403, "this route declares no permission and is refused (deny by default)")
    cached = getattr(request.state, "principal", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    if requirement.public:
        principal = Principal(None, client_address(request), "public")
        request.state.principal = principal
        return principal
    check_origin(request)
    found = authenticate(request)
    if found is None:
        raise _unauthorised(request, "sign in, or send Basic credentials or an API token")
    principal = found
    if principal.method == "session" and request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not (principal.csrf_token and secrets.compare_digest(sent, principal.csrf_token)):
            raise HTTPException(403, f"CSRF token missing or wrong: send the {CSRF_HEADER} header "
                                     "(GET /auth/me returns it)")
    if requirement.permissions and not any(principal.has(p) for p in requirement.permissions):
        needed = " or ".join(sorted(p.value for p in requirement.permissions))
        raise _deny(request, principal, requirement, 403, f"permission denied: needs {needed}")
    ids = _path_identifiers(request, principal, requirement)
    if requirement.audit is not None:
        request.state.audit = AuditEvent(
            actor=principal.actor, actor_role=principal.role, action=requirement.audit, source=principal.source,
            interface=AuditInterface.HTTP, patient_ids=ids[0], study_instance_uids=ids[1],
            resource=request.url.path)
    request.state.principal = principal
    return principal


def _path_identifiers(request: Request, principal: Principal,
                      requirement: Requirement) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(patient IDs, study UIDs) named by the path; 404 when the caller may not see them."""
    params = request.path_params
    index = request.app.state.runtime.archive.index
    access = principal.access
    if "study" in params and requirement.audit is not None:
        study_uid = str(params["study"])
        if not study_visible(index, access, study_uid):
            raise _deny(request, principal, requirement, 404, f"no study {study_uid}", study_uids=(study_uid,))
        return (), (study_uid,)
    if "id" in params and requirement.audit is not None:
        public_id = str(params["id"])
        try:
            ref = resolve_public_id(index, public_id)
        except UnknownResource:
            return (), ()  # the route answers its own 404
        if ref.study_instance_uid:
            visible = study_visible(index, access, ref.study_instance_uid)
        else:
            visible = access.all or _patient_row_visible(index, access, public_id)
        if not visible:
            raise _deny(request, principal, requirement, 404, f"no resource {public_id}",
                        patient_ids=(ref.patient_id,))
        return (ref.patient_id,), ((ref.study_instance_uid,) if ref.study_instance_uid else ())
    return (), ()


def _patient_row_visible(index: Any, access: AccessFilter, public_id: str) -> bool:
    from sqlalchemy import select

    from voxa.archive.access import P

    with index.read() as conn:
        row_id = conn.execute(select(P.c.id).where(P.c.public_id == public_id)).scalar()
    return row_id is not None and patient_visible(index, access, int(row_id))


def current_principal(request: Request) -> Principal:
    """The principal :func:`authorise` established for this request."""
    principal = getattr(request.state, "principal", None)
    if principal is None:
        principal = authorise(request)
    return principal  # type: ignore[no-any-return]


PrincipalDep = Annotated[Principal, Depends(current_principal)]


def note_access(request: Request, *, patient_ids: Any = (), study_uids: Any = (),
                detail: dict[str, Any] | None = None) -> None:
    """Add identifiers found while serving (query results, an upload's studies) to the
    request's audit record."""
    event: AuditEvent | None = getattr(request.state, "audit", None)
    if event is None:
        return
    event.patient_ids = tuple(dict.fromkeys([*_as_tuple(event.patient_ids), *_as_tuple(patient_ids)]))
    event.study_instance_uids = tuple(dict.fromkeys([*_as_tuple(event.study_instance_uids),
                                                     *_as_tuple(study_uids)]))
    if detail:
        event.detail = {**event.detail, **detail}


def _as_tuple(v: Any) -> tuple[str, ...]:
    if not v:
        return ()
    if isinstance(v, str):
        return (v,)
    return tuple(str(x) for x in v if x)


# --------------------------------------------------------------------------- the HTTP audit


_COALESCED = frozenset({AuditAction.VIEW, AuditAction.QUERY})


class HttpAuditor:
    """Records the audit event a request carries when its response starts.

    A viewer fetches a study's frames one request at a time: identical successful views
    or queries (same user, address, action and identifiers) within ``coalesce_s`` make
    one record."""

    def __init__(self, trail: AuditTrail, coalesce_s: float):
        self.trail = trail
        self.coalesce_s = coalesce_s
        self._recent: OrderedDict[tuple[Any, ...], float] = OrderedDict()
        self._lock = threading.Lock()

    def _fill_patient_ids(self, event: AuditEvent) -> None:
        """Records name the patient as well as the study: look it up when only studies are known."""
        studies = _as_tuple(event.study_instance_uids)
        if _as_tuple(event.patient_ids) or not studies:
            return
        from sqlalchemy import select

        from voxa.archive.access import ST

        with self.trail.index.read() as conn:
            found = conn.execute(select(ST.c.patient_id).where(ST.c.study_instance_uid.in_(studies[:1000])))
            event.patient_ids = tuple(sorted({p for p in found.scalars() if p}))

    def record(self, event: AuditEvent) -> None:
        event.patient_ids = tuple(sorted(set(_as_tuple(event.patient_ids))))
        event.study_instance_uids = tuple(sorted(set(_as_tuple(event.study_instance_uids))))
        key = None
        if (AuditAction(event.action) in _COALESCED and AuditOutcome(event.outcome) is AuditOutcome.SUCCESS
                and self.coalesce_s > 0):
            key = (event.actor, event.source, str(event.action), _as_tuple(event.patient_ids),
                   _as_tuple(event.study_instance_uids),
                   event.resource if AuditAction(event.action) is AuditAction.QUERY else "",
                   repr(sorted(event.detail.items())) if AuditAction(event.action) is AuditAction.QUERY else "")
            now = time.monotonic()
            with self._lock:
                seen = self._recent.get(key)
                if seen is not None and now - seen < self.coalesce_s:
                    return
        # looked up only for a record that is written: the studies name the patients, so the
        # key above (the patients as the request gave them, and the studies) is the same
        self._fill_patient_ids(event)
        self.trail.record(event)
        if key is not None:
            with self._lock:
                self._recent[key] = time.monotonic()
                self._recent.move_to_end(key)
                while len(self._recent) > 10_000:
                    self._recent.popitem(last=False)


def _outcome(status: int, event: AuditEvent) -> None:
    if AuditOutcome(event.outcome) is not AuditOutcome.SUCCESS:
        return
    if status >= 400:
        event.outcome = AuditOutcome.FAILURE
        event.outcome_detail = event.outcome_detail or f"HTTP {status}"


class AuditMiddleware:
    """Writes the request's audit event before its response goes out; fails closed.

    If the record cannot be written the response is replaced by a 503 and nothing of the
    patient data is sent."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = False

        async def send_audited(message: Message) -> None:
            nonlocal refused
            if refused:
                return
            if message["type"] == "http.response.start":
                state = scope.get("state") or {}
                event: AuditEvent | None = state.get("audit")
                if event is not None:
                    _outcome(int(message["status"]), event)
                    auditor: HttpAuditor = scope["app"].state.auth.auditor
                    try:
                        await anyio.to_thread.run_sync(auditor.record, event)
                    except AuditUnavailable:
                        refused = True
                        body = b'{"error":"the audit trail cannot be written: access to patient data refused"}'
                        await send({"type": "http.response.start", "status": 503,
                                    "headers": [(b"content-type", b"application/json"),
                                                (b"content-length", str(len(body)).encode())]})
                        await send({"type": "http.response.body", "body": body})
                        return
            await send(message)

        await self.app(scope, receive, send_audited)


def check_locations(request: Request, locations: list[Any]) -> None:
    """Refuse (404) sending or exporting instances of studies the caller may not see, and
    name the studies in the request's audit record."""
    principal = current_principal(request)
    study_uids = sorted({loc.study_instance_uid for loc in locations if loc.study_instance_uid})
    index = request.app.state.runtime.archive.index
    visible = visible_study_uids(index, principal.access, study_uids)
    hidden = [u for u in study_uids if u not in visible]
    if hidden:
        event: AuditEvent | None = getattr(request.state, "audit", None)
        if event is not None:
            event.outcome = AuditOutcome.DENIED
            event.study_instance_uids = tuple(hidden)
        raise HTTPException(404, "no such resource")
    note_access(request, study_uids=study_uids)
