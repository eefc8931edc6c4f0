"""Sentence splitting keeps offsets into the original text and treats abbreviations and numbers sensibly."""

from __future__ import annotations

import pytest

from gateway.audio.text import split_sentences


def texts(text: str) -> list[str]:
    return [s.text for s in split_sentences(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello world. How are you?", ["Hello world.", "How are you?"]),
        (
            "Dr. Smith met Mrs. Jones at 3.30 today. It went well!",
            ["Dr. Smith met Mrs. Jones at 3.30 today.", "It went well!"],
        ),
        (
            "Pi is 3.14159 and e is 2.718. Both are irrational.",
            ["Pi is 3.14159 and e is 2.718.", "Both are irrational."],
        ),
        ("Use tools, e.g. hammers. Then rest.", ["Use tools, e.g. hammers.", "Then rest."]),
        ("J. R. R. Tolkien wrote it. Really?!", ["J. R. R. Tolkien wrote it.", "Really?!"]),
        ('He said "stop." Then he left.', ['He said "stop."', "Then he left."]),
        ("Wait... what happened? Nothing.", ["Wait... what happened?", "Nothing."]),
        ("First paragraph without stop\n\nSecond one", ["First paragraph without stop", "Second one"]),
        ("No terminator at all", ["No terminator at all"]),
        ("  ...  ", []),
    ],
)
def test_sentences(text: str, expected: list[str]) -> None:
    assert texts(text) == expected


def test_offsets_point_into_the_original_text() -> None:
    text = "  One.   Two, three!\n\nFour?  "
    for span in split_sentences(text):
        assert text[span.start : span.end] == span.text


def test_long_sentences_are_cut_at_clause_boundaries_within_the_limit() -> None:
    text = ", ".join(f"clause number {i} goes here" for i in range(40)) + "."
    spans = split_sentences(text, max_chars=120)
    assert len(spans) > 5
    assert all(len(s.text) <= 120 for s in spans)
    assert all(s.text.endswith(",") for s in spans[:-1])
    assert "".join(s.text for s in spans).replace(" ", "") == text.replace(" ", "")


def test_a_long_word_without_spaces_is_cut_hard() -> None:
    spans = split_sentences("a" * 1000, max_chars=240)
    assert [len(s.text) for s in spans] == [240, 240, 240, 240, 40]
