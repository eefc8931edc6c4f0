"""Language names and codes, so "en", "en-US", "English" and "english" all mean the same thing."""

from __future__ import annotations

NAMES = {
    "en": "English",
    "zh": "Chinese",
    "ja": "Japanese",
    "ko": "Korean",
    "de": "German",
    "fr": "French",
    "ru": "Russian",
    "pt": "Portuguese",
    "es": "Spanish",
    "it": "Italian",
}
_BY_NAME = {name.lower(): code for code, name in NAMES.items()}


def normalize_language(value: str | None) -> str | None:
    """ISO 639-1 code for a code, locale or English name; None for empty/auto; the lowered input otherwise."""
    if value is None:
        return None
    v = value.strip().lower().replace("_", "-")
    if v in ("", "auto"):
        return None
    if v in _BY_NAME:
        return _BY_NAME[v]
    return v.split("-", 1)[0]


def language_name(code: str) -> str:
    return NAMES.get(code, code)
