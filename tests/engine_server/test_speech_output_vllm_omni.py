"""Speech output on the vLLM-Omni engine (gateway -> real engine server): normalization runs in the gateway
for this engine too, word timings come from forced alignment (it has no alignment of its own), formats
stream."""

from __future__ import annotations

import base64
import io
import statistics

import av
import httpx

from tests.support import ServerProcess

TEXT = "It sold 3,497 copies on May 21st, and Dr. Lee was pleased with the result."


def _timed(server: ServerProcess, text: str) -> dict:
    r = httpx.post(server.url + "/read", json={"text": text, "output": "json"}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def test_normalized_and_force_aligned_on_vllm_omni(
    omni_gateway: ServerProcess, gateway: ServerProcess
) -> None:
    through = _timed(omni_gateway, TEXT)
    words = through["words"]
    expected = ["It", "sold", "3,497", "copies", "on", "May 21st", "and", "Dr.", "Lee", "was", "pleased"]
    assert [w["word"] for w in words] == [*expected, "with", "the", "result"]
    by_word = {w["word"]: w for w in words}
    # The engine server got the spoken form: the gateway normalized before calling it.
    assert by_word["3,497"]["spoken"] == "three thousand four hundred ninety seven"
    assert by_word["Dr."]["spoken"] == "Doctor"
    for w in words:
        assert TEXT[w["char_start"] : w["char_end"]] == w["word"]
        assert 0 <= w["start"] < w["end"] <= through["duration"] + 1e-3
    assert [w["start"] for w in words] == sorted(w["start"] for w in words)

    # The same voice runs in both engines here, so Piper's own timings (embedded) are a reference for the
    # forced alignment (vLLM-Omni path).
    embedded = _timed(gateway, TEXT)
    assert abs(embedded["duration"] - through["duration"]) < 0.05
    pairs = zip(words, embedded["words"], strict=True)
    errors = [abs(a[k] - b[k]) for a, b in pairs for k in ("start", "end")]
    assert statistics.median(errors) <= 0.08, errors


def test_streamed_mp3_and_vtt_on_vllm_omni(omni_gateway: ServerProcess) -> None:
    body = {"model": "tts-1", "voice": "alloy", "input": "Streaming through the engine server works."}
    with httpx.stream("POST", omni_gateway.url + "/v1/audio/speech", json=body, timeout=120) as r:
        assert r.status_code == 200 and r.headers["content-type"] == "audio/mpeg"
        assert r.headers.get("transfer-encoding") == "chunked"
        data = r.read()
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        assert sum(f.samples for f in container.decode(stream)) / stream.rate > 1.0
    vtt = httpx.post(omni_gateway.url + "/v1/audio/speech", json={**body, "output": "vtt"}, timeout=120)
    assert vtt.status_code == 200 and vtt.text.startswith("WEBVTT")
    assert vtt.text.count(" --> ") == len(body["input"].split())
    js = httpx.post(
        omni_gateway.url + "/v1/audio/speech",
        json={**body, "output": "json", "response_format": "wav"},
        timeout=120,
    ).json()
    assert base64.b64decode(js["audio"])[:4] == b"RIFF"
