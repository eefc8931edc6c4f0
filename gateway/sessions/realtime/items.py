"""The conversation as the Realtime API exposes it: items with ids the client can create, delete and
truncate, in order. It is the source of the history the conversation engine answers from.

Truncation maps audio time to text with the synthesizer's own timing: every spoken sentence of an
assistant item records where its audio starts and ends and which characters of the transcript it covers,
with word timings when the engine gives them. Cutting at `audio_end_ms` keeps whole sentences heard
before it, then within the sentence being played the words at least half heard (by word timing, or, without
it, by the word's position in the sentence scaled to the sentence's audio); everything after is dropped,
so the next response never sees words the user did not hear.

Memory is bounded twice: the store holds at most `max_bytes` of item text (what a client creates beyond it is
refused; the session's own items make room by dropping the oldest), and the history handed to the model is
cut to its budget, the newest message included.
"""

from __future__ import annotations

import os
import random
import string
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from gateway.engines.base import ChatMessage, ToolCall
from gateway.sessions.realtime.protocol import ItemParam, RealtimeError

_ALPHABET = string.ascii_letters + string.digits
# Ids name things, they guard nothing: a seeded PRNG is ample, and every audio delta carries one.
_RANDOM = random.Random(os.urandom(16))


def new_id(prefix: str) -> str:
    """OpenAI-shaped ids ("item_", "resp_", "event_", "sess_" + 21 characters)."""
    return prefix + "_" + "".join(_RANDOM.choices(_ALPHABET, k=21))


@dataclass(frozen=True)
class WordSpan:
    start_ms: float  # item audio time
    end_ms: float
    text_start: int  # offsets into the content part's transcript
    text_end: int


@dataclass(frozen=True)
class SpokenSpan:
    """One synthesized sentence inside an assistant audio part."""

    start_ms: float
    end_ms: float
    text_start: int
    text_end: int
    words: tuple[WordSpan, ...] = ()


def _word_bounds(text: str, start: int, end: int) -> list[tuple[int, int]]:
    bounds: list[tuple[int, int]] = []
    i, end = start, min(end, len(text))
    while i < end:
        while i < end and text[i].isspace():
            i += 1
        j = i
        while j < end and not text[j].isspace():
            j += 1
        if j > i:
            bounds.append((i, j))
        i = j
    return bounds


def heard_offset(text: str, spans: list[SpokenSpan], audio_end_ms: float) -> int:
    """How many characters of `text` were spoken before `audio_end_ms` (a word counts once half heard)."""
    cut = 0
    for span in spans:
        if span.end_ms <= audio_end_ms:
            cut = span.text_end
            continue
        if span.start_ms >= audio_end_ms:
            break
        if span.words:
            for w in span.words:
                if (w.start_ms + w.end_ms) / 2 <= audio_end_ms:
                    cut = max(cut, w.text_end)
            # A timed word excludes the punctuation glued to it ("time" of "time,"): keep the written
            # token whole, so the transcript stays a prefix of the text deltas the client received.
            while span.text_start < cut < min(span.text_end, len(text)) and not text[cut].isspace():
                cut += 1
        else:
            # No word timing: speech runs at a roughly even pace in characters through one sentence.
            total = max(1, span.text_end - span.text_start)
            fraction = (audio_end_ms - span.start_ms) / max(1e-6, span.end_ms - span.start_ms)
            for a, b in _word_bounds(text, span.text_start, span.text_end):
                if ((a + b) / 2 - span.text_start) / total <= fraction:
                    cut = b
        break
    return cut


def cut_at(transcript: str, spans: list[SpokenSpan], audio_end_ms: float) -> tuple[str, list[SpokenSpan]]:
    """The transcript heard by `audio_end_ms`, and the spans cut to match: the sentence cut in two ends
    where the cut is, in time and in text, so a later, shorter cut maps its time onto the words left."""
    kept = transcript[: heard_offset(transcript, spans, audio_end_ms)].rstrip()
    out: list[SpokenSpan] = []
    for s in spans:
        if s.start_ms >= audio_end_ms:
            break
        if s.end_ms <= audio_end_ms:
            out.append(s)
            continue
        end = max(s.text_start, min(s.text_end, len(kept)))
        words = tuple(w for w in s.words if w.text_end <= end)
        out.append(SpokenSpan(s.start_ms, audio_end_ms, s.text_start, end, words))
    return kept, out


@dataclass
class ContentPart:
    type: str  # GA names: input_text | input_audio | output_text | output_audio
    text: str | None = None
    transcript: str | None = None
    audio_ms: float = 0.0  # duration of the part's audio, for audio parts
    spans: list[SpokenSpan] = field(default_factory=list)

    def as_text(self) -> str:
        return (self.text if self.type.endswith("_text") else self.transcript) or ""

    def wire(self, beta: bool) -> dict[str, Any]:
        kind = self.type
        if beta and kind in ("output_text", "output_audio"):
            kind = kind.removeprefix("output_")  # beta: "text" / "audio"
        out: dict[str, Any] = {"type": kind}
        if kind.endswith("text"):
            out["text"] = self.text or ""
        else:
            out["transcript"] = self.transcript
        return out

    def event_part(self) -> dict[str, Any]:
        """The `part` of `response.content_part.added` / `.done`: typed `text` / `audio` in both dialects.

        Unlike an item's content (`output_text` / `output_audio` in GA), the content-part events keep the
        beta names in GA too (openai-python 3.63 types/realtime/response_content_part_added_event.py)."""
        return self.wire(beta=True)


@dataclass
class Item:
    """A message (`role`, `content`), a model's function call (`call_id`, `name`, `arguments`) or the
    client's answer to one (`function_call_output`: `call_id`, `output`)."""

    id: str
    role: str  # user | assistant | system; "" for function call items
    content: list[ContentPart]
    status: str = "completed"  # completed | incomplete | in_progress
    type: str = "message"  # message | function_call | function_call_output
    call_id: str = ""
    name: str = ""
    arguments: str = ""
    output: str = ""

    def text(self) -> str:
        return " ".join(t for t in (p.as_text().strip() for p in self.content) if t)

    def size_bytes(self) -> int:
        """UTF-8 bytes of the item's text and transcripts (what a session keeps of it; audio is not kept)."""
        texts = [t for p in self.content for t in (p.text, p.transcript) if t]
        texts += [self.arguments, self.output]
        return sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)

    def message(self) -> ChatMessage | None:
        """What the model reads of this item; None for a message with no text."""
        if self.type == "function_call":
            return ChatMessage("assistant", "", (ToolCall(self.call_id, self.name, self.arguments),))
        if self.type == "function_call_output":
            return ChatMessage("tool", self.output, tool_call_id=self.call_id)
        text = self.text()
        return ChatMessage(self.role, text) if text else None

    def wire(self, beta: bool = False) -> dict[str, Any]:
        base = {"id": self.id, "object": "realtime.item", "type": self.type, "status": self.status}
        if self.type == "function_call":
            return base | {"call_id": self.call_id, "name": self.name, "arguments": self.arguments}
        if self.type == "function_call_output":
            return base | {"call_id": self.call_id, "output": self.output}
        return base | {"role": self.role, "content": [p.wire(beta) for p in self.content]}

    def truncate(self, content_index: int, audio_end_ms: int) -> None:
        if self.type != "message":
            raise RealtimeError(
                "invalid_value",
                f"Only assistant messages can be truncated; item {self.id!r} is a {self.type}.",
                param="item_id",
            )
        if self.role != "assistant":
            raise RealtimeError(
                "invalid_value",
                f"Only assistant messages can be truncated; item {self.id!r} is a {self.role} message.",
                param="item_id",
            )
        if content_index >= len(self.content):
            raise RealtimeError(
                "invalid_value",
                f"Item {self.id!r} has {len(self.content)} content part(s); "
                f"content_index {content_index} does not exist.",
                param="content_index",
            )
        part = self.content[content_index]
        if part.type != "output_audio":
            raise RealtimeError(
                "invalid_value",
                f"Content part {content_index} of item {self.id!r} has no audio to truncate.",
                param="content_index",
            )
        # Rounded to whole milliseconds the client sees, so truncating at the reported length is allowed.
        if audio_end_ms > round(part.audio_ms):
            raise RealtimeError(
                "invalid_value",
                f"audio_end_ms {audio_end_ms} is beyond the audio of item {self.id!r}, which lasts "
                f"{round(part.audio_ms)} ms.",
                param="audio_end_ms",
            )
        part.transcript, part.spans = cut_at(part.transcript or "", part.spans, audio_end_ms)
        part.audio_ms = float(audio_end_ms)


_ASSISTANT_TYPES = {
    "text": "output_text",
    "output_text": "output_text",
    "audio": "output_audio",
    "output_audio": "output_audio",
}
_ROLE_TYPES = {
    "user": {"input_text", "input_audio"},
    "system": {"input_text"},
    "assistant": set(_ASSISTANT_TYPES),
}


def _required(value: str | None, name: str) -> str:
    if value is None:
        raise RealtimeError(
            "missing_required_parameter", f"Missing required parameter: 'item.{name}'.", param=f"item.{name}"
        )
    return value


def _function_item(param: ItemParam) -> Item:
    """A client's `function_call_output` (the answer to a call), or a `function_call` it adds itself."""
    fields = (
        ("call_id", "output") if param.type == "function_call_output" else ("call_id", "name", "arguments")
    )
    values = {name: _required(getattr(param, name), name) for name in fields}
    stray = [name for name in ("role", "content") if getattr(param, name)]
    if stray:
        raise RealtimeError(
            "unknown_parameter",
            f"A {param.type} item has no '{stray[0]}'.",
            param=f"item.{stray[0]}",
        )
    return Item(param.id or new_id("item"), "", [], status="completed", type=param.type, **values)


def item_from_param(param: ItemParam) -> Item:
    """A client-created item: a message (text, or audio whose transcript the session fills in), a function
    call's output, or a function call."""
    if param.type in ("function_call", "function_call_output"):
        return _function_item(param)
    if param.type != "message":
        raise RealtimeError(
            "unsupported_item_type",
            f"Items of type {param.type!r} cannot be created; send a message, function_call or "
            "function_call_output.",
            param="item.type",
        )
    if param.role is None:
        raise RealtimeError(
            "missing_required_parameter", "Missing required parameter: 'item.role'.", param="item.role"
        )
    if not param.content:
        raise RealtimeError(
            "invalid_value", "A message needs at least one content part.", param="item.content"
        )
    parts: list[ContentPart] = []
    for i, c in enumerate(param.content):
        if c.type not in _ROLE_TYPES[param.role]:
            raise RealtimeError(
                "invalid_value",
                f"Content type {c.type!r} is not valid in a {param.role} message (allowed: "
                f"{', '.join(sorted(_ROLE_TYPES[param.role]))}).",
                param=f"item.content.{i}.type",
            )
        kind = _ASSISTANT_TYPES.get(c.type, c.type) if param.role == "assistant" else c.type
        if kind.endswith("_text"):
            if c.text is None:
                raise RealtimeError(
                    "missing_required_parameter",
                    f"Missing required parameter: 'item.content.{i}.text'.",
                    param=f"item.content.{i}.text",
                )
            parts.append(ContentPart(kind, text=c.text))
        else:
            parts.append(ContentPart(kind, transcript=c.transcript))  # audio length: set by the session
    item_id = param.id or new_id("item")
    return Item(item_id, param.role, parts, status="completed")


def _tail(text: str, room: int) -> str:
    """The last `room` characters of `text`, from the start of a word when one begins there."""
    cut = len(text) - room
    space = text.find(" ", cut, cut + 64)
    return text[space + 1 :] if space != -1 and space + 1 < len(text) else text[cut:]


def fit_history(messages: list[ChatMessage], budget_chars: int | None) -> list[ChatMessage]:
    """The newest messages that fit `budget_chars`, in order. The newest one is kept even when it alone is
    over the budget, cut to its last `budget_chars` characters (its most recent words): a 1.7 M-token item
    handed to a 2,048-token model is an error, not an answer."""
    if budget_chars is None:
        return messages
    out: list[ChatMessage] = []
    used = 0
    for message in reversed(messages):
        text = message.content
        if used + len(text) > budget_chars:
            if out or budget_chars <= 0:
                break
            text = _tail(text, budget_chars)
        used += len(text)
        out.append(message if text is message.content else replace(message, content=text))
    out.reverse()
    # A function's output whose call was left out would answer nothing the model can see.
    while out and out[0].role == "tool":
        out.pop(0)
    return out


class ItemStore:
    """Ordered items by id. Bounded: past `max_items` the oldest go first (OpenAI's "truncation: auto"), and
    the items' text stays within `max_bytes` (see `add`)."""

    def __init__(self, max_items: int = 512, max_bytes: int | None = None) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._items: list[Item] = []

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Item]:
        return iter(list(self._items))

    def __contains__(self, item_id: object) -> bool:
        return any(i.id == item_id for i in self._items)

    @property
    def last_id(self) -> str | None:
        return self._items[-1].id if self._items else None

    def get(self, item_id: str, param: str = "item_id") -> Item:
        for item in self._items:
            if item.id == item_id:
                return item
        raise RealtimeError("item_not_found", f"Item with item_id {item_id!r} not found.", param=param)

    def size_bytes(self) -> int:
        return sum(i.size_bytes() for i in self._items)

    def check_room(self, item: Item) -> Item:
        """Refuse an item whose text would take the conversation past `max_bytes`; the session goes on."""
        if self.max_bytes is None:
            return item
        size = item.size_bytes()
        used = self.size_bytes()
        if used + size > self.max_bytes:
            raise RealtimeError(
                "conversation_too_large",
                f"This item holds {size} bytes of text and the conversation {used}; a session keeps at most "
                f"{self.max_bytes} (REALTIME_MAX_CONVERSATION_BYTES). Delete items to make room.",
                param="item",
            )
        return item

    def add(self, item: Item, previous_item_id: str | None = None, *, make_room: bool = False) -> str | None:
        """Insert after `previous_item_id` ("root": first; None: last). Returns the id now before it.

        Past `max_bytes` a client's item is refused (`check_room`); with `make_room` (the session's own
        items: committed audio, responses) the oldest other items are dropped instead."""
        if item.id in self:
            raise RealtimeError(
                "duplicate_item_id", f"Item with id {item.id!r} already exists.", param="item.id"
            )
        if not make_room:
            self.check_room(item)
        if previous_item_id is None:
            index = len(self._items)
        elif previous_item_id == "root":
            index = 0
        else:
            index = self._items.index(self.get(previous_item_id, "previous_item_id")) + 1
        self._items.insert(index, item)
        before = self._items[index - 1].id if index > 0 else None

        def over() -> bool:
            return len(self._items) > self.max_items or (
                self.max_bytes is not None and len(self._items) > 1 and self.size_bytes() > self.max_bytes
            )

        while over():
            self._items.remove(next(i for i in self._items if i is not item))
        return before

    def delete(self, item_id: str) -> Item:
        item = self.get(item_id)
        self._items.remove(item)
        return item

    def messages(self, budget_chars: int | None = None) -> list[ChatMessage]:
        """The history for the engine: the newest messages within `budget_chars` (`fit_history`)."""
        messages: list[ChatMessage] = []
        for item in self._items:
            message = item.message() if item.status != "in_progress" else None
            if message is None:
                continue
            last = messages[-1] if messages else None
            if message.tool_calls and last is not None and last.role == "assistant" and not last.tool_call_id:
                # Calls made in one reply (after its text, or several) are one assistant turn.
                messages[-1] = replace(last, tool_calls=(*last.tool_calls, *message.tool_calls))
            else:
                messages.append(message)
        return fit_history(messages, budget_chars)
