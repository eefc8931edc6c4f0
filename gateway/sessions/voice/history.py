"""Per-connection conversation memory, bounded in (estimated) tokens and optionally turns. Lives only in the
session. What the user said in turns that no longer fit stays, in their own words, in a short note on the
system message (gateway/text/facts.py), so a name given at turn 1 outlives the window."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, MutableSequence
from typing import Protocol

from gateway.engines.base import ChatMessage
from gateway.text.facts import earlier_note, states_fact

# Rough English average for BPE tokenizers; the engine re-fits the prompt to its real context window.
CHARS_PER_TOKEN = 4


def estimate_tokens(text: str) -> int:
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


class History(Protocol):
    """What the core needs of a conversation memory. The Realtime adapter supplies its item store here, so
    items the client creates, deletes or truncates are what the next reply sees."""

    def add(self, role: str, text: str) -> None: ...

    def messages(self, instructions: str) -> list[ChatMessage]: ...

    def clear(self) -> None: ...


def keep_earlier(lines: MutableSequence[str], budget_tokens: int) -> None:
    """Trim the user's words from dropped turns (oldest first) to `budget_tokens`, in place. Small talk goes
    before what states a fact: a name outlives "tell me more"."""
    while lines and sum(estimate_tokens(t) for t in lines) > budget_tokens:
        small_talk = (i for i, t in enumerate(lines) if not states_fact(t))
        del lines[next(small_talk, 0)]


def with_earlier(instructions: str, lines: Iterable[str]) -> str:
    """The system message: the instructions, then the note of what the user said in dropped turns."""
    note = earlier_note(lines)
    return f"{instructions}\n\n{note}" if note and instructions else note or instructions


class ConversationHistory:
    def __init__(self, max_turns: int, max_tokens: int) -> None:
        self.max_turns = max_turns  # a turn: one user message and the assistant reply to it; 0: no cap
        self.max_tokens = max_tokens
        self._messages: deque[ChatMessage] = deque()
        # The user's messages from dropped turns, newest last, within a quarter of the token budget.
        self._earlier: deque[str] = deque()

    def __len__(self) -> int:
        return len(self._messages)

    def add(self, role: str, text: str) -> None:
        text = text.strip()
        if text:
            self._messages.append(ChatMessage(role, text))
            self._trim()

    def _trim(self) -> None:
        def user_turns() -> int:
            return sum(1 for m in self._messages if m.role == "user")

        def tokens() -> int:
            return sum(estimate_tokens(m.content) for m in self._messages)

        def over() -> bool:
            return tokens() > self.max_tokens or (self.max_turns > 0 and user_turns() > self.max_turns)

        # Drop whole oldest turns; the newest message always stays (it is the question being answered).
        while len(self._messages) > 1 and over():
            self._drop_oldest()
            while len(self._messages) > 1 and self._messages[0].role != "user":
                self._drop_oldest()

    def _drop_oldest(self) -> None:
        # The assistant's old replies are not kept: a small model copies them, and they state no user fact.
        message = self._messages.popleft()
        if message.role != "user":
            return
        self._earlier.append(message.content)
        keep_earlier(self._earlier, self.max_tokens // 4)

    def messages(self, instructions: str) -> list[ChatMessage]:
        """The prompt: system instructions (with the dropped turns' user words), then the kept turns."""
        return [ChatMessage("system", with_earlier(instructions, self._earlier)), *self._messages]

    def clear(self) -> None:
        self._messages.clear()
        self._earlier.clear()
