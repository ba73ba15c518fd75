"""The web application's message catalogues (frontend/src/i18n/locales, and one folder per area
of the application under it): nine languages, the same keys and placeholders in each, and no UI
text left in English where it should not be.
(`npm run build` runs the same checks in Node, scripts/check-i18n.mjs.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

LOCALES = Path(__file__).resolve().parents[2] / "frontend" / "src" / "i18n" / "locales"
LANGUAGES = ("en", "es", "fr", "de", "zh", "ja", "ar", "hi", "pt")
PLACEHOLDER = re.compile(r"\{(\w+)\}")


FOLDERS = (LOCALES, *sorted(p for p in LOCALES.iterdir() if p.is_dir()))


def _catalogue(code: str) -> dict[str, str]:
    """A language's messages, every area's merged; a key in two areas is an error."""
    merged: dict[str, str] = {}
    for folder in FOLDERS:
        part = json.loads((folder / f"{code}.json").read_text(encoding="utf-8"))
        assert not set(part) & set(merged), f"{folder.name}/{code}.json repeats {sorted(set(part) & set(merged))}"
        merged.update(part)
    return merged


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_every_language_has_a_catalogue(folder: Path) -> None:
    assert sorted(p.stem for p in folder.glob("*.json")) == sorted(LANGUAGES)


@pytest.mark.parametrize("code", LANGUAGES[1:])
def test_same_keys_and_placeholders_as_english(code: str) -> None:
    en, other = _catalogue("en"), _catalogue(code)
    assert set(other) == set(en), f"{code}: missing {sorted(set(en) - set(other))}, extra {sorted(set(other) - set(en))}"
    for key, text in en.items():
        assert other[key].strip(), f"{code}: {key} is empty"
        assert sorted(PLACEHOLDER.findall(other[key])) == sorted(PLACEHOLDER.findall(text)), f"{code}: {key}"


@pytest.mark.parametrize("code", LANGUAGES[1:])
def test_sentences_are_translated(code: str) -> None:
    """Longer English sentences must not appear unchanged in another language's catalogue."""
    en, other = _catalogue("en"), _catalogue(code)
    same = [k for k, v in en.items() if len(v) > 24 and other[k] == v]
    assert not same, f"{code}: untranslated {same}"
