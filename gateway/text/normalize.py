"""English text normalization for TTS: numbers, dates, money, units, symbols become the words a reader says.

num2words does the number words (cardinals, ordinals, years); the rules here decide WHICH reading a token
needs (a year, an amount of money, a time of day, a range with a unit...). Every rewrite is recorded with its
original span (gateway.text.offsets), so word timings computed on the spoken text point back into the client's
text.

Rules are regexes with a priority: at each position the leftmost match wins, ties go to the earlier rule, and
matches never overlap. Readings are American English ("one hundred five", "three p m", "May twenty first").

Every rule runs in linear time on any text (tests/gateway/test_hostile_text.py): a pattern that may scan a
long run of characters starts only where that run starts (a lookbehind), so "1." * 25_000 is not rescanned
from each of its 50,000 positions, and handlers look at a bounded window of text around their match, never
at "the rest" of the text.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from num2words import num2words

from gateway.text.offsets import Builder, NormalizedText

Handler = Callable[[re.Match[str], str], str | None]

# -- number words ------------------------------------------------------------------------------------

_DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _clean(words: str) -> str:
    """num2words writes British-style 'three thousand, four hundred and ninety-seven'; say it plainly."""
    words = words.replace(",", "").replace("-", " ")
    words = re.sub(r"\band\b ", "", words)
    return re.sub(r"\s+", " ", words).strip()


@lru_cache(maxsize=4096)
def _words(n: int, to: str) -> str:
    # num2words takes ~150 us a number: a text of thousands of repeated numbers ("2024-" * 10_000) spent
    # seconds of CPU on the same few readings.
    return _clean(num2words(n, to=to))


def digits(s: str) -> str:
    return " ".join(_DIGITS[int(c)] for c in s if c.isdigit())


def cardinal(token: str) -> str:
    """'-3,497.25' -> 'minus three thousand four hundred ninety seven point two five'."""
    token = token.replace(",", "")
    negative = token.startswith("-")
    token = token.lstrip("-+")
    whole, _, frac = token.partition(".")
    if (len(whole) > 1 and whole.startswith("0")) or len(whole) > 15:
        spoken = digits(whole)  # "007", card or account numbers: read digit by digit
    else:
        spoken = _words(int(whole or "0"), "cardinal")
    if frac:
        spoken += " point " + digits(frac)
    return ("minus " if negative else "") + spoken


def ordinal(n: int) -> str:
    return _words(n, "ordinal")


def ordinal_token(token: str) -> str:
    """'21' -> 'twenty first'. A number too long to say as one (num2words overflows past 10**66, and int()
    refuses 4,300 digits) is read digit by digit with an ordinal ending: '...999th' -> '... nine ninth'."""
    if len(token) <= 15 and not (len(token) > 1 and token.startswith("0")):
        return ordinal(int(token))
    tail = 2 if token[-2] == "1" else 1  # "...11th" ends "eleventh", "...21st" ends "one first"
    return f"{digits(token[:-tail])} {ordinal(int(token[-tail:]))}"


def year(n: int) -> str:
    if 2000 <= n <= 2009:
        return cardinal(str(n))  # "two thousand five", not num2words' "two thousand and five"
    return _words(n, "year")


def _plural_word(words: str) -> str:
    """'nineteen ninety' -> 'nineteen nineties' (decades)."""
    head, _, last = words.rpartition(" ")
    last = last[:-1] + "ies" if last.endswith("y") else last + "s"
    return f"{head} {last}".strip()


def _is_one(token: str) -> bool:
    return token.replace(",", "").lstrip("-+") in ("1", "1.0") and "." not in token


# -- tables ------------------------------------------------------------------------------------------

_MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
_MONTH_RE = (
    r"(Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|"
    r"Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)"
)


def _month(name: str) -> str:
    key = name[:3].lower()
    return next(m for m in _MONTHS if m[:3].lower() == key)


# unit -> (singular, plural)
UNITS: dict[str, tuple[str, str]] = {
    "%": ("percent", "percent"),
    "°C": ("degree Celsius", "degrees Celsius"),
    "°F": ("degree Fahrenheit", "degrees Fahrenheit"),
    "°": ("degree", "degrees"),
    "km/h": ("kilometer per hour", "kilometers per hour"),
    "kph": ("kilometer per hour", "kilometers per hour"),
    "mph": ("mile per hour", "miles per hour"),
    "km": ("kilometer", "kilometers"),
    "cm": ("centimeter", "centimeters"),
    "mm": ("millimeter", "millimeters"),
    "m": ("meter", "meters"),
    "mi": ("mile", "miles"),
    "ft": ("foot", "feet"),
    "yd": ("yard", "yards"),
    "kg": ("kilogram", "kilograms"),
    "mg": ("milligram", "milligrams"),
    "g": ("gram", "grams"),
    "lbs": ("pound", "pounds"),
    "lb": ("pound", "pounds"),
    "oz": ("ounce", "ounces"),
    "ml": ("milliliter", "milliliters"),
    "mL": ("milliliter", "milliliters"),
    "L": ("liter", "liters"),
    "TB": ("terabyte", "terabytes"),
    "GB": ("gigabyte", "gigabytes"),
    "MB": ("megabyte", "megabytes"),
    "KB": ("kilobyte", "kilobytes"),
    "kB": ("kilobyte", "kilobytes"),
    "GHz": ("gigahertz", "gigahertz"),
    "MHz": ("megahertz", "megahertz"),
    "kHz": ("kilohertz", "kilohertz"),
    "Hz": ("hertz", "hertz"),
    "kWh": ("kilowatt hour", "kilowatt hours"),
    "kW": ("kilowatt", "kilowatts"),
    "W": ("watt", "watts"),
    "V": ("volt", "volts"),
    "ms": ("millisecond", "milliseconds"),
    "hrs": ("hour", "hours"),
    "hr": ("hour", "hours"),
    "h": ("hour", "hours"),
    "min": ("minute", "minutes"),
    "sec": ("second", "seconds"),
    "s": ("second", "seconds"),
    "x": ("times", "times"),
}
_UNIT_RE = "|".join(re.escape(u) for u in sorted(UNITS, key=len, reverse=True))

# symbol -> (singular, plural, scale-able) for amounts of money
CURRENCIES: dict[str, tuple[str, str, str, str]] = {
    "$": ("dollar", "dollars", "cent", "cents"),
    "€": ("euro", "euros", "cent", "cents"),
    "£": ("pound", "pounds", "penny", "pence"),
    "¥": ("yen", "yen", "sen", "sen"),
    "USD": ("US dollar", "US dollars", "cent", "cents"),
    "EUR": ("euro", "euros", "cent", "cents"),
    "GBP": ("pound", "pounds", "penny", "pence"),
}
_SCALES = {
    "k": "thousand",
    "K": "thousand",
    "thousand": "thousand",
    "m": "million",
    "M": "million",
    "mn": "million",
    "million": "million",
    "b": "billion",
    "B": "billion",
    "bn": "billion",
    "billion": "billion",
    "trillion": "trillion",
}

# abbreviation (with its dot) -> reading; a callable decides from the context
_SENTENCE_CAN_END = {"etc.", "Inc.", "Ltd.", "Co.", "Corp.", "Jr.", "Sr.", "Ave.", "Blvd.", "Rd.", "approx."}
ABBREVIATIONS: dict[str, str] = {
    "Mr.": "Mister",
    "Mrs.": "Missus",
    "Ms.": "Miz",
    "Prof.": "Professor",
    "Jr.": "Junior",
    "Sr.": "Senior",
    "Mt.": "Mount",
    "Ave.": "Avenue",
    "Blvd.": "Boulevard",
    "Rd.": "Road",
    "Inc.": "Incorporated",
    "Ltd.": "Limited",
    "Co.": "Company",
    "Corp.": "Corporation",
    "Dept.": "Department",
    "Gov.": "Governor",
    "Sen.": "Senator",
    "Rep.": "Representative",
    "Gen.": "General",
    "Capt.": "Captain",
    "Lt.": "Lieutenant",
    "Sgt.": "Sergeant",
    "approx.": "approximately",
    "Fig.": "figure",
    "fig.": "figure",
    "etc.": "et cetera",
    "e.g.": "for example",
    "i.e.": "that is",
    "vs.": "versus",
    "vs": "versus",
    "a.k.a.": "also known as",
    "w/": "with",
    "w/o": "without",
}
_ABBR_RE = "|".join(re.escape(a) for a in sorted(ABBREVIATIONS, key=len, reverse=True))

SYMBOLS: dict[str, str] = {
    "&": "and",
    "+": "plus",
    "=": "equals",
    "@": "at",
    "×": "times",
    "÷": "divided by",
    "±": "plus or minus",
    "≈": "approximately",
    "<": "less than",
    ">": "greater than",
    "≤": "less than or equal to",
    "≥": "greater than or equal to",
    "½": "one half",
    "¼": "one quarter",
    "¾": "three quarters",
    "⅓": "one third",
    "°": "degrees",
    "%": "percent",
    "§": "section",
    "©": "copyright",
    "®": "registered",
    "™": "trademark",
}
_FRACTIONS = {
    (1, 2): "one half",
    (1, 3): "one third",
    (2, 3): "two thirds",
    (1, 4): "one quarter",
    (3, 4): "three quarters",
    (1, 8): "one eighth",
    (3, 8): "three eighths",
}
_URL_SYMBOLS = {
    ".": "dot",
    "/": "slash",
    "-": "dash",
    "_": "underscore",
    ":": "colon",
    "?": "question mark",
    "=": "equals",
    "&": "and",
    "#": "hash",
    "~": "tilde",
    "%": "percent",
    "+": "plus",
    "@": "at",
}
_YEAR_CUES = frozenset(
    [
        "in",
        "since",
        "by",
        "from",
        "until",
        "till",
        "to",
        "before",
        "after",
        "of",
        "year",
        "years",
        "circa",
        "around",
        "during",
        "early",
        "late",
        "mid",
        "the",
        "and",
        "or",
        "between",
        "summer",
        "winter",
        "spring",
        "fall",
        "autumn",
        "class",
        "vintage",
        "ad",
    ]
)
_ERAS = ("AD", "BC", "BCE", "CE")
# "2024 was a good year", "1969 saw the first landing": a verb right after a bare number makes it a year.
_YEAR_FOLLOWERS = frozenset(
    ["was", "is", "will", "saw", "brought", "marked", "began", "ended", "had", "has", "became", "remains"]
)

NUM = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
_TLD = r"(?:com|org|net|io|dev|ai|edu|gov|app|co\.uk|uk|de|fr|eu|us|ca|info|biz)"


# -- handlers ----------------------------------------------------------------------------------------


_NON_SPACE = re.compile(r"\S")


def _keeps_sentence_end(match: re.Match[str], text: str) -> bool:
    """A rewritten token that swallowed the sentence's final dot ('... at 5 p.m. Then') gives it back."""
    if not match.group().endswith("."):
        return False
    end = match.end()
    # Searched, not sliced: copying the rest of the text for each of thousands of "etc." is quadratic.
    after = _NON_SPACE.search(text, end)
    return after is None or (after.group().isupper() and after.start() > end) or text.startswith("\n", end)


def _spell_token(part: str) -> str:
    out = []
    for piece in re.findall(r"\d+|[^\W\d_]+", part):
        if piece.isdigit():
            out.append(cardinal(piece) if len(piece) <= 4 and not piece.startswith("0") else digits(piece))
        elif piece.lower() == "www":
            out.append("w w w")
        else:
            out.append(piece.lower())
    return " ".join(out)


def _speak_address(s: str) -> str:
    words = []
    for part in re.split(r"([./:\-_?=&#~%+@])", s):
        if part in _URL_SYMBOLS:
            words.append(_URL_SYMBOLS[part])
        elif part:
            words.append(_spell_token(part))
    return " ".join(w for w in words if w)


def _url(m: re.Match[str], text: str) -> str:
    s = re.sub(r"^[a-zA-Z]+://", "", m.group("token" if "token" in m.re.groupindex else 0)).rstrip("/")
    return _speak_address(s)


def _email(m: re.Match[str], text: str) -> str:
    return _speak_address(m.group("token"))


def _phone(m: re.Match[str], text: str) -> str:
    groups = re.findall(r"\d+", m.group())
    return ", ".join(digits(g) for g in groups)


def _money(amount: str, cur: str, scale: str | None, negative: bool) -> str:
    one, many, sub_one, sub_many = CURRENCIES[cur]
    sign = "minus " if negative else ""
    if scale:
        return f"{sign}{cardinal(amount)} {_SCALES[scale]} {many}"
    whole, _, frac = amount.replace(",", "").partition(".")
    if len(frac) == 2:
        parts = []
        significant = whole.lstrip("0")  # compared as text: int() refuses 4,300 digits
        if significant:
            parts.append(f"{cardinal(whole)} {one if significant == '1' else many}")
        if int(frac):
            parts.append(f"{cardinal(str(int(frac)))} {sub_one if int(frac) == 1 else sub_many}")
        return sign + (" and ".join(parts) if parts else f"zero {many}")
    return f"{sign}{cardinal(amount)} {one if _is_one(amount) else many}"


def _currency(m: re.Match[str], text: str) -> str:
    return _money(m.group("amount"), m.group("cur"), m.group("scale"), bool(m.group("neg")))


def _currency_code(m: re.Match[str], text: str) -> str:
    return _money(m.group("amount"), m.group("code"), m.group("scale"), False)


def _time(m: re.Match[str], text: str) -> str:
    h, mi, sec, ampm = int(m.group("h")), m.group("m") or None, m.group("s"), m.group("ampm")
    if mi is None or mi == "00":
        if ampm:
            spoken = cardinal(str(h))
        elif mi is None:
            return cardinal(str(h))
        elif 1 <= h <= 12:
            spoken = f"{cardinal(str(h))} o'clock"
        else:
            spoken = f"{cardinal(str(h))} hundred"
    else:
        minutes = f"oh {digits(mi[1])}" if mi.startswith("0") else cardinal(mi)
        spoken = f"{cardinal(str(h))} {minutes}"
    if sec and sec != "00":
        spoken += f" and {cardinal(str(int(sec)))} seconds"
    if ampm:
        spoken += f" {ampm[0].upper()}M"  # espeak spells "PM" out, and the sentence splitter sees no initial
    if _keeps_sentence_end(m, text):
        spoken += "."
    return spoken


def _date(month: str, day: str, yr: str | None) -> str:
    spoken = f"{_month(month)} {ordinal(int(day))}"
    if yr:
        spoken += f", {year(int(yr))}"
    return spoken


def _date_iso(m: re.Match[str], text: str) -> str | None:
    y, mo, d = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if not (1 <= mo <= 12 and 1 <= d <= 31):
        return None
    return _date(_MONTHS[mo - 1], str(d), str(y))


def _date_slash(m: re.Match[str], text: str) -> str | None:
    mo, d, y = int(m.group(1)), int(m.group(2)), m.group(3)
    if not (1 <= mo <= 12 and 1 <= d <= 31):
        return None
    if len(y) == 2:
        y = ("20" if int(y) < 50 else "19") + y
    return _date(_MONTHS[mo - 1], str(d), y)


def _date_month_day(m: re.Match[str], text: str) -> str | None:
    if not 1 <= int(m.group("d")) <= 31:
        return None
    return _date(m.group("mon"), m.group("d"), m.group("y"))


def _date_day_month(m: re.Match[str], text: str) -> str | None:
    if not 1 <= int(m.group("d")) <= 31:
        return None
    article = "" if _previous_word(text, m.start()) == "the" else "the "
    spoken = f"{article}{ordinal(int(m.group('d')))} of {_month(m.group('mon'))}"
    if m.group("y"):
        spoken += f" {year(int(m.group('y')))}"
    return spoken


def _looks_like_year(token: str) -> bool:
    return len(token) == 4 and token.isdigit() and 1000 <= int(token) <= 2099


def _range(m: re.Match[str], text: str) -> str:
    a, b, unit = m.group("a"), m.group("b"), m.group("unit")
    if _looks_like_year(a) and (_looks_like_year(b) or len(b) == 2) and not unit:
        if len(b) == 2:
            b = a[:2] + b
        return f"{year(int(a))} to {year(int(b))}"
    spoken = f"{cardinal(a)} to {cardinal(b)}"
    if unit:
        spoken += " " + UNITS[unit][1]
    return spoken


def _unit(m: re.Match[str], text: str) -> str:
    amount, unit = m.group("n"), m.group("unit")
    one, many = UNITS[unit]
    if unit == "x":
        return f"{cardinal(amount)} times"
    return f"{cardinal(amount)} {one if _is_one(amount) else many}"


def _ordinal(m: re.Match[str], text: str) -> str:
    return ordinal_token(m.group(1))


def _decade(m: re.Match[str], text: str) -> str:
    century, tens = m.group("c"), m.group("t")
    if century:
        n = int(century + tens + "0")
        if n % 100 == 0:
            return _plural_word(cardinal(str(n)))
        return _plural_word(year(n))
    return _plural_word(cardinal(tens + "0"))


def _previous_word(text: str, pos: int) -> str:
    m = re.search(r"([A-Za-z]+)\W*$", text[max(0, pos - 40) : pos])
    return m.group(1).lower() if m else ""


def _number(m: re.Match[str], text: str) -> str:
    token = m.group()
    if _looks_like_year(token):
        after = text[m.end() : m.end() + 5].strip()
        following = re.match(r"\W*([A-Za-z]+)", text[m.end() : m.end() + 20])
        if (
            _previous_word(text, m.start()) in _YEAR_CUES
            or after.startswith(_ERAS)
            or (following is not None and following.group(1).lower() in _YEAR_FOLLOWERS)
        ):
            return year(int(token))
    return cardinal(token)


def _fraction(m: re.Match[str], text: str) -> str | None:
    key = (int(m.group(1)), int(m.group(2)))
    return _FRACTIONS.get(key)


def _abbreviation(m: re.Match[str], text: str) -> str | None:
    abbr = m.group()
    following = text[m.end() : m.end() + 2]
    next_is_name = bool(re.match(r"\s[A-Z]", following))
    if abbr in ("Dr.", "St."):
        # "Elm St." / "Mulholland Dr." follow a name; "St. Louis" / "Dr. Smith" precede one.
        before = re.search(r"(\w+) $", text[max(0, m.start() - 30) : m.start()])
        after_name = bool(before and before.group(1)[0].isupper())
        if next_is_name and not after_name:
            return "Doctor" if abbr == "Dr." else "Saint"
        spoken = "Drive" if abbr == "Dr." else "Street"
        return spoken + ("." if _keeps_sentence_end(m, text) else "")
    if abbr == "No.":
        return "number" if re.match(r"\s?\d", following) else None
    spoken = ABBREVIATIONS[abbr]
    if abbr in _SENTENCE_CAN_END and _keeps_sentence_end(m, text):
        spoken += "."
    return spoken


def _hash(m: re.Match[str], text: str) -> str:
    return "number"


def _approx(m: re.Match[str], text: str) -> str:
    return "about"


def _symbol(m: re.Match[str], text: str) -> str:
    return SYMBOLS[m.group()]


def _drop(m: re.Match[str], text: str) -> str:
    return " "


@dataclass(frozen=True)
class Rule:
    name: str
    pattern: re.Pattern[str]
    handler: Handler
    group: int | str = 0  # the part of the match that is rewritten (the rest is context)


def _rule(name: str, pattern: str, handler: Handler, group: int | str = 0) -> Rule:
    return Rule(name, re.compile(pattern), handler, group)


RULES: tuple[Rule, ...] = (
    # A scheme is short: bounded, "a.a.a.a..." is not rescanned up to a "://" from each of its letters.
    _rule("url", r"\b(?:[a-zA-Z][a-zA-Z+.-]{0,31}://|www\.)[^\s<>\"']*[^\s<>\"'.,;:!?)\]]", _url),
    # The local part is matched from the start of its run (leading "." "+" "-" are context, not spoken),
    # possessively: the run is read once whether or not an "@" ends it ("1." * 25_000 was quadratic).
    _rule(
        "email",
        r"(?<![\w.+-])[.+-]*+(?P<token>\w[\w.+-]*+@[\w-]++(?:\.[\w-]++)*\.[A-Za-z]{2,}\b)",
        _email,
        group="token",
    ),
    # Starts only where a chain of labels starts (not after "x." nor inside "a-b"; leading hyphens are
    # context): each chain is read once.
    _rule(
        "domain",
        rf"(?<![A-Za-z0-9-])(?<![A-Za-z0-9-]\.)-*+\b(?P<token>(?:[A-Za-z0-9-]++\.)+{_TLD}\b"
        r"(?:/[^\s<>\"']*[^\s<>\"'.,;:!?)\]])?)",
        _url,
        group="token",
    ),
    _rule(
        "phone",
        r"(?<![\w-])(?:\+?1[\s.-])?(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}(?![\w-])|(?<![\w-])\d{3}-\d{4}(?![\w-])",
        _phone,
    ),
    _rule(
        "currency",
        rf"(?<![\w])(?P<neg>-)?(?P<cur>[$€£¥])\s?(?P<amount>{NUM})"
        r"(?:\s?(?P<scale>thousand|million|billion|trillion|bn|mn|[kKmMbB])(?![\w]))?",
        _currency,
    ),
    _rule(
        "currency_code",
        rf"(?<![\w.,])(?P<amount>{NUM})(?:\s?(?P<scale>thousand|million|billion|trillion))?\s?(?P<code>USD|EUR|GBP)\b",
        _currency_code,
    ),
    _rule("date_iso", r"(?<![\w-])(\d{4})-(\d{2})-(\d{2})(?![\w-])", _date_iso),
    _rule("date_slash", r"(?<![\w/])(\d{1,2})/(\d{1,2})/(\d{4}|\d{2})(?![\w/])", _date_slash),
    _rule(
        "time",
        r"(?<![\w:.])(?P<h>[01]?\d|2[0-3]):(?P<m>[0-5]\d)(?::(?P<s>[0-5]\d))?"
        r"(?:\s?(?P<ampm>[AaPp]\.?[Mm]\.?)(?![A-Za-z]))?(?![\d:])",
        _time,
    ),
    _rule(  # British "3.30pm": a dot is a time separator only with am/pm after it
        "time_dot",
        r"(?<![\w:.])(?P<h>1[0-2]|0?[1-9])\.(?P<m>[0-5]\d)(?P<s>)\s?(?P<ampm>[AaPp]\.?[Mm]\.?)(?![A-Za-z])",
        _time,
    ),
    _rule(
        "time_ampm",
        r"(?<![\w:.])(?P<h>1[0-2]|0?[1-9])(?P<m>)(?P<s>)\s?(?P<ampm>[AaPp]\.?[Mm]\.?)(?![A-Za-z])",
        _time,
    ),
    _rule(
        "date_month_day",
        rf"\b(?P<mon>{_MONTH_RE})\.?\s(?P<d>\d{{1,2}})(?:st|nd|rd|th)?(?![\d:])(?:,?\s(?P<y>\d{{4}})(?!\d))?",
        _date_month_day,
    ),
    _rule(
        "date_day_month",
        rf"(?<![\w.,])(?P<d>\d{{1,2}})(?:st|nd|rd|th)?\s(?:of\s)?(?P<mon>{_MONTH_RE})\b\.?(?:,?\s(?P<y>\d{{4}})(?!\d))?",
        _date_day_month,
    ),
    _rule("decade", r"(?<![\w.,'])(?:(?P<c>1\d|20)|')?(?P<t>\d)0s\b", _decade),
    _rule(
        "range",
        rf"(?<![\w.,-])(?P<a>{NUM})(?:-|\s?[–—]\s?)(?P<b>{NUM})(?:\s?(?P<unit>{_UNIT_RE})(?![A-Za-z]))?(?![\w.-]\d)",
        _range,
    ),
    _rule("unit", rf"(?<![\w.,])(?P<n>-?{NUM})\s?(?P<unit>{_UNIT_RE})(?![A-Za-z0-9/])", _unit),
    _rule("ordinal", r"(?<![\w.,])(\d+)(?:st|nd|rd|th)\b", _ordinal),
    _rule("fraction", r"(?<![\w/.,])(\d)/(\d)(?![\w/])", _fraction),
    _rule("number", rf"(?<![\w.,])(?:(?<![)\]])-(?=\d))?{NUM}(?![\d])", _number),
    _rule("abbreviation", rf"(?<![\w.])(?:{_ABBR_RE}|Dr\.|St\.|No\.)(?!\w)", _abbreviation),
    _rule("hash", r"#(?=\d)", _hash),
    _rule("approx", r"~(?=\s?\d)", _approx),
    _rule("symbol", "|".join(re.escape(s) for s in SYMBOLS), _symbol),
    _rule("drop", r"[*_|^`~#•→←\\]+", _drop),
)


def normalize(text: str) -> NormalizedText:
    """The spoken form of `text` with its offset map. Pure and thread-safe."""
    candidates: list[tuple[int, int, int, re.Match[str], Rule]] = []
    for priority, rule in enumerate(RULES):
        for m in rule.pattern.finditer(text):
            start, end = m.span(rule.group)
            if end > start:
                candidates.append((start, priority, -end, m, rule))
    candidates.sort(key=lambda c: (c[0], c[1], c[2]))
    out = Builder(text)
    pos = 0
    for start, _, neg_end, m, rule in candidates:
        if start < pos:
            continue
        spoken = rule.handler(m, text)
        if spoken is None:
            continue  # the rule declined: the text stays for a later rule or verbatim
        out.verbatim(pos, start)
        out.replace(start, -neg_end, spoken)
        pos = -neg_end
    out.verbatim(pos, len(text))
    return out.build()


def spoken_words(text: str) -> list[str]:
    """Lowercase words of the normalized text (what tests and round trips compare)."""
    return re.findall(r"[a-z0-9']+", normalize(text).text.lower().replace("’", "'"))
