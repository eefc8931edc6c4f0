"""Per-connection conversation memory, bounded in turns and (estimated) tokens. Lives only in the session."""

from __future__ import annotations

from collections import deque
from typing import Protocol

from gateway.engines.base import ChatMessage

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


class ConversationHistory:
    def __init__(self, max_turns: int, max_tokens: int) -> None:
        self.max_turns = max_turns  # a turn: one user message and the assistant reply to it
        self.max_tokens = max_tokens
        self._messages: deque[ChatMessage] = deque()

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

        # Drop whole oldest turns; the newest message always stays (it is the question being answered).
        while len(self._messages) > 1 and (user_turns() > self.max_turns or tokens() > self.max_tokens):
            self._messages.popleft()
            while len(self._messages) > 1 and self._messages[0].role != "user":
                self._messages.popleft()

    def messages(self, instructions: str) -> list[ChatMessage]:
        """The prompt: system instructions, then the kept turns in order."""
        return [ChatMessage("system", instructions), *self._messages]

    def clear(self) -> None:
        self._messages.clear()
