"""Language names and codes, so "en", "en-US", "English" and "english" all mean the same thing."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.engines.errors import UnsupportedLanguageError

# English names of every language some engine knows (Whisper's 99 included, in OpenAI Whisper's tokenizer.py
# spelling), so a name works wherever its code does.
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
    "af": "Afrikaans",
    "am": "Amharic",
    "ar": "Arabic",
    "as": "Assamese",
    "az": "Azerbaijani",
    "ba": "Bashkir",
    "be": "Belarusian",
    "bg": "Bulgarian",
    "bn": "Bengali",
    "bo": "Tibetan",
    "br": "Breton",
    "bs": "Bosnian",
    "ca": "Catalan",
    "cs": "Czech",
    "cy": "Welsh",
    "da": "Danish",
    "el": "Greek",
    "et": "Estonian",
    "eu": "Basque",
    "fa": "Persian",
    "fi": "Finnish",
    "fo": "Faroese",
    "gl": "Galician",
    "gu": "Gujarati",
    "ha": "Hausa",
    "haw": "Hawaiian",
    "he": "Hebrew",
    "hi": "Hindi",
    "hr": "Croatian",
    "ht": "Haitian Creole",
    "hu": "Hungarian",
    "hy": "Armenian",
    "id": "Indonesian",
    "is": "Icelandic",
    "jv": "Javanese",
    "ka": "Georgian",
    "kk": "Kazakh",
    "km": "Khmer",
    "kn": "Kannada",
    "la": "Latin",
    "lb": "Luxembourgish",
    "ln": "Lingala",
    "lo": "Lao",
    "lt": "Lithuanian",
    "lv": "Latvian",
    "mg": "Malagasy",
    "mi": "Maori",
    "mk": "Macedonian",
    "ml": "Malayalam",
    "mn": "Mongolian",
    "mr": "Marathi",
    "ms": "Malay",
    "mt": "Maltese",
    "my": "Burmese",
    "ne": "Nepali",
    "nl": "Dutch",
    "nn": "Nynorsk",
    "no": "Norwegian",
    "oc": "Occitan",
    "pa": "Punjabi",
    "pl": "Polish",
    "ps": "Pashto",
    "ro": "Romanian",
    "sa": "Sanskrit",
    "sd": "Sindhi",
    "si": "Sinhala",
    "sk": "Slovak",
    "sl": "Slovenian",
    "sn": "Shona",
    "so": "Somali",
    "sq": "Albanian",
    "sr": "Serbian",
    "su": "Sundanese",
    "sv": "Swedish",
    "sw": "Swahili",
    "ta": "Tamil",
    "te": "Telugu",
    "tg": "Tajik",
    "th": "Thai",
    "tk": "Turkmen",
    "tl": "Tagalog",
    "tr": "Turkish",
    "tt": "Tatar",
    "uk": "Ukrainian",
    "ur": "Urdu",
    "uz": "Uzbek",
    "vi": "Vietnamese",
    "yi": "Yiddish",
    "yo": "Yoruba",
    "yue": "Cantonese",
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


_ROLE_LABELS = {
    "tts": "the speech engine",
    "asr": "the transcription engine",
    "omni": "the conversation model",
}


def check_language(
    language: str | None, supported: Sequence[str], component: str, default: str | None
) -> str | None:
    """The supported code `language` names (code, locale or English name), or `default` when it names none
    ("", "auto", None). Every engine's language check, so all refuse alike: UnsupportedLanguageError."""
    code = normalize_language(language)
    if code is None:
        return default
    if code not in supported:
        raise UnsupportedLanguageError(
            f"language {language!r} is not supported by {_ROLE_LABELS.get(component, component)}; "
            "supported: " + ", ".join(supported),
            component=component,
            supported=supported,
        )
    return code
