"""The engine contract (tests/engines/contract.py) on the vllm-omni engines (HTTP clients, in this process)
in front of the real `voice-gateway engine-server` (the session `engine_server` fixture), with the mounted
reference clip of tests/engine_server/conftest.py registered as a voice.

The engine server streams a sentence's audio in codec-frame windows (a first small one, like vLLM-Omni with
`initial_codec_chunk_frames: 1`), so here the contract's sub-sentence pieces are real."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
import websockets

from gateway.engines.base import ChatMessage, ConversationRequest, SynthesisRequest
from gateway.engines.registry import Engines, build_engines
from gateway.engines.vllm_omni.omni import VllmOmniResponder
from gateway.sessions.voice.events import AudioOut, VoiceEvent
from gateway.sessions.voice.pipeline import ResponseRun, ResponseTimings
from gateway.settings import load_settings
from tests.engines.contract import *  # noqa: F403 - the contract's tests run here
from tests.engines.contract import Build, collect, sentences
from tests.gateway.test_read_stream import Client
from tests.support import ServerProcess

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def build(engine_server: ServerProcess, voices_dir: Path) -> Build:
    settings = load_settings(
        VOICE_ENGINE="vllm-omni",
        OMNI_SERVICE_URL=engine_server.url,
        TTS_SERVICE_URL=engine_server.url,
        TTS_VOICES_DIR=str(voices_dir),
        BACKEND_POLL_INTERVAL=1,
    )
    return lambda: build_engines(settings)


@pytest.fixture(scope="module")
def contract_timeout() -> float:
    return 60.0


async def test_a_sentence_streams_in_pieces_first_one_early(
    engines: Engines, contract_timeout: float
) -> None:
    """The first piece of a sentence is handed on before the rest of it exists: a small piece (the server's
    first codec window), then the remainder, the last one final."""
    synth = engines.synthesizer
    text = "This one sentence is long enough to take several seconds when it is read aloud by the voice."
    chunks = await collect(synth.stream(synth.resolve(SynthesisRequest(text=text))), contract_timeout)
    [(index, _, _, pcm)] = sentences(chunks)
    assert index == 0 and len(chunks) >= 2 and chunks[-1].final and not chunks[0].final
    assert len(chunks[0].pcm) < len(pcm) // 4, (len(chunks[0].pcm), len(pcm))
    assert chunks[0].generation_s <= chunks[-1].generation_s


# -- what consumes the pieces, through a gateway process (the session `omni_gateway`) ----------------------

TWO = "The first sentence of this text is here. The second sentence follows it right after that."


async def test_pieces_reach_every_consumer_whole_and_in_order(omni_gateway: ServerProcess) -> None:
    """Sub-sentence pieces lose or repeat no byte on the way out: streamed HTTP audio equals the whole file,
    the JSON timeline has one span per sentence, and WS /read/stream sends one mark per sentence right before
    that sentence's first audio, pauses at an exact sample and ends with the sentence count."""
    async with httpx.AsyncClient(base_url=omni_gateway.url, timeout=60) as http:
        whole = (await http.post("/read", json={"text": TWO, "response_format": "pcm"})).content
        body = {"model": "tts-1", "voice": "alloy", "input": TWO, "response_format": "pcm", "stream": True}
        async with http.stream("POST", "/v1/audio/speech", json=body) as r:
            assert r.status_code == 200
            streamed = b"".join([part async for part in r.aiter_bytes()])
        timed = (await http.post("/read", json={"text": TWO, "output": "json"})).json()
    assert streamed == whole and len(whole) > 24000 * 2
    spans = timed["sentences"]
    assert [s["index"] for s in spans] == [0, 1] and spans[0]["end"] == spans[1]["start"]
    assert spans[1]["end"] == pytest.approx(len(whole) / 2 / 24000, abs=1e-3)

    c = Client(await websockets.connect(omni_gateway.ws_url + "/read/stream", max_size=None))
    try:
        await c.send("start", text=TWO)
        await c.first_audio()
        await c.send("pause")
        paused = await c.until("paused")
        assert paused["samples_sent"] * 2 == len(c.pcm)  # exact, whatever piece it fell in
        await c.send("resume")
        complete = await c.until("complete")
    finally:
        await c.ws.close()
    assert bytes(c.pcm) == whole and complete["sentences"] == 2
    marks = [(i, e) for i, e in enumerate(c.log) if isinstance(e, dict) and e["type"] == "mark"]
    assert [e["index"] for _, e in marks] == [0, 1]
    for at, mark in marks:
        before = sum(x for x in c.log[:at] if isinstance(x, int))
        assert mark["sample_offset"] * 2 == before  # right before its sentence's first audio
        assert isinstance(c.log[at + 1], int)
    assert marks[1][1]["sample_offset"] == pytest.approx(spans[1]["start"] * 24000, abs=24)  # ms rounding


async def test_a_reply_spoken_in_pieces_is_cut_where_its_audio_stopped(engines: Engines) -> None:
    """The voice pipeline speaks a text reply (`OMNI_AUDIO_OUTPUT=off`) with the Synthesizer, whose sentences
    arrive in pieces: each sentence is one segment, and a barge-in keeps only the words sent."""
    assert engines.responder is not None
    omni = engines.responder.backend  # type: ignore[attr-defined]
    responder = VllmOmniResponder(omni, 24000, audio_output="off")
    frames: list[bytes] = []

    async def emit(event: VoiceEvent) -> None:
        if isinstance(event, AudioOut):
            frames.append(event.pcm)

    request = ConversationRequest(
        history=[ChatMessage("user", "Tell me a long story about a brave dragon.")], max_tokens=120
    )
    run = ResponseRun(
        response_id="r1",
        responder=responder,
        synthesizer=engines.synthesizer,
        request=request,
        emit=emit,
        sample_rate=24000,
        timings=ResponseTimings(commit=0.0),
        lead_ms=300,
    )
    task = asyncio.create_task(run.run())
    try:
        async with asyncio.timeout(60):
            while sum(len(f) for f in frames) < 24000:  # noqa: ASYNC110 - half a second of speech sent
                await asyncio.sleep(0.02)
    finally:
        task.cancel()
        await asyncio.wait({task})
    segments = run.playout.segments
    assert segments and all(s.text for s in segments)
    assert len({s.index for s in segments}) == len(segments)  # a sentence's pieces share its segment
    assert sum(s.sent_samples for s in segments) * 2 == sum(len(f) for f in frames)
    kept, written = run.spoken_text().split(), run.text.split()
    assert kept and kept == written[: len(kept)] and len(kept) < len(written), (kept, written)
