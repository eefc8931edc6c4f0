"""Per-turn latency histograms (voice_gateway_turn_latency_seconds) against the real server: real spoken
turns on WS /voice and WS /v1/realtime, then /metrics scraped and compared with the turn's own
`response.done.timings` — the histograms must hold exactly the numbers the client was told."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import httpx
import websockets
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import TURN_BUCKETS, TURN_STAGES
from tests.gateway.voice_client import RATE, VoiceClient, aspoken, silence
from tests.support import ServerProcess

FAMILY = "voice_gateway_turn_latency_seconds"
STAGES = {stage for stage, _ in TURN_STAGES.values()} | {"barge_in_stop"}
WAIT_S = 90  # a bound for a loaded machine; never reached when things work
QUESTION = "What is the capital of France?"
STORY = "Tell me a long story about a brave dragon."

Key = tuple[str, str, str]  # protocol, engine, stage


def _scrape(base_url: str) -> dict[str, dict[Key, float]]:
    """{"count" | "sum": {(protocol, engine, stage): value}} of the turn histogram."""
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    out: dict[str, dict[Key, float]] = {"count": {}, "sum": {}}
    for family in text_string_to_metric_families(text):
        if family.name != FAMILY:
            continue
        for s in family.samples:
            key = (s.labels["protocol"], s.labels["engine"], s.labels["stage"])
            if s.name == FAMILY + "_count":
                out["count"][key] = s.value
            elif s.name == FAMILY + "_sum":
                out["sum"][key] = s.value
    return out


async def scrape(base_url: str) -> dict[str, dict[Key, float]]:
    return await asyncio.to_thread(_scrape, base_url)


def _delta(
    before: dict[str, dict[Key, float]], after: dict[str, dict[Key, float]], what: str, protocol: str
) -> dict[str, float]:
    """{stage: increase} for one protocol (all engines of a stage together: one engine per role here)."""
    out: dict[str, float] = {}
    for key, value in after[what].items():
        if key[0] == protocol:
            out[key[2]] = out.get(key[2], 0.0) + value - before[what].get(key, 0.0)
    return {stage: v for stage, v in out.items() if v}


def _assert_matches_timings(
    before: dict[str, dict[Key, float]],
    after: dict[str, dict[Key, float]],
    protocol: str,
    timings: dict[str, Any],
) -> None:
    counts = _delta(before, after, "count", protocol)
    sums = _delta(before, after, "sum", protocol)
    expected = {stage: timings[key] / 1000 for key, (stage, _) in TURN_STAGES.items() if timings[key]}
    # A spoken answer to an audio turn reaches every stage, each exactly once.
    assert set(expected) == {stage for stage, _ in TURN_STAGES.values()}, timings
    assert counts == dict.fromkeys(expected, 1.0), (counts, timings)
    for stage, seconds in expected.items():
        # timings are rounded to 0.1 ms for the client; the histogram takes the same rounded number
        assert abs(sums[stage] - seconds) < 1e-6, (stage, sums[stage], seconds)


async def test_voice_turn_is_observed_with_its_own_timings(gateway: ServerProcess) -> None:
    pcm = await aspoken(gateway.url, QUESTION)
    before = await scrape(gateway.url)
    client = await VoiceClient.connect(gateway.ws_url, turn_detection=None, max_response_tokens=24)
    try:
        await client.stream(pcm)
        await client.send("audio.commit")
        done = await client.wait_for("response.done")
    finally:
        await client.close()
    assert done["status"] == "completed" and client.audio, done
    after = await scrape(gateway.url)
    _assert_matches_timings(before, after, "voice", done["timings"])
    assert not _delta(before, after, "count", "realtime")
    # Labels are bounded: the configured engine set (never client input), two protocols, the known stages.
    models = await asyncio.to_thread(httpx.get, f"{gateway.url}/models", timeout=10)
    kind = models.json()["engine"]
    assert {key[1] for key in after["count"]} == {kind}
    assert {key[0] for key in after["count"]} <= {"voice", "realtime"}
    assert {key[2] for key in after["count"]} <= STAGES
    # buckets resolve 50 ms .. 10 s
    assert {0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10} <= set(TURN_BUCKETS)


async def _realtime_event(ws: websockets.ClientConnection, kind: str) -> dict[str, Any]:
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv(), WAIT_S))
        assert event["type"] != "error", event
        if event["type"] == kind:
            return dict(event)


async def _append(ws: websockets.ClientConnection, pcm: bytes) -> None:
    for i in range(0, len(pcm), 4800):  # 100 ms per append
        chunk = base64.b64encode(pcm[i : i + 4800]).decode()
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))


async def test_realtime_turns_are_observed_with_their_own_timings(gateway: ServerProcess) -> None:
    pcm = await aspoken(gateway.url, QUESTION)
    before = await scrape(gateway.url)
    async with websockets.connect(f"{gateway.ws_url}/v1/realtime?model=gpt-realtime", max_size=None) as ws:
        await _realtime_event(ws, "session.created")
        # Server VAD (the default) ends the turn and answers it: every stage, ASR included, in one reply.
        transcription = {"transcription": {"model": "whisper-1"}}
        session = {"type": "realtime", "max_output_tokens": 24, "audio": {"input": transcription}}
        await ws.send(json.dumps({"type": "session.update", "session": session}))
        await _realtime_event(ws, "session.updated")
        await _append(ws, silence(0.3) + pcm + silence(0.8))
        done = await _realtime_event(ws, "response.done")
        assert done["response"]["status"] in ("completed", "incomplete"), done
        middle = await scrape(gateway.url)
        # A manual commit only transcribes (the reply comes with a later response.create): its ASR counts.
        manual = {"type": "realtime", "audio": {"input": {**transcription, "turn_detection": None}}}
        await ws.send(json.dumps({"type": "session.update", "session": manual}))
        await _realtime_event(ws, "session.updated")
        await _append(ws, pcm)
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        await _realtime_event(ws, "conversation.item.input_audio_transcription.completed")
    after = await scrape(gateway.url)
    _assert_matches_timings(before, middle, "realtime", done["timings"])
    assert not _delta(before, middle, "count", "voice")
    assert _delta(middle, after, "count", "realtime") == {"asr": 1.0}
    assert 0 < _delta(middle, after, "sum", "realtime")["asr"] < WAIT_S


async def test_interrupt_is_observed_as_barge_in_stop(gateway: ServerProcess) -> None:
    pcm = await aspoken(gateway.url, STORY)
    before = await scrape(gateway.url)
    client = await VoiceClient.connect(gateway.ws_url, turn_detection=None, max_response_tokens=120)
    try:
        await client.stream(pcm)
        await client.send("audio.commit")
        await client.wait_for("response.started")
        await client.wait_audio(RATE * 2 // 2)  # half a second of the answer is playing
        await client.send("interrupt")
        await client.wait_for("interrupted")
        done = await client.wait_for("response.done")
    finally:
        await client.close()
    assert done["status"] == "interrupted", done
    after = await scrape(gateway.url)
    counts = _delta(before, after, "count", "voice")
    assert counts.get("barge_in_stop") == 1.0, counts
    stop_s = _delta(before, after, "sum", "voice")["barge_in_stop"]
    # Stopping is cancelling three tasks at their next await: well under a second even on a loaded machine.
    assert 0 < stop_s < 1.0, stop_s
    # the interrupted reply's stages up to its first audio count too, once each
    assert counts.get("first_audio") == 1.0, counts
