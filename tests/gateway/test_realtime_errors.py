"""WS /v1/realtime with a raw WebSocket client: every malformed event gets an `error` naming it (its
`event_id`, the parameter at fault) and the session goes on; the beta dialect for clients that ask for it."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
import websockets

from tests.support import ServerProcess

WAIT_S = 60


async def recv(ws: websockets.ClientConnection) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), WAIT_S))


async def until(ws: websockets.ClientConnection, kind: str, item_id: str | None = None) -> dict[str, Any]:
    while True:
        event = await recv(ws)
        if event["type"] == kind and (item_id is None or event["item"]["id"] == item_id):
            return event
        assert event["type"] != "error", event


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


MISSING = "item_does_not_exist"

# (event as sent, expected error code, expected param)
CASES: list[tuple[Any, str, str | None]] = [
    ("this is not json", "invalid_json", None),
    ({"type": "response.explode"}, "invalid_event_type", "type"),
    ({"type": "input_audio_buffer.append"}, "missing_required_parameter", "audio"),
    ({"type": "input_audio_buffer.append", "audio": "@@not base64@@"}, "invalid_value", "audio"),
    ({"type": "input_audio_buffer.append", "audio": b64(b"\x00\x01\x02")}, "invalid_value", "audio"),
    ({"type": "input_audio_buffer.commit"}, "input_audio_buffer_commit_empty", None),
    ({"type": "input_audio_buffer.commit", "force": True}, "unknown_parameter", "force"),
    ({"type": "response.cancel"}, "response_cancel_not_active", None),
    ({"type": "response.cancel", "response_id": "resp_nope"}, "response_cancel_not_active", "response_id"),
    ({"type": "conversation.item.delete", "item_id": MISSING}, "item_not_found", "item_id"),
    ({"type": "conversation.item.retrieve", "item_id": MISSING}, "item_not_found", "item_id"),
    (
        {"type": "conversation.item.truncate", "item_id": MISSING, "content_index": 0, "audio_end_ms": 10},
        "item_not_found",
        "item_id",
    ),
    (
        {"type": "conversation.item.truncate", "item_id": "x", "content_index": 0, "audio_end_ms": "soon"},
        "invalid_value",
        "audio_end_ms",
    ),
    ({"type": "session.update", "session": {"voise": "alloy"}}, "unknown_parameter", "session.voise"),
    (
        {"type": "session.update", "session": {"audio": {"input": {"turn_detection": {"threshold": 7}}}}},
        "invalid_value",
        "session.audio.input.turn_detection.threshold",
    ),
    ({"type": "session.update", "session": {"type": "transcription"}}, "invalid_value", "session.type"),
    (
        {"type": "session.update", "session": {"audio": {"output": {"voice": "no-such-voice"}}}},
        "unknown_voice",
        "session",
    ),
    (
        {
            "type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": [{"type": "output_text", "text": "x"}]},
        },
        "invalid_value",
        "item.content.0.type",
    ),
    (
        {
            "type": "conversation.item.create",
            "item": {"type": "function_call", "name": "f", "arguments": "{}"},
        },
        "missing_required_parameter",  # a function_call item is supported: its call_id is not optional
        "item.call_id",
    ),
    (
        {
            "type": "conversation.item.create",
            "item": {"type": "item_reference", "id": "item_1"},
        },
        "unsupported_item_type",
        "item.type",
    ),
    (
        {
            "type": "conversation.item.create",
            "previous_item_id": MISSING,
            "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "x"}]},
        },
        "item_not_found",
        "previous_item_id",
    ),
    (
        {"type": "response.create", "response": {"conversation": "conv_elsewhere"}},
        "unsupported_parameter",
        "response.conversation",
    ),
    (
        {"type": "response.create", "response": {"input": [{"type": "item_reference", "id": MISSING}]}},
        "item_not_found",
        "response.input.0.id",
    ),
    (
        {"type": "response.create", "response": {"temperature": "hot"}},
        "invalid_value",
        "response.temperature",
    ),
    ({"type": "output_audio_buffer.clear"}, "unsupported_event", "type"),
]


async def test_every_malformed_event_is_named_and_the_session_goes_on(gateway: ServerProcess) -> None:
    async with websockets.connect(f"{gateway.ws_url}/v1/realtime?model=gpt-realtime", max_size=None) as ws:
        created = await recv(ws)
        assert created["type"] == "session.created" and created["session"]["type"] == "realtime"
        for n, (event, code, param) in enumerate(CASES):
            event_id = f"evt_case_{n}"
            if isinstance(event, dict):
                await ws.send(json.dumps({**event, "event_id": event_id}))
            else:
                await ws.send(event)
            err = await recv(ws)
            assert err["type"] == "error", (event, err)
            detail = err["error"]
            assert (detail["code"], detail["param"]) == (code, param), (event, detail)
            assert detail["event_id"] == (event_id if isinstance(event, dict) else None), (event, detail)
            assert detail["message"] and detail["type"] == "invalid_request_error"
            assert (err["code"], err["message"]) == (detail["code"], detail["message"])  # gateway convention
        # Still a working session: a user item, then an assistant item whose (absent) audio cannot be cut.
        await ws.send(
            json.dumps(
                {
                    "type": "conversation.item.create",
                    "item": {
                        "type": "message",
                        "role": "user",
                        "content": [{"type": "input_text", "text": "Hi"}],
                    },
                }
            )
        )
        added = await until(ws, "conversation.item.added")
        assert added["item"]["content"][0] == {"type": "input_text", "text": "Hi"}
        await ws.send(
            json.dumps(
                {
                    "type": "conversation.item.create",
                    "item": {
                        "id": "item_assistant_1",
                        "type": "message",
                        "role": "assistant",
                        "content": [{"type": "output_audio", "transcript": "Hello there."}],
                    },
                }
            )
        )
        await until(ws, "conversation.item.done", "item_assistant_1")
        await ws.send(
            json.dumps(
                {
                    "type": "conversation.item.truncate",
                    "event_id": "evt_beyond",
                    "item_id": "item_assistant_1",
                    "content_index": 0,
                    "audio_end_ms": 500,
                }
            )
        )
        err = await recv(ws)
        assert err["error"]["event_id"] == "evt_beyond" and err["error"]["param"] == "audio_end_ms"
        await ws.send(json.dumps({"type": "conversation.item.delete", "item_id": "item_assistant_1"}))
        assert (await until(ws, "conversation.item.deleted"))["item_id"] == "item_assistant_1"
        await ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
        await until(ws, "input_audio_buffer.cleared")


async def test_transcription_session_refuses_responses_and_audio_output(gateway: ServerProcess) -> None:
    async with websockets.connect(f"{gateway.ws_url}/v1/realtime?intent=transcription", max_size=None) as ws:
        created = await recv(ws)
        assert created["session"]["type"] == "transcription"
        await ws.send(json.dumps({"type": "response.create", "event_id": "e1"}))
        err = await recv(ws)
        assert err["error"]["event_id"] == "e1"
        await ws.send(
            json.dumps(
                {
                    "type": "session.update",
                    "event_id": "e2",
                    "session": {"audio": {"output": {"voice": "alloy"}}},
                }
            )
        )
        err = await recv(ws)
        assert (err["error"]["event_id"], err["error"]["param"]) == ("e2", "session.audio.output")


@pytest.mark.parametrize("how", ["header", "subprotocol"])
async def test_beta_dialect_for_clients_that_ask(gateway: ServerProcess, how: str) -> None:
    url = f"{gateway.ws_url}/v1/realtime?model=gpt-4o-realtime-preview"
    if how == "header":
        ws = await websockets.connect(url, additional_headers={"OpenAI-Beta": "realtime=v1"}, max_size=None)
    else:
        ws = await websockets.connect(
            url, subprotocols=["realtime", "openai-beta.realtime-v1"], max_size=None
        )  # type: ignore[list-item]
        assert ws.subprotocol == "realtime"
    async with ws:
        created = await recv(ws)
        session = created["session"]
        assert session["object"] == "realtime.session" and session["input_audio_format"] == "pcm16"
        await ws.send(
            json.dumps(
                {"type": "session.update", "session": {"modalities": ["text"], "turn_detection": None}}
            )
        )
        updated = await until(ws, "session.updated")
        assert updated["session"]["modalities"] == ["text"] and updated["session"]["turn_detection"] is None
        await ws.send(
            json.dumps(
                {
                    "type": "conversation.item.create",
                    "item": {
                        "type": "message",
                        "role": "user",
                        "content": [{"type": "input_text", "text": "Say hello."}],
                    },
                }
            )
        )
        assert (await recv(ws))["type"] == "conversation.item.created"  # beta name, and no .done
        await ws.send(json.dumps({"type": "response.create"}))
        kinds: list[str] = []
        while True:
            event = await recv(ws)
            assert event["type"] != "error", event
            kinds.append(event["type"])
            if event["type"] == "response.done":
                break
        assert "response.text.delta" in kinds and "response.text.done" in kinds
        assert not [
            k
            for k in kinds
            if "audio" in k or k.startswith(("response.output_text", "conversation.item.done"))
        ]
        assert event["response"]["status"] == "completed"
        text = event["response"]["output"][0]["content"][0]
        assert text["type"] == "text" and text["text"].strip()


async def test_api_keys_as_openai_clients_send_them(hardened_gateway: ServerProcess) -> None:
    """The same auth as every route: the SDK's bearer header, or a browser's key subprotocol."""
    from openai import AsyncOpenAI

    from tests.gateway.hardened import ENV_KEYS

    url = hardened_gateway.url + "/v1"
    async with AsyncOpenAI(base_url=url, api_key=ENV_KEYS[0], max_retries=0).realtime.connect(
        model="gpt-realtime"
    ) as conn:
        assert (await asyncio.wait_for(conn.recv(), WAIT_S)).type == "session.created"
    subprotocols = ["realtime", f"openai-insecure-api-key.{ENV_KEYS[1]}", "openai-beta.realtime-v1"]
    async with websockets.connect(f"{hardened_gateway.ws_url}/v1/realtime", subprotocols=subprotocols) as ws:  # type: ignore[arg-type]
        assert ws.subprotocol == "realtime"  # never the key
        created = await recv(ws)
        assert (
            created["session"]["object"] == "realtime.session" and "modalities" in created["session"]
        )  # beta
    for headers in ({}, {"Authorization": "Bearer wrong-key"}):
        async with websockets.connect(
            f"{hardened_gateway.ws_url}/v1/realtime", additional_headers=headers
        ) as ws:
            with pytest.raises(websockets.ConnectionClosed) as info:
                await recv(ws)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1008
    # The same stream limits: a third session on one key (the limit is two) is closed with 1013.
    bearer = {"Authorization": f"Bearer {ENV_KEYS[0]}"}
    url = f"{hardened_gateway.ws_url}/v1/realtime"
    async with (
        websockets.connect(url, additional_headers=bearer) as a,
        websockets.connect(url, additional_headers=bearer) as b,
    ):
        assert (await recv(a))["type"] == (await recv(b))["type"] == "session.created"
        async with websockets.connect(url, additional_headers=bearer) as c:
            with pytest.raises(websockets.ConnectionClosed) as info:
                await recv(c)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1013


async def test_out_of_band_response_answers_its_own_input_and_stays_out_of_the_conversation(
    gateway: ServerProcess,
) -> None:
    async with websockets.connect(f"{gateway.ws_url}/v1/realtime?model=gpt-realtime", max_size=None) as ws:
        await until(ws, "session.created")
        user = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "I love the sea."}],
        }
        await ws.send(json.dumps({"type": "conversation.item.create", "item": user}))
        user_id = (await until(ws, "conversation.item.added"))["item"]["id"]
        await until(ws, "conversation.item.done")
        ask = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "One word: topic?"}],
        }
        response = {
            "conversation": "none",
            "output_modalities": ["text"],
            "metadata": {"purpose": "topic"},
            "input": [{"type": "item_reference", "id": user_id}, ask],
        }
        await ws.send(json.dumps({"type": "response.create", "response": response}))
        kinds: list[str] = []
        while (event := await recv(ws))["type"] != "response.done":
            assert event["type"] != "error", event
            kinds.append(event["type"])
            if event["type"] == "response.created":
                assert event["response"]["conversation_id"] is None
        assert "response.output_text.delta" in kinds and "response.output_text.done" in kinds
        assert not [k for k in kinds if k.startswith("conversation.item")]  # nothing joins the conversation
        assert event["response"]["status"] == "completed" and event["response"]["metadata"] == {
            "purpose": "topic"
        }
        answer = event["response"]["output"][0]
        assert answer["content"][0]["text"].strip()
        await ws.send(json.dumps({"type": "conversation.item.retrieve", "item_id": answer["id"]}))
        assert (await recv(ws))["error"]["code"] == "item_not_found"
        await ws.send(json.dumps({"type": "conversation.item.retrieve", "item_id": user_id}))
        assert (await recv(ws))["item"]["id"] == user_id
        # Stopped by its token limit, a response is "incomplete", as OpenAI reports it.
        short = {**response, "max_output_tokens": 2, "input": [ask]}
        await ws.send(json.dumps({"type": "response.create", "response": short}))
        while (event := await recv(ws))["type"] != "response.done":
            assert event["type"] != "error", event
        assert event["response"]["status"] == "incomplete", event["response"]
        assert event["response"]["status_details"] == {"type": "incomplete", "reason": "max_output_tokens"}
        assert event["response"]["usage"]["output_tokens"] == 2
