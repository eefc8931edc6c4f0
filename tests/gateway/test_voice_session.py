"""The conversation core in-process with the real embedded engines: what an interrupted reply leaves in the
memory, and that closing forgets everything."""

from __future__ import annotations

import asyncio

from gateway.engines.base import SynthesisRequest
from gateway.engines.registry import build_engines
from gateway.services.speech import synthesize
from gateway.sessions.voice.events import AudioOut, Interrupted, ResponseDone, TextDelta, VoiceEvent
from gateway.sessions.voice.session import VoiceSession
from gateway.settings import load_settings
from tests.support import wer

QUESTION = "Tell me a long story about a brave dragon."


async def test_an_interrupted_reply_leaves_only_what_was_sent_in_the_memory() -> None:
    settings = load_settings()
    engines = build_engines(settings)
    await engines.start()
    events: list[VoiceEvent] = []
    one_second = asyncio.Event()

    async def emit(event: VoiceEvent) -> None:
        events.append(event)
        if sent_bytes() >= settings.audio_sample_rate * 2:
            one_second.set()

    def sent_bytes() -> int:
        return sum(len(e.pcm) for e in events if isinstance(e, AudioOut))

    session = VoiceSession(engines, settings, emit)
    session.word_timings = True  # as the /voice adapter runs it
    try:
        assert engines.ready
        question = (await synthesize(engines.synthesizer, SynthesisRequest(text=QUESTION))).pcm
        session.update({"turn_detection": None, "max_response_tokens": 120})
        for i in range(0, len(question), 960):
            await session.append_audio(question[i : i + 960])
        await session.commit()
        async with asyncio.timeout(60):
            await one_second.wait()  # one second of the answer has gone out
        assert await session.interrupt()
        written = "".join(e.text for e in events if isinstance(e, TextDelta))
        interrupted = next(e for e in events if isinstance(e, Interrupted))
        done = next(e for e in events if isinstance(e, ResponseDone))
        assert interrupted.audio_sent_ms == sent_bytes() * 1000 // (2 * settings.audio_sample_rate)
        assert done.status == "interrupted" and not session.responding

        memory = session.history.messages("be brief")
        assert [m.role for m in memory] == ["system", "user", "assistant"]
        assert wer(QUESTION, memory[1].content) <= 0.2
        kept = memory[2].content
        assert kept == interrupted.text_kept == done.text
        assert kept and written.split()[: len(kept.split())] == kept.split()
        assert len(kept.split()) < len(written.split())  # the unsent rest of the reply is forgotten
        # The segments say the same: the last one was cut, nothing after it went out, and the kept text
        # ends with the last word of it whose audio was sent whole.
        assert sum(s.sent_samples for s in done.segments) * 2 == sent_bytes()
        assert all(s.words for s in done.segments)
        for cut in (s for s in done.segments if 0 < s.sent_samples < s.total_samples):
            whole = [w for w in cut.words if w.end * settings.audio_sample_rate <= cut.sent_samples]
            if whole:
                assert kept.endswith(cut.text[: whole[-1].text_end].strip())
    finally:
        await session.close()
        await engines.aclose()
    assert len(session.history) == 0 and len(session.buffer) == 0  # nothing outlives the connection
