"""Tool calls on the embedded model (SmolLM2-135M through llama.cpp), by constrained decoding.

A 135M model does not decide reliably *whether* to call a function, but it can fill in arguments when its
decoding is held to the function's JSON schema. So:

- `tool_choice` naming a function, or "required" with one tool: the reply is a call to it; the arguments
  are decoded under a llama.cpp grammar built from the function's `parameters` schema, so they are always
  valid JSON for that schema (unless `max_tokens` cuts them short), and they stream as they are decoded.
- "required" with several tools: the grammar allows `{"name": <one of them>, "arguments": <its schema>}`;
  the call is emitted once decoded (the name is known only at the end).
- "auto" and "none": text only. The model is not asked to choose a call; a client that needs a call says
  which (or "required").

Earlier calls and their results are written into the prompt as plain text, which the model can read.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from collections.abc import Iterator
from typing import Any

from gateway.engines.base import ChatMessage, NamedTool, ResponseEvent, Tool, ToolChoice

log = logging.getLogger(__name__)

# A schema the grammar converter cannot handle still gets arguments that are a JSON object.
_ANY_OBJECT: dict[str, Any] = {"type": "object"}


def forced_tools(tools: tuple[Tool, ...], choice: ToolChoice) -> tuple[Tool, ...]:
    """The tools one of which the reply must call; empty when the reply is text."""
    if isinstance(choice, NamedTool):
        return tuple(t for t in tools if t.name == choice.name)[:1]
    return tools if choice == "required" else ()


def plain_history(history: list[ChatMessage]) -> list[ChatMessage]:
    """Calls and results as text the chat template renders (it knows no tool roles)."""
    out: list[ChatMessage] = []
    for m in history:
        if m.role == "tool":
            out.append(ChatMessage("system", f"The function returned: {m.content}"))
        elif m.tool_calls:
            calls = "; ".join(f"called {c.name}({c.arguments})" for c in m.tool_calls)
            out.append(ChatMessage("assistant", f"{m.content} [{calls}]".strip()))
        else:
            out.append(m)
    return out


def _schema(tools: tuple[Tool, ...]) -> dict[str, Any]:
    if len(tools) == 1:
        return tools[0].parameters or _ANY_OBJECT
    return {
        "anyOf": [
            {
                "type": "object",
                "properties": {"name": {"const": t.name}, "arguments": t.parameters or _ANY_OBJECT},
                "required": ["name", "arguments"],
            }
            for t in tools
        ]
    }


def _grammar(schema: dict[str, Any]) -> Any:
    from llama_cpp import LlamaGrammar

    try:
        return LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
    except Exception:  # the converter asserts on schema features it lacks
        log.warning("tool schema not expressible as a llama.cpp grammar; arguments held to a JSON object")
        return LlamaGrammar.from_json_schema(json.dumps(_ANY_OBJECT), verbose=False)


def _instruction(tools: tuple[Tool, ...]) -> ChatMessage:
    described = "; ".join(f"{t.name}: {t.description}" if t.description else t.name for t in tools)
    if len(tools) == 1:
        text = f"Call the function {described}. Write only its arguments as JSON."
    else:
        text = f"Call one of these functions ({described}). Write only JSON with its name and arguments."
    return ChatMessage("system", text)


def call_events(
    llm: Any,
    messages: list[dict[str, str]],
    tools: tuple[Tool, ...],
    max_tokens: int,
    temperature: float,
    stop: threading.Event,
) -> Iterator[ResponseEvent]:
    """Blocking: decode one call to one of `tools` under their grammar, as "tool_call" events."""
    hint = _instruction(tools)
    prompt = [*messages, {"role": hint.role, "content": hint.content}]
    stream = llm.create_chat_completion(
        prompt,
        max_tokens=max_tokens,
        temperature=temperature,
        stream=True,
        grammar=_grammar(_schema(tools)),
    )
    call_id = "call_" + secrets.token_hex(12)
    single = len(tools) == 1
    if single:
        yield ResponseEvent(kind="tool_call", call_id=call_id, name=tools[0].name)
    written = ""
    try:
        for chunk in stream:
            if stop.is_set():
                return
            delta = chunk["choices"][0]["delta"].get("content")
            if not delta:
                continue
            written += delta
            if single:
                yield ResponseEvent(kind="tool_call", call_id=call_id, text=delta)
    finally:
        stream.close()
    if not single:
        try:
            decoded = json.loads(written)
        except ValueError:
            return  # cut short by max_tokens: no call to report
        yield ResponseEvent(kind="tool_call", call_id=call_id, name=str(decoded["name"]))
        yield ResponseEvent(kind="tool_call", call_id=call_id, text=json.dumps(decoded["arguments"]))
