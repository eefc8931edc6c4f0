"""Issue 18, amplification: small requests that asked for large work. Speech is capped (MAX_SPEECH_SECONDS:
refused before synthesis when the text must read longer, cut when the audio produced passes it), decoding
stops at MAX_AUDIO_SECONDS without holding more, and a Realtime conversation holds at most
REALTIME_MAX_CONVERSATION_BYTES of item text while the history handed to the model stays in its budget.
Real requests against real gateway processes; memory read from the server process (psutil)."""

from __future__ import annotations

import asyncio
import itertools
import json
import struct
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psutil
import pytest
import websockets

from tests.support import ServerProcess

CAP_S = 20.0
CONVERSATION_BYTES = 256 * 1024


@pytest.fixture(scope="module")
def capped() -> Iterator[ServerProcess]:
    """A gateway with a 20 s speech cap and a 256 KiB Realtime conversation (limits otherwise default)."""
    server = ServerProcess(
        "serve",
        env={
            "MAX_SPEECH_SECONDS": str(CAP_S),
            "REALTIME_MAX_CONVERSATION_BYTES": str(CONVERSATION_BYTES),
            "LOG_LEVEL": "warning",
        },
    )
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def rss_mib(server: ServerProcess) -> float:
    return psutil.Process(server.proc.pid).memory_info().rss / 2**20


def error_of(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text[:300])
    body: dict[str, Any] = r.json()["error"]
    return body


# -- speech ------------------------------------------------------------------------------------------

DIGITS = "9" * 10_000  # 10 KB that read for 46 minutes (+700 MB RSS) before the cap


def test_ten_thousand_digits_are_refused_before_any_synthesis(gateway: ServerProcess) -> None:
    speech = {"model": "tts-1", "voice": "alloy", "input": DIGITS}
    with httpx.Client(base_url=gateway.url, timeout=60) as client:
        client.post("/read", json={"text": "Warm up."})
        before = rss_mib(gateway)
        t0 = time.monotonic()
        for path, body in [
            ("/read", {"text": DIGITS}),
            ("/voice/batch", {"text": DIGITS}),
            ("/v1/audio/speech", {**speech, "stream": False}),
            ("/v1/audio/speech", {**speech, "response_format": "pcm"}),  # streamed: refused before the 200
            ("/v1/audio/speech", {**speech, "stream_format": "sse"}),
        ]:
            err = error_of(client.post(path, json=body), 413)
            assert err["code"] == "speech_too_long" and err["limit_seconds"] == 1800, err
            assert "MAX_SPEECH_SECONDS" in err["message"]
        elapsed = time.monotonic() - t0
    assert elapsed < 30, f"five refusals took {elapsed:.1f} s: synthesis must not have started"
    assert rss_mib(gateway) - before < 50


# Short words between full stops read at ~8 letters/s, well under the 20 letters/s the estimate allows:
# the estimate (15 s) lets this text through and the audio produced (~35 s) passes the 20 s cap.
SLOW = "I am a cat. He is on it. " * 20


def _pcm_seconds(data: bytes) -> float:
    return len(data) / 2 / 24000


def test_audio_is_stopped_at_the_cap_on_every_http_route(capped: ServerProcess) -> None:
    speech = {"model": "tts-1", "voice": "alloy", "input": SLOW, "response_format": "pcm"}
    with httpx.Client(base_url=capped.url, timeout=180) as client:
        # Whole files cannot be cut: the request is refused once the audio passes the cap.
        err = error_of(client.post("/read", json={"text": SLOW}), 413)
        assert err["code"] == "speech_too_long" and err["limit_seconds"] == CAP_S
        # A stream ends cleanly at the last sentence within the cap.
        r = client.post("/v1/audio/speech", json=speech)
        assert r.status_code == 200
        assert CAP_S / 2 < _pcm_seconds(r.content) <= CAP_S
        r = client.post("/v1/audio/speech", json={**speech, "stream_format": "sse"})
        assert r.status_code == 200
        events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
        errors = [e for e in events if e["type"] == "error"]
        assert [e["error"]["code"] for e in errors] == ["speech_too_long"]
        assert events[-1]["type"] == "speech.audio.done" and events[-2] == errors[0]
        assert CAP_S / 2 < events[-1]["duration"] <= CAP_S
        # Within the cap nothing changes.
        r = client.post("/v1/audio/speech", json={**speech, "input": "I am a cat. He is on it."})
        assert r.status_code == 200 and 1 < _pcm_seconds(r.content) < CAP_S


def test_an_ordinal_of_five_thousand_digits_is_a_413_not_a_500(capped: ServerProcess) -> None:
    # int() refuses more than 4,300 digits: this was a ValueError, a 500, on every synthesis route.
    text = "I came " + "9" * 5000 + "th."
    with httpx.Client(base_url=capped.url, timeout=60) as client:
        for path, body in [
            ("/read", {"text": text}),
            ("/v1/audio/speech", {"model": "tts-1", "voice": "alloy", "input": text}),
        ]:
            assert error_of(client.post(path, json=body), 413)["code"] == "speech_too_long"


# -- decoding ----------------------------------------------------------------------------------------


def _crc8(data: bytes) -> int:
    crc = 0
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def _crc16(data: bytes) -> int:
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def _utf8(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    if n < 0x800:
        return bytes([0xC0 | n >> 6, 0x80 | n & 0x3F])
    return bytes([0xE0 | n >> 12, 0x80 | (n >> 6) & 0x3F, 0x80 | n & 0x3F])


def silent_flac(seconds: float, declare_length: bool = True) -> bytes:
    """Hours of digital silence in a few hundred KB, as FLAC allows: 48 kHz mono 16-bit, frames of 65,535
    samples holding one CONSTANT subframe. Without `declare_length` STREAMINFO says "length unknown"."""
    rate, block = 48000, 65535
    total = int(seconds * rate)
    info = struct.pack(">HH", block, block) + b"\0" * 6
    info += ((rate << 44) | (15 << 36) | (total if declare_length else 0)).to_bytes(8, "big") + b"\0" * 16
    out = [b"fLaC", bytes([0x80]) + len(info).to_bytes(3, "big"), info]
    for n in range((total + block - 1) // block):
        size = min(block, total - n * block)
        # sync, fixed blocking; 16-bit block size at the end of the header, 48 kHz; mono, 16 bits
        header = bytes([0xFF, 0xF8, 0x7A, 0x08]) + _utf8(n) + struct.pack(">H", size - 1)
        frame = header + bytes([_crc8(header)]) + b"\0\0\0"
        out.append(frame + struct.pack(">H", _crc16(frame)))
    return b"".join(out)


def test_hours_of_silent_flac_are_refused_without_decoding_them(capped: ServerProcess) -> None:
    ten_hours = silent_flac(10 * 3600)
    unknown_length = silent_flac(2 * 3600, declare_length=False)
    assert len(ten_hours) < 500_000
    with httpx.Client(base_url=capped.url, timeout=60) as client:
        second = silent_flac(1)  # warm up: a valid file of the same shape is transcribed
        assert client.post("/voice/transcribe", files={"audio": ("s.flac", second)}).status_code == 200
        before = rss_mib(capped)
        for data, bound_s in ((ten_hours, 5.0), (unknown_length, 20.0)):
            for route, files, form in [
                ("/voice/transcribe", {"audio": ("s.flac", data)}, {}),
                ("/v1/audio/transcriptions", {"file": ("s.flac", data)}, {"model": "whisper-1"}),
            ]:
                t0 = time.monotonic()
                err = error_of(client.post(route, files=files, data=form), 413)
                assert err["code"] == "audio_too_long" and err["limit_seconds"] == 600
                assert time.monotonic() - t0 < bound_s
        grown = rss_mib(capped) - before
    # The header's length refuses the first at once; the second is decoded up to the 600 s limit (36.6 MB of
    # 16 kHz float32) and no further: 10 hours of it would have been 2.3 GB.
    assert grown < 120, f"RSS grew {grown:.0f} MiB"


# -- Realtime conversation memory ----------------------------------------------------------------------


async def recv(ws: websockets.ClientConnection) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 120))
    return event


async def create_text_item(ws: websockets.ClientConnection, text: str, item_id: str) -> dict[str, Any]:
    """Sends a user text item; returns its `conversation.item.added` or the `error` it drew."""
    item = {
        "id": item_id,
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": text}],
    }
    await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
    while True:
        event = await recv(ws)
        if event["type"] in ("conversation.item.added", "error"):
            if event["type"] == "conversation.item.added":
                assert (await recv(ws))["type"] == "conversation.item.done"
            return event


async def test_conversation_items_are_bounded_and_the_session_survives(capped: ServerProcess) -> None:
    big = "x" * 100_000
    async with websockets.connect(f"{capped.ws_url}/v1/realtime", max_size=None) as ws:
        assert (await recv(ws))["type"] == "session.created"
        assert (await create_text_item(ws, big, "item_a"))["type"] == "conversation.item.added"
        assert (await create_text_item(ws, big, "item_b"))["type"] == "conversation.item.added"
        refused = await create_text_item(ws, big, "item_c")
        assert refused["type"] == "error", refused
        assert refused["error"]["code"] == "conversation_too_large"
        assert "REALTIME_MAX_CONVERSATION_BYTES" in refused["error"]["message"]
        # Small items still fit, and deleting makes room.
        assert (await create_text_item(ws, "Hello.", "item_d"))["type"] == "conversation.item.added"
        await ws.send(json.dumps({"type": "conversation.item.delete", "item_id": "item_a"}))
        assert (await recv(ws))["type"] == "conversation.item.deleted"
        assert (await create_text_item(ws, big, "item_c"))["type"] == "conversation.item.added"
        # The flood: every item refused, memory flat (it held 520 MB for 60 such items, about 8.7 MiB each).
        # The first 1 MB messages also grow the allocator's arenas and the websocket reader's buffers until
        # they settle (per round of 30: 33, 28, then 2, 0, 2, 2 MiB), which is no per-item retention: so four
        # rounds of 30, and the last two must add almost nothing.
        sizes = [rss_mib(capped)]
        for round_ in range(4):
            for n in range(30):
                event = await create_text_item(ws, "y" * 1_000_000, f"item_flood_{round_}_{n}")
                assert event["type"] == "error" and event["error"]["code"] == "conversation_too_large"
            sizes.append(rss_mib(capped))
        await ws.send(json.dumps({"type": "conversation.item.retrieve", "item_id": "item_d"}))
        assert (await recv(ws))["type"] == "conversation.item.retrieved"
    growth = [round(b - a) for a, b in itertools.pairwise(sizes)]
    assert sum(growth[2:]) < 30 and sum(growth) < 150, f"RSS grew {growth} MiB in rounds of 30 refused items"


async def test_history_budget_applies_to_the_newest_item_too(capped: ServerProcess) -> None:
    # One user item of ~50,000 tokens, alone in the conversation: the model gets its last words, within
    # VOICE_HISTORY_TOKENS (1024 by default), and answers; it was handed all of it and failed.
    text = "The quick brown fox jumps over the lazy dog. " * 4000 + "What animal jumps?"
    async with websockets.connect(f"{capped.ws_url}/v1/realtime", max_size=None) as ws:
        assert (await recv(ws))["type"] == "session.created"
        assert (await create_text_item(ws, text, "item_long"))["type"] == "conversation.item.added"
        await ws.send(
            json.dumps(
                {
                    "type": "response.create",
                    "response": {"output_modalities": ["text"], "max_output_tokens": 16},
                }
            )
        )
        while (event := await recv(ws))["type"] != "response.done":
            assert event["type"] != "error", event
        response = event["response"]
        assert response["status"] in ("completed", "incomplete"), response
        assert 0 < response["usage"]["input_tokens"] <= 1024
        # Custom context (`input`) is fitted to the same budget.
        custom = {
            "conversation": "none",
            "output_modalities": ["text"],
            "max_output_tokens": 16,
            "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}],
        }
        await ws.send(json.dumps({"type": "response.create", "response": custom}))
        while (event := await recv(ws))["type"] != "response.done":
            assert event["type"] != "error", event
        assert event["response"]["status"] in ("completed", "incomplete"), event["response"]
