"""Function tools against the REAL vLLM-Omni 0.30.0 Qwen3-Omni server (dummy weights, CPU), started with the
tool flags the operator renders (`--enable-auto-tool-choice --tool-call-parser hermes`).

Random weights write random text, so these tests assert protocol: the server accepts the operator's flags and
a request with `tools`; with `tool_choice` naming a function, structured output holds the arguments to the
function's schema, so they are JSON whatever the weights; the stream has the shapes the engine-server
imitation (gateway/engine_server/chat.py) copies; and a realtime session through the gateway streams the
call as a `function_call` item. The package's real servers serve it (the Omni server with the operator's tool
flags, tests/real_vllm_omni_server.py).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from voice_operator.plan import OMNI_TOOL_FLAGS

from tests.gateway.test_realtime_sdk_types import GA, ga_client
from tests.gateway.test_realtime_tools import QUESTION, WEATHER, check_call, until
from tests.real_vllm_omni.conftest import RealServers
from tests.real_vllm_omni_server import RealVllmOmni
from tests.support import ServerProcess

WAIT_S = 300  # random weights on 2 shared cores: a few dozen tokens can take a minute


@pytest.fixture(scope="module")
def omni(real_servers: RealServers) -> RealVllmOmni:
    """The package's real Omni server, started with the operator's tool flags (ServerSpec.flags)."""
    assert set(OMNI_TOOL_FLAGS) <= set(real_servers.omni.spec.flags)
    return real_servers.omni


def _body(omni: RealVllmOmni) -> dict[str, Any]:
    return {
        "model": omni.model,
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "modalities": ["text"],
        "stream": True,
        "max_tokens": 48,
        "tools": [{"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    }


def test_a_named_call_streams_in_the_shapes_the_imitation_copies(omni: RealVllmOmni) -> None:
    chunks: list[dict[str, Any]] = []
    with httpx.stream("POST", omni.url + "/v1/chat/completions", json=_body(omni), timeout=WAIT_S) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(json.loads(line[6:]))
    calls = [tc for c in chunks if c["choices"] for tc in c["choices"][0]["delta"].get("tool_calls") or []]
    assert calls, chunks
    first, rest = calls[0], calls[1:]
    assert set(first) == {"id", "type", "index", "function"} and first["type"] == "function", first
    assert first["id"].startswith("chatcmpl-tool-") and first["index"] == 0
    assert first["function"]["name"] == "get_weather"
    assert all(set(tc) == {"index", "function"} and set(tc["function"]) == {"arguments"} for tc in rest), rest
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] in ("stop", "length"), finishes
    if finishes[-1] == "stop":  # not cut by max_tokens: structured output made the arguments whole JSON
        arguments = first["function"]["arguments"] + "".join(tc["function"]["arguments"] for tc in rest)
        assert isinstance(json.loads(arguments), dict), arguments


async def test_a_realtime_session_streams_the_real_models_call(real_gateway: ServerProcess) -> None:
    gateway = real_gateway  # the package's gateway: both real servers, the reference voice registered
    try:
        seen: list[dict[str, Any]] = []
        async with ga_client(gateway).realtime.connect(model="gpt-realtime") as conn:
            await until(conn, GA, "session.created", seen)
            session = {
                "type": "realtime",
                "output_modalities": ["text"],
                "tools": [WEATHER],
                "tool_choice": {"type": "function", "name": "get_weather"},
                "max_output_tokens": 48,
            }
            await conn.send({"type": "session.update", "session": session})
            await until(conn, GA, "session.updated", seen)
            await conn.send({"type": "conversation.item.create", "item": QUESTION})
            await until(conn, GA, "conversation.item.done", seen)
            await conn.send({"type": "response.create"})
            start = len(seen)
            done = await until(conn, GA, "response.done", seen)
    except BaseException:
        print(gateway.log()[-20_000:])  # pytest shows it with the failure
        raise
    if done["response"]["status"] == "incomplete":  # random weights ran into the token limit mid-call
        (call,) = done["response"]["output"]
        assert call["type"] == "function_call" and call["status"] == "incomplete", call
        return
    item = check_call(seen[start:], "get_weather")
    assert isinstance(json.loads(item["arguments"]), dict), item
