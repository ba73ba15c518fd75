"""Accounts, roles, login with lockout and TOTP, tokens, sessions and patient-level access."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyotp
import pytest
from argon2 import PasswordHasher
from click.testing import CliRunner

from voxa.archive import open_archive
from voxa.cli import main
from voxa.config import Settings
from voxa.security.accounts import (
    AccessFilter,
    Accounts,
    AuthenticationFailed,
    AuthFailure,
    Conflict,
    GrantStatus,
    InvalidValue,
    NotFound,
    UserAccess,
    patient_filter_for,
)
from voxa.security.passwords import PasswordPolicy, WeakPassword, hash_password, needs_rehash, verify_password
from voxa.security.permissions import (
    ALL_PERMISSIONS,
    DEFAULT_ROLES,
    PatientScope,
    Permission,
    parse_permissions,
)

P = Permission
GOOD = "Correct-Horse-42"
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


class Clock:
    def __init__(self) -> None:
        self.t = dt.datetime(2025, 3, 1, 8, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.t

    def advance(self, **kw: float) -> None:
        self.t += dt.timedelta(**kw)


def _open(database_url: str, data_dir: Path, clock: Clock) -> Accounts:
    archive = open_archive(Settings(data_dir=data_dir, database_url=database_url))
    accounts = Accounts(archive.index, now=clock, hasher=FAST_HASHER)
    accounts.ensure_default_roles()
    return accounts


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def accounts(tmp_path: Path, clock: Clock) -> Iterator[Accounts]:
    """SQLite only: the cheap back-end for the bulk of the behaviour."""
    acc = _open(f"sqlite:///{tmp_path / 'index.sqlite'}", tmp_path / "data", clock)
    yield acc
    acc.index.engine.dispose()


@pytest.fixture
def both(database_url: str, tmp_path: Path, clock: Clock) -> Iterator[Accounts]:
    """Both index back-ends (SQLite and PostgreSQL)."""
    acc = _open(database_url, tmp_path / "data", clock)
    yield acc
    acc.index.engine.dispose()


def _fail(reason: AuthFailure, fn: Any, *args: Any, **kw: Any) -> None:
    with pytest.raises(AuthenticationFailed) as info:
        fn(*args, **kw)
    assert info.value.reason == reason


# --------------------------------------------------------------------------- passwords


def test_hashing_verifies_and_rehashes_when_parameters_change() -> None:
    h = hash_password(GOOD, FAST_HASHER)
    assert h.startswith("$argon2id$") and GOOD not in h
    assert verify_password(h, GOOD, FAST_HASHER)
    assert not verify_password(h, GOOD + "x", FAST_HASHER)
    assert not verify_password("not a hash", GOOD, FAST_HASHER)
    assert not needs_rehash(h, FAST_HASHER)
    assert needs_rehash(h, PasswordHasher(time_cost=2, memory_cost=1024, parallelism=1))


@pytest.mark.parametrize(("password", "message"), [
    ("Short-1a", "at least 12"),
    ("alice-Secret-99", "username"),
    ("Password123!", "too common"),
    ("alllowercaseletters", "at least 3 of"),
    ("lowercase and digits 1", None),  # lower, digit, other: 3 classes
])
def test_password_policy(password: str, message: str | None) -> None:
    policy = PasswordPolicy()
    if message is None:
        policy.check(password, "alice")
        return
    with pytest.raises(WeakPassword, match=message):
        policy.check(password, "alice")


def test_password_policy_is_configurable() -> None:
    PasswordPolicy(min_length=6, min_classes=1).check("abcdefg", "bob")
    with pytest.raises(WeakPassword):
        PasswordPolicy(min_length=20).check(GOOD)


# --------------------------------------------------------------------------- roles


def test_default_roles_have_the_expected_permissions(accounts: Accounts) -> None:
    roles = {r.name: r for r in accounts.list_roles()}
    assert set(roles) == set(DEFAULT_ROLES) == {"super_admin", "admin", "radiologist", "technologist",
                                                "referring_physician", "student", "family_member"}
    assert all(r.builtin for r in roles.values())
    assert len(Permission) == 16
    assert roles["super_admin"].permissions == ALL_PERMISSIONS
    assert P.SIGN_REPORT not in roles["admin"].permissions and P.MANAGE_USERS in roles["admin"].permissions
    assert {P.SIGN_REPORT, P.CREATE_REPORT, P.RUN_ANALYSIS} <= roles["radiologist"].permissions
    assert P.MANAGE_USERS not in roles["radiologist"].permissions
    assert P.UPLOAD in roles["technologist"].permissions and P.SIGN_REPORT not in roles["technologist"].permissions
    assert roles["student"].permissions == {P.TEACHING_VIEW}
    assert roles["student"].scope == PatientScope.TEACHING_ONLY
    assert roles["family_member"].permissions == {P.VIEW_STUDY_LIST, P.VIEW_IMAGES, P.VIEW_REPORT}
    assert roles["family_member"].scope == roles["referring_physician"].scope == PatientScope.ASSIGNED
    assert accounts.ensure_default_roles() == []  # idempotent


def test_roles_crud_and_builtin_protection(both: Accounts) -> None:
    acc = both
    r = acc.create_role("Auditor", "view_audit, view_study_list", "reads the audit trail")
    assert r.name == "auditor" and r.permissions == {P.VIEW_AUDIT, P.VIEW_STUDY_LIST} and not r.builtin
    with pytest.raises(Conflict):
        acc.create_role("auditor", ["view_audit"])
    with pytest.raises(InvalidValue, match="unknown permission"):
        acc.create_role("bad", ["fly"])
    r = acc.update_role("auditor", permissions=["view_audit"], scope="assigned", new_name="auditors")
    assert r.name == "auditors" and r.permissions == {P.VIEW_AUDIT} and r.scope == PatientScope.ASSIGNED
    u = acc.create_user("carol", GOOD, role="auditors")
    assert acc.permissions_of(u) == {P.VIEW_AUDIT}
    with pytest.raises(Conflict, match="assigned to 1"):
        acc.delete_role("auditors")
    acc.update_user(u, role="radiologist")
    acc.delete_role("auditors")
    with pytest.raises(NotFound):
        acc.get_role("auditors")
    with pytest.raises(Conflict, match="built-in"):
        acc.delete_role("student")
    with pytest.raises(Conflict, match="renamed"):
        acc.update_role("student", new_name="pupil")
    with pytest.raises(Conflict):
        acc.update_role("super_admin", permissions=["view_audit"])
    assert acc.update_role("student", description="Residents").description == "Residents"


# --------------------------------------------------------------------------- users and login


def test_users_and_authenticate(both: Accounts, clock: Clock) -> None:
    acc = both
    u = acc.create_user("Alice", GOOD, role="radiologist", display_name="Dr Alice",
                        referring_physician_name="Smith^Alice")
    assert u.username == "alice" and u.referring_physician_name_key == "SMITH^ALICE"
    with pytest.raises(Conflict):
        acc.create_user("alice", GOOD, role="radiologist")
    with pytest.raises(WeakPassword):
        acc.create_user("bob", "short", role="radiologist")
    with pytest.raises(NotFound):
        acc.create_user("bob", GOOD, role="nope")
    with pytest.raises(InvalidValue):
        acc.create_user("bad name", GOOD, role="radiologist")

    ok = acc.authenticate("ALICE", GOOD)
    assert ok.id == u.id and ok.last_login == clock.t and ok.has(P.SIGN_REPORT)
    _fail(AuthFailure.BAD_CREDENTIALS, acc.authenticate, "alice", "wrong")
    _fail(AuthFailure.BAD_CREDENTIALS, acc.authenticate, "nobody", GOOD)
    assert acc.get_user("alice").failed_logins == 1
    acc.authenticate("alice", GOOD)
    assert acc.get_user("alice").failed_logins == 0

    acc.set_password("alice", "Another-Pass-77")
    _fail(AuthFailure.BAD_CREDENTIALS, acc.authenticate, "alice", GOOD)
    acc.authenticate("alice", "Another-Pass-77")

    acc.disable("alice")
    _fail(AuthFailure.DISABLED, acc.authenticate, "alice", "Another-Pass-77")
    acc.enable("alice")
    acc.authenticate("alice", "Another-Pass-77")
    assert [x.username for x in acc.list_users()] == ["alice"]
    acc.delete_user("alice")
    with pytest.raises(NotFound):
        acc.get_user("alice")


def test_lockout_after_five_failures_then_unlock_after_time(both: Accounts, clock: Clock) -> None:
    acc = both
    acc.create_user("dave", GOOD, role="technologist")
    for _ in range(5):
        _fail(AuthFailure.BAD_CREDENTIALS, acc.authenticate, "dave", "wrong-password")
    assert acc.get_user("dave").locked_until == clock.t + dt.timedelta(minutes=15)
    _fail(AuthFailure.LOCKED, acc.authenticate, "dave", GOOD)  # even the right password
    clock.advance(minutes=14)
    _fail(AuthFailure.LOCKED, acc.authenticate, "dave", GOOD)
    clock.advance(minutes=1, seconds=1)
    assert acc.authenticate("dave", GOOD).failed_logins == 0
    assert acc.get_user("dave").locked_until is None


def test_rehash_on_login_when_parameters_change(accounts: Accounts) -> None:
    accounts.create_user("erin", GOOD, role="student")
    stronger = PasswordHasher(time_cost=2, memory_cost=1024, parallelism=1)
    acc2 = Accounts(accounts.index, now=accounts._clock, hasher=stronger)
    acc2.authenticate("erin", GOOD)
    with accounts.index.read() as conn:
        from sqlalchemy import text
        stored = conn.execute(text("SELECT password_hash FROM users")).scalar_one()
    assert "t=2" in stored and not needs_rehash(stored, stronger)


def test_last_super_admin_is_protected(accounts: Accounts) -> None:
    root = accounts.create_user("root", GOOD, role="super_admin")
    for action in (accounts.delete_user, accounts.disable):
        with pytest.raises(Conflict, match="last enabled super_admin"):
            action(root)
    with pytest.raises(Conflict):
        accounts.update_user(root, role="admin")
    accounts.create_user("root2", GOOD, role="super_admin")
    accounts.disable(root)


def test_totp_required_and_verified(accounts: Accounts, clock: Clock) -> None:
    accounts.create_user("frank", GOOD, role="radiologist")
    enrol = accounts.totp_enrol("frank")
    assert enrol.provisioning_uri.startswith("otpauth://totp/Voxa:frank?") and "issuer=Voxa" in enrol.provisioning_uri
    totp = pyotp.TOTP(enrol.secret)
    with pytest.raises(AuthenticationFailed):
        accounts.totp_confirm("frank", enrol.secret, "000000" if totp.at(clock.t) != "000000" else "111111")
    assert not accounts.get_user("frank").totp_enabled  # nothing stored before confirmation
    accounts.totp_confirm("frank", enrol.secret, totp.at(clock.t))
    assert accounts.get_user("frank").totp_enabled

    _fail(AuthFailure.TOTP_REQUIRED, accounts.authenticate, "frank", GOOD)
    wrong = "123456" if totp.at(clock.t) != "123456" else "654321"
    _fail(AuthFailure.TOTP_INVALID, accounts.authenticate, "frank", GOOD, wrong)
    assert accounts.get_user("frank").failed_logins == 1
    clock.advance(minutes=5)
    assert accounts.authenticate("frank", GOOD, totp.at(clock.t)).username == "frank"
    _fail(AuthFailure.TOTP_INVALID, accounts.authenticate, "frank", GOOD, totp.at(clock.t - dt.timedelta(minutes=5)))
    # a code is used once: the same code again (a replay) fails, even within its 30 s
    _fail(AuthFailure.TOTP_INVALID, accounts.authenticate, "frank", GOOD, totp.at(clock.t))
    # ... and so does the previous step's code, still inside the clock-drift window
    _fail(AuthFailure.TOTP_INVALID, accounts.authenticate, "frank", GOOD, totp.at(clock.t - dt.timedelta(seconds=30)))
    clock.advance(seconds=30)
    assert accounts.authenticate("frank", GOOD, totp.at(clock.t)).username == "frank"  # the next code works
    assert accounts.totp_verify("frank", totp.at(clock.t))
    accounts.totp_disable("frank")
    accounts.authenticate("frank", GOOD)


# --------------------------------------------------------------------------- tokens and sessions


def test_tokens_create_verify_revoke_expire(both: Accounts, clock: Clock) -> None:
    acc = both
    acc.create_user("script", GOOD, role="technologist")
    secret, info = acc.create_token("script", "nightly export", dt.timedelta(days=30))
    assert secret.startswith(f"vx_{info.prefix}_") and info.expires_at == clock.t + dt.timedelta(days=30)
    with acc.index.read() as conn:
        from sqlalchemy import text
        stored = conn.execute(text("SELECT token_hash FROM api_tokens")).scalar_one()
    assert secret not in stored and len(stored) == 64
    clock.advance(hours=1)
    assert acc.verify_token(secret).username == "script"
    assert acc.list_tokens("script")[0].last_used_at == clock.t
    _fail(AuthFailure.TOKEN_INVALID, acc.verify_token, secret[:-2] + "xx")
    _fail(AuthFailure.TOKEN_INVALID, acc.verify_token, "Bearer nonsense")

    acc.disable("script")
    _fail(AuthFailure.DISABLED, acc.verify_token, secret)
    acc.enable("script")
    clock.advance(days=30)
    _fail(AuthFailure.TOKEN_EXPIRED, acc.verify_token, secret)

    secret2, info2 = acc.create_token("script", "forever")
    assert info2.expires_at is None and acc.verify_token(secret2).username == "script"
    acc.revoke_token(info2.prefix)
    _fail(AuthFailure.TOKEN_REVOKED, acc.verify_token, secret2)
    with pytest.raises(NotFound):
        acc.revoke_token("deadbeef")


def test_sessions_slide_then_expire(both: Accounts, clock: Clock) -> None:
    acc = both
    acc.create_user("gina", GOOD, role="radiologist")
    sid, csrf = acc.create_session("gina", "10.0.0.7")
    s = acc.get_session(sid)
    assert s is not None and s.user.username == "gina" and s.csrf_token == csrf and s.ip == "10.0.0.7"
    assert acc.get_session("forged") is None
    # idle timeout 30 min, sliding, up to 12 h in all
    for _ in range(24):  # 11 h 36 min in steps under the idle timeout
        clock.advance(minutes=29)
        assert acc.get_session(sid) is not None
    clock.advance(minutes=25)  # 12 h 1 min after creation: past the absolute maximum, not idle
    assert acc.get_session(sid) is None

    sid2, _ = acc.create_session("gina")
    clock.advance(minutes=31)
    assert acc.get_session(sid2) is None  # idle
    sid3, _ = acc.create_session("gina")
    acc.revoke_session(sid3)
    assert acc.get_session(sid3) is None
    sid4, _ = acc.create_session("gina")
    acc.disable("gina")
    assert acc.get_session(sid4) is None
    assert acc.purge_expired_sessions() == 4


def test_the_server_purges_expired_sessions_periodically(accounts: Accounts, clock: Clock) -> None:
    """What ``voxa serve`` runs every hour: expired and revoked sessions go, live ones stay; a
    failing run is retried at the next interval rather than stopping the housekeeping."""
    from sqlalchemy import func, select

    from voxa.archive.models import table_of
    from voxa.cli.serve import _purge_sessions
    from voxa.periodic import Periodic
    from voxa.security.models import WebSession

    S = table_of(WebSession)
    accounts.create_user("hank", GOOD, role="radiologist")
    old, _ = accounts.create_session("hank")
    clock.advance(minutes=31)
    live, _ = accounts.create_session("hank")
    revoked, _ = accounts.create_session("hank")
    accounts.revoke_session(revoked)
    runtime = type("R", (), {"accounts": accounts})()
    failures = [RuntimeError("index busy")]

    def task() -> None:
        if failures:
            raise failures.pop()
        _purge_sessions(runtime)

    ticker = Periodic("test-session-purge", 0.05, task)
    ticker.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with accounts.index.read() as conn:
                if conn.execute(select(func.count()).select_from(S)).scalar_one() == 1:
                    break
            time.sleep(0.05)
    finally:
        ticker.stop()
    assert not failures
    assert accounts.get_session(live) is not None
    assert accounts.get_session(old) is None and accounts.get_session(revoked) is None
    with accounts.index.read() as conn:
        assert conn.execute(select(func.count()).select_from(S)).scalar_one() == 1


# --------------------------------------------------------------------------- patient access


def test_patient_filter_by_scope(accounts: Accounts) -> None:
    root = accounts.create_user("root", GOOD, role="super_admin")
    doc = accounts.create_user("doc", GOOD, role="referring_physician", referring_physician_name="Doe^Jane^^Dr")
    student = accounts.create_user("stu", GOOD, role="student")
    assert accounts.patient_filter(root) == AccessFilter(all=True)
    assert accounts.patient_filter(student) == AccessFilter(teaching_only=True)
    assert accounts.patient_filter(doc) == AccessFilter(referring_physician_key="DOE^JANE^^DR")

    accounts.assign_patient(doc, "P1", by=root)
    accounts.assign_patient(doc, "P2", "HOSP")
    accounts.assign_patient(doc, "P2", "HOSP")  # idempotent
    assert [(a.patient_id, a.issuer_of_patient_id, a.created_by) for a in accounts.assignments(doc)] == [
        ("P1", "", root.id), ("P2", "HOSP", None)]
    f = accounts.patient_filter(doc)
    assert f.patient_keys == {("P1", ""), ("P2", "HOSP")} and not f.all
    accounts.unassign_patient(doc, "P1")
    with pytest.raises(NotFound):
        accounts.unassign_patient(doc, "P1")
    assert accounts.patient_filter(doc).patient_keys == {("P2", "HOSP")}

    # Pure function: disabled users and empty grants deny everything.
    disabled = UserAccess(accounts.get_user("doc").__class__(**{**accounts.get_user("doc").__dict__,
                                                                 "disabled": True}))
    assert patient_filter_for(disabled).denies_everything


def test_family_grant_workflow_with_expiry(both: Accounts, clock: Clock) -> None:
    acc = both
    admin = acc.create_user("admin", GOOD, role="admin")
    fam = acc.create_user("mum", GOOD, role="family_member")
    assert acc.patient_filter(fam).denies_everything
    with pytest.raises(InvalidValue):
        acc.request_family_access(fam, "P9", expires_at=clock.t - dt.timedelta(days=1))

    g = acc.request_family_access(fam, "P9", expires_at=clock.t + dt.timedelta(days=7), note="mother")
    assert g.status == GrantStatus.REQUESTED
    assert acc.active_family_patients(fam) == frozenset()  # not before verification
    g = acc.verify_family_access(g.id, admin)
    assert g.status == GrantStatus.ACTIVE and g.verified_by == admin.id and g.verified_at == clock.t
    with pytest.raises(Conflict):
        acc.verify_family_access(g.id, admin)
    assert acc.active_family_patients(fam) == {("P9", "")}
    assert acc.patient_filter(fam).patient_keys == {("P9", "")}

    clock.advance(days=7)
    assert acc.active_family_patients(fam) == frozenset()
    assert acc.family_grants(fam)[0].status == GrantStatus.EXPIRED

    g2 = acc.request_family_access(fam, "P10", expires_at=clock.t + dt.timedelta(days=1))
    acc.verify_family_access(g2.id, admin)
    assert acc.revoke_family_access(g2.id).status == GrantStatus.REVOKED
    assert acc.active_family_patients(fam) == frozenset()
    g3 = acc.request_family_access(fam, "P11", expires_at=clock.t + dt.timedelta(hours=1))
    clock.advance(hours=2)
    with pytest.raises(Conflict, match="expired"):
        acc.verify_family_access(g3.id, admin)
    assert [x.status for x in acc.family_grants(status="expired")] == [GrantStatus.EXPIRED] * 2


def test_parse_permissions() -> None:
    assert parse_permissions("all") == ALL_PERMISSIONS
    assert parse_permissions(["View-Images", " "]) == {P.VIEW_IMAGES}
    with pytest.raises(ValueError):
        parse_permissions("view_everything")


# --------------------------------------------------------------------------- CLI


def _run(*args: str, input: str | None = None) -> Any:
    return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)


def test_cli_users_roles_tokens(tmp_path: Path, clock: Clock) -> None:
    d = ["--data-dir", str(tmp_path / "data")]
    r = _run("user", "add", "root", "--role", "super_admin", *d, input=f"{GOOD}\n{GOOD}\n")
    assert r.exit_code == 0, r.output
    assert "created user root (super_admin)" in r.output
    r = _run("user", "add", "weak", "--role", "radiologist", "--password", "weak", *d)
    assert r.exit_code == 1 and "at least 12" in r.output
    r = _run("user", "add", "x", "--role", "nope", "--password", GOOD, *d)
    assert r.exit_code == 1 and "no role" in r.output

    r = _run("role", "add", "reader", "--permissions", "view_study_list,view_images", "--scope", "assigned", *d)
    assert r.exit_code == 0, r.output
    r = _run("role", "edit", "reader", "--grant", "view_report", "--revoke", "view_images", *d)
    assert r.exit_code == 0 and "scope=assigned view_report,view_study_list" in r.output
    r = _run("role", "list", "--json", *d)
    roles = {x["name"]: x for x in json.loads(r.output)}
    assert roles["reader"]["permissions"] == ["view_report", "view_study_list"] and roles["student"]["builtin"]
    assert _run("role", "delete", "student", *d).exit_code == 1

    assert _run("user", "add", "doc", "--role", "reader", "--password", GOOD,
                "--referring-physician-name", "Doe^Jane", *d).exit_code == 0
    assert _run("role", "delete", "reader", *d).exit_code == 1  # still assigned
    assert _run("user", "assign", "doc", "P1", "--issuer", "HOSP", *d).exit_code == 0
    r = _run("user", "token", "create", "doc", "--name", "ci", "--expires-days", "3", *d)
    assert r.exit_code == 0, r.output
    secret = r.stdout.strip().splitlines()[0]
    assert secret.startswith("vx_")
    assert _run("user", "passwd", "doc", "--password", "Brand-New-Pass-1", *d).exit_code == 0
    assert _run("user", "disable", "doc", *d).exit_code == 0
    r = _run("user", "list", "--json", *d)
    users = {x["username"]: x for x in json.loads(r.output)}
    assert users["doc"]["disabled"] and users["doc"]["role"] == "reader"
    assert _run("user", "enable", "doc", *d).exit_code == 0

    acc = _open("", tmp_path / "data", clock)  # default database URL of that data folder
    try:
        assert acc.authenticate("doc", "Brand-New-Pass-1").username == "doc"
        assert acc.verify_token(secret).username == "doc"
        assert acc.patient_filter("doc").patient_keys == {("P1", "HOSP")}
        prefix = secret.split("_")[1]
    finally:
        acc.index.engine.dispose()

    assert _run("user", "token", "revoke", prefix, *d).exit_code == 0
    assert _run("user", "unassign", "doc", "P1", "--issuer", "HOSP", *d).exit_code == 0
    assert _run("user", "delete", "doc", *d, input="n\n").exit_code == 1
    assert _run("user", "delete", "doc", "--yes", *d).exit_code == 0
    assert _run("role", "delete", "reader", *d).exit_code == 0
    assert _run("user", "delete", "root", "--yes", *d).exit_code == 1  # last super admin

    # every change made on the command line is in the audit trail, without the passwords
    from voxa.security import audit

    acc = _open("", tmp_path / "data", clock)
    try:
        records = audit.search(acc.index, interface="cli", limit=None)
    finally:
        acc.index.engine.dispose()
    done = [(r.resource, r.outcome) for r in records]
    assert ("user add", "success") in done and ("user add", "failure") in done
    assert ("role edit", "success") in done and ("user token", "success") not in done
    assert ("user assign", "success") in done and ("user passwd", "success") in done
    assert all(r.actor.startswith("os:") for r in records)
    assert not any(GOOD in str(r.detail) or "Brand-New" in str(r.detail) for r in records)
    assert [r.patient_ids for r in records if r.resource == "user assign"] == [("P1",)]
    assert not any(r.resource.endswith("list") for r in records)
