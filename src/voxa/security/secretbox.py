"""Secrets kept in the index (TOTP secrets) encrypted at rest with a key outside it.

A copy of the index — a database dump, a backup, a PostgreSQL server on another machine — then
holds no secret that lets anyone produce a user's one-time codes. The key is 32 random bytes in
a file (``secret_key_file``, by default ``<data_dir>/secret.key``, created on first use with mode
0600); it is backed up with the data folder, and an index restored without it makes every
enrolled authenticator unusable (the user enrols again; nothing else is lost).

Values are AES-256-GCM, stored as ``v1:`` + base64(12-byte nonce + ciphertext + tag). A value
without the prefix is a secret written before encryption: it is read as it is and sealed the
next time it is used."""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "v1:"
KEY_BYTES = 32


class SecretUnreadable(Exception):
    """A sealed value that this key does not open (another key, or altered)."""


class SecretBox:
    def __init__(self, key: bytes):
        if len(key) != KEY_BYTES:
            raise ValueError(f"a secret key has {KEY_BYTES} bytes, not {len(key)}")
        self._aead = AESGCM(key)

    def seal(self, text: str) -> str:
        nonce = secrets.token_bytes(12)
        return PREFIX + base64.b64encode(nonce + self._aead.encrypt(nonce, text.encode(), b"voxa")).decode()

    def open(self, value: str) -> str:
        """The secret a stored value holds (a value from before encryption as it is)."""
        if not is_sealed(value):
            return value
        raw = base64.b64decode(value[len(PREFIX):])
        try:
            return self._aead.decrypt(raw[:12], raw[12:], b"voxa").decode()
        except InvalidTag:
            raise SecretUnreadable("a stored secret does not open with this key (secret_key_file)") from None


def is_sealed(value: str) -> bool:
    return value.startswith(PREFIX)


def load_or_create_key(path: Path) -> bytes:
    """The key in ``path``, created (0600, written whole or not at all) when there is none."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_bytes(KEY_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # fails if another process created it meanwhile: theirs is kept
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise ValueError(f"{path} holds {len(key)} bytes, not a {KEY_BYTES}-byte secret key")
    return key
