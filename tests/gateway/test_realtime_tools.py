"""Function tools in /v1/realtime: an agent's round trip through the real `openai` SDK clients, GA and beta,
against the embedded engine (SmolLM2 decoding the call under the function's JSON schema) and against the
vLLM-Omni client in front of the engine-server imitation (vLLM's `delta.tool_calls` stream). Every server
event is validated strictly against the SDK's own event unions (tests/gateway/test_realtime_sdk_types.py).

The round trip: session.update with a function and tool_choice naming it, a user text item, response.create
-> the call streamed (`response.output_item.added` function_call, `response.function_call_arguments.delta`
/ `.done`, `response.output_item.done`, `conversation.item.added`, `response.done` with the call as its
output) -> the client's `function_call_output` item and response.create -> a reply. Plus: a cancelled or
cut-short call never joins the conversation, and bad tool definitions are `error` events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from openai.types.chat import ChatCompletionChunk
from pydantic import TypeAdapter

from gateway.engines.base import ChatMessage, ToolCall
from gateway.sessions.realtime.items import ItemStore, item_from_param
from gateway.sessions.realtime.protocol import ItemParam
from tests.gateway.test_realtime_sdk_types import (
    BETA,
    GA,
    WAIT_S,
    beta_client,
    check,
    ga_client,
    needs_beta,
    send,
)
from tests.support import ServerProcess

WEATHER: dict[str, Any] = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "The city"}},
        "required": ["city"],
        "additionalProperties": False,
    },
}
# Decoded under its schema, a call to this function is long (at least 24 strings): a cancel lands in it.
NOTES: dict[str, Any] = {
    "type": "function",
    "name": "take_notes",
    "description": "Write many notes.",
    "parameters": {
        "type": "object",
        "properties": {"notes": {"type": "array", "items": {"type": "string"}, "minItems": 24}},
        "required": ["notes"],
    },
}
QUESTION: dict[str, Any] = {
    "type": "message",
    "role": "user",
    "content": [{"type": "input_text", "text": "What is the weather in Paris?"}],
}
RESULT = {"city": "Paris", "temperature_c": 21, "sky": "sunny"}


async def recv(conn: Any, adapter: TypeAdapter[Any], seen: list[dict[str, Any]]) -> dict[str, Any]:
    return check(adapter, await asyncio.wait_for(conn.recv_bytes(), WAIT_S), seen)


async def until(
    conn: Any, adapter: TypeAdapter[Any], kind: str, seen: list[dict[str, Any]], *, errors: bool = False
) -> dict[str, Any]:
    while True:
        data = await recv(conn, adapter, seen)
        if data["type"] == "error" and not errors:
            raise AssertionError(data)
        if data["type"] == kind:
            return data


def check_call(events: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """The call of one response, checked as streamed; returns its finished item."""
    kinds = [e["type"] for e in events]
    added = next(e for e in events if e["type"] == "response.output_item.added")
    assert added["item"]["type"] == "function_call", added
    assert added["item"]["name"] == name and added["item"]["call_id"], added
    deltas = [e for e in events if e["type"] == "response.function_call_arguments.delta"]
    done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert deltas, kinds
    assert all(d["item_id"] == added["item"]["id"] for d in deltas)
    assert "".join(d["delta"] for d in deltas) == done["arguments"], (deltas, done)
    assert done["call_id"] == added["item"]["call_id"]
    item_done = next(e for e in events if e["type"] == "response.output_item.done")
    assert item_done["item"]["arguments"] == done["arguments"]
    assert kinds.index("response.function_call_arguments.done") < kinds.index("response.output_item.done")
    response = events[-1]["response"]
    assert response["status"] == "completed", response
    assert [o["type"] for o in response["output"]] == ["function_call"], response["output"]
    assert response["output"][0]["arguments"] == done["arguments"]
    # No assistant message: the reply is only the call.
    assert not any(e["type"].startswith("response.content_part") for e in events), kinds
    return item_done["item"]


async def round_trip(conn: Any, adapter: TypeAdapter[Any], beta: bool, speak: bool) -> list[dict[str, Any]]:
    """The agent's loop with get_weather; returns the events of the final reply."""
    seen: list[dict[str, Any]] = []
    await until(conn, adapter, "session.created", seen)
    choice: Any = "get_weather" if beta else {"type": "function", "name": "get_weather"}
    modalities = {"modalities": ["text", "audio"] if speak else ["text"]}
    if not beta:
        modalities = {"output_modalities": ["audio" if speak else "text"]}
    session = {"instructions": "You are a weather assistant.", "tools": [WEATHER], "tool_choice": choice}
    if not beta:
        session["type"] = "realtime"
    await send(conn, {"type": "session.update", "session": session | modalities})
    updated = await until(conn, adapter, "session.updated", seen)
    assert updated["session"]["tools"][0]["name"] == "get_weather"
    assert updated["session"]["tool_choice"] == choice
    await send(conn, {"type": "conversation.item.create", "item": QUESTION})
    await until(conn, adapter, "conversation.item.created" if beta else "conversation.item.done", seen)

    await send(conn, {"type": "response.create"})
    start = len(seen)
    await until(conn, adapter, "response.done", seen)
    call = check_call(seen[start:], "get_weather")
    assert call["status"] == "completed"
    assert isinstance(json.loads(call["arguments"])["city"], str), call  # valid JSON for the schema
    joined = "conversation.item.created" if beta else "conversation.item.added"
    assert any(e["type"] == joined and e["item"]["id"] == call["id"] for e in seen[start:])

    output = {"type": "function_call_output", "call_id": call["call_id"], "output": json.dumps(RESULT)}
    await send(conn, {"type": "conversation.item.create", "item": output})
    created = await until(conn, adapter, joined, seen)
    assert created["item"]["type"] == "function_call_output" and created["item"]["call_id"] == call["call_id"]
    # The agent lets the model answer in words now.
    await send(conn, {"type": "response.create", "response": {"tool_choice": "none"}})
    start = len(seen)
    done = await until(conn, adapter, "response.done", seen)
    assert done["response"]["status"] == "completed", done
    (message,) = done["response"]["output"]
    assert message["type"] == "message" and message["role"] == "assistant"
    reply = message["content"][0]
    assert (reply.get("transcript") or reply.get("text") or "").strip(), message
    return seen[start:]


async def test_ga_agent_round_trip_with_a_named_function_and_a_spoken_answer(gateway: ServerProcess) -> None:
    async with ga_client(gateway).realtime.connect(model="gpt-realtime") as conn:
        final = await round_trip(conn, GA, beta=False, speak=True)
    assert any(e["type"] == "response.output_audio.delta" for e in final)


@needs_beta
async def test_beta_agent_round_trip_with_a_named_function_and_a_text_answer(gateway: ServerProcess) -> None:
    assert BETA is not None
    async with beta_client(gateway).beta.realtime.connect(model="gpt-realtime") as conn:
        final = await round_trip(conn, BETA, beta=True, speak=False)
    assert any(e["type"] == "response.text.delta" for e in final)


async def test_a_cancelled_call_leaves_no_function_call_in_the_conversation(gateway: ServerProcess) -> None:
    seen: list[dict[str, Any]] = []
    async with ga_client(gateway).realtime.connect(model="gpt-realtime") as conn:
        await until(conn, GA, "session.created", seen)
        session = {
            "type": "realtime",
            "output_modalities": ["text"],
            "tools": [NOTES],
            "tool_choice": "required",
        }
        await send(conn, {"type": "session.update", "session": session})
        await until(conn, GA, "session.updated", seen)
        await send(conn, {"type": "conversation.item.create", "item": QUESTION})
        await until(conn, GA, "conversation.item.done", seen)
        await send(conn, {"type": "response.create"})
        delta = await until(conn, GA, "response.function_call_arguments.delta", seen)
        await send(conn, {"type": "response.cancel"})
        start = len(seen)
        done = await until(conn, GA, "response.done", seen)
        assert done["response"]["status"] == "cancelled", done
        (call,) = done["response"]["output"]
        assert call["type"] == "function_call" and call["status"] == "incomplete", call
        assert not _is_json(call["arguments"]), call  # it was cut mid-call
        tail = [e["type"] for e in seen[start:]]
        assert "response.function_call_arguments.done" in tail
        assert "conversation.item.added" not in tail and "conversation.item.done" not in tail, tail
        # The conversation does not hold it: retrieving it fails, the session goes on.
        await send(conn, {"type": "conversation.item.retrieve", "item_id": delta["item_id"]})
        error = await until(conn, GA, "error", seen, errors=True)
        assert error["error"]["code"] == "item_not_found", error


async def test_a_call_cut_by_max_output_tokens_leaves_no_function_call(gateway: ServerProcess) -> None:
    seen: list[dict[str, Any]] = []
    async with ga_client(gateway).realtime.connect(model="gpt-realtime") as conn:
        await until(conn, GA, "session.created", seen)
        session = {"type": "realtime", "output_modalities": ["text"], "tools": [WEATHER, NOTES]}
        await send(conn, {"type": "session.update", "session": session})
        await until(conn, GA, "session.updated", seen)
        await send(conn, {"type": "conversation.item.create", "item": QUESTION})
        await until(conn, GA, "conversation.item.done", seen)
        choice = {"type": "function", "name": "take_notes"}
        await send(
            conn, {"type": "response.create", "response": {"tool_choice": choice, "max_output_tokens": 4}}
        )
        start = len(seen)
        done = await until(conn, GA, "response.done", seen)
    assert done["response"]["status"] == "incomplete", done
    (call,) = done["response"]["output"]
    assert call["type"] == "function_call" and call["status"] == "incomplete", call
    assert not any(e["type"] == "conversation.item.added" for e in seen[start:])


BAD_SESSIONS = [
    ({"tools": [{"type": "function"}]}, "missing_required_parameter", "session.tools.0.name"),
    ({"tools": [WEATHER | {"name": "get weather!"}]}, "invalid_value", "session.tools.0.name"),
    (
        {"tools": [WEATHER | {"parameters": {"type": "string"}}]},
        "invalid_value",
        "session.tools.0.parameters",
    ),
    (
        {"tools": [WEATHER | {"parameters": {"type": "object", "required": ["town"]}}]},
        "invalid_value",
        "session.tools.0.parameters.required",
    ),
    ({"tools": [WEATHER, WEATHER]}, "invalid_value", "session.tools.1.name"),
    ({"tools": [WEATHER | {"strict": True}]}, "unknown_parameter", "session.tools.0.strict"),
    ({"tools": [{"type": "mcp", "server_label": "x"}]}, "unsupported_parameter", "session.tools.0.type"),
    ({"tools": "get_weather"}, "invalid_value", "session.tools"),
    (
        {"tools": [WEATHER], "tool_choice": {"type": "function", "name": "nope"}},
        "invalid_value",
        "session.tool_choice",
    ),
    ({"tools": [WEATHER], "tool_choice": "sometimes"}, "invalid_value", "session.tool_choice"),
    ({"tool_choice": 3}, "invalid_value", "session.tool_choice"),
]


async def test_bad_tool_definitions_are_error_events_and_the_session_goes_on(gateway: ServerProcess) -> None:
    seen: list[dict[str, Any]] = []
    async with ga_client(gateway).realtime.connect(model="gpt-realtime") as conn:
        await until(conn, GA, "session.created", seen)
        for session, code, param in BAD_SESSIONS:
            await send(conn, {"type": "session.update", "event_id": "evt_bad", "session": session})
            error = await until(conn, GA, "error", seen, errors=True)
            assert (error["error"]["code"], error["error"]["param"]) == (code, param), (session, error)
            assert error["error"]["event_id"] == "evt_bad" and error["error"]["message"]
        await send(conn, {"type": "response.create", "response": {"tool_choice": "required"}})
        error = await until(conn, GA, "error", seen, errors=True)
        assert error["error"]["param"] == "response.tool_choice", error
        # Nothing was applied; a good update still works.
        await send(conn, {"type": "session.update", "session": {"type": "realtime", "tools": [WEATHER]}})
        updated = await until(conn, GA, "session.updated", seen)
    assert updated["session"]["tools"] == [WEATHER]
    assert updated["session"]["tool_choice"] == "auto"


async def test_livekit_agents_realtime_model_round_trip(gateway: ServerProcess) -> None:
    """LiveKit Agents' OpenAI realtime model (livekit-plugins-openai 1.8.9), driven as its AgentSession
    drives it, without a room: tools, a user message, a reply that is a call, the call's output, a reply.
    LiveKit sends `tool_choice` before its tools; every event it receives is validated strictly too."""
    aiohttp = pytest.importorskip("aiohttp")
    agents_llm = pytest.importorskip("livekit.agents.llm")
    lk_openai = pytest.importorskip("livekit.plugins.openai")

    @agents_llm.function_tool
    async def get_weather(city: str) -> str:
        """Get the current weather in a city."""
        return json.dumps(RESULT | {"city": city})

    seen: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as http:
        model = lk_openai.realtime.RealtimeModel(
            base_url=gateway.url + "/v1",
            api_key="sk-test",
            modalities=["text"],
            tool_choice="required",
            turn_detection=None,
            http_session=http,
        )
        session = model.session()
        errors: list[Any] = []  # the model's error events, and events that do not match the SDK's types

        def observe(event: dict[str, Any]) -> None:
            try:  # an emitter callback: what it raises would only be logged
                check(GA, json.dumps(event).encode(), seen)
            except AssertionError as exc:
                errors.append(exc)

        session.on("error", errors.append)
        session.on("openai_server_event_received", observe)
        try:
            await session.update_instructions("You are a weather assistant.")
            await session.update_tools([get_weather])
            ctx = session.chat_ctx.copy()
            ctx.add_message(role="user", content="What is the weather in Paris?")
            await session.update_chat_ctx(ctx)

            async def reply(tool_choice: str) -> tuple[list[Any], str]:
                generation = await asyncio.wait_for(session.generate_reply(tool_choice=tool_choice), WAIT_S)
                calls = [c async for c in generation.function_stream]
                text = ""
                async for message in generation.message_stream:
                    text += "".join([t async for t in message.text_stream])
                return calls, text

            calls, _ = await asyncio.wait_for(reply("required"), WAIT_S)
            (call,) = calls
            assert call.name == "get_weather" and isinstance(json.loads(call.arguments)["city"], str), call
            result = await get_weather(json.loads(call.arguments)["city"])
            ctx = session.chat_ctx.copy()
            ctx.items.append(
                agents_llm.FunctionCallOutput(
                    call_id=call.call_id, name=call.name, output=result, is_error=False
                )
            )
            await session.update_chat_ctx(ctx)
            calls, text = await asyncio.wait_for(reply("none"), WAIT_S)
        finally:
            await session.aclose()
            await model.aclose()
    assert not calls and text.strip(), (calls, text)
    assert not errors, errors
    assert "response.function_call_arguments.done" in [e["type"] for e in seen]
    kinds = [i.type for i in session.chat_ctx.items]
    assert kinds == ["message", "function_call", "function_call_output", "message"], kinds


def test_the_next_reply_reads_the_call_and_its_result() -> None:
    """What the model is given after a round trip: the call on the assistant's turn, then the result."""
    store = ItemStore()
    for param in (
        ItemParam(type="message", role="user", content=QUESTION["content"]),
        ItemParam(type="function_call", call_id="call_1", name="get_weather", arguments='{"city": "Paris"}'),
        ItemParam(type="function_call_output", call_id="call_1", output=json.dumps(RESULT)),
    ):
        store.add(item_from_param(param))
    assert store.messages() == [
        ChatMessage("user", "What is the weather in Paris?"),
        ChatMessage("assistant", "", (ToolCall("call_1", "get_weather", '{"city": "Paris"}'),)),
        ChatMessage("tool", json.dumps(RESULT), tool_call_id="call_1"),
    ]


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


# -- the Omni path: the vLLM-Omni client in front of the engine-server imitation -----------------------------


@pytest.fixture(scope="module")
def omni_pair() -> Iterator[tuple[ServerProcess, ServerProcess]]:
    engine = ServerProcess("engine-server")
    gateway = None
    try:
        engine.wait_ready(timeout=180)
        gateway = ServerProcess(
            "serve",
            env={
                "VOICE_ENGINE": "vllm-omni",
                "OMNI_SERVICE_URL": engine.url,
                "TTS_SERVICE_URL": engine.url,
                "BACKEND_POLL_INTERVAL": "1",
            },
        )
        gateway.wait_ready(timeout=120)
        yield engine, gateway
    finally:
        if gateway is not None:
            gateway.stop()
        engine.stop()


def test_the_imitation_streams_a_named_call_as_vllm_does(
    omni_pair: tuple[ServerProcess, ServerProcess],
) -> None:
    engine, _ = omni_pair
    body = {
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "modalities": ["text"],
        "stream": True,
        "max_tokens": 40,
        "tools": [{"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    }
    chunks: list[dict[str, Any]] = []
    with httpx.stream("POST", engine.url + "/v1/chat/completions", json=body, timeout=WAIT_S) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunk = json.loads(line[6:])
                ChatCompletionChunk.model_validate(chunk, strict=False)
                chunks.append(chunk)
    calls = [tc for c in chunks if c["choices"] for tc in c["choices"][0]["delta"].get("tool_calls") or []]
    first, rest = calls[0], calls[1:]
    assert first["id"].startswith("chatcmpl-tool-") and first["type"] == "function" and first["index"] == 0
    assert first["function"]["name"] == "get_weather"
    assert all(set(tc) == {"index", "function"} and set(tc["function"]) == {"arguments"} for tc in rest), rest
    arguments = first["function"]["arguments"] + "".join(tc["function"]["arguments"] for tc in rest)
    assert isinstance(json.loads(arguments)["city"], str)
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "stop" and not any(finishes[:-1])  # named tool_choice: "stop", as vLLM


def test_the_imitation_refuses_a_choice_without_its_tool(
    omni_pair: tuple[ServerProcess, ServerProcess],
) -> None:
    engine, _ = omni_pair
    body = {
        "messages": [{"role": "user", "content": "Hi"}],
        "tools": [{"type": "function", "function": {"name": "get_weather"}}],
        "tool_choice": {"type": "function", "function": {"name": "get_time"}},
    }
    r = httpx.post(engine.url + "/v1/chat/completions", json=body, timeout=WAIT_S)
    assert r.status_code == 400, r.text
    assert "does not match any of the specified `tools`" in r.text


async def test_ga_agent_round_trip_through_the_omni_client(
    omni_pair: tuple[ServerProcess, ServerProcess],
) -> None:
    _, gateway = omni_pair
    async with ga_client(gateway).realtime.connect(model="gpt-realtime") as conn:
        final = await round_trip(conn, GA, beta=False, speak=False)
    assert any(e["type"] == "response.output_text.delta" for e in final)


@needs_beta
async def test_beta_agent_round_trip_through_the_omni_client(
    omni_pair: tuple[ServerProcess, ServerProcess],
) -> None:
    assert BETA is not None
    _, gateway = omni_pair
    async with beta_client(gateway).beta.realtime.connect(model="gpt-realtime") as conn:
        final = await round_trip(conn, BETA, beta=True, speak=True)
    assert any(e["type"] == "response.audio.delta" for e in final)
