"""WS /voice on the vllm-omni engine (a Responder that hears the audio and speaks itself): barge-in keeps the
text in proportion to the audio actually sent, and the conversation goes on."""

from __future__ import annotations

from tests.gateway.voice_client import RATE, VoiceClient, aspoken
from tests.support import ServerProcess, wer

STORY = "Tell me a long story about a brave dragon."


async def test_interrupt_through_omni_keeps_what_was_sent(omni_gateway: ServerProcess) -> None:
    client = await VoiceClient.connect(omni_gateway.ws_url, turn_detection=None, max_response_tokens=120)
    try:
        await client.stream(await aspoken(omni_gateway.url, STORY))
        await client.send("audio.commit")
        started = await client.wait_for("response.started")
        await client.wait_audio(RATE * 2)  # one second of the model's own speech
        await client.send("interrupt")
        interrupted = await client.wait_for("interrupted")
        received = len(client.audio)
        done = await client.wait_for("response.done")
        await client.stream(await aspoken(omni_gateway.url, "What is the capital of France?"))
        await client.send("audio.commit")
        second = await client.wait_for("response.done")
    finally:
        await client.close()
    transcript = client.events("transcript")[0]["text"]
    assert wer(STORY, transcript) <= 0.2, transcript
    assert interrupted["response_id"] == started["response_id"] == done["response_id"]
    at = client.log.index(interrupted)
    assert sum(e for e in client.log[:at] if isinstance(e, int)) == received
    assert interrupted["audio_sent_ms"] == received * 1000 // (2 * RATE)
    written = client.text_of(done["response_id"]).split()
    kept = interrupted["text"].split()
    assert kept and kept == written[: len(kept)] and len(kept) < len(written), (kept, written)
    assert done["status"] == "interrupted" and second["status"] == "completed"
