"""Voice clips from configuration: checked at start-up, sent per request (inline) or registered once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from gateway.audio.pcm import wav_bytes
from gateway.engines.base import ModelState, SynthesisRequest
from gateway.engines.vllm_omni.backend import BackendClient, BackendConfig
from gateway.engines.vllm_omni.tts import VllmOmniSynthesizer, VoiceConfigError, load_voice_clips
from tests.support import REPO, ServerProcess


async def test_inline_mode_sends_the_clip_with_every_request(
    engine_server: ServerProcess, voices_dir: Path
) -> None:
    clips = load_voice_clips(voices_dir)
    assert [(c.name, c.language, c.mime_type) for c in clips] == [("narrator", "en", "audio/wav")]
    assert 1 <= clips[0].duration <= 30 and clips[0].data_url().startswith("data:audio/wav;base64,")
    backend = BackendClient(BackendConfig("tts", engine_server.url, model_hint="tts"))
    synth = VllmOmniSynthesizer(backend, 24000, clips, voice_mode="inline")
    voices_url = engine_server.url + "/v1/audio/voices"
    async with httpx.AsyncClient() as http:
        before = (await http.get(voices_url)).json()["uploaded_voices"]
    try:
        await synth.start()
        assert synth.state is ModelState.READY
        request = synth.resolve(SynthesisRequest(text="Hello there. Goodbye now.", voice="default"))
        assert request.voice == "narrator"
        chunks = [c async for c in synth.stream(request)]
        # The server validated `ref_audio` (a data: URL, 1-30 s) and `ref_text`, or this would be a 502.
        audio = [b"".join(c.pcm for c in chunks if c.index == i) for i in (0, 1)]
        assert [c.index for c in chunks if c.final] == [0, 1] and all(len(pcm) > 24000 for pcm in audio)
    finally:
        await synth.aclose()
    async with httpx.AsyncClient() as http:
        after = (await http.get(voices_url)).json()["uploaded_voices"]
    assert after == before  # nothing was uploaded


def test_bad_clips_are_configuration_errors(tmp_path: Path) -> None:
    (tmp_path / "a.wav").write_bytes(wav_bytes(bytes(48000 * 2), 24000))
    with pytest.raises(VoiceConfigError, match=r"a\.txt"):
        load_voice_clips(tmp_path)
    (tmp_path / "a.txt").write_text("two seconds of silence")
    assert load_voice_clips(tmp_path)[0].duration == pytest.approx(2.0, abs=0.01)
    (tmp_path / "b.wav").write_bytes(wav_bytes(bytes(4800), 24000))
    (tmp_path / "b.txt").write_text("too short")
    with pytest.raises(VoiceConfigError, match="1-30 s"):
        load_voice_clips(tmp_path)


def test_the_gateway_refuses_to_start_with_a_bad_voices_dir(tmp_path: Path) -> None:
    env = {**os.environ, "VOICE_ENGINE": "vllm-omni", "TTS_VOICES_DIR": str(tmp_path / "missing")}
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--port", "1"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "TTS_VOICES_DIR" in proc.stderr
