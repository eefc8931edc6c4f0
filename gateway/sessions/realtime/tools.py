"""Function tools of a Realtime session: `tools` and `tool_choice` validated, rendered back per dialect, and
the responder the conversation core runs through, which adds them to each request and hands the model's
calls to the session.

Shapes as openai-python 3.63 types them: a tool is `{"type": "function", "name", "description",
"parameters"}` in both dialects (types/realtime/realtime_function_tool.py, types/beta/realtime/session.py);
`tool_choice` is "auto" | "none" | "required" | `{"type": "function", "name"}` in GA
(types/responses/tool_choice_function.py) and a string in beta, where a function is named by its name.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from gateway.engines.base import (
    ConversationRequest,
    ModelInfo,
    ModelState,
    NamedTool,
    Responder,
    ResponseEvent,
    Tool,
    ToolChoice,
)
from gateway.sessions.realtime.protocol import RealtimeError

MAX_TOOLS = 128  # OpenAI's limit on a request's tools
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_TOOL_KEYS = frozenset(("type", "name", "description", "parameters"))
_MODES = ("auto", "none", "required")


@dataclass(frozen=True)
class ToolConfig:
    tools: tuple[Tool, ...] = ()
    choice: ToolChoice = "auto"

    @property
    def active(self) -> bool:
        """The model may call a function in this reply."""
        return bool(self.tools) and self.choice != "none"


def _err(param: str, message: str, code: str = "invalid_value") -> RealtimeError:
    return RealtimeError(code, message, param=param)


def _check_schema(schema: Any, param: str) -> dict[str, Any]:
    """A function's `parameters`: a JSON schema object describing an object, as OpenAI requires."""
    if not isinstance(schema, dict):
        raise _err(param, "parameters must be a JSON schema object.")
    if schema.get("type", "object") != "object":
        raise _err(param, f"parameters must describe an object (type 'object'), not {schema.get('type')!r}.")
    properties = schema.get("properties", {})
    if not isinstance(properties, dict) or not all(isinstance(v, dict) for v in properties.values()):
        raise _err(f"{param}.properties", "properties must map each name to a JSON schema object.")
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise _err(f"{param}.required", "required must be a list of property names.")
    missing = [r for r in required if r not in properties]
    if missing:
        raise _err(f"{param}.required", f"required names properties that are not defined: {missing}.")
    return schema


def parse_tools(value: Any, param: str) -> tuple[Tool, ...]:
    if not isinstance(value, list):
        raise _err(param, "tools must be a list of function tools.")
    if len(value) > MAX_TOOLS:
        raise _err(param, f"At most {MAX_TOOLS} tools are allowed; got {len(value)}.")
    tools: list[Tool] = []
    for i, raw in enumerate(value):
        where = f"{param}.{i}"
        if not isinstance(raw, dict):
            raise _err(where, "A tool must be an object.")
        kind = raw.get("type", "function")
        if kind != "function":
            raise _err(
                f"{where}.type",
                f"Tool type {kind!r} is not supported here; only 'function' tools are.",
                "unsupported_parameter",
            )
        extra = sorted(set(raw) - _TOOL_KEYS)
        if extra:
            raise _err(
                f"{where}.{extra[0]}", f"Unknown parameter: '{where}.{extra[0]}'.", "unknown_parameter"
            )
        name = raw.get("name")
        if name is None:
            raise _err(
                f"{where}.name", f"Missing required parameter: '{where}.name'.", "missing_required_parameter"
            )
        if not isinstance(name, str) or not _NAME.match(name):
            raise _err(f"{where}.name", "A function name is 1 to 64 letters, digits, '_' or '-'.")
        if any(t.name == name for t in tools):
            raise _err(f"{where}.name", f"Duplicate function name {name!r}.")
        description = raw.get("description") or ""
        if not isinstance(description, str) or len(description) > 16_000:
            raise _err(f"{where}.description", "description must be a string of at most 16000 characters.")
        schema = raw.get("parameters")
        parameters = _check_schema(schema, f"{where}.parameters") if schema is not None else {}
        tools.append(Tool(name, description, parameters))
    return tuple(tools)


def parse_choice(value: Any, tools: tuple[Tool, ...], param: str, *, strict: bool) -> ToolChoice:
    """`tool_choice` against the tools it will apply to. Not `strict` (a session's): with no tools yet, any
    choice is kept for the tools to come, as clients send it first (LiveKit Agents 1.8.9 sends
    `tool_choice` in its first session.update and the tools in a later one)."""
    if isinstance(value, dict):
        if (
            value.get("type") != "function"
            or not isinstance(value.get("name"), str)
            or set(value)
            - {
                "type",
                "name",
            }
        ):
            raise _err(param, "tool_choice names a function as {'type': 'function', 'name': NAME}.")
        name = value["name"]
    elif isinstance(value, str):
        if value in _MODES:
            if value == "required" and not tools and strict:
                raise _err(param, "tool_choice 'required' needs at least one tool.")
            return value  # type: ignore[return-value]
        name = value  # the beta dialect names a function by a plain string
    else:
        raise _err(param, "tool_choice must be 'auto', 'none', 'required' or a function.")
    if (tools or strict) and not any(t.name == name for t in tools):
        known = ", ".join(t.name for t in tools) or "none defined"
        raise _err(param, f"tool_choice names function {name!r}, which is not among the tools ({known}).")
    return NamedTool(name)


def update(
    config: ToolConfig, tools: Any, choice: Any, where: str, *, has_tools: bool, has_choice: bool
) -> ToolConfig:
    """`config` with new `tools` and/or `tool_choice` (each only when given), checked together. A
    response's (`where` "response") must be usable as it stands; a session's may wait for its tools."""
    strict = where == "response"
    new_tools = parse_tools(tools, f"{where}.tools") if has_tools else config.tools
    if has_choice:
        return ToolConfig(new_tools, parse_choice(choice, new_tools, f"{where}.tool_choice", strict=strict))
    if not new_tools and not strict:
        return ToolConfig(new_tools, config.choice)
    current = config.choice
    if isinstance(current, NamedTool) and not any(t.name == current.name for t in new_tools):
        raise _err(
            f"{where}.tools", f"tool_choice names {current.name!r}, which these tools no longer define."
        )
    if current == "required" and not new_tools and strict:
        raise _err(f"{where}.tools", "tool_choice is 'required': the tools cannot be empty.")
    return ToolConfig(new_tools, current)


def render_tools(tools: tuple[Tool, ...]) -> list[dict[str, Any]]:
    return [
        {"type": "function", "name": t.name, "description": t.description, "parameters": t.parameters}
        for t in tools
    ]


def render_choice(choice: ToolChoice, beta: bool) -> Any:
    if isinstance(choice, NamedTool):
        return choice.name if beta else {"type": "function", "name": choice.name}
    return choice


class ToolingResponder:
    """The engine's responder as the session's core sees it: each request carries the tools of the
    response being made, and the model's calls go to the session (`on_call`), which streams them as
    `function_call` items; text, audio and usage pass on to the voice pipeline unchanged."""

    def __init__(
        self,
        inner: Responder,
        tools: Callable[[], ToolConfig],
        on_call: Callable[[ResponseEvent], Awaitable[None]],
    ) -> None:
        self._inner = inner
        self._tools = tools
        self._on_call = on_call
        self.name = inner.name
        self.accepts_audio = inner.accepts_audio

    @property
    def produces_audio(self) -> bool:
        return self._inner.produces_audio

    @property
    def state(self) -> ModelState:
        return self._inner.state

    async def start(self) -> None:
        await self._inner.start()

    async def aclose(self) -> None:
        pass  # the engine set owns the responder; a session only borrows it

    def models(self) -> Sequence[ModelInfo]:
        return self._inner.models()

    def languages(self) -> Sequence[str]:
        return self._inner.languages()

    def check_language(self, language: str | None) -> str:
        return self._inner.check_language(language)

    async def respond(self, request: ConversationRequest) -> AsyncGenerator[ResponseEvent, None]:
        config = self._tools()
        if config.tools:
            request = replace(request, tools=config.tools, tool_choice=config.choice)
        stream = self._inner.respond(request)
        try:
            async for event in stream:
                if event.kind == "tool_call":
                    await self._on_call(event)
                else:
                    yield event
        finally:
            await stream.aclose()
