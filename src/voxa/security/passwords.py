"""Password hashing (argon2id) and the password policy."""

from __future__ import annotations

from dataclasses import dataclass, field

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError


class WeakPassword(ValueError):
    """The password does not satisfy the policy; the message says why."""


# The most common passwords that would otherwise pass the length and class rules, plus the
# classics (compared case-insensitively).
COMMON_PASSWORDS: frozenset[str] = frozenset({
    "123456789012", "1234567890ab", "password1234", "password123!", "passw0rd1234", "p@ssw0rd1234",
    "p@ssword1234", "qwertyuiop12", "qwertyuiop123", "qwerty123456", "1q2w3e4r5t6y", "1qaz2wsx3edc",
    "iloveyou1234", "welcome12345", "welcome@1234", "admin1234567", "administrator", "administrator1",
    "letmein12345", "changeme1234", "changeme123!", "trustno11234", "football1234", "baseball1234",
    "abcdefghijkl", "abc123456789", "aa1234567890", "monkey123456", "dragon123456", "sunshine1234",
    "princess1234", "password", "123456", "qwerty", "letmein", "welcome", "admin", "changeme",
    "summer2024!!", "winter2024!!", "spring2024!!", "autumn2024!!", "hospital1234", "radiology123",
    "pacs12345678", "voxa12345678", "voxavoxavoxa",
})


@dataclass(frozen=True)
class PasswordPolicy:
    min_length: int = 12
    max_length: int = 1024
    # Of: lower case, upper case, digits, other characters.
    min_classes: int = 3
    forbid_username: bool = True
    common_passwords: frozenset[str] = field(default=COMMON_PASSWORDS)

    def check(self, password: str, username: str = "") -> None:
        """Raise :class:`WeakPassword` unless ``password`` satisfies the policy."""
        if len(password) < self.min_length:
            raise WeakPassword(f"password must have at least {self.min_length} characters")
        if len(password) > self.max_length:
            raise WeakPassword(f"password must have at most {self.max_length} characters")
        user = username.strip().lower()
        if self.forbid_username and user and (password.lower() == user or (len(user) >= 4 and user in password.lower())):
            raise WeakPassword("password must not contain the username")
        if password.lower() in self.common_passwords:
            raise WeakPassword("password is too common")
        classes = sum((
            any(c.islower() for c in password),
            any(c.isupper() for c in password),
            any(c.isdigit() for c in password),
            any(not c.isalnum() for c in password),
        ))
        if classes < self.min_classes:
            raise WeakPassword(f"password must mix at least {self.min_classes} of: lower case, upper case, "
                               "digits, other characters")


DEFAULT_HASHER = PasswordHasher()  # argon2id with the library's current recommended parameters


def hash_password(password: str, hasher: PasswordHasher = DEFAULT_HASHER) -> str:
    return hasher.hash(password)


def verify_password(password_hash: str, password: str, hasher: PasswordHasher = DEFAULT_HASHER) -> bool:
    """True when ``password`` matches; a malformed stored hash counts as a mismatch."""
    try:
        return hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str, hasher: PasswordHasher = DEFAULT_HASHER) -> bool:
    """True when the hash was made with other parameters than ``hasher``'s (rehash on next login)."""
    try:
        return hasher.check_needs_rehash(password_hash)
    except InvalidHashError:
        return True
