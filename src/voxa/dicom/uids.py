"""Validation of the identifiers DICOM exchanges: UIDs and AE titles."""

from __future__ import annotations

import re

# PS3.5 9.1: components of digits separated by '.', no leading zero in a multi-digit
# component, at most 64 characters.
_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


class InvalidIdentifier(ValueError):
    """A UID or AE title that does not follow the standard's form."""


def is_valid_uid(value: str) -> bool:
    return 0 < len(value) <= 64 and _UID_RE.match(value) is not None


def validate_uid(value: object, what: str = "UID") -> str:
    """Return the UID stripped of DICOM padding, or raise with a reason the sender can read."""
    if value is None:
        raise InvalidIdentifier(f"{what} is missing")
    text = str(value).strip("\0 ")
    if not text:
        raise InvalidIdentifier(f"{what} is empty")
    if len(text) > 64:
        raise InvalidIdentifier(f"{what} is longer than 64 characters")
    if not _UID_RE.match(text):
        raise InvalidIdentifier(f"{what} {text!r} is not a valid UID (digits and dots, no leading zeros)")
    return text


def validate_ae_title(value: str) -> str:
    """AE titles: 1-16 characters of the default repertoire, no backslash or control characters."""
    text = value.strip()
    if not 1 <= len(text) <= 16:
        raise InvalidIdentifier(f"AE title {value!r} must be 1 to 16 characters")
    if any(ord(c) < 0x20 or ord(c) > 0x7E or c == "\\" for c in text):
        raise InvalidIdentifier(f"AE title {value!r} contains characters outside the DICOM default repertoire")
    return text
