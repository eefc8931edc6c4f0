"""The engine contract (gateway/engines/base.py), as tests every engine set must pass.

A test module imports these functions (`from tests.engines.contract import *`), runs them on one event loop
for the module (`pytestmark = pytest.mark.asyncio(loop_scope="module")`: they are all async) and provides
two fixtures, from which the `engines` fixture here builds the started engine set the module shares:

- `build`: a function returning a fresh, unstarted `Engines` built by the registry
  (gateway/engines/registry.py);
- `contract_timeout`: seconds any one engine call may take (model servers on CPU are slow).

The tests assert protocol, never words: one engine set runs on random weights. Adding an engine means these
pass against it (docs/engines.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import pytest_asyncio

from gateway.audio.pcm import pcm16_to_float
from gateway.audio.resample import resample
from gateway.engines.base import (
    ChatMessage,
    ConversationRequest,
    EngineError,
    ModelState,
    Responder,
    ResponseEvent,
    SynthesisChunk,
    SynthesisRequest,
    Synthesizer,
    Transcriber,
    Transcription,
    UnknownVoiceError,
    UnsupportedLanguageError,
)
from gateway.engines.registry import Engines
from gateway.errors import ENGINE_STATUS, from_engine_error

__all__ = [
    "engines",
    "test_a_closed_reply_stops_and_the_next_one_works",
    "test_a_closed_synthesis_stops_its_work",
    "test_an_unstarted_engine_set_refuses_with_engine_errors_then_starts_and_closes_twice",
    "test_every_role_implements_its_protocol",
    "test_languages_are_checked_alike",
    "test_replies_stream_text_then_one_usage_and_audio_only_as_declared",
    "test_sentences_stream_in_order_as_pcm_pieces",
    "test_transcription_of_synthesized_speech",
    "test_voices_resolve_through_one_catalogue",
]

TEXT = "The first sentence is short. Here comes a second one, a little longer than the first. A third."
UNKNOWN_LANGUAGE = "xx"  # no engine speaks it
Build = Callable[[], Engines]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engines(build: Build, contract_timeout: float) -> AsyncIterator[Engines]:
    """The engine set under test, started once for the module and ready (a model server's client is ready
    after its first health poll)."""
    started = build()
    try:
        async with asyncio.timeout(contract_timeout):
            await started.start()
            while not started.ready:  # noqa: ASYNC110 - readiness comes from the backends' health polls
                await asyncio.sleep(0.1)
        yield started
    finally:
        await started.aclose()


def background_tasks() -> set[asyncio.Task[Any]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


async def settled(before: set[asyncio.Task[Any]], limit_s: float = 5.0) -> set[asyncio.Task[Any]]:
    """Tasks started since `before` that are still alive once their cancellation had time to land."""
    deadline = asyncio.get_running_loop().time() + limit_s
    # No event says "no task left": poll.
    while (left := {t for t in background_tasks() - before if not t.done()}) and (  # noqa: ASYNC110
        asyncio.get_running_loop().time() < deadline
    ):
        await asyncio.sleep(0.02)
    return left


def sentences(chunks: Sequence[SynthesisChunk]) -> list[tuple[int, int, int, bytes]]:
    """(index, text_start, text_end, audio) per sentence. A sentence's pieces are contiguous, share index and
    offsets, and end with one final chunk; nothing follows a final chunk of its sentence."""
    out: list[tuple[int, int, int, bytes]] = []
    open_: SynthesisChunk | None = None
    for c in chunks:
        if open_ is None:
            assert not out or c.index > out[-1][0], f"index {c.index} after {out[-1][0]}"
            out.append((c.index, c.text_start, c.text_end, b""))
        else:
            assert (c.index, c.text_start, c.text_end) == (open_.index, open_.text_start, open_.text_end)
        out[-1] = (*out[-1][:3], out[-1][3] + c.pcm)
        open_ = None if c.final else c
    assert open_ is None, "the last sentence never got its final chunk"
    return out


async def collect(stream: AsyncIterator[Any], limit_s: float) -> list[Any]:
    async with asyncio.timeout(limit_s):
        return [item async for item in stream]


def check_engine_error(exc: BaseException, code: str | None = None) -> EngineError:
    """An engine failure is an EngineError with a code the edges know; its HTTP status is not the engine's
    choice but the one table's (gateway/errors.py ENGINE_STATUS)."""
    assert isinstance(exc, EngineError), repr(exc)
    assert exc.code in ENGINE_STATUS, exc.code
    assert code is None or exc.code == code, (exc.code, exc.message)
    assert exc.status == ENGINE_STATUS[exc.code]
    api = from_engine_error(exc)
    assert api is not None and api.code == exc.code and api.status == ENGINE_STATUS[exc.code]
    return exc


# -- composition and lifecycle -----------------------------------------------------------------------


async def test_every_role_implements_its_protocol(engines: Engines) -> None:
    assert isinstance(engines.synthesizer, Synthesizer)
    assert isinstance(engines.transcriber, Transcriber)
    assert engines.responder is None or isinstance(engines.responder, Responder)
    assert engines.ready and not engines.loading
    for role, part in engines.components().items():
        assert part.state is ModelState.READY, (role, part.models())
        assert part.languages() and all(len(code) == 2 for code in part.languages())
        assert [m.role for m in part.models()] == [role] and part.models()[0].state is ModelState.READY
    if engines.responder is not None:
        assert isinstance(engines.responder.produces_audio, bool)
        assert isinstance(engines.responder.accepts_audio, bool)


async def test_an_unstarted_engine_set_refuses_with_engine_errors_then_starts_and_closes_twice(
    build: Build, contract_timeout: float
) -> None:
    fresh = build()
    try:
        assert not fresh.ready
        synth = fresh.synthesizer
        with pytest.raises(EngineError) as refused:
            await anext(synth.stream(SynthesisRequest(text="Hello.")))
        check_engine_error(refused.value)
        assert from_engine_error(refused.value).status == 503  # type: ignore[union-attr]
        with pytest.raises(EngineError) as refused:
            await fresh.transcriber.transcribe(np.zeros(fresh.transcriber.sample_rate, np.float32), "en")
        check_engine_error(refused.value)
        if fresh.responder is not None:
            with pytest.raises(EngineError) as refused:
                await anext(fresh.responder.respond(ConversationRequest([ChatMessage("user", "Hi")])))
            check_engine_error(refused.value)
        async with asyncio.timeout(contract_timeout):
            await fresh.start()
            while not fresh.ready:  # noqa: ASYNC110 - a remote engine turns ready with a health poll
                await asyncio.sleep(0.1)
        assert all(p.state is ModelState.READY for p in fresh.components().values())
    finally:
        await fresh.aclose()
        await fresh.aclose()  # closing twice does nothing


# -- synthesizer -----------------------------------------------------------------------------------


async def test_sentences_stream_in_order_as_pcm_pieces(engines: Engines, contract_timeout: float) -> None:
    synth = engines.synthesizer
    request = synth.resolve(SynthesisRequest(text=TEXT, voice="default", language="en"))
    chunks = await collect(synth.stream(request), contract_timeout)
    assert chunks and all(isinstance(c, SynthesisChunk) for c in chunks)
    assert all(c.sample_rate == synth.sample_rate and len(c.pcm) % 2 == 0 for c in chunks)
    assert all(c.generation_s >= 0 for c in chunks)
    spoken = sentences(chunks)
    assert len(spoken) >= 2, [(c.index, c.text_start, c.text_end) for c in chunks]
    starts = [s[1] for s in spoken]
    assert starts == sorted(starts) and [s[0] for s in spoken] == sorted({s[0] for s in spoken})
    for index, start, end, pcm in spoken:
        assert 0 <= start < end <= len(TEXT) and TEXT[start:end].strip(), (index, start, end)
        assert len(pcm) >= synth.sample_rate // 10, f"sentence {index}: {len(pcm)} bytes of audio"
        samples = pcm16_to_float(pcm)
        assert np.isfinite(samples).all() and float(np.abs(samples).max()) > 0  # not silence
    words = [w for c in chunks for w in c.words]
    assert not words  # none asked for
    # Word timings, where an engine has them, come only on whole sentences.
    timed = await collect(synth.stream(replace(request, timings=True)), contract_timeout)
    sentences(timed)
    for c in timed:
        if c.words:
            assert c.final and all(c.text_start <= w.text_start <= w.text_end <= c.text_end for w in c.words)


async def test_a_closed_synthesis_stops_its_work(engines: Engines, contract_timeout: float) -> None:
    synth = engines.synthesizer
    request = synth.resolve(SynthesisRequest(text=" ".join([TEXT] * 4), voice="default", language="en"))
    before = background_tasks()
    stream = synth.stream(request)
    async with asyncio.timeout(contract_timeout):
        first = await anext(stream)
        assert first.index == 0
        await stream.aclose()
    left = await settled(before)
    assert not left, left
    # The engine is whole afterwards: the next stream plays to its end.
    again = await collect(synth.stream(synth.resolve(SynthesisRequest(text="Again."))), contract_timeout)
    assert len(sentences(again)) == 1


async def test_voices_resolve_through_one_catalogue(engines: Engines) -> None:
    synth = engines.synthesizer
    catalog = synth.catalog()
    assert list(catalog.voices) == list(synth.voices()) and catalog.voices
    default = catalog.default()
    assert default is not None and catalog.resolve("default") == default == catalog.resolve(" Default ")
    ids_and_aliases = {v.id for v in catalog.voices} | {a for v in catalog.voices for a in v.aliases}
    assert catalog.names() == tuple(sorted(ids_and_aliases)) and "default" in catalog.names()
    for voice in catalog.voices:
        assert catalog.resolve(voice.id) == voice
        assert synth.resolve(SynthesisRequest(text=".", voice=voice.id.upper())).voice == voice.id
    if all(v.id != "alloy" for v in catalog.voices):
        assert catalog.resolve("alloy") == default  # OpenAI's names mean the default voice
    resolved = synth.resolve(SynthesisRequest(text="Hi.", voice="default", language="English", timings=True))
    assert (resolved.voice, resolved.language, resolved.timings) == (default.id, "en", True)
    with pytest.raises(UnknownVoiceError) as unknown:
        synth.resolve(SynthesisRequest(text="Hi.", voice="no-such-voice"))
    check_engine_error(unknown.value, "unknown_voice")
    assert unknown.value.available == catalog.names()
    assert all(name in unknown.value.message for name in catalog.names())
    with pytest.raises(UnsupportedLanguageError) as unsupported:
        synth.resolve(SynthesisRequest(text="Hi.", voice="default", language=UNKNOWN_LANGUAGE))
    check_engine_error(unsupported.value, "unsupported_language")
    assert tuple(unsupported.value.supported) == tuple(synth.languages())


# -- languages -------------------------------------------------------------------------------------


async def test_languages_are_checked_alike(engines: Engines) -> None:
    synth, asr, responder = engines.synthesizer, engines.transcriber, engines.responder
    default = synth.catalog().default()
    assert default is not None
    assert synth.check_language("auto") == synth.check_language("") == default.language
    assert synth.check_language("en-US") == synth.check_language("English") == "en"
    assert asr.check_language("en_GB") == "en"
    assert asr.check_language(None) in (None, *asr.languages())  # None: the engine detects it
    parts: list[Any] = [synth, asr] + ([responder] if responder is not None else [])
    for part in parts:
        with pytest.raises(UnsupportedLanguageError) as refused:
            part.check_language(UNKNOWN_LANGUAGE)
        check_engine_error(refused.value, "unsupported_language")
    if responder is not None:
        assert responder.check_language("en") == "en"


# -- transcriber -----------------------------------------------------------------------------------


async def test_transcription_of_synthesized_speech(engines: Engines, contract_timeout: float) -> None:
    synth, asr = engines.synthesizer, engines.transcriber
    request = synth.resolve(SynthesisRequest(text="Please transcribe this short sentence.", voice="default"))
    chunks = await collect(synth.stream(request), contract_timeout)
    samples = resample(pcm16_to_float(b"".join(c.pcm for c in chunks)), synth.sample_rate, asr.sample_rate)
    async with asyncio.timeout(contract_timeout):
        result = await asr.transcribe(samples, "en")
    assert isinstance(result, Transcription) and isinstance(result.text, str)
    assert result.language == "en"
    assert abs(result.duration - samples.size / asr.sample_rate) < 0.1, (result.duration, samples.size)
    assert all(0 <= s.start <= s.end <= result.duration + 0.1 for s in result.segments)
    with pytest.raises(UnsupportedLanguageError) as refused:
        await asr.transcribe(samples, UNKNOWN_LANGUAGE)
    check_engine_error(refused.value, "unsupported_language")


# -- responder -------------------------------------------------------------------------------------


def _request(text: str, max_tokens: int = 24) -> ConversationRequest:
    return ConversationRequest(history=[ChatMessage("user", text)], max_tokens=max_tokens)


async def test_replies_stream_text_then_one_usage_and_audio_only_as_declared(
    engines: Engines, contract_timeout: float
) -> None:
    responder = engines.responder
    if responder is None:
        pytest.skip("this engine set has no conversation model")  # the contract allows none
    declared = responder.produces_audio
    events: list[ResponseEvent] = await collect(responder.respond(_request("Say hello.")), contract_timeout)
    assert events and all(e.kind in ("text", "audio", "usage") for e in events)
    assert [e.kind for e in events].count("usage") == 1 and events[-1].kind == "usage"
    usage = events[-1]
    audio = [e for e in events if e.kind == "audio"]
    assert usage.has_audio == bool(audio)
    assert declared or not audio  # audio only from a responder that declares it
    assert all(e.text for e in events if e.kind == "text") and all(len(e.pcm) % 2 == 0 for e in audio)
    assert usage.completion_tokens >= 0
    assert usage.tokens_per_second is None or usage.tokens_per_second > 0


async def test_a_closed_reply_stops_and_the_next_one_works(engines: Engines, contract_timeout: float) -> None:
    responder = engines.responder
    if responder is None:
        pytest.skip("this engine set has no conversation model")
    before = background_tasks()
    stream = responder.respond(_request("Tell me a long story about the sea.", max_tokens=120))
    async with asyncio.timeout(contract_timeout):
        first = await anext(stream)
        assert first.kind in ("text", "audio", "usage")
        await stream.aclose()
    left = await settled(before)
    assert not left, left
    events = await collect(responder.respond(_request("Hi.")), contract_timeout)
    assert events[-1].kind == "usage"
