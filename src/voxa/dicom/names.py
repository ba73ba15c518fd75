"""Person-name normalisation for matching."""

from __future__ import annotations

import unicodedata


def person_name_key(value: str) -> str:
    """Upper-case, accent-free form of a PN value used for case-insensitive and fuzzy matching.

    Only the first component group (alphabetic) is kept: ideographic and phonetic groups
    (after ``=``) are matched on their own terms by exact comparison elsewhere.
    """
    alphabetic = value.split("=", 1)[0]
    decomposed = unicodedata.normalize("NFKD", alphabetic)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return stripped.upper().strip()
