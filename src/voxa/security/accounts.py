"""Accounts: users, roles, login with lockout and TOTP, API tokens, web sessions, patient access.

:class:`Accounts` is a service over the index (``Index.write()`` / ``Index.read()``); it hands
out plain frozen dataclasses, never ORM rows.  It has no HTTP in it: the web app calls
:meth:`Accounts.authenticate`, :meth:`Accounts.verify_token` and :meth:`Accounts.get_session`,
and turns :class:`AuthenticationFailed` into a 401 whose text does not say why.

Patient-level access is described as data by :func:`patient_filter_for`; the query layer
turns an :class:`AccessFilter` into SQL, once, for C-FIND, QIDO-RS, REST and the viewer.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import pyotp
from argon2 import PasswordHasher
from sqlalchemy import Connection, and_, delete, func, insert, or_, select, update

from voxa.archive.index import Index
from voxa.archive.models import table_of
from voxa.dicom.names import person_name_key
from voxa.security.models import ApiToken, FamilyGrant, PatientAssignment, Role, UserAccount, WebSession
from voxa.security.passwords import (
    DEFAULT_HASHER,
    PasswordPolicy,
    hash_password,
    needs_rehash,
    verify_password,
)
from voxa.security.permissions import (
    ALL_PERMISSIONS,
    DEFAULT_ROLES,
    PatientScope,
    Permission,
    format_permissions,
    parse_permissions,
)
from voxa.security.secretbox import SecretBox, SecretUnreadable, is_sealed

log = logging.getLogger(__name__)

U = table_of(UserAccount)
R = table_of(Role)
T = table_of(ApiToken)
S = table_of(WebSession)
PA = table_of(PatientAssignment)
FG = table_of(FamilyGrant)

SUPER_ADMIN = "super_admin"
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,63}$")
_ROLE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
TOKEN_PREFIX = "vx"


# --------------------------------------------------------------------------- errors


class AccountError(Exception):
    """Base of the account errors that map to a 4xx answer."""


class NotFound(AccountError, LookupError):
    """No such user, role, token or grant (404)."""


class Conflict(AccountError):
    """The change contradicts the current state: duplicate name, role in use, built-in role,
    last super admin, wrong grant status (409)."""


class InvalidValue(AccountError, ValueError):
    """A malformed username, role name, permission or expiry (422)."""


class AuthFailure(StrEnum):
    BAD_CREDENTIALS = "bad_credentials"
    LOCKED = "locked"
    DISABLED = "disabled"
    TOTP_REQUIRED = "totp_required"
    TOTP_INVALID = "totp_invalid"
    TOKEN_INVALID = "token_invalid"
    TOKEN_EXPIRED = "token_expired"
    TOKEN_REVOKED = "token_revoked"


class AuthenticationFailed(Exception):
    """Login, token or session refused.  ``reason`` is for logs and the audit trail; clients
    should see one generic message (except ``totp_required``, which asks for the code)."""

    def __init__(self, reason: AuthFailure):
        super().__init__(f"authentication failed ({reason.value})")
        self.reason = reason


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class RoleInfo:
    id: int
    name: str
    description: str
    builtin: bool
    permissions: frozenset[Permission]
    scope: PatientScope


@dataclass(frozen=True)
class User:
    id: int
    username: str
    display_name: str
    email: str
    role: str
    role_id: int
    permissions: frozenset[Permission]
    scope: PatientScope
    disabled: bool
    must_change_password: bool
    totp_enabled: bool
    referring_physician_name: str
    referring_physician_name_key: str
    failed_logins: int
    locked_until: dt.datetime | None
    last_login: dt.datetime | None
    created_at: dt.datetime

    def has(self, permission: Permission) -> bool:
        return permission in self.permissions


PatientKey = tuple[str, str]  # (PatientID, IssuerOfPatientID)


@dataclass(frozen=True)
class UserAccess:
    """What :func:`patient_filter_for` needs to know about a user (see :meth:`Accounts.access_of`)."""

    user: User
    assigned_patients: frozenset[PatientKey] = frozenset()
    family_patients: frozenset[PatientKey] = frozenset()


@dataclass(frozen=True)
class AccessFilter:
    """Patient-level restriction as data.  ``all``: no restriction.  Otherwise a study is
    visible when its (PatientID, Issuer) is in ``patient_keys`` or its Referring Physician's
    name key equals ``referring_physician_key``; with ``teaching_only`` only teaching studies
    (de-identified) are visible.  An empty filter (the default) shows nothing: deny by default."""

    all: bool = False
    patient_keys: frozenset[PatientKey] = frozenset()
    referring_physician_key: str | None = None
    teaching_only: bool = False

    @property
    def denies_everything(self) -> bool:
        return not (self.all or self.patient_keys or self.referring_physician_key or self.teaching_only)


def patient_filter_for(access: UserAccess) -> AccessFilter:
    """The patient-level restriction of a user, from their role's scope and their grants."""
    user = access.user
    if user.disabled:
        return AccessFilter()
    if user.scope == PatientScope.ALL:
        return AccessFilter(all=True)
    if user.scope == PatientScope.TEACHING_ONLY:
        return AccessFilter(teaching_only=True)
    return AccessFilter(
        patient_keys=access.assigned_patients | access.family_patients,
        referring_physician_key=user.referring_physician_name_key or None,
    )


@dataclass(frozen=True)
class TokenInfo:
    id: int
    user_id: int
    name: str
    prefix: str
    created_at: dt.datetime
    expires_at: dt.datetime | None
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None


@dataclass(frozen=True)
class SessionInfo:
    user: User
    csrf_token: str
    created_at: dt.datetime
    expires_at: dt.datetime
    ip: str


@dataclass(frozen=True)
class TotpEnrolment:
    secret: str
    provisioning_uri: str


class GrantStatus(StrEnum):
    REQUESTED = "requested"
    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"


@dataclass(frozen=True)
class Assignment:
    user_id: int
    patient_id: str
    issuer_of_patient_id: str
    created_by: int | None
    created_at: dt.datetime


@dataclass(frozen=True)
class FamilyGrantInfo:
    id: int
    user_id: int
    patient_id: str
    issuer_of_patient_id: str
    status: GrantStatus
    note: str
    requested_at: dt.datetime
    verified_by: int | None
    verified_at: dt.datetime | None
    expires_at: dt.datetime
    revoked_at: dt.datetime | None


# --------------------------------------------------------------------------- helpers


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite returns naive datetimes: they were stored as UTC."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


SESSION_TOUCH_S = 30.0

UserRef = User | int | str  # a User, a user id, or a username


class Accounts:
    def __init__(self, index: Index, *, now: Callable[[], dt.datetime] = _utc_now,
                 hasher: PasswordHasher = DEFAULT_HASHER, policy: PasswordPolicy | None = None,
                 max_failures: int = 5, lockout: dt.timedelta = dt.timedelta(minutes=15),
                 session_idle: dt.timedelta = dt.timedelta(minutes=30),
                 session_max: dt.timedelta = dt.timedelta(hours=12), totp_issuer: str = "Voxa",
                 secret_box: SecretBox | None = None):
        self.index = index
        # TOTP secrets are sealed with it (voxa.security.secretbox); without one (tools that
        # never check a code) they are written as they are
        self.secret_box = secret_box
        self._clock = now
        self.hasher = hasher
        self.policy = policy or PasswordPolicy()
        self.max_failures = max_failures
        self.lockout = lockout
        self.session_idle = session_idle
        self.session_max = session_max
        self.totp_issuer = totp_issuer
        # Verified against for unknown users so that they take as long as known ones.
        self._dummy_hash = hash_password(secrets.token_urlsafe(16), hasher)

    def now(self) -> dt.datetime:
        """The injected clock's time, in UTC (SQLite compares stored times as text)."""
        return self._clock().astimezone(dt.UTC)

    # ------------------------------------------------------------------ roles

    def ensure_default_roles(self) -> list[str]:
        """Create the built-in roles that are missing (existing ones keep their edits); the names created."""
        created = []
        with self.index.write() as conn:
            have = set(conn.execute(select(R.c.name)).scalars())
            now = self.now()
            for spec in DEFAULT_ROLES.values():
                if spec.name not in have:
                    conn.execute(insert(R).values(
                        name=spec.name, description=spec.description, builtin=True,
                        permissions=format_permissions(spec.permissions), patient_scope=spec.scope.value,
                        created_at=now, updated_at=now))
                    created.append(spec.name)
        return created

    def list_roles(self) -> list[RoleInfo]:
        with self.index.read() as conn:
            return [_role(r) for r in conn.execute(select(R).order_by(R.c.id)).mappings()]

    def get_role(self, name: str) -> RoleInfo:
        with self.index.read() as conn:
            return _role(self._role_row(conn, name))

    def create_role(self, name: str, permissions: Iterable[str] | str, description: str = "",
                    scope: PatientScope | str = PatientScope.ALL) -> RoleInfo:
        name = name.strip().lower()
        if not _ROLE_NAME.match(name):
            raise InvalidValue(f"invalid role name {name!r}: lower-case letters, digits, '_' and '-'")
        perms = _perms(permissions)
        scope = _scope(scope)
        with self.index.write() as conn:
            if conn.execute(select(R.c.id).where(R.c.name == name)).first():
                raise Conflict(f"role {name!r} already exists")
            now = self.now()
            conn.execute(insert(R).values(name=name, description=description, builtin=False,
                                          permissions=format_permissions(perms), patient_scope=scope.value,
                                          created_at=now, updated_at=now))
            return _role(self._role_row(conn, name))

    def update_role(self, name: str, *, permissions: Iterable[str] | str | None = None,
                    description: str | None = None, scope: PatientScope | str | None = None,
                    new_name: str | None = None) -> RoleInfo:
        """Change a role.  Built-in roles keep their name; ``super_admin`` keeps every permission
        and sees every patient, so that the system cannot lock itself out."""
        with self.index.write() as conn:
            row = self._role_row(conn, name)
            values: dict[str, Any] = {}
            if new_name is not None and new_name.strip().lower() != row["name"]:
                new_name = new_name.strip().lower()
                if row["builtin"]:
                    raise Conflict(f"built-in role {row['name']!r} cannot be renamed")
                if not _ROLE_NAME.match(new_name):
                    raise InvalidValue(f"invalid role name {new_name!r}")
                if conn.execute(select(R.c.id).where(R.c.name == new_name)).first():
                    raise Conflict(f"role {new_name!r} already exists")
                values["name"] = new_name
            if permissions is not None:
                perms = _perms(permissions)
                if row["name"] == SUPER_ADMIN and perms != ALL_PERMISSIONS:
                    raise Conflict("super_admin keeps every permission")
                values["permissions"] = format_permissions(perms)
            if scope is not None:
                sc = _scope(scope)
                if row["name"] == SUPER_ADMIN and sc != PatientScope.ALL:
                    raise Conflict("super_admin sees every patient")
                values["patient_scope"] = sc.value
            if description is not None:
                values["description"] = description
            if values:
                values["updated_at"] = self.now()
                conn.execute(update(R).where(R.c.id == row["id"]).values(**values))
            return _role(conn.execute(select(R).where(R.c.id == row["id"])).mappings().one())

    def delete_role(self, name: str) -> None:
        with self.index.write() as conn:
            row = self._role_row(conn, name)
            if row["builtin"]:
                raise Conflict(f"built-in role {row['name']!r} cannot be deleted")
            n = conn.execute(select(func.count()).select_from(U).where(U.c.role_id == row["id"])).scalar_one()
            if n:
                raise Conflict(f"role {row['name']!r} is assigned to {n} user(s)")
            conn.execute(delete(R).where(R.c.id == row["id"]))

    def permissions_of(self, user: UserRef) -> frozenset[Permission]:
        return user.permissions if isinstance(user, User) else self.get_user(user).permissions

    # ------------------------------------------------------------------ users

    def create_user(self, username: str, password: str, *, role: str, display_name: str = "",
                    email: str = "", referring_physician_name: str = "",
                    must_change_password: bool = False, check_policy: bool = True) -> User:
        """A new account.  Usernames are case-insensitive (stored lower-case)."""
        username = username.strip().lower()
        if not _USERNAME.match(username):
            raise InvalidValue(f"invalid username {username!r}: letters, digits, '.', '_', '@', '-' (64 at most)")
        if check_policy:
            self.policy.check(password, username)
        password_hash = hash_password(password, self.hasher)
        with self.index.write() as conn:
            role_row = self._role_row(conn, role)
            if conn.execute(select(U.c.id).where(U.c.username == username)).first():
                raise Conflict(f"user {username!r} already exists")
            now = self.now()
            conn.execute(insert(U).values(
                username=username, display_name=display_name, email=email, password_hash=password_hash,
                role_id=role_row["id"], disabled=False, failed_logins=0, totp_secret=None,
                must_change_password=must_change_password,
                referring_physician_name=referring_physician_name,
                referring_physician_name_key=person_name_key(referring_physician_name),
                created_at=now, updated_at=now))
            return self._user(conn, username)

    def get_user(self, user: UserRef) -> User:
        with self.index.read() as conn:
            return self._user(conn, user)

    def list_users(self) -> list[User]:
        with self.index.read() as conn:
            rows = conn.execute(self._user_select().order_by(U.c.username)).mappings().all()
            return [_user(r) for r in rows]

    def update_user(self, user: UserRef, *, display_name: str | None = None, email: str | None = None,
                    role: str | None = None, referring_physician_name: str | None = None,
                    must_change_password: bool | None = None) -> User:
        with self.index.write() as conn:
            current = self._user(conn, user)
            values: dict[str, Any] = {}
            if display_name is not None:
                values["display_name"] = display_name
            if email is not None:
                values["email"] = email
            if referring_physician_name is not None:
                values["referring_physician_name"] = referring_physician_name
                values["referring_physician_name_key"] = person_name_key(referring_physician_name)
            if must_change_password is not None:
                values["must_change_password"] = must_change_password
            if role is not None and role != current.role:
                if current.role == SUPER_ADMIN:
                    self._refuse_last_super_admin(conn, current)
                values["role_id"] = self._role_row(conn, role)["id"]
            if values:
                values["updated_at"] = self.now()
                conn.execute(update(U).where(U.c.id == current.id).values(**values))
            return self._user(conn, current.id)

    def set_password(self, user: UserRef, password: str, *, check_policy: bool = True,
                     must_change_password: bool = False) -> None:
        """New password; clears a lockout and, unless told otherwise, the must-change flag."""
        current = self.get_user(user)
        if check_policy:
            self.policy.check(password, current.username)
        password_hash = hash_password(password, self.hasher)
        with self.index.write() as conn:
            conn.execute(update(U).where(U.c.id == current.id).values(
                password_hash=password_hash, must_change_password=must_change_password,
                failed_logins=0, locked_until=None, updated_at=self.now()))

    def disable(self, user: UserRef) -> None:
        """Disable an account and end its sessions (its tokens stop working while disabled)."""
        with self.index.write() as conn:
            current = self._user(conn, user)
            if current.role == SUPER_ADMIN and not current.disabled:
                self._refuse_last_super_admin(conn, current)
            now = self.now()
            conn.execute(update(U).where(U.c.id == current.id).values(disabled=True, updated_at=now))
            conn.execute(update(S).where(S.c.user_id == current.id, S.c.revoked_at.is_(None))
                         .values(revoked_at=now))

    def enable(self, user: UserRef) -> None:
        """Enable an account; also lifts a lockout."""
        with self.index.write() as conn:
            current = self._user(conn, user)
            conn.execute(update(U).where(U.c.id == current.id).values(
                disabled=False, failed_logins=0, locked_until=None, updated_at=self.now()))

    def unlock(self, user: UserRef) -> None:
        with self.index.write() as conn:
            current = self._user(conn, user)
            conn.execute(update(U).where(U.c.id == current.id).values(failed_logins=0, locked_until=None))

    def delete_user(self, user: UserRef) -> None:
        with self.index.write() as conn:
            current = self._user(conn, user)
            if current.role == SUPER_ADMIN:
                self._refuse_last_super_admin(conn, current)
            for table in (T, S, PA, FG):
                conn.execute(delete(table).where(table.c.user_id == current.id))
            conn.execute(update(PA).where(PA.c.created_by == current.id).values(created_by=None))
            conn.execute(update(FG).where(FG.c.verified_by == current.id).values(verified_by=None))
            conn.execute(delete(U).where(U.c.id == current.id))

    # ------------------------------------------------------------------ login

    def authenticate(self, username: str, password: str, totp_code: str | None = None) -> User:
        """The user whose username and password (and TOTP code, when enrolled) these are.

        Every failure raises :class:`AuthenticationFailed`.  ``max_failures`` wrong passwords
        or codes in a row lock the account for ``lockout``; while locked even the right
        password fails.  Unknown users cost one hash verification like known ones.
        """
        username = username.strip().lower()
        with self.index.read() as conn:
            row = conn.execute(self._user_select().where(U.c.username == username)).mappings().first()
        if row is None:
            verify_password(self._dummy_hash, password, self.hasher)
            raise AuthenticationFailed(AuthFailure.BAD_CREDENTIALS)
        now = self.now()
        password_ok = verify_password(row["password_hash"], password, self.hasher)
        locked_until = _utc(row["locked_until"])
        if locked_until is not None and now < locked_until:
            raise AuthenticationFailed(AuthFailure.LOCKED)
        if not password_ok:
            self._record_failure(row["id"])
            raise AuthenticationFailed(AuthFailure.BAD_CREDENTIALS)
        if row["disabled"]:
            raise AuthenticationFailed(AuthFailure.DISABLED)
        values: dict[str, Any] = {"failed_logins": 0, "locked_until": None, "last_login": now}
        if row["totp_secret"]:
            if not totp_code:
                raise AuthenticationFailed(AuthFailure.TOTP_REQUIRED)
            secret = self._open_secret(row["totp_secret"])
            step = _totp_step(secret, totp_code, now) if secret else None
            # a code seen before (replayed, or phished and used first) is refused like a wrong one
            if step is None or (row["totp_last_step"] is not None and step <= row["totp_last_step"]):
                self._record_failure(row["id"])
                raise AuthenticationFailed(AuthFailure.TOTP_INVALID)
            values["totp_last_step"] = step
            if self.secret_box is not None and secret and not is_sealed(row["totp_secret"]):
                values["totp_secret"] = self.secret_box.seal(secret)  # written before encryption
        if needs_rehash(row["password_hash"], self.hasher):
            values["password_hash"] = hash_password(password, self.hasher)
        with self.index.write() as conn:
            conn.execute(update(U).where(U.c.id == row["id"]).values(**values))
            return self._user(conn, row["id"])

    def _record_failure(self, user_id: int) -> None:
        with self.index.write() as conn:
            conn.execute(update(U).where(U.c.id == user_id).values(failed_logins=U.c.failed_logins + 1))
            n = conn.execute(select(U.c.failed_logins).where(U.c.id == user_id)).scalar_one()
            if n >= self.max_failures:
                conn.execute(update(U).where(U.c.id == user_id).values(
                    failed_logins=0, locked_until=self.now() + self.lockout))

    # ------------------------------------------------------------------ TOTP

    def totp_enrol(self, user: UserRef) -> TotpEnrolment:
        """A fresh secret and its ``otpauth://`` URI (for a QR code).  Nothing is stored until
        :meth:`totp_confirm` proves the authenticator app has it."""
        current = self.get_user(user)
        secret = pyotp.random_base32()
        uri = pyotp.TOTP(secret).provisioning_uri(name=current.username, issuer_name=self.totp_issuer)
        return TotpEnrolment(secret, uri)

    def totp_confirm(self, user: UserRef, secret: str, code: str) -> None:
        if not _totp_ok(secret, code, self.now()):
            raise AuthenticationFailed(AuthFailure.TOTP_INVALID)
        current = self.get_user(user)
        stored = self.secret_box.seal(secret) if self.secret_box is not None else secret
        with self.index.write() as conn:
            conn.execute(update(U).where(U.c.id == current.id).values(totp_secret=stored, updated_at=self.now()))

    def totp_verify(self, user: UserRef, code: str) -> bool:
        current = self.get_user(user)
        with self.index.read() as conn:
            stored = conn.execute(select(U.c.totp_secret).where(U.c.id == current.id)).scalar_one()
        secret = self._open_secret(stored) if stored else None
        return secret is not None and bool(secret) and _totp_ok(secret, code, self.now())

    def _open_secret(self, stored: str) -> str | None:
        """A stored TOTP secret in clear; None (no code can match) when it cannot be opened."""
        if not is_sealed(stored):
            return stored
        if self.secret_box is None:
            log.error("a TOTP secret is encrypted but no secret key is loaded: one-time codes are refused")
            return None
        try:
            return self.secret_box.open(stored)
        except SecretUnreadable as e:
            log.error("%s: one-time codes are refused until the right key is in place or the user enrols again", e)
            return None

    def totp_disable(self, user: UserRef) -> None:
        current = self.get_user(user)
        with self.index.write() as conn:
            conn.execute(update(U).where(U.c.id == current.id).values(totp_secret=None, updated_at=self.now()))

    # ------------------------------------------------------------------ API tokens

    def create_token(self, user: UserRef, name: str = "",
                     expires_in: dt.timedelta | None = None) -> tuple[str, TokenInfo]:
        """A new bearer token ``vx_<prefix>_<secret>``: shown once, only its SHA-256 is kept."""
        current = self.get_user(user)
        if expires_in is not None and expires_in <= dt.timedelta(0):
            raise InvalidValue("token lifetime must be positive")
        prefix = secrets.token_hex(4)
        secret = f"{TOKEN_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
        now = self.now()
        with self.index.write() as conn:
            conn.execute(insert(T).values(user_id=current.id, name=name, prefix=prefix,
                                          token_hash=_sha256(secret), created_at=now,
                                          expires_at=now + expires_in if expires_in else None))
            row = conn.execute(select(T).where(T.c.prefix == prefix)).mappings().one()
        return secret, _token(row)

    def verify_token(self, secret: str) -> User:
        parts = secret.strip().split("_", 2)
        if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
            raise AuthenticationFailed(AuthFailure.TOKEN_INVALID)
        with self.index.read() as conn:
            row = conn.execute(select(T).where(T.c.prefix == parts[1])).mappings().first()
        if row is None or not hmac.compare_digest(row["token_hash"], _sha256(secret.strip())):
            raise AuthenticationFailed(AuthFailure.TOKEN_INVALID)
        now = self.now()
        if row["revoked_at"] is not None:
            raise AuthenticationFailed(AuthFailure.TOKEN_REVOKED)
        expires = _utc(row["expires_at"])
        if expires is not None and now >= expires:
            raise AuthenticationFailed(AuthFailure.TOKEN_EXPIRED)
        with self.index.write() as conn:
            user = self._user(conn, row["user_id"])
            if user.disabled:
                raise AuthenticationFailed(AuthFailure.DISABLED)
            conn.execute(update(T).where(T.c.id == row["id"]).values(last_used_at=now))
        return user

    def list_tokens(self, user: UserRef | None = None) -> list[TokenInfo]:
        with self.index.read() as conn:
            q = select(T).order_by(T.c.id)
            if user is not None:
                q = q.where(T.c.user_id == self._user(conn, user).id)
            return [_token(r) for r in conn.execute(q).mappings()]

    def revoke_token(self, token: int | str) -> None:
        """Revoke by id, prefix or the whole secret."""
        with self.index.write() as conn:
            if isinstance(token, int):
                where = T.c.id == token
            else:
                parts = token.split("_", 2)
                where = T.c.prefix == (parts[1] if len(parts) == 3 and parts[0] == TOKEN_PREFIX else token)
            row = conn.execute(select(T.c.id, T.c.revoked_at).where(where)).first()
            if row is None:
                raise NotFound(f"no API token {token!r}")
            if row.revoked_at is None:
                conn.execute(update(T).where(T.c.id == row.id).values(revoked_at=self.now()))

    # ------------------------------------------------------------------ web sessions

    def create_session(self, user: UserRef, ip: str = "", *, oidc_id_token: str | None = None) -> tuple[str, str]:
        """(session id for the cookie, CSRF token).  Only the session id's SHA-256 is stored;
        a single sign-on session keeps its ID token for the provider's logout."""
        current = self.get_user(user)
        session_id = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = self.now()
        with self.index.write() as conn:
            conn.execute(insert(S).values(id=_sha256(session_id), user_id=current.id, csrf_token=csrf,
                                          created_at=now, last_seen_at=now, ip=ip[:64], oidc_id_token=oidc_id_token,
                                          expires_at=min(now + self.session_idle, now + self.session_max)))
        return session_id, csrf

    def get_session(self, session_id: str) -> SessionInfo | None:
        """The live session (its expiry slides forward, up to the absolute maximum), or None."""
        key = _sha256(session_id)
        now = self.now()
        with self.index.read() as conn:
            row = conn.execute(select(S).where(S.c.id == key)).mappings().first()
            if row is None or row["revoked_at"] is not None:
                return None
            expires = _utc(row["expires_at"])
            assert expires is not None
            if now >= expires:
                return None
            user = self._user(conn, row["user_id"])
        if user.disabled:
            return None
        created = _utc(row["created_at"])
        last_seen = _utc(row["last_seen_at"])
        assert created is not None and last_seen is not None
        # A viewer sends hundreds of requests a minute: slide the expiry at most every
        # SESSION_TOUCH_S rather than writing the index on every one of them.
        if (now - last_seen).total_seconds() >= SESSION_TOUCH_S:
            expires = min(now + self.session_idle, created + self.session_max)
            with self.index.write() as conn:
                conn.execute(update(S).where(S.c.id == key, S.c.revoked_at.is_(None))
                             .values(last_seen_at=now, expires_at=expires))
        return SessionInfo(user, row["csrf_token"], created, expires, row["ip"])

    def revoke_session(self, session_id: str) -> str | None:
        """Ends a session; returns the ID token it began with (single sign-on), if any."""
        key = _sha256(session_id)
        with self.index.write() as conn:
            token = conn.execute(select(S.c.oidc_id_token).where(S.c.id == key, S.c.revoked_at.is_(None))).scalar()
            conn.execute(update(S).where(S.c.id == key, S.c.revoked_at.is_(None))
                         .values(revoked_at=self.now(), oidc_id_token=None))
        return str(token) if token else None

    def revoke_sessions_of(self, user: UserRef) -> None:
        with self.index.write() as conn:
            uid = self._user(conn, user).id
            conn.execute(update(S).where(S.c.user_id == uid, S.c.revoked_at.is_(None)).values(revoked_at=self.now()))

    def end_single_sign_on_sessions(self, applies: Callable[[str], bool]) -> list[tuple[User, int]]:
        """Ends the live single sign-on sessions whose ID token ``applies`` accepts (the
        provider's back-channel logout): each user whose sessions ended, with how many."""
        now = self.now()
        with self.index.write() as conn:
            rows = conn.execute(select(S.c.id, S.c.user_id, S.c.oidc_id_token).where(
                S.c.oidc_id_token.is_not(None), S.c.revoked_at.is_(None), S.c.expires_at > now)).all()
            ended = [r for r in rows if applies(str(r.oidc_id_token))]
            if not ended:
                return []
            conn.execute(update(S).where(S.c.id.in_([r.id for r in ended]), S.c.revoked_at.is_(None))
                         .values(revoked_at=now, oidc_id_token=None))
            counts: dict[int, int] = {}
            for r in ended:
                counts[r.user_id] = counts.get(r.user_id, 0) + 1
            return [(self._user(conn, uid), n) for uid, n in counts.items()]

    def purge_expired_sessions(self) -> int:
        with self.index.write() as conn:
            return conn.execute(delete(S).where(or_(S.c.expires_at <= self.now(), S.c.revoked_at.is_not(None)))).rowcount

    # ------------------------------------------------------------------ patient access

    def assign_patient(self, user: UserRef, patient_id: str, issuer: str = "", *,
                       by: UserRef | None = None) -> Assignment:
        """Assign a patient to a user (idempotent)."""
        if not patient_id:
            raise InvalidValue("patient ID is required")
        with self.index.write() as conn:
            uid = self._user(conn, user).id
            by_id = self._user(conn, by).id if by is not None else None
            where = and_(PA.c.user_id == uid, PA.c.patient_id == patient_id, PA.c.issuer_of_patient_id == issuer)
            if not conn.execute(select(PA.c.id).where(where)).first():
                conn.execute(insert(PA).values(user_id=uid, patient_id=patient_id, issuer_of_patient_id=issuer,
                                               created_by=by_id, created_at=self.now()))
            return _assignment(conn.execute(select(PA).where(where)).mappings().one())

    def unassign_patient(self, user: UserRef, patient_id: str, issuer: str = "") -> None:
        with self.index.write() as conn:
            uid = self._user(conn, user).id
            n = conn.execute(delete(PA).where(PA.c.user_id == uid, PA.c.patient_id == patient_id,
                                              PA.c.issuer_of_patient_id == issuer)).rowcount
            if not n:
                raise NotFound(f"patient {patient_id!r} is not assigned to that user")

    def assignments(self, user: UserRef) -> list[Assignment]:
        with self.index.read() as conn:
            uid = self._user(conn, user).id
            rows = conn.execute(select(PA).where(PA.c.user_id == uid).order_by(PA.c.id)).mappings()
            return [_assignment(r) for r in rows]

    def request_family_access(self, user: UserRef, patient_id: str, *, expires_at: dt.datetime,
                              issuer: str = "", note: str = "") -> FamilyGrantInfo:
        """A grant in ``requested`` state: it gives nothing until an administrator verifies it."""
        if not patient_id:
            raise InvalidValue("patient ID is required")
        if expires_at.tzinfo is None:
            raise InvalidValue("expiry must be timezone-aware")
        expires_at = expires_at.astimezone(dt.UTC)
        now = self.now()
        if expires_at <= now:
            raise InvalidValue("expiry must be in the future")
        with self.index.write() as conn:
            uid = self._user(conn, user).id
            gid = conn.execute(insert(FG).values(
                user_id=uid, patient_id=patient_id, issuer_of_patient_id=issuer, status=GrantStatus.REQUESTED.value,
                note=note, requested_at=now, expires_at=expires_at).returning(FG.c.id)).scalar_one()
            return _grant(conn.execute(select(FG).where(FG.c.id == gid)).mappings().one())

    def verify_family_access(self, grant_id: int, admin: UserRef) -> FamilyGrantInfo:
        """requested -> active, recording who verified it."""
        now = self.now()
        with self.index.write() as conn:
            self._expire_grants(conn, now)
            admin_id = self._user(conn, admin).id
            grant = self._grant_row(conn, grant_id)
            if grant["status"] != GrantStatus.REQUESTED:
                raise Conflict(f"family grant {grant_id} is {grant['status']}, not requested")
            conn.execute(update(FG).where(FG.c.id == grant_id).values(
                status=GrantStatus.ACTIVE.value, verified_by=admin_id, verified_at=now))
            return _grant(self._grant_row(conn, grant_id))

    def revoke_family_access(self, grant_id: int) -> FamilyGrantInfo:
        with self.index.write() as conn:
            grant = self._grant_row(conn, grant_id)
            if grant["status"] in (GrantStatus.REQUESTED, GrantStatus.ACTIVE):
                conn.execute(update(FG).where(FG.c.id == grant_id).values(
                    status=GrantStatus.REVOKED.value, revoked_at=self.now()))
            return _grant(self._grant_row(conn, grant_id))

    def family_grants(self, user: UserRef | None = None,
                      status: GrantStatus | str | None = None) -> list[FamilyGrantInfo]:
        with self.index.write() as conn:
            self._expire_grants(conn, self.now())
            q = select(FG).order_by(FG.c.id)
            if user is not None:
                q = q.where(FG.c.user_id == self._user(conn, user).id)
            if status is not None:
                q = q.where(FG.c.status == GrantStatus(status).value)
            return [_grant(r) for r in conn.execute(q).mappings()]

    def active_family_patients(self, user: UserRef, now: dt.datetime | None = None) -> frozenset[PatientKey]:
        """Patients covered by the user's active grants; grants past their expiry become ``expired``."""
        now = (now or self.now()).astimezone(dt.UTC)
        with self.index.write() as conn:
            self._expire_grants(conn, now)
            uid = self._user(conn, user).id
            rows = conn.execute(select(FG.c.patient_id, FG.c.issuer_of_patient_id).where(
                FG.c.user_id == uid, FG.c.status == GrantStatus.ACTIVE.value))
            return frozenset((r.patient_id, r.issuer_of_patient_id) for r in rows)

    def access_of(self, user: UserRef) -> UserAccess:
        """Everything :func:`patient_filter_for` needs, read now."""
        current = user if isinstance(user, User) else self.get_user(user)
        if current.scope != PatientScope.ASSIGNED:
            return UserAccess(current)
        assigned = frozenset((a.patient_id, a.issuer_of_patient_id) for a in self.assignments(current))
        return UserAccess(current, assigned, self.active_family_patients(current))

    def patient_filter(self, user: UserRef) -> AccessFilter:
        return patient_filter_for(self.access_of(user))

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _user_select() -> Any:
        return select(U, R.c.name.label("role_name"), R.c.permissions.label("role_permissions"),
                      R.c.patient_scope.label("role_scope")).join(R, R.c.id == U.c.role_id)

    def _user(self, conn: Connection, user: UserRef) -> User:
        if isinstance(user, User):
            user = user.id
        where = U.c.id == user if isinstance(user, int) else U.c.username == user.strip().lower()
        row = conn.execute(self._user_select().where(where)).mappings().first()
        if row is None:
            raise NotFound(f"no user {user!r}")
        return _user(row)

    @staticmethod
    def _role_row(conn: Connection, name: str) -> Any:
        row = conn.execute(select(R).where(R.c.name == name.strip().lower())).mappings().first()
        if row is None:
            raise NotFound(f"no role {name!r}")
        return row

    @staticmethod
    def _grant_row(conn: Connection, grant_id: int) -> Any:
        row = conn.execute(select(FG).where(FG.c.id == grant_id)).mappings().first()
        if row is None:
            raise NotFound(f"no family grant {grant_id}")
        return row

    @staticmethod
    def _expire_grants(conn: Connection, now: dt.datetime) -> None:
        conn.execute(update(FG).where(
            FG.c.status.in_([GrantStatus.REQUESTED.value, GrantStatus.ACTIVE.value]),
            FG.c.expires_at <= now).values(status=GrantStatus.EXPIRED.value))

    @staticmethod
    def _refuse_last_super_admin(conn: Connection, user: User) -> None:
        others = conn.execute(select(func.count()).select_from(U.join(R, R.c.id == U.c.role_id)).where(
            R.c.name == SUPER_ADMIN, U.c.disabled.is_(False), U.c.id != user.id)).scalar_one()
        if not others:
            raise Conflict("the last enabled super_admin cannot be removed, disabled or demoted")


def _totp_ok(secret: str, code: str, now: dt.datetime) -> bool:
    return _totp_step(secret, code, now) is not None


def _totp_step(secret: str, code: str, now: dt.datetime) -> int | None:
    """The time step (30 s) whose code ``code`` is, within one step of ``now``; None if none."""
    code = code.strip().replace(" ", "")
    if not code.isdigit():
        return None
    totp = pyotp.TOTP(secret)
    current = totp.timecode(now)
    for step in (current, current - 1, current + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def _perms(values: Iterable[str] | str) -> frozenset[Permission]:
    try:
        return parse_permissions(values)
    except ValueError as e:
        raise InvalidValue(str(e)) from None


def _scope(value: PatientScope | str) -> PatientScope:
    try:
        return PatientScope(value)
    except ValueError:
        raise InvalidValue(f"unknown patient scope {value!r} (all, assigned, teaching_only)") from None


def _role(row: Any) -> RoleInfo:
    return RoleInfo(row["id"], row["name"], row["description"], bool(row["builtin"]),
                    parse_permissions(row["permissions"]), PatientScope(row["patient_scope"]))


def _user(row: Any) -> User:
    created = _utc(row["created_at"])
    assert created is not None
    return User(
        id=row["id"], username=row["username"], display_name=row["display_name"], email=row["email"],
        role=row["role_name"], role_id=row["role_id"], permissions=parse_permissions(row["role_permissions"]),
        scope=PatientScope(row["role_scope"]), disabled=bool(row["disabled"]),
        must_change_password=bool(row["must_change_password"]), totp_enabled=bool(row["totp_secret"]),
        referring_physician_name=row["referring_physician_name"],
        referring_physician_name_key=row["referring_physician_name_key"],
        failed_logins=row["failed_logins"], locked_until=_utc(row["locked_until"]),
        last_login=_utc(row["last_login"]), created_at=created)


def _token(row: Any) -> TokenInfo:
    created = _utc(row["created_at"])
    assert created is not None
    return TokenInfo(row["id"], row["user_id"], row["name"], row["prefix"], created, _utc(row["expires_at"]),
                     _utc(row["last_used_at"]), _utc(row["revoked_at"]))


def _assignment(row: Any) -> Assignment:
    created = _utc(row["created_at"])
    assert created is not None
    return Assignment(row["user_id"], row["patient_id"], row["issuer_of_patient_id"], row["created_by"], created)


def _grant(row: Any) -> FamilyGrantInfo:
    requested, expires = _utc(row["requested_at"]), _utc(row["expires_at"])
    assert requested is not None and expires is not None
    return FamilyGrantInfo(row["id"], row["user_id"], row["patient_id"], row["issuer_of_patient_id"],
                           GrantStatus(row["status"]), row["note"], requested, row["verified_by"],
                           _utc(row["verified_at"]), expires, _utc(row["revoked_at"]))
