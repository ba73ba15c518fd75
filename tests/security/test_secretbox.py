"""TOTP secrets encrypted at rest: sealed in the index, opened only with the key file; secrets
written before encryption still work and are sealed at their next use; a wrong key refuses codes
(it never lets one through)."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pyotp
import pytest
from argon2 import PasswordHasher
from sqlalchemy import select, update

from voxa.archive import open_archive
from voxa.archive.models import table_of
from voxa.config import Settings
from voxa.security.accounts import Accounts, AuthenticationFailed, AuthFailure
from voxa.security.models import UserAccount
from voxa.security.secretbox import SecretBox, SecretUnreadable, is_sealed, load_or_create_key

GOOD = "Correct-Horse-42"
U = table_of(UserAccount)


def test_key_file_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "secret.key"
    key = load_or_create_key(path)
    assert len(key) == 32 and load_or_create_key(path) == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    (tmp_path / "short.key").write_bytes(b"too short")
    with pytest.raises(ValueError, match="not a 32-byte"):
        load_or_create_key(tmp_path / "short.key")


def test_seal_and_open() -> None:
    box = SecretBox(bytes(range(32)))
    sealed = box.seal("JBSWY3DPEHPK3PXP")
    assert is_sealed(sealed) and "JBSWY3DPEHPK3PXP" not in sealed and len(sealed) <= 255
    assert box.seal("JBSWY3DPEHPK3PXP") != sealed  # a fresh nonce each time
    assert box.open(sealed) == "JBSWY3DPEHPK3PXP"
    assert box.open("JBSWY3DPEHPK3PXP") == "JBSWY3DPEHPK3PXP"  # written before encryption
    with pytest.raises(SecretUnreadable):
        SecretBox(bytes(32)).open(sealed)
    tampered = sealed[:-4] + ("AAAA" if sealed[-4:] != "AAAA" else "BBBB")
    with pytest.raises(SecretUnreadable):
        box.open(tampered)


class Clock:
    def __init__(self) -> None:
        self.t = dt.datetime(2025, 3, 1, 8, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.t


def _accounts(tmp_path: Path, clock: Clock, box: SecretBox | None) -> Accounts:
    archive = open_archive(Settings(data_dir=tmp_path / "data"))
    acc = Accounts(archive.index, now=clock, hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1),
                   secret_box=box)
    acc.ensure_default_roles()
    return acc


def _stored(acc: Accounts, username: str) -> str:
    with acc.index.read() as conn:
        return str(conn.execute(select(U.c.totp_secret).where(U.c.username == username)).scalar_one())


def test_totp_secret_sealed_in_the_index(tmp_path: Path) -> None:
    clock = Clock()
    box = SecretBox(load_or_create_key(tmp_path / "secret.key"))
    acc = _accounts(tmp_path, clock, box)
    acc.create_user("tina", GOOD, role="radiologist")
    enrol = acc.totp_enrol("tina")
    totp = pyotp.TOTP(enrol.secret)
    acc.totp_confirm("tina", enrol.secret, totp.at(clock()))
    stored = _stored(acc, "tina")
    assert is_sealed(stored) and enrol.secret not in stored
    clock.t += dt.timedelta(seconds=30)
    assert acc.authenticate("tina", GOOD, totp.at(clock())).username == "tina"
    assert acc.totp_verify("tina", totp.at(clock()))

    # the same index with another key: codes are refused, never accepted
    other = Accounts(acc.index, now=clock, hasher=acc.hasher, secret_box=SecretBox(bytes(32)))
    clock.t += dt.timedelta(seconds=30)
    with pytest.raises(AuthenticationFailed) as refused:
        other.authenticate("tina", GOOD, totp.at(clock()))
    assert refused.value.reason is AuthFailure.TOTP_INVALID
    assert not other.totp_verify("tina", totp.at(clock()))


def test_a_secret_from_before_encryption_is_sealed_at_its_next_use(tmp_path: Path) -> None:
    clock = Clock()
    acc = _accounts(tmp_path, clock, SecretBox(load_or_create_key(tmp_path / "secret.key")))
    acc.create_user("uli", GOOD, role="radiologist")
    secret = pyotp.random_base32()
    with acc.index.write() as conn:  # as an older Voxa wrote it
        conn.execute(update(U).where(U.c.username == "uli").values(totp_secret=secret))
    totp = pyotp.TOTP(secret)
    assert acc.authenticate("uli", GOOD, totp.at(clock())).username == "uli"
    stored = _stored(acc, "uli")
    assert is_sealed(stored) and secret not in stored
    clock.t += dt.timedelta(seconds=30)
    assert acc.authenticate("uli", GOOD, totp.at(clock())).username == "uli"
