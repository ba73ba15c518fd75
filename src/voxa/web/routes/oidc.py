"""Single sign-on with OpenID Connect (Keycloak, Entra ID, Authentik, ...): optional.

Off unless ``oidc_issuer`` and ``oidc_client_id`` are set (see ``docs/oidc.md``).  The flow is
the authorization-code flow with PKCE (S256), ``state`` and ``nonce``:

1. ``GET /auth/oidc/login?next=/path`` reads the provider's discovery document (cached), keeps
   ``state``, ``nonce``, the PKCE verifier and ``next`` in a short-lived cookie
   (``voxa_oidc``: HTTP-only, SameSite=Lax, path ``/auth/oidc``, signed with HMAC-SHA256
   under a random key of this process, ten minutes) and redirects to the provider.
2. ``GET /auth/oidc/callback?code=...&state=...`` checks ``state`` against that cookie (once
   only), exchanges the code at the token endpoint (client authenticated with its secret
   when it has one, plus the PKCE verifier), and validates the ID token: signature against
   the provider's JWKS, ``iss``, ``aud``/``azp``, ``exp``/``iat``/``nbf``, ``nonce`` and
   ``at_hash``.  The local account named by ``oidc_username_claim`` is then signed in
   exactly like a password login (session cookie, audit record ``login`` with
   ``{"method": "oidc", "issuer": ...}``), created first when ``oidc_role_map`` or
   ``oidc_default_role`` gives it a role.

Library: Authlib (the OAuth 2 / OpenID Connect protocol pieces: PKCE challenge, the
authorization request, client authentication, the token request, ID-token claim rules) and
joserfc (Authlib's JOSE implementation, which ``authlib.jose`` is deprecated in favour of:
JWKS import, JWS signature check).  Network calls use httpx from sync endpoints, which
FastAPI runs in its thread pool, so they never block the event loop.

3. ``POST /auth/oidc/backchannel-logout`` (OpenID Connect Back-Channel Logout 1.0): the
   provider, told that a user signed out there, posts a signed ``logout_token``; once its
   signature, ``iss``, ``aud``, ``iat``, ``jti`` (single use), ``events`` and ``sub``/``sid``
   check out, every Voxa session that user began through the provider (the sessions whose ID
   token names the same ``sid``, or the same ``sub`` when no ``sid`` is given) ends, and each
   ending is audited as a ``logout``.

No session middleware is needed: the flow's state lives in the one signed cookie above,
so nothing is kept per pending sign-in on the server except the states already used
(a bounded set that makes each callback single-use).  A restart of Voxa in the middle of
a sign-in only means that sign-in has to be started again.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
from authlib.common.security import generate_token
from authlib.oauth2.auth import ClientAuth
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri, prepare_token_request
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from authlib.oidc.core import CodeIDToken
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

from voxa.config import Settings
from voxa.security.accounts import AccountError, Conflict, InvalidValue, NotFound, User
from voxa.security.audit import AuditAction, AuditEvent, AuditInterface, AuditOutcome, AuditUnavailable
from voxa.web.access import auth_context, client_address, public
from voxa.web.routes.auth import _login_page, _safe_next, _set_session_cookie, _sso_label

log = logging.getLogger(__name__)

router = APIRouter(tags=["auth"])

LOGIN_PATH = "/auth/oidc/login"
CALLBACK_PATH = "/auth/oidc/callback"
BACKCHANNEL_LOGOUT_PATH = "/auth/oidc/backchannel-logout"
LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
# a logout token is delivered at once; an older one is refused (its jti is remembered this long)
LOGOUT_TOKEN_MAX_AGE_S = 600
FLOW_COOKIE = "voxa_oidc"
FLOW_MAX_AGE_S = 600
METADATA_TTL_S = 3600.0
HTTP_TIMEOUT_S = 10.0
ID_TOKEN_LEEWAY_S = 60
# Asymmetric signatures only: an HMAC-signed ID token would be keyed with the client secret.
SIGNING_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
                      "EdDSA", "Ed25519")


# --------------------------------------------------------------------------- errors


class OidcFailure(Exception):
    """A sign-in that cannot go on: ``status`` and ``message`` for the login page, ``reason``
    (a short code) for the audit trail."""

    def __init__(self, status: int, reason: str, message: str, actor: str = "anonymous"):
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.actor = actor


class IdTokenRejected(Exception):
    """The ID token failed validation; the text says which check."""


# --------------------------------------------------------------------------- the ID token


def validate_id_token(id_token: str, jwks: dict[str, Any], *, issuer: str, client_id: str, nonce: str,
                      access_token: str | None = None, algorithms: Sequence[str] = ("RS256",),
                      now: int | None = None, leeway: int = ID_TOKEN_LEEWAY_S) -> dict[str, Any]:
    """The claims of ``id_token`` once its signature (a key of ``jwks``), issuer, audience,
    lifetime, nonce and access-token hash check out; raises :class:`IdTokenRejected`."""
    try:
        keys = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
    except (JoseError, ValueError, KeyError, TypeError) as e:
        raise IdTokenRejected(f"the provider's signing keys (JWKS) are unusable: {e}") from None
    try:
        token = jwt.decode(id_token, keys, algorithms=list(algorithms))
    except InvalidKeyIdError:
        raise  # the caller refreshes the JWKS once and tries again
    except (JoseError, ValueError, KeyError, TypeError) as e:
        raise IdTokenRejected(f"bad signature or malformed token ({_jose_text(e)})") from None
    options: dict[str, Any] = {
        "iss": {"essential": True, "value": issuer},
        "aud": {"essential": True, "value": client_id},
        "sub": {"essential": True},
        "exp": {"essential": True},
        "nonce": {"essential": True, "value": nonce},
    }
    claims = CodeIDToken(token.claims, token.header, options,
                         {"nonce": nonce, "client_id": client_id, "access_token": access_token})
    try:
        claims.validate(now=now, leeway=leeway)
    except (JoseError, ValueError, KeyError, TypeError) as e:
        raise IdTokenRejected(_jose_text(e)) from None
    return dict(claims)


class LogoutTokenRejected(Exception):
    """The logout token failed validation; the text says which check."""


def validate_logout_token(logout_token: str, jwks: dict[str, Any], *, issuer: str, client_id: str,
                          algorithms: Sequence[str] = ("RS256",), now: int | None = None,
                          leeway: int = ID_TOKEN_LEEWAY_S) -> dict[str, Any]:
    """The claims of a Back-Channel Logout token once its signature (a key of ``jwks``),
    ``iss``, ``aud``, ``iat`` (not older than :data:`LOGOUT_TOKEN_MAX_AGE_S`), ``exp`` when
    present, ``jti``, the logout ``events`` member and ``sub`` or ``sid`` check out, and it
    carries no ``nonce`` (which would make it an ID token); raises :class:`LogoutTokenRejected`."""
    try:
        keys = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
    except (JoseError, ValueError, KeyError, TypeError) as e:
        raise LogoutTokenRejected(f"the provider's signing keys (JWKS) are unusable: {e}") from None
    try:
        token = jwt.decode(logout_token, keys, algorithms=list(algorithms))
    except InvalidKeyIdError:
        raise  # the caller refreshes the JWKS once and tries again
    except (JoseError, ValueError, KeyError, TypeError) as e:
        raise LogoutTokenRejected(f"bad signature or malformed token ({_jose_text(e)})") from None
    claims = dict(token.claims)
    moment = int(time.time()) if now is None else now
    registry = jwt.JWTClaimsRegistry(now=moment, leeway=leeway, iss={"essential": True, "value": issuer},
                                     aud={"essential": True, "values": [client_id]}, iat={"essential": True},
                                     jti={"essential": True})
    try:
        registry.validate(claims)
    except (JoseError, ValueError, KeyError, TypeError) as e:
        raise LogoutTokenRejected(_jose_text(e)) from None
    if not isinstance(claims["iat"], int | float) or moment - claims["iat"] > LOGOUT_TOKEN_MAX_AGE_S + leeway:
        raise LogoutTokenRejected(f"the token was issued more than {LOGOUT_TOKEN_MAX_AGE_S} s ago (iat)")
    events = claims.get("events")
    if not isinstance(events, dict) or not isinstance(events.get(LOGOUT_EVENT), dict):
        raise LogoutTokenRejected(f"not a logout token: its events claim has no {LOGOUT_EVENT!r} member")
    if "nonce" in claims:
        raise LogoutTokenRejected("a logout token must not carry a nonce (is this an ID token?)")
    if not any(isinstance(claims.get(k), str) and claims[k] for k in ("sid", "sub")):
        raise LogoutTokenRejected("the token names neither a session (sid) nor a user (sub)")
    return claims


def unverified_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT Voxa validated earlier (a session's stored ID token), unchecked;
    {} when it cannot be read."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, TypeError):
        return {}
    return claims if isinstance(claims, dict) else {}


def logout_applies(logout: dict[str, Any], session_id_token: str) -> bool:
    """Whether a validated logout token ends the session begun with ``session_id_token``: the
    same issuer, and the same provider session (``sid``) when the token names one, else the
    same user (``sub``)."""
    session = unverified_claims(session_id_token)
    if session.get("iss") != logout.get("iss"):
        return False
    if isinstance(logout.get("sid"), str):
        if session.get("sid") != logout["sid"]:
            return False
        return "sub" not in logout or session.get("sub") == logout["sub"]
    return session.get("sub") == logout.get("sub")


def _jose_text(e: Exception) -> str:
    if isinstance(e, JoseError):
        claim = getattr(e, "claim", None)  # the claim a ClaimError is about
        where = f" ({claim})" if isinstance(claim, str) and claim not in e.description else ""
        return f"{e.error}{where}: {e.description}" if e.description else f"{e.error}{where}"
    return f"{type(e).__name__}: {e}"


# --------------------------------------------------------------------------- claims and roles


def claim_at(claims: dict[str, Any], path: str) -> Any:
    """The value at a dotted path (``realm_access.roles``); a claim whose own name has dots
    (``https://example.org/roles``) is found too.  None when absent."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def provider_roles(claims: dict[str, Any], path: str) -> list[str]:
    value = claim_at(claims, path)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def mapped_role(roles: Sequence[str], role_map: dict[str, str]) -> str | None:
    """The Voxa role of the first ``role_map`` entry whose provider role the user holds."""
    held = set(roles)
    for provider_role, voxa_role in role_map.items():
        if provider_role in held:
            return voxa_role
    return None


# --------------------------------------------------------------------------- the provider


def _loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Flow:
    """One sign-in in progress, as kept in the flow cookie."""

    state: str
    nonce: str
    verifier: str
    next: str
    issued: float


class OidcClient:
    """The provider as Voxa sees it: configuration, cached discovery and keys, and the key
    that signs flow cookies.  One per app (``app.state.oidc``)."""

    def __init__(self, settings: Settings):
        assert settings.oidc_issuer and settings.oidc_client_id
        self.issuer = settings.oidc_issuer.rstrip("/")
        self.client_id = settings.oidc_client_id
        self.client_secret = settings.oidc_client_secret or None
        scopes = settings.oidc_scopes.split()
        self.scopes = scopes if "openid" in scopes else ["openid", *scopes]
        self.username_claim = settings.oidc_username_claim
        self.roles_claim = settings.oidc_roles_claim or None
        self.role_map = dict(settings.oidc_role_map)
        self.default_role = settings.oidc_default_role or None
        self.public_url = settings.public_url.rstrip("/") if settings.public_url else None
        self._key = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._metadata: tuple[float, dict[str, Any]] | None = None
        self._jwks: dict[str, Any] | None = None
        self._used: OrderedDict[str, float] = OrderedDict()

    # ---------------------------------------------------------------- HTTP

    def _get_json(self, url: str, what: str, **kwargs: Any) -> dict[str, Any]:
        try:
            with httpx.Client(timeout=HTTP_TIMEOUT_S) as http:
                r = http.get(url, **kwargs)
        except httpx.HTTPError as e:
            raise OidcFailure(502, "provider_unreachable",
                              f"the single sign-on provider could not be reached ({what}: {type(e).__name__})") from None
        if r.status_code != 200:
            raise OidcFailure(502, "provider_error", f"the single sign-on provider answered {r.status_code} "
                                                     f"to the {what} request")
        try:
            data = r.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise OidcFailure(502, "provider_error", f"the single sign-on provider's {what} is not a JSON object")
        return data

    def metadata(self) -> dict[str, Any]:
        """The discovery document (``{issuer}/.well-known/openid-configuration``), cached for an hour."""
        now = time.monotonic()
        with self._lock:
            if self._metadata and now - self._metadata[0] < METADATA_TTL_S:
                return self._metadata[1]
        parts = urlsplit(self.issuer)
        if parts.scheme != "https" and not (parts.scheme == "http" and _loopback(parts.hostname)):
            raise OidcFailure(502, "configuration", "oidc_issuer must be an https:// URL "
                                                    "(plain http is accepted for localhost only)")
        data = self._get_json(f"{self.issuer}/.well-known/openid-configuration", "discovery")
        if str(data.get("issuer", "")).rstrip("/") != self.issuer:
            raise OidcFailure(502, "configuration", f"the provider names itself {data.get('issuer')!r}, "
                                                    f"not the configured oidc_issuer {self.issuer!r}")
        for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not isinstance(data.get(key), str):
                raise OidcFailure(502, "provider_error", f"the provider's discovery document has no {key}")
        with self._lock:
            self._metadata = (now, data)
        return data

    def jwks(self, *, refresh: bool = False) -> dict[str, Any]:
        with self._lock:
            if self._jwks is not None and not refresh:
                return self._jwks
        data = self._get_json(self.metadata()["jwks_uri"], "signing keys (JWKS)")
        with self._lock:
            self._jwks = data
        return data

    def algorithms(self) -> list[str]:
        offered = self.metadata().get("id_token_signing_alg_values_supported") or ["RS256"]
        return [a for a in offered if a in SIGNING_ALGORITHMS] or ["RS256"]

    # ---------------------------------------------------------------- the flow cookie

    def seal(self, flow: Flow) -> str:
        body = base64.urlsafe_b64encode(json.dumps(
            {"s": flow.state, "n": flow.nonce, "v": flow.verifier, "x": flow.next, "t": flow.issued},
            separators=(",", ":")).encode()).decode().rstrip("=")
        return f"{body}.{self._mac(body)}"

    def unseal(self, value: str | None) -> Flow | None:
        """The flow of a cookie this process signed less than ten minutes ago; None otherwise."""
        if not value or "." not in value:
            return None
        body, _, mac = value.rpartition(".")
        if not hmac.compare_digest(mac.encode(), self._mac(body).encode()):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            flow = Flow(str(data["s"]), str(data["n"]), str(data["v"]), str(data["x"]), float(data["t"]))
        except (ValueError, KeyError, TypeError):
            return None
        if not -60 <= time.time() - flow.issued <= FLOW_MAX_AGE_S:  # a minute's grace for a clock step
            return None
        return flow

    def _mac(self, body: str) -> str:
        return base64.urlsafe_b64encode(hmac.new(self._key, body.encode(), hashlib.sha256).digest()).decode().rstrip("=")

    def use_once(self, state: str) -> bool:
        """Mark ``state`` used; False when it was used before (a replayed callback)."""
        now = time.time()
        with self._lock:
            while self._used and (len(self._used) > 10_000 or next(iter(self._used.values())) < now):
                self._used.popitem(last=False)
            if state in self._used:
                return False
            self._used[state] = now + FLOW_MAX_AGE_S
            return True

    # ---------------------------------------------------------------- protocol steps

    def redirect_uri(self, request: Request) -> str:
        """Where the provider sends the browser back: ``public_url`` + the callback path when
        configured (behind a proxy), else this request's own scheme and host."""
        base = self.public_url or str(request.base_url).rstrip("/")
        return base + CALLBACK_PATH

    def end_session_url(self, request: Request, id_token: str) -> str | None:
        """Where to send the browser so the provider ends its session too (OpenID Connect
        RP-Initiated Logout), then back to Voxa's login page; None when the provider has no
        ``end_session_endpoint`` or cannot be reached (the Voxa session is ended either way)."""
        try:
            endpoint = self.metadata().get("end_session_endpoint")
        except OidcFailure:
            return None
        if not isinstance(endpoint, str) or not endpoint.startswith(("https://", "http://")):
            return None
        base = self.public_url or str(request.base_url).rstrip("/")
        query = urlencode({"id_token_hint": id_token, "client_id": self.client_id,
                           "post_logout_redirect_uri": f"{base}/login"})
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"

    def authorization_url(self, request: Request, flow: Flow) -> str:
        return str(prepare_grant_uri(
            self.metadata()["authorization_endpoint"], self.client_id, "code",
            redirect_uri=self.redirect_uri(request), scope=self.scopes, state=flow.state, nonce=flow.nonce,
            code_challenge=create_s256_code_challenge(flow.verifier), code_challenge_method="S256"))

    def exchange(self, request: Request, code: str, flow: Flow) -> dict[str, Any]:
        """The token endpoint's answer for ``code`` (with the PKCE verifier)."""
        metadata = self.metadata()
        uri = metadata["token_endpoint"]
        body = prepare_token_request("authorization_code", code=code, redirect_uri=self.redirect_uri(request),
                                     code_verifier=flow.verifier)
        methods = metadata.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        if self.client_secret is None:
            method = "none"
        elif "client_secret_basic" not in methods and "client_secret_post" in methods:
            method = "client_secret_post"
        else:
            method = "client_secret_basic"
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
        uri, headers, body = ClientAuth(self.client_id, self.client_secret, method).prepare("POST", uri, headers, body)
        try:
            with httpx.Client(timeout=HTTP_TIMEOUT_S) as http:
                r = http.post(uri, content=body, headers=headers)
        except httpx.HTTPError as e:
            raise OidcFailure(502, "provider_unreachable", "the single sign-on provider could not be reached "
                                                           f"(token: {type(e).__name__})") from None
        try:
            token = r.json()
        except ValueError:
            token = None
        if not isinstance(token, dict):
            raise OidcFailure(502, "provider_error", f"the provider's token endpoint answered {r.status_code} "
                                                     "without a JSON object")
        if r.status_code != 200 or "error" in token:
            error = str(token.get("error", r.status_code))[:64]
            description = str(token.get("error_description", ""))[:200]
            status = 401 if 400 <= r.status_code < 500 else 502
            raise OidcFailure(status, "token_refused", "the single sign-on provider did not accept the sign-in "
                                                       f"({error}{': ' + description if description else ''}); "
                                                       "try again")
        if not isinstance(token.get("id_token"), str):
            raise OidcFailure(502, "provider_error", "the provider issued no ID token (is 'openid' among the "
                                                     "client's scopes?)")
        return token

    def verify(self, token: dict[str, Any], flow: Flow) -> dict[str, Any]:
        """The validated ID token's claims (refreshing the JWKS once for a key it does not know)."""
        issuer = str(self.metadata()["issuer"])
        access_token = token.get("access_token") if isinstance(token.get("access_token"), str) else None
        kwargs: dict[str, Any] = {"issuer": issuer, "client_id": self.client_id, "nonce": flow.nonce,
                                  "access_token": access_token, "algorithms": self.algorithms()}
        try:
            try:
                return validate_id_token(token["id_token"], self.jwks(), **kwargs)
            except InvalidKeyIdError:
                return validate_id_token(token["id_token"], self.jwks(refresh=True), **kwargs)
        except InvalidKeyIdError:
            raise OidcFailure(401, "id_token_invalid", "the ID token is signed with a key the provider does not "
                                                       "publish") from None
        except IdTokenRejected as e:
            raise OidcFailure(401, "id_token_invalid", f"the ID token was refused: {e}") from None

    def verify_logout(self, logout_token: str) -> dict[str, Any]:
        """The validated claims of a Back-Channel Logout token (refreshing the JWKS once for a
        key it does not know); a replayed token (same ``jti``) is refused."""
        issuer = str(self.metadata()["issuer"])
        kwargs: dict[str, Any] = {"issuer": issuer, "client_id": self.client_id, "algorithms": self.algorithms()}
        try:
            try:
                claims = validate_logout_token(logout_token, self.jwks(), **kwargs)
            except InvalidKeyIdError:
                claims = validate_logout_token(logout_token, self.jwks(refresh=True), **kwargs)
        except InvalidKeyIdError:
            raise LogoutTokenRejected("the token is signed with a key the provider does not publish") from None
        if not self.use_once(f"logout-token:{claims['jti']}"):
            raise LogoutTokenRejected("this logout token was used already (jti)")
        return claims

    def userinfo(self, token: dict[str, Any], claims: dict[str, Any]) -> dict[str, Any]:
        """Claims from the userinfo endpoint, for those the ID token lacks (its ``sub`` must match)."""
        endpoint = self.metadata().get("userinfo_endpoint")
        access_token = token.get("access_token")
        if not isinstance(endpoint, str) or not isinstance(access_token, str):
            return {}
        try:
            info = self._get_json(endpoint, "userinfo", headers={"Authorization": f"Bearer {access_token}"})
        except OidcFailure as e:
            log.warning("OIDC userinfo not read: %s", e.message)
            return {}
        return info if info.get("sub") == claims.get("sub") else {}


def oidc_client(request: Request) -> OidcClient | None:
    """This app's :class:`OidcClient`; None when single sign-on is not configured."""
    settings: Settings = request.app.state.runtime.settings
    if not (settings.oidc_issuer and settings.oidc_client_id):
        return None
    state = request.app.state
    client = getattr(state, "oidc", None)
    if client is None:
        with _create_lock:
            client = getattr(state, "oidc", None)
            if client is None:
                client = state.oidc = OidcClient(settings)
    return client  # type: ignore[no-any-return]


_create_lock = threading.Lock()

_NOT_CONFIGURED = ("single sign-on (OpenID Connect) is not configured on this server "
                   "(set oidc_issuer and oidc_client_id); sign in with your username and password")


# --------------------------------------------------------------------------- routes


def _page(request: Request, next_path: str, message: str, status: int) -> HTMLResponse:
    """The login page with ``message`` (and the single sign-on link, to try again)."""
    response = _login_page(next_path, message, status, sso=_sso_label(request))
    response.delete_cookie(FLOW_COOKIE, path="/auth/oidc")
    return response


@router.get(LOGIN_PATH, include_in_schema=False)
@public
def oidc_login(request: Request, next: str = "/") -> Response:  # noqa: A002 - the query parameter's name
    """Start single sign-on: redirect to the OpenID Connect provider."""
    next_path = _safe_next(next)
    client = oidc_client(request)
    if client is None:
        return _page(request, next_path, _NOT_CONFIGURED, 404)
    flow = Flow(state=generate_token(32), nonce=generate_token(32), verifier=generate_token(64), next=next_path,
                issued=time.time())
    try:
        url = client.authorization_url(request, flow)
    except OidcFailure as e:
        log.warning("OIDC sign-in not started: %s", e.message)
        return _page(request, next_path, e.message, e.status)
    response = RedirectResponse(url, status_code=303)
    response.headers["Cache-Control"] = "no-store"
    response.set_cookie(FLOW_COOKIE, client.seal(flow), max_age=FLOW_MAX_AGE_S, path="/auth/oidc", httponly=True,
                        samesite="lax", secure=auth_context(request).cookie_secure)
    return response


@router.get(CALLBACK_PATH, include_in_schema=False)
@public
def oidc_callback(request: Request, code: str | None = None, state: str | None = None,
                  error: str | None = None, error_description: str | None = None) -> Response:
    """Where the provider sends the browser back: validate, sign in, redirect to ``next``."""
    client = oidc_client(request)
    if client is None:
        return _page(request, "/", _NOT_CONFIGURED, 404)
    flow = client.unseal(request.cookies.get(FLOW_COOKIE))
    next_path = _safe_next(flow.next) if flow else "/"
    try:
        user, session_id = _complete(request, client, flow, code, state, error, error_description)
    except OidcFailure as e:
        _audit_failure(request, client, e)
        return _page(request, next_path, e.message, e.status)
    except AuditUnavailable:  # fail closed, as everywhere: no sign-in that is not recorded
        return _page(request, next_path, "the audit trail is unavailable, so no one can sign in now; "
                                         "try again later", 503)
    except Exception:  # noqa: BLE001 - a sign-in error is a login page with a message, never a 500
        log.exception("OIDC sign-in failed unexpectedly")
        failure = OidcFailure(502, "internal_error", "single sign-on failed unexpectedly; try again or sign in "
                                                     "with your password (the server log has the details)")
        _audit_failure(request, client, failure)
        return _page(request, next_path, failure.message, failure.status)
    response = RedirectResponse(next_path, status_code=303)
    response.headers["Cache-Control"] = "no-store"
    response.delete_cookie(FLOW_COOKIE, path="/auth/oidc")
    _set_session_cookie(request, response, session_id)
    log.info("OIDC sign-in of %s (%s)", user.username, user.role)
    return response


@router.post(BACKCHANNEL_LOGOUT_PATH, include_in_schema=False)
@public
async def oidc_backchannel_logout(request: Request) -> Response:
    """OpenID Connect Back-Channel Logout: the provider posts ``logout_token`` (form-encoded)
    when a user signs out there; the user's single sign-on sessions at Voxa end. 200 with the
    number of sessions ended; 400 with ``error``/``error_description`` for a refused token."""
    client = oidc_client(request)
    if client is None:
        return _logout_answer({"error": "not_configured", "error_description": _NOT_CONFIGURED}, 404)
    form = await request.form()
    token = form.get("logout_token")
    if not isinstance(token, str) or not token.strip():
        return _logout_answer({"error": "invalid_request", "error_description": "the request has no logout_token "
                                                                                "(form field)"}, 400)
    return await run_in_threadpool(_backchannel_logout, request, client, token.strip())


def _backchannel_logout(request: Request, client: OidcClient, token: str) -> Response:
    ctx = auth_context(request)
    try:
        claims = client.verify_logout(token)
    except OidcFailure as e:  # the provider's keys could not be read: it may retry later
        return _logout_answer({"error": "temporarily_unavailable", "error_description": e.message}, 503)
    except LogoutTokenRejected as e:
        log.warning("OIDC back-channel logout refused: %s", e)
        try:
            ctx.audit.record(AuditEvent(actor="anonymous", action=AuditAction.LOGOUT, source=client_address(request),
                                        interface=AuditInterface.HTTP, outcome=AuditOutcome.FAILURE,
                                        outcome_detail="logout_token_invalid",
                                        detail={"method": "oidc-backchannel", "issuer": client.issuer,
                                                "message": str(e)[:300]}))
        except Exception:  # noqa: BLE001 - the refusal stands even when the audit trail is unavailable
            log.exception("could not audit a refused OIDC back-channel logout")
        return _logout_answer({"error": "invalid_request", "error_description": f"logout token refused: {e}"}, 400)
    try:
        ended = ctx.accounts.end_single_sign_on_sessions(lambda id_token: logout_applies(claims, id_token))
        for user, count in ended:
            ctx.audit.record(AuditEvent(actor=user.username, actor_role=user.role, action=AuditAction.LOGOUT,
                                        source=client_address(request), interface=AuditInterface.HTTP,
                                        detail={"method": "oidc-backchannel", "issuer": client.issuer,
                                                "sessions": count}))
    except AuditUnavailable:
        return _logout_answer({"error": "temporarily_unavailable",
                               "error_description": "the audit trail is unavailable; the sessions are ended"}, 503)
    sessions = sum(count for _, count in ended)
    log.info("OIDC back-channel logout: %d session(s) of %d user(s) ended", sessions, len(ended))
    return _logout_answer({"sessions_ended": sessions}, 200)


def _logout_answer(body: dict[str, Any], status: int) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


def _complete(request: Request, client: OidcClient, flow: Flow | None, code: str | None, state: str | None,
              error: str | None, error_description: str | None) -> tuple[User, str]:
    if flow is None:
        raise OidcFailure(401, "no_flow", "this single sign-on attempt expired or was started in another browser; "
                                          "start it again")
    if not state or not hmac.compare_digest(state.encode(), flow.state.encode()):
        raise OidcFailure(401, "state_mismatch", "the single sign-on answer does not belong to this sign-in "
                                                 "(state mismatch); start it again")
    if not client.use_once(flow.state):
        raise OidcFailure(401, "replayed", "this single sign-on answer was used already; start it again")
    if error:
        text = f"{error[:64]}{': ' + error_description[:200] if error_description else ''}"
        raise OidcFailure(401, "provider_refused", f"the single sign-on provider refused the sign-in ({text})")
    if not code:
        raise OidcFailure(401, "no_code", "the single sign-on provider sent no authorization code")
    token = client.exchange(request, code, flow)
    claims = client.verify(token, flow)
    if claim_at(claims, client.username_claim) is None or (
            client.roles_claim and claim_at(claims, client.roles_claim) is None):
        claims = {**client.userinfo(token, claims), **claims}
    user = _local_account(request, client, claims)
    ctx = auth_context(request)
    session_id, _csrf = ctx.accounts.create_session(user, client_address(request), oidc_id_token=token["id_token"])
    ctx.audit.record(AuditEvent(actor=user.username, actor_role=user.role, action=AuditAction.LOGIN,
                                source=client_address(request), interface=AuditInterface.HTTP,
                                detail={"method": "oidc", "issuer": client.issuer}))
    return user, session_id


def _local_account(request: Request, client: OidcClient, claims: dict[str, Any]) -> User:
    """The Voxa account the claims name, created or given its mapped role as configured."""
    ctx = auth_context(request)
    raw = claim_at(claims, client.username_claim)
    if not isinstance(raw, str) or not raw.strip():
        raise OidcFailure(403, "no_username", f"the provider sent no {client.username_claim!r} claim to name "
                                              "your Voxa account; ask an administrator to check oidc_username_claim")
    username = raw.strip().lower()
    role = None
    if client.roles_claim:
        role = mapped_role(provider_roles(claims, client.roles_claim), client.role_map)
    try:
        user: User | None = ctx.accounts.get_user(username)
    except NotFound:
        user = None
    if user is None:
        new_role = role or client.default_role
        if new_role is None:
            raise OidcFailure(403, "unknown_user", f"there is no Voxa account {username!r} and your account at the "
                                                   "single sign-on provider has no role that Voxa maps; ask an "
                                                   "administrator to create your account or give you a role",
                              actor=username[:64])
        user = _create(request, client, username, new_role, claims)
    if user.disabled:
        raise OidcFailure(403, "disabled", "account disabled", actor=user.username)
    if client.roles_claim:
        wanted = role or client.default_role
        if wanted is None:
            raise OidcFailure(403, "no_role", "your account at the single sign-on provider has no role that Voxa "
                                              "maps; ask an administrator", actor=user.username)
        if wanted != user.role:
            user = _change_role(request, client, user, wanted)
    return user


def _create(request: Request, client: OidcClient, username: str, role: str, claims: dict[str, Any]) -> User:
    ctx = auth_context(request)
    name, email = claims.get("name"), claims.get("email")
    try:
        # Nobody knows this password: the account signs in through the provider until an
        # administrator sets one.
        user = ctx.accounts.create_user(username, secrets.token_urlsafe(48), role=role, check_policy=False,
                                        display_name=name[:128] if isinstance(name, str) else "",
                                        email=email[:256] if isinstance(email, str) else "")
    except Conflict:  # created meanwhile by a parallel sign-in
        return ctx.accounts.get_user(username)
    except InvalidValue as e:
        raise OidcFailure(403, "invalid_username", f"cannot create a Voxa account for {username!r}: {e}",
                          actor=username[:64]) from None
    except NotFound:
        raise OidcFailure(403, "unknown_role", f"the role {role!r} (oidc_role_map / oidc_default_role) does not "
                                               "exist in Voxa; ask an administrator", actor=username[:64]) from None
    ctx.audit.record(AuditEvent(actor=user.username, actor_role=user.role, action=AuditAction.ACCOUNT_CHANGE,
                                source=client_address(request), interface=AuditInterface.HTTP,
                                resource=f"user:{user.username}",
                                detail={"change": "created at first single sign-on", "issuer": client.issuer,
                                        "role": role}))
    return user


def _change_role(request: Request, client: OidcClient, user: User, role: str) -> User:
    ctx = auth_context(request)
    try:
        changed = ctx.accounts.update_user(user, role=role)
    except NotFound:
        raise OidcFailure(403, "unknown_role", f"the role {role!r} (oidc_role_map / oidc_default_role) does not "
                                               "exist in Voxa; ask an administrator", actor=user.username) from None
    except AccountError as e:  # e.g. the last super admin would lose that role
        raise OidcFailure(403, "role_refused", f"your Voxa role cannot change to {role!r}: {e}",
                          actor=user.username) from None
    ctx.forget()
    ctx.audit.record(AuditEvent(actor=user.username, actor_role=changed.role, action=AuditAction.ACCOUNT_CHANGE,
                                source=client_address(request), interface=AuditInterface.HTTP,
                                resource=f"user:{user.username}",
                                detail={"change": "role from single sign-on", "issuer": client.issuer,
                                        "from": user.role, "to": changed.role}))
    return changed


def _audit_failure(request: Request, client: OidcClient, e: OidcFailure) -> None:
    try:
        auth_context(request).audit.record(AuditEvent(
            actor=e.actor or "anonymous", action=AuditAction.LOGIN_FAILED, source=client_address(request),
            interface=AuditInterface.HTTP, outcome=AuditOutcome.FAILURE, outcome_detail=e.reason,
            detail={"method": "oidc", "issuer": client.issuer, "message": e.message[:300]}))
    except Exception:  # noqa: BLE001 - the refusal stands even when the audit trail is unavailable
        log.exception("could not audit a refused OIDC sign-in")

