"""Single sign-on with OpenID Connect against a real provider (oidc-provider-mock, a Flask app
built on Authlib, served on a loopback port): the whole browser flow driven with httpx, the
refusals, the audit records, and the ID-token validator against locally signed tokens."""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import secrets
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit, urlunsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError
from joserfc.jwk import KeySet, RSAKey
from support.ports import free_port

from voxa.security import audit
from voxa.web.app import create_app
from voxa.web.routes.oidc import (
    LOGOUT_EVENT,
    IdTokenRejected,
    LogoutTokenRejected,
    claim_at,
    logout_applies,
    mapped_role,
    validate_id_token,
    validate_logout_token,
)

# the provider mock itself still uses Authlib's deprecated server-side APIs
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:authlib.*")

CLIENT_ID = "voxa"
ROLE_MAP = {"pacs-admin": "super_admin", "pacs-radiologist": "radiologist", "pacs-student": "student"}


# --------------------------------------------------------------------------- the provider


@dataclass
class Provider:
    issuer: str
    signing_key: RSAKey  # the mock's own: it cannot send back-channel logouts, so the tests sign them
    token_requests: list[dict[str, list[str]]] = field(default_factory=list)

    def set_user(self, sub: str, **claims: Any) -> None:
        r = httpx.put(f"{self.issuer}/users/{quote(sub, safe='')}", json=claims, timeout=10)
        assert r.status_code == 204, r.text


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    with warnings.catch_warnings():  # the mock itself still imports the deprecated authlib.jose
        warnings.simplefilter("ignore", DeprecationWarning)
        import flask
        import oidc_provider_mock
        from werkzeug.serving import make_server

        flask_app = oidc_provider_mock.app(require_nonce=True)
        with flask_app.test_request_context():
            flask_app.preprocess_request()
            private = flask.g.oidc_provider_mock_storage.jwk.as_dict(is_private=True)
    port = free_port()
    prov = Provider(issuer=f"http://127.0.0.1:{port}", signing_key=RSAKey.import_key(private))
    inner = flask_app.wsgi_app

    def recording(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        # keeps the token requests' bodies, to check the PKCE verifier Voxa sends
        if environ.get("PATH_INFO") == "/oauth2/token":
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            prov.token_requests.append(parse_qs(body.decode()))
            environ["wsgi.input"] = io.BytesIO(body)
        return inner(environ, start_response)

    flask_app.wsgi_app = recording  # type: ignore[method-assign]
    server = make_server("127.0.0.1", port, flask_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield prov
    finally:
        server.shutdown()
        thread.join(timeout=5)
        server.server_close()


def _voxa(voxa_factory: Any, provider: Provider, **settings: Any) -> Any:
    config: dict[str, Any] = {"oidc_issuer": provider.issuer, "oidc_client_id": CLIENT_ID,
                              "oidc_client_secret": "voxa-test-secret", "oidc_roles_claim": "realm_access.roles",
                              "oidc_role_map": ROLE_MAP}
    config.update(settings)
    return voxa_factory(http=True, **config)


@dataclass
class Attempt:
    browser: httpx.Client
    start: httpx.Response  # Voxa's redirect to the provider
    authorize_url: str
    callback_url: str  # the provider's redirect back to Voxa
    result: httpx.Response  # Voxa's answer to the callback


def _sign_in(v: Any, sub: str, *, next_path: str = "/studies?limit=5",
             tamper_authorize: Callable[[dict[str, str]], None] | None = None,
             tamper_callback: Callable[[dict[str, str]], None] | None = None,
             browser: httpx.Client | None = None, complete: bool = True) -> Attempt:
    """The browser's side of the flow: Voxa -> provider (its form, posted) -> Voxa (unless not
    ``complete``: then ``result`` is the provider's redirect, not followed)."""
    web = browser or httpx.Client(base_url=v.base_url, timeout=30)
    start = web.get("/auth/oidc/login", params={"next": next_path})
    assert start.status_code == 303, start.text
    authorize_url = start.headers["location"]
    if tamper_authorize is not None:
        authorize_url = _with_query(authorize_url, tamper_authorize)
    form = httpx.get(authorize_url, timeout=10)
    assert form.status_code == 200 and "sub" in form.text  # the provider's sign-in form
    answer = httpx.post(authorize_url, data={"sub": sub}, timeout=10)
    assert answer.status_code == 302, answer.text
    callback_url = answer.headers["location"]
    if tamper_callback is not None:
        callback_url = _with_query(callback_url, tamper_callback)
    return Attempt(web, start, authorize_url, callback_url, web.get(callback_url) if complete else answer)


def _with_query(url: str, change: Callable[[dict[str, str]], None]) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    change(query)
    return urlunsplit(parts._replace(query=urlencode(query)))


def _text(r: httpx.Response) -> str:
    return html.unescape(r.text)


def _audit_since(v: Any, seq: int) -> list[Any]:
    return [r for r in audit.search(v.archive.index, limit=None) if r.seq > seq]


def _last_seq(v: Any) -> int:
    rows = audit.search(v.archive.index, limit=1, newest_first=True)
    return rows[0].seq if rows else 0


# --------------------------------------------------------------------------- the flow


def test_first_time_user_with_a_mapped_role_is_created_and_signed_in(voxa_factory: Any, provider: Provider) -> None:
    v = _voxa(voxa_factory, provider)
    provider.set_user("sub-alice", preferred_username="Alice", name="Alice Example", email="alice@example.org",
                      realm_access={"roles": ["offline_access", "pacs-radiologist"]})
    start = _last_seq(v)

    with httpx.Client(base_url=v.base_url, timeout=30) as web:
        page = web.get("/login", params={"next": "/ohif/"})
        assert page.status_code == 200
        assert 'href="/auth/oidc/login?next=%2Fohif%2F"' in page.text and "Sign in with single sign-on" in page.text

        done = _sign_in(v, "sub-alice", browser=web)
        # the authorization request: code flow, PKCE S256, state, nonce, the callback
        query = parse_qs(urlsplit(done.authorize_url).query)
        assert query["response_type"] == ["code"] and query["client_id"] == [CLIENT_ID]
        assert query["code_challenge_method"] == ["S256"] and len(query["state"][0]) >= 32
        assert query["nonce"] and query["redirect_uri"] == [f"{v.base_url}/auth/oidc/callback"]
        assert set(query["scope"][0].split()) == {"openid", "profile", "email"}
        flow_cookie = done.start.headers["set-cookie"]
        assert "voxa_oidc=" in flow_cookie and "HttpOnly" in flow_cookie and "Path=/auth/oidc" in flow_cookie
        assert "samesite=lax" in flow_cookie.lower() and "Max-Age=600" in flow_cookie
        # the token request carried the verifier whose S256 hash was the challenge
        verifier = provider.token_requests[-1]["code_verifier"][0]
        digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        assert digest == query["code_challenge"][0]

        assert done.result.status_code == 303, done.result.text
        assert done.result.headers["location"] == "/studies?limit=5"
        assert "voxa_session=" in done.result.headers.get("set-cookie", "")
        me = web.get("/auth/me").json()
        assert me["user"]["username"] == "alice" and me["user"]["role"] == "radiologist"
        assert me["user"]["display_name"] == "Alice Example" and me["user"]["email"] == "alice@example.org"
        assert me["auth_method"] == "session" and me["csrf_token"]
        assert web.get("/dicom-web/studies").status_code == 200  # the session works like a password login

    records = _audit_since(v, start)
    created = [r for r in records if r.action == "account_change"]
    assert len(created) == 1 and created[0].actor == "alice" and created[0].detail["role"] == "radiologist"
    logins = [r for r in records if r.action == "login"]
    assert len(logins) == 1 and logins[0].actor == "alice" and logins[0].actor_role == "radiologist"
    assert logins[0].detail == {"method": "oidc", "issuer": provider.issuer} and logins[0].outcome == "success"
    # the local account has no usable password
    assert httpx.post(f"{v.base_url}/login", json={"username": "alice", "password": ""}).status_code == 401

    # the provider decides the role at each sign-in: promoted, then the first map entry wins
    provider.set_user("sub-alice", preferred_username="alice",
                      realm_access={"roles": ["pacs-student", "pacs-admin"]})
    again = _sign_in(v, "sub-alice")
    assert again.result.status_code == 303
    assert again.browser.get("/auth/me").json()["user"]["role"] == "super_admin"
    change = [r for r in _audit_since(v, start) if r.action == "account_change"][-1]
    assert change.detail["from"] == "radiologist" and change.detail["to"] == "super_admin"


def test_signing_out_ends_the_providers_session_too(voxa_factory: Any, provider: Provider) -> None:
    """OpenID Connect RP-Initiated Logout: signing out of a single sign-on session answers the
    provider's end_session address (the session's ID token as id_token_hint, Voxa's login page
    to come back to), the provider's logout page takes it, and the Voxa session is gone. A
    password session signs out locally only."""
    v = _voxa(voxa_factory, provider)
    provider.set_user("sub-olga", preferred_username="olga", realm_access={"roles": ["pacs-radiologist"]})
    with httpx.Client(base_url=v.base_url, timeout=30) as web:
        assert _sign_in(v, "sub-olga", browser=web).result.status_code == 303
        csrf = web.get("/auth/me").json()["csrf_token"]
        r = web.post("/logout", headers={"X-CSRF-Token": csrf})
        assert r.status_code == 200, r.text
        end_session = r.json()["end_session"]
        parts = urlsplit(end_session)
        endpoint = httpx.get(f"{provider.issuer}/.well-known/openid-configuration").json()["end_session_endpoint"]
        assert urlunsplit(parts._replace(query="")) == endpoint
        query = {k: v_[0] for k, v_ in parse_qs(parts.query).items()}
        assert query["client_id"] == CLIENT_ID and query["post_logout_redirect_uri"] == f"{v.base_url}/login"
        payload = query["id_token_hint"].split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        assert claims["sub"] == "sub-olga" and claims["aud"] in (CLIENT_ID, [CLIENT_ID])
        assert web.get("/auth/me").status_code == 401
        # the provider's logout page, confirmed, sends the browser back to Voxa's login page
        page = httpx.get(end_session, timeout=10)
        assert page.status_code == 200 and "/oauth2/end_session/confirm" in page.text
        confirm = httpx.post(f"{provider.issuer}/oauth2/end_session/confirm",
                             data={"redirect_uri": query["post_logout_redirect_uri"]}, timeout=10)
        assert confirm.status_code == 302 and confirm.headers["location"] == f"{v.base_url}/login"
    # the ID token is not kept once the session is over
    from sqlalchemy import select

    from voxa.archive.models import table_of
    from voxa.security.models import WebSession

    with v.archive.index.read() as conn:
        assert conn.execute(select(table_of(WebSession).c.oidc_id_token)).scalars().all() == [None]

    v.runtime.accounts.create_user("pat", "Correct-Horse-42!", role="radiologist")
    with httpx.Client(base_url=v.base_url, timeout=30) as web:
        assert web.post("/login", json={"username": "pat", "password": "Correct-Horse-42!"}).status_code == 200
        csrf = web.get("/auth/me").json()["csrf_token"]
        assert web.post("/logout", headers={"X-CSRF-Token": csrf}).json() == {"signed_out": True}


def _logout_token(key: RSAKey, issuer: str, **overrides: Any) -> str:
    claims: dict[str, Any] = {"iss": issuer, "aud": CLIENT_ID, "iat": int(time.time()), "jti": secrets.token_hex(8),
                              "events": {LOGOUT_EVENT: {}}}
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode({"alg": "RS256", "kid": key.kid, "typ": "logout+jwt"}, claims, key)


def test_the_provider_ends_a_users_sessions_over_the_back_channel(voxa_factory: Any, provider: Provider) -> None:
    """OpenID Connect Back-Channel Logout: a logout token signed by the provider for a user
    ends that user's single sign-on sessions at Voxa (and no one else's), is audited, and
    cannot be replayed; forged, foreign or malformed tokens are refused with the reason."""
    v = _voxa(voxa_factory, provider)
    provider.set_user("sub-una", preferred_username="una", realm_access={"roles": ["pacs-radiologist"]})
    provider.set_user("sub-vic", preferred_username="vic", realm_access={"roles": ["pacs-radiologist"]})
    browsers = {name: httpx.Client(base_url=v.base_url, timeout=30) for name in ("una-1", "una-2", "vic")}
    try:
        for name, web in browsers.items():
            assert _sign_in(v, f"sub-{name.split('-')[0]}", browser=web).result.status_code == 303
            assert web.get("/auth/me").status_code == 200
        seq = _last_seq(v)
        token = _logout_token(provider.signing_key, provider.issuer, sub="sub-una")
        r = httpx.post(f"{v.base_url}/auth/oidc/backchannel-logout", data={"logout_token": token}, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json() == {"sessions_ended": 2} and r.headers["cache-control"] == "no-store"
        assert browsers["una-1"].get("/auth/me").status_code == 401
        assert browsers["una-2"].get("/auth/me").status_code == 401
        assert browsers["vic"].get("/auth/me").status_code == 200
        logouts = [e for e in _audit_since(v, seq) if e.action == "logout"]
        assert [(e.actor, e.outcome, e.detail["method"], e.detail["sessions"]) for e in logouts] == [
            ("una", "success", "oidc-backchannel", 2)]

        def refused(form: dict[str, str], reason: str) -> None:
            r = httpx.post(f"{v.base_url}/auth/oidc/backchannel-logout", data=form, timeout=30)
            assert r.status_code == 400, (reason, r.status_code, r.text)
            assert r.json()["error"] == "invalid_request" and reason in r.json()["error_description"], r.text

        refused({"logout_token": token}, "used already")
        refused({}, "no logout_token")
        refused({"logout_token": "not.a.jwt"}, "malformed")
        key = provider.signing_key
        refused({"logout_token": _logout_token(key, provider.issuer, sub="sub-vic", nonce="n")}, "nonce")
        refused({"logout_token": _logout_token(key, provider.issuer, sub="sub-vic", events={})}, "events")
        refused({"logout_token": _logout_token(key, provider.issuer, sub="sub-vic", aud="another")}, "aud")
        refused({"logout_token": _logout_token(key, "https://evil.example", sub="sub-vic")}, "iss")
        refused({"logout_token": _logout_token(key, provider.issuer)}, "neither")
        refused({"logout_token": _logout_token(key, provider.issuer, sub="sub-vic",
                                               iat=int(time.time()) - 3600)}, "issued more than")
        impostor = RSAKey.generate_key(2048, {"kid": key.kid})
        refused({"logout_token": _logout_token(impostor, provider.issuer, sub="sub-vic")}, "signature")
        stranger = RSAKey.generate_key(2048, {"kid": "not-the-providers"})
        refused({"logout_token": _logout_token(stranger, provider.issuer, sub="sub-vic")}, "does not publish")
        assert browsers["vic"].get("/auth/me").status_code == 200
        failures = [e for e in _audit_since(v, seq) if e.action == "logout" and e.outcome == "failure"]
        assert len(failures) == 10 and all(e.outcome_detail == "logout_token_invalid" for e in failures)
    finally:
        for web in browsers.values():
            web.close()
    # a server without single sign-on has no such endpoint
    plain = voxa_factory(http=True)
    r = httpx.post(f"{plain.base_url}/auth/oidc/backchannel-logout", data={"logout_token": token}, timeout=30)
    assert r.status_code == 404 and r.json()["error"] == "not_configured"


def test_a_logout_names_one_provider_session_or_one_user() -> None:
    def id_token(**claims: Any) -> str:
        body = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
        return f"e30.{body}.sig"

    una = id_token(iss=ISSUER, sub="s-una", sid="sid-1")
    una_elsewhere = id_token(iss=ISSUER, sub="s-una", sid="sid-2")
    assert logout_applies({"iss": ISSUER, "sub": "s-una"}, una)
    assert logout_applies({"iss": ISSUER, "sub": "s-una"}, una_elsewhere)
    assert logout_applies({"iss": ISSUER, "sid": "sid-1"}, una)
    assert not logout_applies({"iss": ISSUER, "sid": "sid-1"}, una_elsewhere)
    assert not logout_applies({"iss": ISSUER, "sid": "sid-1", "sub": "s-vic"}, una)
    assert not logout_applies({"iss": "https://other.example", "sub": "s-una"}, una)
    assert not logout_applies({"iss": ISSUER, "sub": "s-una"}, "garbage")


def test_logout_token_validator(keys: tuple[RSAKey, dict[str, Any]]) -> None:
    key, jwks = keys
    claims = validate_logout_token(_logout_token(key, ISSUER, sid="sid-1", aud=["other", CLIENT_ID]), jwks,
                                   issuer=ISSUER, client_id=CLIENT_ID)
    assert claims["sid"] == "sid-1"
    for overrides, reason in (({"jti": None}, "jti"), ({"iat": None}, "iat"), ({"exp": int(time.time()) - 600}, "exp"),
                              ({"events": {LOGOUT_EVENT: "yes"}}, "events"), ({"sub": None}, "neither")):
        with pytest.raises(LogoutTokenRejected, match=reason):
            validate_logout_token(_logout_token(key, ISSUER, **overrides), jwks, issuer=ISSUER, client_id=CLIENT_ID)


def test_unknown_user_without_a_mapped_role_is_refused(voxa_factory: Any, provider: Provider) -> None:
    v = _voxa(voxa_factory, provider)
    provider.set_user("sub-bob", preferred_username="bob", realm_access={"roles": ["offline_access"]})
    start = _last_seq(v)
    done = _sign_in(v, "sub-bob")
    assert done.result.status_code == 403
    assert "no Voxa account 'bob'" in _text(done.result) and "ask an administrator" in _text(done.result)
    assert "voxa_session=" not in done.result.headers.get("set-cookie", "")
    assert "Sign in with single sign-on" in _text(done.result)  # the login page, to try again
    assert not any(u.username == "bob" for u in v.runtime.accounts.list_users())
    failed = [r for r in _audit_since(v, start) if r.action == "login_failed"]
    assert [(r.actor, r.outcome, r.outcome_detail) for r in failed] == [("bob", "failure", "unknown_user")]
    assert failed[0].detail["method"] == "oidc" and failed[0].detail["issuer"] == provider.issuer

    # an administrator creates the account: then it may sign in (roles managed in Voxa here)
    w = _voxa(voxa_factory, provider, oidc_roles_claim=None)
    w.runtime.accounts.create_user("bob", "Tr1cky-Local-Passw0rd", role="technologist")
    ok = _sign_in(w, "sub-bob")
    assert ok.result.status_code == 303
    assert ok.browser.get("/auth/me").json()["user"]["role"] == "technologist"


def test_default_role_for_first_time_users(voxa_factory: Any, provider: Provider) -> None:
    v = _voxa(voxa_factory, provider, oidc_roles_claim=None, oidc_role_map={}, oidc_default_role="student")
    provider.set_user("sub-dora", preferred_username="dora")
    done = _sign_in(v, "sub-dora")
    assert done.result.status_code == 303
    assert done.browser.get("/auth/me").json()["user"]["role"] == "student"


def test_a_disabled_local_account_is_refused(voxa_factory: Any, provider: Provider) -> None:
    v = _voxa(voxa_factory, provider)
    v.runtime.accounts.create_user("carol", "Tr1cky-Local-Passw0rd", role="radiologist")
    v.runtime.accounts.disable("carol")
    provider.set_user("sub-carol", preferred_username="carol", realm_access={"roles": ["pacs-radiologist"]})
    start = _last_seq(v)
    done = _sign_in(v, "sub-carol")
    assert done.result.status_code == 403 and "account disabled" in _text(done.result)
    assert "voxa_session=" not in done.result.headers.get("set-cookie", "")
    assert [(r.actor, r.outcome_detail) for r in _audit_since(v, start) if r.action == "login_failed"] == [
        ("carol", "disabled")]


def test_forged_replayed_or_foreign_state_is_refused(voxa_factory: Any, provider: Provider) -> None:
    v = _voxa(voxa_factory, provider)
    provider.set_user("sub-erin", preferred_username="erin", realm_access={"roles": ["pacs-radiologist"]})
    start = _last_seq(v)

    forged = _sign_in(v, "sub-erin", tamper_callback=lambda q: q.update(state="forged-" + q["state"][7:]))
    assert forged.result.status_code == 401 and "state mismatch" in _text(forged.result)

    # a callback URL opened in a browser that did not start the sign-in (login CSRF)
    honest = _sign_in(v, "sub-erin")
    assert honest.result.status_code == 303
    with httpx.Client(base_url=v.base_url, timeout=30) as victim:
        r = victim.get(_sign_in(v, "sub-erin", complete=False).callback_url)
        assert r.status_code == 401 and "started in another browser" in _text(r)
        assert "voxa_session=" not in r.headers.get("set-cookie", "")

    # the same answer replayed with the flow cookie put back
    web = httpx.Client(base_url=v.base_url, timeout=30)
    first = _sign_in(v, "sub-erin", browser=web)
    assert first.result.status_code == 303
    cookie = first.start.headers["set-cookie"].split(";")[0].split("=", 1)[1]
    with httpx.Client(base_url=v.base_url, timeout=30, cookies={"voxa_oidc": cookie}) as thief:
        replay = thief.get(first.callback_url)
    assert replay.status_code == 401 and "used already" in _text(replay)

    # a tampered flow cookie
    with httpx.Client(base_url=v.base_url, timeout=30, cookies={"voxa_oidc": cookie[:-2] + "xx"}) as thief:
        bad = thief.get(first.callback_url)
    assert bad.status_code == 401 and "expired" in _text(bad)

    reasons = [r.outcome_detail for r in _audit_since(v, start) if r.action == "login_failed"]
    assert reasons == ["state_mismatch", "no_flow", "replayed", "no_flow"]


def test_id_token_for_another_nonce_or_client_is_refused(voxa_factory: Any, provider: Provider) -> None:
    v = _voxa(voxa_factory, provider)
    provider.set_user("sub-finn", preferred_username="finn", realm_access={"roles": ["pacs-radiologist"]})
    start = _last_seq(v)
    # the provider issues an ID token for another nonce (an injected authorization code)
    other_nonce = _sign_in(v, "sub-finn", tamper_authorize=lambda q: q.update(nonce="another-nonce-0123456789"))
    assert other_nonce.result.status_code == 401
    assert "ID token was refused" in _text(other_nonce.result) and "nonce" in _text(other_nonce.result)
    # a code issued to another client cannot be redeemed by Voxa
    other_client = _sign_in(v, "sub-finn", tamper_authorize=lambda q: q.update(client_id="another-client"))
    assert other_client.result.status_code == 401 and "did not accept the sign-in" in _text(other_client.result)
    # the provider says no
    denied = _sign_in(v, "sub-finn", tamper_callback=lambda q: (q.pop("code"), q.update(error="access_denied")))
    assert denied.result.status_code == 401 and "refused the sign-in (access_denied)" in _text(denied.result)
    assert [r.outcome_detail for r in _audit_since(v, start) if r.action == "login_failed"] == [
        "id_token_invalid", "token_refused", "provider_refused"]
    assert not any(r.action == "login" for r in _audit_since(v, start))


def test_not_configured_and_unreachable_provider(voxa_factory: Any) -> None:
    v = voxa_factory()
    client = TestClient(create_app(v.runtime))
    r = client.get("/auth/oidc/login", follow_redirects=False)
    assert r.status_code == 404 and "not configured" in _text(r)
    assert client.get("/auth/oidc/callback?code=x&state=y").status_code == 404
    assert "single sign-on" not in client.get("/login").text

    dead = voxa_factory(oidc_issuer=f"http://127.0.0.1:{free_port()}/realms/x", oidc_client_id=CLIENT_ID)
    client = TestClient(create_app(dead.runtime))
    r = client.get("/auth/oidc/login?next=/studies", follow_redirects=False)
    assert r.status_code == 502 and "could not be reached" in _text(r)
    assert 'href="/auth/oidc/login?next=%2Fstudies"' in _text(r)  # try again
    # an open redirect in next is neutralised
    assert 'value="/"' in client.get("/auth/oidc/login?next=https://evil.example/", follow_redirects=False).text

    plain = voxa_factory(oidc_issuer="http://keycloak.example.org/realms/x", oidc_client_id=CLIENT_ID)
    r = TestClient(create_app(plain.runtime)).get("/auth/oidc/login", follow_redirects=False)
    assert r.status_code == 502 and "https://" in _text(r)


# --------------------------------------------------------------------------- the validator


ISSUER = "https://idp.example.org/realms/hospital"


def _token(key: RSAKey, **overrides: Any) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {"iss": ISSUER, "sub": "s1", "aud": CLIENT_ID, "exp": now + 300, "iat": now,
                              "nonce": "n-1", "preferred_username": "zoe"}
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode({"alg": "RS256", "kid": key.kid}, claims, key)


@pytest.fixture(scope="module")
def keys() -> tuple[RSAKey, dict[str, Any]]:
    key = RSAKey.generate_key(2048, {"kid": "k1", "use": "sig"})
    return key, KeySet([key]).as_dict(private=False)


def test_validator_accepts_a_good_token(keys: tuple[RSAKey, dict[str, Any]]) -> None:
    key, jwks = keys
    claims = validate_id_token(_token(key), jwks, issuer=ISSUER, client_id=CLIENT_ID, nonce="n-1")
    assert claims["preferred_username"] == "zoe"
    # several audiences are fine when azp names Voxa
    validate_id_token(_token(key, aud=["other", CLIENT_ID], azp=CLIENT_ID), jwks, issuer=ISSUER,
                      client_id=CLIENT_ID, nonce="n-1")


@pytest.mark.parametrize(("overrides", "expected"), [
    ({"aud": "another-client"}, "aud"),
    ({"aud": ["another-client", CLIENT_ID], "azp": "another-client"}, "azp"),
    ({"iss": "https://evil.example.org/realms/hospital"}, "iss"),
    ({"nonce": "n-2"}, "nonce"),
    ({"nonce": None}, "nonce"),
    ({"exp": int(time.time()) - 600}, "exp"),
    ({"iat": int(time.time()) + 3600}, "iat"),
    ({"sub": None}, "sub"),
])
def test_validator_refuses(keys: tuple[RSAKey, dict[str, Any]], overrides: dict[str, Any], expected: str) -> None:
    key, jwks = keys
    with pytest.raises(IdTokenRejected, match=expected):
        validate_id_token(_token(key, **overrides), jwks, issuer=ISSUER, client_id=CLIENT_ID, nonce="n-1")


def test_validator_refuses_bad_signatures(keys: tuple[RSAKey, dict[str, Any]]) -> None:
    key, jwks = keys
    impostor = RSAKey.generate_key(2048, {"kid": "k1"})  # same kid, another key
    with pytest.raises(IdTokenRejected, match="signature"):
        validate_id_token(_token(impostor), jwks, issuer=ISSUER, client_id=CLIENT_ID, nonce="n-1")
    with pytest.raises(InvalidKeyIdError):  # the provider rotated its keys: the caller reloads them once
        validate_id_token(_token(RSAKey.generate_key(2048, {"kid": "k9"})), jwks, issuer=ISSUER,
                          client_id=CLIENT_ID, nonce="n-1")
    good = _token(key)
    header, payload, signature = good.split(".")
    forged_payload = base64.urlsafe_b64encode(json.dumps(
        {**json.loads(base64.urlsafe_b64decode(payload + "==")), "preferred_username": "admin"}).encode())
    with pytest.raises(IdTokenRejected):
        validate_id_token(f"{header}.{forged_payload.decode().rstrip('=')}.{signature}", jwks, issuer=ISSUER,
                          client_id=CLIENT_ID, nonce="n-1")
    unsigned = base64.urlsafe_b64encode(b'{"alg":"none"}').decode().rstrip("=")
    with pytest.raises(IdTokenRejected):
        validate_id_token(f"{unsigned}.{payload}.", jwks, issuer=ISSUER, client_id=CLIENT_ID, nonce="n-1")


def test_claims_paths_and_role_map() -> None:
    claims = {"realm_access": {"roles": ["a", "b"]}, "https://example.org/roles": ["x"], "groups": "g"}
    assert claim_at(claims, "realm_access.roles") == ["a", "b"]
    assert claim_at(claims, "https://example.org/roles") == ["x"]
    assert claim_at(claims, "realm_access.missing") is None
    assert mapped_role(["pacs-student", "pacs-admin"], ROLE_MAP) == "super_admin"  # map order decides
    assert mapped_role(["nothing"], ROLE_MAP) is None
