"""The embedded engine's prompt: a conversation turned into messages a small chat model can follow.

Measured on SmolLM2-135M-Instruct with bench/quality_bench.py's 8-turn scripts (issue 21):
- The gateway's default instructions ("... Your answers are spoken aloud ...") made it play "a language
  learning assistant"; after a question about France it answered in French. A plain assistant prompt
  with the reply language named keeps it in the user's language.
- It copies its own earlier replies ("L'auction, the capital of France." to every later question), so by
  default no earlier exchange goes in verbatim (EMBEDDED_LLM_RECENT_TURNS), and a repeat penalty breaks
  loops within a reply.
- It cannot find a name six turns back, but reads a short note just before the question: the facts the
  user stated (gateway/text/facts.py), in the user's own voice.
The previous design (all turns verbatim, the given instructions, greedy decoding) stays selectable as
`plain` so the benchmark can compare the two in one run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from gateway.engines.base import ChatMessage
from gateway.engines.languages import language_name
from gateway.text.facts import extract, split_earlier

PromptStyle = Literal["memory", "plain"]

# The gateway's default instructions, written for large models (voice config and the old engine default).
GATEWAY_DEFAULT = (
    "You are a friendly voice assistant. Your answers are spoken aloud, so reply in one or two short, "
    "plain sentences without lists or markup."
)
# "who speaks English" as well as "answer in English": one fewer reply in Italian or Spanish to a question
# about Italy or Spain (9 of 10 in English instead of 8 on the benchmark's factual questions).
ENGINE_SYSTEM = (
    "You are a helpful assistant who speaks {language}. Answer in {language}, in one or two short, plain "
    "sentences."
)
ROLE_TOKENS = 8  # the chat template's markers around each message


@dataclass(frozen=True)
class PromptDesign:
    style: PromptStyle = "memory"
    recent_exchanges: int = 0  # earlier user/assistant pairs sent verbatim (memory style; see llm.py)


def build_messages(
    history: list[ChatMessage],
    budget: int,
    count_tokens: Callable[[str], int],
    language: str = "en",
    design: PromptDesign = PromptDesign(),
) -> list[dict[str, str]]:
    """Messages for llama.cpp's chat formatter within `budget` tokens; the system message and the
    newest message always go in."""
    system, turns = _split_system(history)
    if design.style == "plain":
        return _fit(
            [{"role": "system", "content": system or GATEWAY_DEFAULT}, *_dicts(turns)], budget, count_tokens
        )

    instructions, earlier = split_earlier(system)
    if not instructions.strip() or instructions.strip() == GATEWAY_DEFAULT:
        # Instructions the client wrote are theirs to keep; the gateway's generic default is swapped for
        # one this model follows.
        # `language` is a code the responder's check_language accepted, so it has a name.
        instructions = ENGINE_SYSTEM.format(language=language_name(language))
    messages = _dicts(turns)
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    if not users:
        return _fit([{"role": "system", "content": instructions}, *messages], budget, count_tokens)
    # The turn being answered starts at the newest user message; tool calls and results may follow it.
    last = users[-1]
    said = [*earlier, *(messages[i]["content"] for i in users[:-1])]
    current = messages[last]["content"]
    note = extract(said).note(current)
    if note:
        messages[last] = {"role": "user", "content": f"({note})\n{current}"}
    keep = design.recent_exchanges
    start = last if keep <= 0 else users[-keep - 1] if len(users) > keep else 0
    return _fit([{"role": "system", "content": instructions}, *messages[start:]], budget, count_tokens)


def _split_system(history: list[ChatMessage]) -> tuple[str, list[ChatMessage]]:
    if history and history[0].role == "system":
        return history[0].content, history[1:]
    return "", history


def _dicts(turns: list[ChatMessage]) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in turns]


def _fit(
    messages: list[dict[str, str]], budget: int, count_tokens: Callable[[str], int]
) -> list[dict[str, str]]:
    """Drop the oldest messages after the system one until the prompt fits (the newest always stays)."""
    sizes = [count_tokens(m["content"]) + ROLE_TOKENS for m in messages]
    total = sum(sizes)
    while len(messages) > 2 and total > budget:
        total -= sizes.pop(1)
        del messages[1]
    return messages
