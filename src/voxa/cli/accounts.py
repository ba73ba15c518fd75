"""Account commands: ``voxa user ...`` and ``voxa role ...``."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import click

from voxa.cli.options import load_settings, settings_options, setup_logging

if TYPE_CHECKING:
    from voxa.security.accounts import Accounts


@contextlib.contextmanager
def _accounts(overrides: dict[str, Any]) -> Iterator[Accounts]:
    """The account service of the configured index, built-in roles present; errors become messages."""
    from voxa.archive import open_archive
    from voxa.security.accounts import AccountError, Accounts
    from voxa.security.passwords import WeakPassword
    from voxa.security.secretbox import SecretBox, load_or_create_key

    settings = load_settings(overrides)
    setup_logging("WARNING")
    archive = open_archive(settings)
    engine = archive.index.engine
    try:
        accounts = Accounts(archive.index, secret_box=SecretBox(load_or_create_key(settings.effective_secret_key_file)))
        accounts.ensure_default_roles()
        try:
            yield accounts
        except (AccountError, WeakPassword) as e:
            _audit_command(archive.index, "failure", str(e))
            raise click.ClickException(str(e)) from None
        _audit_command(archive.index, "success")
    finally:
        engine.dispose()


_SECRET_PARAMS = {"password", "settings_overrides"}


def _audit_command(index: Any, outcome: str, why: str = "") -> None:
    """Changes made on the command line are audited like those made over REST: the actor is
    the operating-system user, the source the host."""
    import getpass
    import socket

    from voxa.security.audit import AuditAction, AuditEvent, AuditInterface, AuditTrail

    ctx = click.get_current_context(silent=True)
    if ctx is None or ctx.info_name in ("list",):
        return
    group = ctx.parent.info_name if ctx.parent else ""
    action = {"role": AuditAction.ROLE_CHANGE}.get(group or "", AuditAction.ACCOUNT_CHANGE)
    if ctx.info_name in ("assign", "unassign"):
        action = AuditAction.GRANT_CHANGE
    params = {k: str(v) for k, v in ctx.params.items() if k not in _SECRET_PARAMS and v not in (None, False, ())}
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    AuditTrail(index).record(AuditEvent(
        actor=f"os:{user}", action=action, source=socket.gethostname(), interface=AuditInterface.CLI,
        outcome=outcome, outcome_detail=why, resource=f"{group} {ctx.info_name}".strip(), detail=params,
        patient_ids=params.get("patient_id", "")))


def _password(given: str | None) -> str:
    if given is not None:
        return given
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))


def _when(value: dt.datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else ""


def register(main: click.Group) -> None:
    @main.group("user")
    def user() -> None:
        """Local accounts, their API tokens and assigned patients."""

    @user.command("add")
    @settings_options
    @click.argument("username")
    @click.option("--role", required=True, help="Role name (see `voxa role list`).")
    @click.option("--password", default=None, help="Password (prompted for when omitted).")
    @click.option("--display-name", default="", help="Name shown in the interface.")
    @click.option("--email", default="")
    @click.option("--referring-physician-name", default="",
                  help="DICOM person name (e.g. 'Doe^Jane') matched against studies' Referring Physician.")
    @click.option("--must-change-password", is_flag=True, help="Ask for a new password at first login.")
    def user_add(settings_overrides: dict[str, Any], username: str, role: str, password: str | None,
                 display_name: str, email: str, referring_physician_name: str,
                 must_change_password: bool) -> None:
        """Create an account."""
        with _accounts(settings_overrides) as accounts:
            accounts.get_role(role)  # fail before asking for a password
            u = accounts.create_user(username, _password(password), role=role, display_name=display_name,
                                     email=email, referring_physician_name=referring_physician_name,
                                     must_change_password=must_change_password)
            click.echo(f"created user {u.username} ({u.role})")

    @user.command("list")
    @settings_options
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    def user_list(settings_overrides: dict[str, Any], as_json: bool) -> None:
        """List accounts."""
        with _accounts(settings_overrides) as accounts:
            users = accounts.list_users()
            if as_json:
                click.echo(json.dumps([{
                    "username": u.username, "display_name": u.display_name, "email": u.email, "role": u.role,
                    "disabled": u.disabled, "totp": u.totp_enabled, "locked_until": _when(u.locked_until),
                    "last_login": _when(u.last_login),
                    "referring_physician_name": u.referring_physician_name} for u in users], indent=2))
                return
            for u in users:
                flags = [f for f, on in (("disabled", u.disabled), ("totp", u.totp_enabled),
                                         ("locked", u.locked_until is not None)) if on]
                click.echo(f"{u.username:<24} {u.role:<20} {' '.join(flags)}".rstrip())

    @user.command("passwd")
    @settings_options
    @click.argument("username")
    @click.option("--password", default=None, help="New password (prompted for when omitted).")
    @click.option("--must-change-password", is_flag=True, help="Ask for a new password at next login.")
    def user_passwd(settings_overrides: dict[str, Any], username: str, password: str | None,
                    must_change_password: bool) -> None:
        """Set a password (also lifts a lockout)."""
        with _accounts(settings_overrides) as accounts:
            accounts.get_user(username)
            accounts.set_password(username, _password(password), must_change_password=must_change_password)
            click.echo(f"password of {username} changed")

    @user.command("disable")
    @settings_options
    @click.argument("username")
    def user_disable(settings_overrides: dict[str, Any], username: str) -> None:
        """Disable an account and end its sessions."""
        with _accounts(settings_overrides) as accounts:
            accounts.disable(username)
            click.echo(f"disabled {username}")

    @user.command("enable")
    @settings_options
    @click.argument("username")
    def user_enable(settings_overrides: dict[str, Any], username: str) -> None:
        """Enable an account (also lifts a lockout)."""
        with _accounts(settings_overrides) as accounts:
            accounts.enable(username)
            click.echo(f"enabled {username}")

    @user.command("delete")
    @settings_options
    @click.argument("username")
    @click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
    def user_delete(settings_overrides: dict[str, Any], username: str, yes: bool) -> None:
        """Delete an account with its tokens, sessions, assignments and family grants."""
        with _accounts(settings_overrides) as accounts:
            accounts.get_user(username)
            if not yes:
                click.confirm(f"Delete user {username}?", abort=True)
            accounts.delete_user(username)
            click.echo(f"deleted {username}")

    @user.command("assign")
    @settings_options
    @click.argument("username")
    @click.argument("patient_id")
    @click.option("--issuer", default="", help="Issuer of Patient ID.")
    def user_assign(settings_overrides: dict[str, Any], username: str, patient_id: str, issuer: str) -> None:
        """Give a (referring) physician access to a patient."""
        with _accounts(settings_overrides) as accounts:
            accounts.assign_patient(username, patient_id, issuer)
            click.echo(f"assigned patient {patient_id} to {username}")

    @user.command("unassign")
    @settings_options
    @click.argument("username")
    @click.argument("patient_id")
    @click.option("--issuer", default="", help="Issuer of Patient ID.")
    def user_unassign(settings_overrides: dict[str, Any], username: str, patient_id: str, issuer: str) -> None:
        """Withdraw a patient assignment."""
        with _accounts(settings_overrides) as accounts:
            accounts.unassign_patient(username, patient_id, issuer)
            click.echo(f"unassigned patient {patient_id} from {username}")

    @user.group("token")
    def token() -> None:
        """API tokens (bearer) for scripts."""

    @token.command("create")
    @settings_options
    @click.argument("username")
    @click.option("--name", default="", help="What the token is for.")
    @click.option("--expires-days", type=click.IntRange(min=1), default=None,
                  help="Lifetime in days (default: no expiry).")
    def token_create(settings_overrides: dict[str, Any], username: str, name: str,
                     expires_days: int | None) -> None:
        """Create a token and print it: it is shown this once only."""
        with _accounts(settings_overrides) as accounts:
            secret, info = accounts.create_token(
                username, name, dt.timedelta(days=expires_days) if expires_days else None)
            click.echo(secret)
            click.echo(f"token {info.prefix} for {username}"
                       + (f", expires {_when(info.expires_at)}" if info.expires_at else "")
                       + "; store it now, it cannot be shown again", err=True)

    @token.command("list")
    @settings_options
    @click.argument("username", required=False)
    def token_list(settings_overrides: dict[str, Any], username: str | None) -> None:
        """List tokens (never their secrets)."""
        with _accounts(settings_overrides) as accounts:
            for t in accounts.list_tokens(username):
                state = "revoked" if t.revoked_at else f"expires {_when(t.expires_at)}" if t.expires_at else ""
                click.echo(f"{t.id:<5} {t.prefix:<10} {t.name:<24} last used {_when(t.last_used_at) or 'never'} "
                           f"{state}".rstrip())

    @token.command("revoke")
    @settings_options
    @click.argument("token_ref")
    def token_revoke(settings_overrides: dict[str, Any], token_ref: str) -> None:
        """Revoke a token by its prefix, its id, or the token itself."""
        with _accounts(settings_overrides) as accounts:
            ref: int | str = int(token_ref) if token_ref.isdigit() and len(token_ref) < 8 else token_ref
            accounts.revoke_token(ref)
            click.echo("token revoked")

    @main.group("role")
    def role() -> None:
        """Roles: named sets of permissions with a patient scope."""

    @role.command("list")
    @settings_options
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    def role_list(settings_overrides: dict[str, Any], as_json: bool) -> None:
        """List roles and their permissions."""
        with _accounts(settings_overrides) as accounts:
            roles = accounts.list_roles()
            if as_json:
                click.echo(json.dumps([{"name": r.name, "description": r.description, "builtin": r.builtin,
                                        "scope": r.scope.value, "permissions": sorted(r.permissions)}
                                       for r in roles], indent=2))
                return
            for r in roles:
                kind = "built-in" if r.builtin else "custom"
                click.echo(f"{r.name:<20} {kind:<8} scope={r.scope.value:<13} {','.join(sorted(r.permissions))}")

    @role.command("add")
    @settings_options
    @click.argument("name")
    @click.option("--permissions", required=True, help="Comma-separated permissions (or 'all').")
    @click.option("--description", default="")
    @click.option("--scope", type=click.Choice(["all", "assigned", "teaching_only"]), default="all",
                  show_default=True, help="Which patients the role's users see.")
    def role_add(settings_overrides: dict[str, Any], name: str, permissions: str, description: str,
                 scope: str) -> None:
        """Create a role."""
        with _accounts(settings_overrides) as accounts:
            r = accounts.create_role(name, permissions, description, scope)
            click.echo(f"created role {r.name}: {','.join(sorted(r.permissions))}")

    @role.command("edit")
    @settings_options
    @click.argument("name")
    @click.option("--permissions", default=None, help="Replace the permissions (comma-separated).")
    @click.option("--grant", default=None, help="Add permissions (comma-separated).")
    @click.option("--revoke", default=None, help="Remove permissions (comma-separated).")
    @click.option("--description", default=None)
    @click.option("--scope", type=click.Choice(["all", "assigned", "teaching_only"]), default=None)
    @click.option("--rename", default=None, help="New name (custom roles only).")
    def role_edit(settings_overrides: dict[str, Any], name: str, permissions: str | None, grant: str | None,
                  revoke: str | None, description: str | None, scope: str | None, rename: str | None) -> None:
        """Change a role."""
        from voxa.security.accounts import InvalidValue
        from voxa.security.permissions import parse_permissions

        with _accounts(settings_overrides) as accounts:
            perms = None
            if permissions is not None or grant or revoke:
                try:
                    perms = set(parse_permissions(permissions) if permissions is not None
                                else accounts.get_role(name).permissions)
                    perms |= parse_permissions(grant or "")
                    perms -= parse_permissions(revoke or "")
                except ValueError as e:
                    raise InvalidValue(str(e)) from None
            r = accounts.update_role(name, permissions=perms, description=description, scope=scope,
                                     new_name=rename)
            click.echo(f"role {r.name}: scope={r.scope.value} {','.join(sorted(r.permissions))}")

    @role.command("delete")
    @settings_options
    @click.argument("name")
    def role_delete(settings_overrides: dict[str, Any], name: str) -> None:
        """Delete a custom role that no user has."""
        with _accounts(settings_overrides) as accounts:
            accounts.delete_role(name)
            click.echo(f"deleted role {name}")
