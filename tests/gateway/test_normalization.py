"""Text normalization: a table of inputs and the words a reader says, the offset map back to the original
text, and a round trip through the real server (Piper speaks it, faster-whisper hears the expected words)."""

from __future__ import annotations

import re

import httpx
import pytest

from gateway.text import normalize, spoken_words
from tests.support import ServerProcess, decode_wav

CASES: list[tuple[str, str]] = [
    # cardinals
    ("0", "zero"),
    ("7", "seven"),
    ("13", "thirteen"),
    ("42", "forty two"),
    ("100", "one hundred"),
    ("105", "one hundred five"),
    ("999", "nine hundred ninety nine"),
    ("I have 3 cats.", "i have three cats"),
    ("12 monkeys", "twelve monkeys"),
    ("There are 250 seats.", "there are two hundred fifty seats"),
    ("1234 apples", "one thousand two hundred thirty four apples"),
    ("1000000", "one million"),
    ("007", "zero zero seven"),
    ("Agent 007 arrived.", "agent zero zero seven arrived"),
    # thousands separators (Kokoro-FastAPI#259)
    ("3,497", "three thousand four hundred ninety seven"),
    ("1,000", "one thousand"),
    ("10,000", "ten thousand"),
    ("1,000,000", "one million"),
    ("2,500,000 people", "two million five hundred thousand people"),
    ("It sold 3,497 copies.", "it sold three thousand four hundred ninety seven copies"),
    ("12,345,678", "twelve million three hundred forty five thousand six hundred seventy eight"),
    # decimals
    ("3.14", "three point one four"),
    ("0.5", "zero point five"),
    ("2.50", "two point five zero"),
    ("1,234.5", "one thousand two hundred thirty four point five"),
    ("pi is 3.14159", "pi is three point one four one five nine"),
    ("version 2.0 is out", "version two point zero is out"),
    # negatives
    ("-5", "minus five"),
    ("It was -12 outside.", "it was minus twelve outside"),
    ("-3.5", "minus three point five"),
    ("(-40)", "minus forty"),
    ("a drop of -1,200", "a drop of minus one thousand two hundred"),
    # ordinals
    ("1st", "first"),
    ("2nd", "second"),
    ("3rd", "third"),
    ("4th", "fourth"),
    ("11th", "eleventh"),
    ("21st", "twenty first"),
    ("22nd place", "twenty second place"),
    ("the 100th time", "the one hundredth time"),
    ("101st", "one hundred first"),
    ("She came 3rd.", "she came third"),
    # years
    ("in 1999", "in nineteen ninety nine"),
    ("in 2024", "in twenty twenty four"),
    ("since 1066", "since ten sixty six"),
    ("in 2005", "in two thousand five"),
    ("in 2000", "in two thousand"),
    ("by 1900", "by nineteen hundred"),
    ("from 1905", "from nineteen oh five"),
    ("the year 2010", "the year twenty ten"),
    ("In 1492 Columbus sailed.", "in fourteen ninety two columbus sailed"),
    ("born in 1987,", "born in nineteen eighty seven"),
    ("1200 AD", "twelve hundred ad"),
    ("during 1944", "during nineteen forty four"),
    ("2024 was a good year.", "twenty twenty four was a good year"),
    ("1969 saw the first landing", "nineteen sixty nine saw the first landing"),
    ("1500 people were there", "one thousand five hundred people were there"),
    # decades
    ("the 1990s", "the nineteen nineties"),
    ("the 1960s", "the nineteen sixties"),
    ("the 80s", "the eighties"),
    ("the '70s", "the seventies"),
    ("the 2000s", "the two thousands"),
    # currency
    ("$5", "five dollars"),
    ("$1", "one dollar"),
    ("$3.50", "three dollars and fifty cents"),
    ("$1.01", "one dollar and one cent"),
    ("$0.99", "ninety nine cents"),
    ("$3.5 million", "three point five million dollars"),
    ("$2 billion", "two billion dollars"),
    ("$1,000", "one thousand dollars"),
    ("$10k", "ten thousand dollars"),
    ("$4.2bn", "four point two billion dollars"),
    ("€20", "twenty euros"),
    ("€1", "one euro"),
    ("€9.99", "nine euros and ninety nine cents"),
    ("£5", "five pounds"),
    ("£1.50", "one pound and fifty pence"),
    ("¥500", "five hundred yen"),
    ("-$5", "minus five dollars"),
    ("It costs $12.", "it costs twelve dollars"),
    ("100 USD", "one hundred us dollars"),
    ("50 EUR", "fifty euros"),
    ("$5.00", "five dollars"),
    # percentages
    ("50%", "fifty percent"),
    ("12.5%", "twelve point five percent"),
    ("100 %", "one hundred percent"),
    ("a 3% rise", "a three percent rise"),
    ("-2%", "minus two percent"),
    ("10-20%", "ten to twenty percent"),
    # units
    ("5 km", "five kilometers"),
    ("1 km", "one kilometer"),
    ("5km", "five kilometers"),
    ("2.5 kg", "two point five kilograms"),
    ("1 kg", "one kilogram"),
    ("10 cm", "ten centimeters"),
    ("3 mm", "three millimeters"),
    ("100 m", "one hundred meters"),
    ("60 mph", "sixty miles per hour"),
    ("100 km/h", "one hundred kilometers per hour"),
    ("20°C", "twenty degrees celsius"),
    ("1°C", "one degree celsius"),
    ("98.6°F", "ninety eight point six degrees fahrenheit"),
    ("90°", "ninety degrees"),
    ("16 GB", "sixteen gigabytes"),
    ("512 MB", "five hundred twelve megabytes"),
    ("2 TB", "two terabytes"),
    ("3.2 GHz", "three point two gigahertz"),
    ("50 Hz", "fifty hertz"),
    ("5 lbs", "five pounds"),
    ("8 oz", "eight ounces"),
    ("6 ft", "six feet"),
    ("1 ft", "one foot"),
    ("500 ml", "five hundred milliliters"),
    ("2 L", "two liters"),
    ("100 W", "one hundred watts"),
    ("220 V", "two hundred twenty volts"),
    ("30 min", "thirty minutes"),
    ("2 h", "two hours"),
    ("250 ms", "two hundred fifty milliseconds"),
    ("10 s", "ten seconds"),
    ("a 2x speedup", "a two times speedup"),
    ("5 kWh", "five kilowatt hours"),
    # times
    ("3:30", "three thirty"),
    ("10:00", "ten o'clock"),
    ("3:05", "three oh five"),
    ("15:45", "fifteen forty five"),
    ("3:30 pm", "three thirty pm"),
    ("7:15 a.m.", "seven fifteen am"),
    ("9 AM", "nine am"),
    ("11pm", "eleven pm"),
    ("12:00 PM", "twelve pm"),
    ("18:00", "eighteen hundred"),
    ("3.30pm", "three thirty pm"),
    ("10:30:15", "ten thirty and fifteen seconds"),
    ("Meet me at 5 p.m. Then we eat.", "meet me at five pm then we eat"),
    # dates
    ("2024-05-21", "may twenty first twenty twenty four"),
    ("1999-12-31", "december thirty first nineteen ninety nine"),
    ("5/21/2024", "may twenty first twenty twenty four"),
    ("12/25/99", "december twenty fifth nineteen ninety nine"),
    ("May 21, 2024", "may twenty first twenty twenty four"),
    ("May 21st", "may twenty first"),
    ("Jan. 3", "january third"),
    ("on March 1 we left", "on march first we left"),
    ("Dec 25, 2023", "december twenty fifth twenty twenty three"),
    ("21 May 2024", "the twenty first of may twenty twenty four"),
    ("3rd of June", "the third of june"),
    ("on the 4th of July", "on the fourth of july"),
    ("September 11, 2001", "september eleventh two thousand one"),
    # ranges
    ("10-20", "ten to twenty"),
    ("pages 5-10", "pages five to ten"),
    ("1990-1995", "nineteen ninety to nineteen ninety five"),
    ("2020-21", "twenty twenty to twenty twenty one"),
    ("40–60°C", "forty to sixty degrees celsius"),
    ("3 – 5 km", "three to five kilometers"),
    ("5-10 minutes", "five to ten minutes"),
    # abbreviations
    ("Dr. Smith", "doctor smith"),
    ("Mr. Jones", "mister jones"),
    ("Mrs. Brown", "missus brown"),
    ("Ms. Lee", "miz lee"),
    ("Prof. Adams", "professor adams"),
    ("St. Louis", "saint louis"),
    ("Elm St.", "elm street"),
    ("He lives on Main St. He likes it.", "he lives on main street he likes it"),
    ("Mulholland Dr. is long", "mulholland drive is long"),
    ("fruit, e.g. apples", "fruit for example apples"),
    ("one, i.e. the first", "one that is the first"),
    ("cats vs. dogs", "cats versus dogs"),
    ("cats vs dogs", "cats versus dogs"),
    ("pens, paper, etc.", "pens paper et cetera"),
    ("Acme Inc.", "acme incorporated"),
    ("Martin Luther King Jr.", "martin luther king junior"),
    ("Mt. Everest", "mount everest"),
    ("approx. 5", "approximately five"),
    ("No. 5", "number five"),
    ("No. I refuse.", "no i refuse"),
    ("see Fig. 3", "see figure three"),
    # URLs and e-mail
    ("https://example.com", "example dot com"),
    ("www.google.com", "w w w dot google dot com"),
    ("Go to example.org/docs now", "go to example dot org slash docs now"),
    ("https://github.com/openai/whisper", "github dot com slash openai slash whisper"),
    ("http://site.io/a-b", "site dot io slash a dash b"),
    ("john@example.com", "john at example dot com"),
    ("Mail jane.doe@mail.co.uk today", "mail jane dot doe at mail dot co dot uk today"),
    ("support_team@acme.io", "support underscore team at acme dot io"),
    # phone numbers
    ("555-1234", "five five five one two three four"),
    ("555-123-4567", "five five five one two three four five six seven"),
    ("(555) 123-4567", "five five five one two three four five six seven"),
    # symbols
    ("cats & dogs", "cats and dogs"),
    ("2 + 2 = 4", "two plus two equals four"),
    ("5 × 3", "five times three"),
    ("10 ÷ 2", "ten divided by two"),
    ("±3", "plus or minus three"),
    ("x < 5", "x less than five"),
    ("y > 10", "y greater than ten"),
    ("#1 fan", "number one fan"),
    ("~50 people", "about fifty people"),
    ("½ cup", "one half cup"),
    ("1/2 cup", "one half cup"),
    ("3/4 mile", "three quarters mile"),
    ("**bold** text", "bold text"),
    ("and/or", "and or"),
    ("§ 5", "section five"),
    # plain text stays as it is
    ("Hello, world!", "hello world"),
    ("It's a nice day.", "it's a nice day"),
    ("COVID-19 vaccines", "covid nineteen vaccines"),
    # the examples from the anchors
    ("The temperature was 40–60°C.", "the temperature was forty to sixty degrees celsius"),
    ("It cost $3.5 million in 2024.", "it cost three point five million dollars in twenty twenty four"),
]


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[c[0] for c in CASES])
def test_spoken_words(text: str, expected: str) -> None:
    assert spoken_words(text) == _words(expected)


def test_table_is_large() -> None:
    assert len(CASES) >= 150


def test_offsets_map_rewrites_to_their_original_characters() -> None:
    original = "Dr. Lee paid $3.5 million on 5/21/2024, i.e. early."
    norm = normalize(original)
    by_spoken = {w.text: original[w.orig_start : w.orig_end] for w in norm.words()}
    for spoken in ("three", "point", "five", "million", "dollars"):
        assert by_spoken[spoken] == "$3.5 million"
    assert by_spoken["Doctor"] == "Dr."
    assert by_spoken["May"] == by_spoken["twenty"] == "5/21/2024"
    assert by_spoken["that"] == by_spoken["is"] == "i.e."
    assert by_spoken["paid"] == "paid" and by_spoken["early"] == "early"
    # untouched text maps character for character, everywhere in the string
    for w in norm.words():
        if w.text in ("Lee", "paid", "on", "early"):
            assert original[w.orig_start : w.orig_end] == w.text


def test_identity_when_nothing_to_rewrite() -> None:
    text = "Plain words only, nothing to do here."
    norm = normalize(text)
    assert norm.text == text
    assert all(text[w.orig_start : w.orig_end] == w.text for w in norm.words())


ROUND_TRIP = [
    ("It sold 3,497 copies.", ["three", "thousand", "four", "hundred", "ninety", "seven"]),
    ("Doctor Smith paid $3.50 today.", ["three", "dollars", "fifty", "cents"]),
    ("The meeting is at 3:30 pm on May 21st.", ["three", "thirty", "may", "twenty", "first"]),
    ("Please write to john@example.com about the 2nd item.", ["john", "example", "dot", "com", "second"]),
    ("It was 40–60°C, e.g. very hot.", ["forty", "sixty", "degrees", "for", "example"]),
]


def _singular(word: str) -> str:
    return word[:-1] if len(word) > 4 and word.endswith("s") else word


def test_round_trip_through_speech(gateway: ServerProcess) -> None:
    """The words the normalizer produced are the words the voice says: faster-whisper hears them."""
    with httpx.Client(base_url=gateway.url, timeout=120) as client:
        for text, expected in ROUND_TRIP:
            wav = decode_wav(client.post("/read", json={"text": text}).content)
            heard = _transcribe(client, wav.samples, wav.sample_rate)
            heard_words = {_singular(w) for w in _words(_numbers_to_words(heard))}
            # Whisper base writes a spoken address back as one ("johnatexample.com") and "degrees Celsius" as
            # "degree Celsius": plurals compare as singulars, and a word of four letters or more counts when a
            # heard word contains it (shorter ones, e.g. "for" in "forty", must match whole).
            missing = [
                w
                for w in map(_singular, expected)
                if w not in heard_words and not (len(w) >= 4 and any(w in h for h in heard_words))
            ]
            assert not missing, f"{text!r}: ASR heard {heard!r}, missing {missing}"


def test_normalize_false_reads_text_as_written(gateway: ServerProcess) -> None:
    """Turning normalization off sends the text unchanged to the voice; word offsets then point at the
    tokens as written."""
    with httpx.Client(base_url=gateway.url, timeout=120) as client:
        body = {"text": "Dr. Who", "output": "json"}
        on = client.post("/read", json=body).json()
        off = client.post("/read", json={**body, "normalize": False}).json()
    assert [w.get("spoken") for w in on["words"]] == ["Doctor", None]
    assert [w["word"] for w in off["words"]] == ["Dr", "Who"]
    assert all("spoken" not in w for w in off["words"])


def _transcribe(client: httpx.Client, samples: object, rate: int) -> str:
    import io
    import wave

    import numpy as np

    pcm = (np.clip(np.asarray(samples), -1, 1) * 32767).astype("<i2").tobytes()
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    r = client.post(
        "/v1/audio/transcriptions",
        files={"file": ("a.wav", buf.getvalue(), "audio/wav")},
        data={"model": "whisper-1"},
    )
    assert r.status_code == 200, r.text
    return str(r.json()["text"])


def _numbers_to_words(text: str) -> str:
    """Whisper writes what it hears as digits ("3,497", "$3.50", "3:30 p.m."): compare words with words."""
    return normalize(text).text
