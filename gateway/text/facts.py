"""What the user told the assistant so far, pulled from their own words by simple rules.

A 135M chat model loses a name said six turns ago among its own replies; a short note of the user's name,
the sentences where they stated something (numbers, "I live in ...") and their earlier questions, placed
where the model looks, is what lets it answer "what is my name?". Rules, not a model: they cost
microseconds and never invent a fact the user did not say.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

# A conversation memory that drops old turns keeps the user's words under this heading in the system
# message, so facts outlive the window (gateway/sessions/voice/history.py writes it, the engine reads it).
EARLIER_HEADING = "Earlier in this conversation the user said:"

_NAME = re.compile(r"\b(?i:my name is|my name's|i am|i'm|call me|this is)\s+([A-Z][a-z]+(?:-[A-Z][a-z]+)?)")
# Capitalised words that follow "I'm" without being names ("I'm Fine", sentence case from ASR).
_NOT_NAMES = frozenset(
    [
        "Afraid",
        "Alright",
        "Back",
        "Busy",
        "Fine",
        "Glad",
        "Going",
        "Good",
        "Great",
        "Happy",
        "Here",
        "Hungry",
        "Just",
        "Looking",
        "Not",
        "Okay",
        "Ok",
        "Ready",
        "Really",
        "So",
        "Sorry",
        "Still",
        "Sure",
        "Thinking",
        "Tired",
        "Trying",
        "Very",
        "Well",
    ]
)
_NUMBER = re.compile(
    r"\b\d[\d,.]*\b|\b(?i:zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|"
    r"fourteen|fifteen|sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy|eighty|"
    r"ninety|hundred|thousand|million)\b"
)
_STATEMENT = re.compile(r"(?i)\b(i live|i work|i have|i like|i love|i was born|my \w+(?: \w+)? (?:is|are))\b")
_ABOUT_USER = re.compile(r"(?i)\b(i|me|my|mine|myself)\b")
_RECALL = re.compile(r"(?i)\b(ask|asked|earlier|before|question|remember|said|told)\b")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
MAX_ITEMS = 4  # of each kind: the newest win; a long note drowns the question for a small model


@dataclass
class Facts:
    name: str | None = None
    statements: list[str] = field(default_factory=list)  # the user's sentences that state something
    questions: list[str] = field(default_factory=list)

    def note(self, current: str) -> str:
        """A first-person note to put before the user's current message ("" when there is nothing).

        First person because it is read as the user's own words: a third-person "the user's name is Sam"
        in the system prompt made SmolLM2 introduce itself as Sam.
        """
        parts: list[str] = []
        if not _ABOUT_USER.search(current):
            # "What is the capital of France?" needs no note, and a note there gets answered instead.
            return ""
        if self.name:
            parts.append(f"My name is {self.name}.")
        for sentence in self.statements[-MAX_ITEMS:]:
            rest = _NAME.sub("", sentence)  # "Hi, my name is Sam." says no more than the line above
            if _NUMBER.search(rest) or _STATEMENT.search(rest):
                parts.append(f'I said: "{sentence}"')
        # Earlier questions only when the user asks about the past: otherwise the model answers them again.
        if self.questions and _RECALL.search(current):
            parts.append("I asked: " + " ".join(f'"{q}"' for q in self.questions[-MAX_ITEMS:]))
        return " ".join(parts)


def extract(user_texts: Iterable[str]) -> Facts:
    """Facts from the user's messages, oldest first; a later statement of a name replaces an earlier one."""
    facts = Facts()
    for text in user_texts:
        for sentence in _SENTENCE.split(text.strip()):
            sentence = sentence.strip()
            if not sentence:
                continue
            names = [m.group(1) for m in _NAME.finditer(sentence) if m.group(1) not in _NOT_NAMES]
            facts.name = names[-1] if names else facts.name
            if sentence.endswith("?"):
                _remember(facts.questions, sentence)
            elif names or _NUMBER.search(sentence) or _STATEMENT.search(sentence):
                _remember(facts.statements, sentence)
    return facts


def states_fact(text: str) -> bool:
    """Whether the user's message states something worth keeping (a name, a number, "I live in ...")."""
    facts = extract([text])
    return bool(facts.name or facts.statements)


def _remember(items: list[str], sentence: str) -> None:
    if sentence in items:
        items.remove(sentence)  # said again: it moves to the newest place
    items.append(sentence)


def earlier_note(lines: Iterable[str]) -> str:
    """The block a memory appends to the system message for user turns it no longer holds."""
    body = "\n".join(f"- {line}" for line in lines)
    return f"{EARLIER_HEADING}\n{body}" if body else ""


def split_earlier(system: str) -> tuple[str, list[str]]:
    """(instructions, earlier user lines) from a system message that may carry an `earlier_note`."""
    head, sep, tail = system.partition(EARLIER_HEADING)
    if not sep:
        return system, []
    lines = [line[2:].strip() for line in tail.splitlines() if line.startswith("- ")]
    return head.rstrip(), lines
