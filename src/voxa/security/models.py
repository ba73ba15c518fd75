"""Index tables for accounts: users, roles, API tokens, web sessions and patient-level access.

They live on the archive's ``Base`` so that one Alembic history covers the whole index.
Secrets are never stored: passwords as argon2 hashes, API tokens and session ids as their
SHA-256 (hex).  Times are timezone-aware UTC (SQLite hands them back naive; the service
layer re-attaches UTC).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Integer, String, Table, Text
from sqlalchemy.orm import Mapped, mapped_column

from voxa.archive.models import Base, table_of


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Role(Base):
    """A named set of permissions and how far its users see patients (``patient_scope``)."""

    __tablename__ = "roles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(String(256), default="")
    builtin: Mapped[bool] = mapped_column(default=False)
    # Comma-separated Permission values, sorted.
    permissions: Mapped[str] = mapped_column(Text, default="")
    # PatientScope value: all | assigned | teaching_only
    patient_scope: Mapped[str] = mapped_column(String(16), default="all")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)


class UserAccount(Base):
    """A local account.  ``referring_physician_name`` (DICOM PN) matches studies that name the
    user as Referring Physician; its ``_key`` form is what the query layer compares."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(128), default="")
    email: Mapped[str] = mapped_column(String(254), default="")
    password_hash: Mapped[str] = mapped_column(String(256))
    role_id: Mapped[int] = mapped_column(ForeignKey("roles.id", ondelete="RESTRICT"), index=True)
    disabled: Mapped[bool] = mapped_column(default=False)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Base32 TOTP secret once enrolment is confirmed; NULL: no second factor.
    totp_secret: Mapped[str | None] = mapped_column(String(255), nullable=True)  # sealed: secretbox
    # Time step (Unix time // 30) of the last code accepted: a code is accepted once (RFC 6238 §5.2).
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    must_change_password: Mapped[bool] = mapped_column(default=False)
    referring_physician_name: Mapped[str] = mapped_column(String(324), default="")
    referring_physician_name_key: Mapped[str] = mapped_column(String(324), default="", index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    last_login: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ApiToken(Base):
    """A bearer token for scripts: ``vx_<prefix>_<secret>``; only the SHA-256 of the whole
    token is kept, the prefix finds the row."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class WebSession(Base):
    """A browser session; ``id`` is the SHA-256 of the cookie value."""

    __tablename__ = "web_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    # Sliding: min(last_seen + idle timeout, created_at + absolute maximum).
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    last_seen_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    ip: Mapped[str] = mapped_column(String(64), default="")
    # a single sign-on session's ID token: the id_token_hint of the provider's logout
    oidc_id_token: Mapped[str | None] = mapped_column(Text, nullable=True)


class PatientAssignment(Base):
    """A patient assigned to a (referring) physician."""

    __tablename__ = "patient_assignments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    patient_id: Mapped[str] = mapped_column(String(64))
    issuer_of_patient_id: Mapped[str] = mapped_column(String(64), default="")
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)

    __table_args__ = (
        Index("ix_patient_assignments_user_patient", "user_id", "patient_id", "issuer_of_patient_id",
              unique=True),
    )


class FamilyGrant(Base):
    """A family member's access to one patient: requested -> active (verified by an admin)
    -> expired | revoked."""

    __tablename__ = "family_grants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    patient_id: Mapped[str] = mapped_column(String(64))
    issuer_of_patient_id: Mapped[str] = mapped_column(String(64), default="")
    status: Mapped[str] = mapped_column(String(16), default="requested", index=True)
    note: Mapped[str] = mapped_column(Text, default="")
    requested_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    verified_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    verified_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


SECURITY_MODELS: tuple[type[Base], ...] = (Role, UserAccount, ApiToken, WebSession, PatientAssignment,
                                           FamilyGrant)


def security_tables() -> list[Table]:
    """The Core tables above, in creation order (for ``Base.metadata.create_all(tables=...)``)."""
    return [table_of(m) for m in SECURITY_MODELS]
