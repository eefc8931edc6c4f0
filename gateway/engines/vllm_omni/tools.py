"""Tools on the Omni path: OpenAI chat `tools` / `tool_choice` for vLLM, and its streamed `tool_calls`.

vLLM-Omni 0.30.0 serving_chat.py streams a call as `delta.tool_calls`: the first delta of a call carries
`id`, `type: "function"`, `index` and `function.name` (and may carry the first `function.arguments`), the
following ones only `index` and more `function.arguments`. A named `tool_choice` (and "required") is decoded
under structured output, so its arguments are valid JSON; "auto" needs the server started with
`--enable-auto-tool-choice --tool-call-parser hermes` (Qwen3's format), and any tool_choice but "none"
needs the parser (serving_chat.py refuses it otherwise).
"""

from __future__ import annotations

from typing import Any

from gateway.engines.base import ChatMessage, NamedTool, ResponseEvent, Tool, ToolChoice
from gateway.engines.vllm_omni.protocol import ProtocolError


def request_fields(tools: tuple[Tool, ...], choice: ToolChoice) -> dict[str, Any]:
    """The body keys for a request's tools (none when it has none: vLLM refuses an empty `tools`)."""
    if not tools:
        return {}
    return {
        "tools": [
            {
                "type": "function",
                "function": {"name": t.name, "description": t.description, "parameters": t.parameters or {}},
            }
            for t in tools
        ],
        "tool_choice": {"type": "function", "function": {"name": choice.name}}
        if isinstance(choice, NamedTool)
        else choice,
    }


def message(m: ChatMessage) -> dict[str, Any]:
    """A prompt message in OpenAI's chat shape, with an assistant's calls or a tool's result."""
    if m.role == "tool":
        return {"role": "tool", "tool_call_id": m.tool_call_id or "", "content": m.content}
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in m.tool_calls
        ]
    return out


class ToolCallReader:
    """`delta.tool_calls` of a stream -> "tool_call" events, one call id per `index`."""

    def __init__(self) -> None:
        self._ids: dict[int, str] = {}

    def read(self, event: dict[str, Any]) -> list[ResponseEvent]:
        choices = event.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return []
        delta = choices[0].get("delta")
        calls = delta.get("tool_calls") if isinstance(delta, dict) else None
        if not calls:
            return []
        if not isinstance(calls, list):
            raise ProtocolError("delta.tool_calls is not a list")
        out: list[ResponseEvent] = []
        for call in calls:
            if not isinstance(call, dict) or not isinstance(call.get("index"), int):
                raise ProtocolError("a tool call delta has no integer `index`")
            function = call.get("function") or {}
            if not isinstance(function, dict):
                raise ProtocolError("a tool call delta's `function` is not an object")
            arguments = function.get("arguments") or ""
            index = call["index"]
            if index not in self._ids:
                name = function.get("name")
                if not isinstance(call.get("id"), str) or not isinstance(name, str):
                    raise ProtocolError("the first delta of a tool call lacks its `id` or `function.name`")
                self._ids[index] = call["id"]
                out.append(ResponseEvent(kind="tool_call", call_id=call["id"], name=name, text=arguments))
            elif arguments:
                out.append(ResponseEvent(kind="tool_call", call_id=self._ids[index], text=arguments))
        return out
