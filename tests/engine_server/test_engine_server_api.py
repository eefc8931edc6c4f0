"""The engine server speaks vLLM-Omni 0.30.0's API with real audio from the CPU engines: what the audio and
text are worth (speech, transcripts). The wire shapes case by case are in test_wire_fidelity.py."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from gateway.audio.pcm import wav_bytes
from gateway.engine_server.models import DEFAULT_TTS_NAME
from tests.engine_server.conftest import CLIP_TEXT
from tests.support import ServerProcess, decode_wav, pcm_to_float, speech_ratio, wer

QUESTION = "What is the capital of France?"
ASR = "Please output the ASR result of the audio."


def speech_wav(server: ServerProcess, text: str, **extra: Any) -> bytes:
    r = httpx.post(server.url + "/v1/audio/speech", json={"input": text, **extra}, timeout=60)
    assert r.status_code == 200, r.text
    return r.content


def audio_part(wav: bytes, form: str = "input_audio") -> dict[str, Any]:
    b64 = base64.b64encode(wav).decode()
    if form == "audio_url":
        return {"type": "audio_url", "audio_url": {"url": f"data:audio/wav;base64,{b64}"}}
    return {"type": "input_audio", "input_audio": {"data": b64, "format": "wav"}}


def chat(server: ServerProcess, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(server.url + "/v1/chat/completions", json=body, timeout=120)


def sse_events(server: ServerProcess, body: dict[str, Any]) -> list[dict[str, Any] | str]:
    events: list[dict[str, Any] | str] = []
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=120) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                payload = line[6:]
                events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def test_loads_before_listening_then_healthy(engine_server: ServerProcess) -> None:
    seen = engine_server.load_observations  # type: ignore[attr-defined]
    assert seen[-1] == '200 {"status":"healthy"}'
    assert all(s == "refused" for s in seen[:-1])  # no answer at all until every model is loaded
    models = httpx.get(engine_server.url + "/v1/models").json()
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == ["voice-gateway/omni-cpu", "voice-gateway/tts-cpu"]


def test_streamed_chat_has_modalities_per_chunk_wavs_usage_and_done(engine_server: ServerProcess) -> None:
    question = speech_wav(engine_server, QUESTION)
    body = {
        "messages": [{"role": "user", "content": [audio_part(question)]}],
        "speaker": "ethan",
        "stream": True,
        "max_tokens": 40,
        "stream_options": {"include_usage": True},
    }
    events = sse_events(engine_server, body)
    assert events[-1] == "[DONE]"
    chunks = [e for e in events[:-1] if isinstance(e, dict) and e["choices"]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    text = [c for c in chunks if c["modality"] == "text"]
    audio = [c for c in chunks if c["modality"] == "audio"]
    assert text[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in text).strip()
    assert len(audio) >= 1 and chunks[-1] is audio[-1]  # audio is the last modality
    finishes = [c["choices"][0]["finish_reason"] for c in chunks]
    assert finishes[-1] == "stop" and not any(finishes[:-1])  # only on the last chunk of the last modality
    pcm = b""
    for c in audio:
        assert c["choices"][0]["index"] == 0 and c["choices"][0]["delta"]["role"] == "assistant"
        assert c["usage"]["completion_tokens"] == 0
        wav = decode_wav(base64.b64decode(c["choices"][0]["delta"]["content"]))  # each a whole WAV
        assert (wav.sample_rate, wav.channels, wav.sample_width) == (24000, 1, 2)
        pcm += (wav.samples * 32768).astype("<i2").tobytes()
    assert speech_ratio(pcm_to_float(pcm), 24000) > 0.3
    usage = [e for e in events[:-1] if isinstance(e, dict) and not e["choices"]]
    assert usage and usage[0]["usage"]["completion_tokens"] > 0


def test_full_chat_has_one_choice_with_text_and_audio(engine_server: ServerProcess) -> None:
    """vLLM-Omni 0.30.0 folds the audio into the text choice (#7376): one choice, spoken reply."""
    question = speech_wav(engine_server, QUESTION)
    body = {"messages": [{"role": "user", "content": [audio_part(question, "audio_url")]}], "max_tokens": 30}
    r = chat(engine_server, body)
    assert r.status_code == 200, r.text
    reply = r.json()
    assert reply["object"] == "chat.completion" and "metrics" in reply
    [choice] = reply["choices"]
    assert choice["index"] == 0 and choice["message"]["content"]
    audio = choice["message"]["audio"]
    assert audio["id"].startswith("audio-") and audio["transcript"] == "" and audio["expires_at"] > 0
    wav = decode_wav(base64.b64decode(audio["data"]))
    assert wav.sample_rate == 24000 and speech_ratio(wav.samples, 24000) > 0.3
    assert choice["audio_metadata"]["frame_count"] == wav.samples.size
    body["modalities"] = ["audio"]
    only_audio = chat(engine_server, body).json()["choices"]
    assert len(only_audio) == 1 and only_audio[0]["message"]["audio"]["data"]
    assert only_audio[0]["message"]["content"] is None


def test_asr_instruction_returns_the_transcript(engine_server: ServerProcess) -> None:
    clip = speech_wav(engine_server, CLIP_TEXT)
    body = {
        "messages": [{"role": "user", "content": [audio_part(clip), {"type": "text", "text": ASR}]}],
        "modalities": ["text"],
    }
    reply = chat(engine_server, body).json()
    assert len(reply["choices"]) == 1
    assert wer(CLIP_TEXT, reply["choices"][0]["message"]["content"]) < 0.15


def test_chat_validation_like_vllm(engine_server: ServerProcess) -> None:
    msgs = [{"role": "user", "content": "hi"}]
    r = chat(engine_server, {"messages": msgs, "speaker": "vivian"})
    assert r.status_code == 400 and "Supported: aiden, chelsie, ethan" in r.json()["error"]["message"]
    r = chat(engine_server, {"messages": msgs, "model": "gpt-4"})
    assert r.status_code == 404 and r.json()["error"]["code"] == 404
    r = chat(engine_server, {"messages": [{"role": "user", "content": [audio_part(b"RIFFjunk")]}]})
    assert r.status_code == 400


def test_streamed_speech_raw_or_events_and_speed_refused(engine_server: ServerProcess) -> None:
    body = {"input": CLIP_TEXT, "response_format": "pcm", "stream": True, "voice": "joe"}
    raw_body = {**body, "stream_format": "audio"}
    with httpx.stream("POST", engine_server.url + "/v1/audio/speech", json=raw_body, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"] == "audio/pcm"
        pieces = list(r.iter_raw())
    pcm = b"".join(pieces)
    assert len(pcm) % 2 == 0 and speech_ratio(pcm_to_float(pcm), 24000) > 0.3
    # `stream` alone: the same audio as `speech.audio.delta` events (Piper is deterministic here)
    r = httpx.post(engine_server.url + "/v1/audio/speech", json=body, timeout=60)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    deltas = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    assert b"".join(base64.b64decode(d["audio"]) for d in deltas[:-1]) == pcm
    assert deltas[-1]["type"] == "speech.audio.done" and deltas[-1]["usage"]["output_tokens"] > 0
    for streamed in (body, raw_body):
        r = httpx.post(engine_server.url + "/v1/audio/speech", json={**streamed, "speed": 1.5}, timeout=30)
        assert r.status_code == 400 and "not supported with speed adjustment" in r.json()["error"]["message"]
    normal = decode_wav(speech_wav(engine_server, CLIP_TEXT))
    fast = decode_wav(speech_wav(engine_server, CLIP_TEXT, speed=2.0))  # speed works without stream
    assert 0.35 < fast.duration / normal.duration < 0.65
    with httpx.stream(
        "POST",
        engine_server.url + "/v1/audio/speech",
        json={**raw_body, "response_format": "wav"},
        timeout=60,
    ) as r:
        head = r.read()[:44]
    assert head[:4] == b"RIFF" and head[4:8] == b"\xff\xff\xff\xff"  # streamed WAV: unknown sizes


def test_cloning_fields_are_validated(engine_server: ServerProcess) -> None:
    clip = speech_wav(engine_server, CLIP_TEXT)
    data_url = "data:audio/wav;base64," + base64.b64encode(clip).decode()

    def speech(**fields: Any) -> httpx.Response:
        return httpx.post(
            engine_server.url + "/v1/audio/speech", json={"input": "Hello.", **fields}, timeout=60
        )

    assert speech(task_type="Base", ref_audio=data_url, ref_text=CLIP_TEXT).status_code == 200
    assert speech(ref_audio=data_url, ref_text=CLIP_TEXT).status_code == 200  # Base is inferred
    cases = {
        "ref_audio must be a URL": speech(
            task_type="Base", ref_audio=base64.b64encode(clip).decode(), ref_text="x"
        ),
        "non-empty 'ref_text'": speech(task_type="Base", ref_audio=data_url),
        "Invalid language 'Klingon'": speech(language="Klingon"),
        "Invalid voice 'vivian'. Supported: joe": speech(voice="vivian"),
    }
    for words, r in cases.items():
        assert r.status_code == 400 and words in r.json()["error"]["message"], (words, r.text)
        assert r.json()["error"]["param"] is None  # vLLM names no param for these
    short = "data:audio/wav;base64," + base64.b64encode(wav_bytes(bytes(4800), 24000)).decode()
    r = speech(task_type="Base", ref_audio=short, ref_text="too short")
    assert r.status_code == 400 and "Reference audio too short (0.1s)" in r.json()["error"]["message"]
    assert speech(task_type="Base", ref_audio=data_url, x_vector_only_mode=True).status_code == 200
    assert speech(ref_text="only for Base", task_type="CustomVoice").status_code == 400


def test_voices_upload_list_use_delete(engine_server: ServerProcess) -> None:
    url = engine_server.url + "/v1/audio/voices"
    clip = speech_wav(engine_server, CLIP_TEXT)
    form = {"name": "Tester", "consent": "consent-123", "ref_text": CLIP_TEXT}
    r = httpx.post(url, data=form, files={"audio_sample": ("t.wav", clip, "audio/wav")})
    assert r.status_code == 200, r.text
    other = speech_wav(engine_server, QUESTION)  # the same name again replaces the first clip
    again = httpx.post(url, data=form, files={"audio_sample": ("t.wav", other, "audio/wav")})
    assert again.status_code == 200 and again.json()["voice"]["file_size"] == len(other)
    short = httpx.post(
        url,
        data={**form, "name": "short"},
        files={"audio_sample": ("s.wav", wav_bytes(bytes(4800), 24000), "audio/wav")},
    )
    assert short.status_code == 400
    assert httpx.post(url, data={"name": "x", "consent": "c"}).status_code == 400  # neither sample nor vector
    listing = httpx.get(url).json()
    uploaded = {v["name"]: v for v in listing["uploaded_voices"]}
    assert uploaded["Tester"]["ref_text"] == CLIP_TEXT and uploaded["Tester"]["embedding_source"] == "audio"
    assert uploaded["Tester"]["file_size"] == len(other) and "tester" in listing["voices"]
    use = httpx.post(
        engine_server.url + "/v1/audio/speech",
        json={"input": "Hello.", "voice": "tester", "task_type": "Base"},
        timeout=60,
    )
    assert use.status_code == 200
    assert httpx.delete(url + "/tester").status_code == 200
    assert httpx.delete(url + "/tester").status_code == 404


def _model_samples(engine_server: ServerProcess) -> dict[str, list[tuple[dict[str, str], float]]]:
    text = httpx.get(engine_server.url + "/metrics", timeout=10).text
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith(("vllm_omni:", "vllm:")) and not sample.name.endswith("_created"):
                out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def test_metrics_in_vllm_omni_names(engine_server: ServerProcess) -> None:
    """vLLM-Omni 0.30.0's names and labels (tests/real_vllm_omni/test_metrics_names.py compares them with a
    real server): pipeline families by `model_name`, the first-packet histogram by the audio stage."""
    before = _model_samples(engine_server)
    assert not [n for n in before if n.startswith("vllm:omni_")], sorted(before)  # the old invented names
    for name in (
        "vllm_omni:num_requests_running",
        "vllm_omni:num_requests_waiting",
        "vllm_omni:e2e_request_latency_s_count",
        "vllm_omni:prompt_tokens_total",
        "vllm_omni:generation_tokens_total",
    ):
        assert {frozenset(labels) for labels, _ in before[name]} == {frozenset({"model_name"})}, name
    body = {
        "input": CLIP_TEXT,
        "response_format": "pcm",
        "stream": True,
        "voice": "joe",
        "stream_format": "audio",
    }
    with httpx.stream("POST", engine_server.url + "/v1/audio/speech", json=body, timeout=60) as r:
        assert r.status_code == 200 and len(r.read()) > 0

    def tts_count(samples: dict[str, list[tuple[dict[str, str], float]]], name: str) -> float:
        return sum(v for labels, v in samples.get(name, []) if labels["model_name"] == DEFAULT_TTS_NAME)

    after = _model_samples(engine_server)
    for name in ("vllm_omni:e2e_request_latency_s_count", "vllm_omni:audio_ttfp_s_count"):
        assert tts_count(after, name) == tts_count(before, name) + 1, name
    ok = [labels for labels, _ in after["vllm_omni:requests_success_total"]]
    assert {"model_name": DEFAULT_TTS_NAME, "finished_reason": "stop"} in ok
    ttfp = [labels for labels, _ in after["vllm_omni:audio_ttfp_s_count"]]
    assert {"model_name": DEFAULT_TTS_NAME, "stage": "1", "replica": "0"} in ttfp  # Qwen3-TTS's code2wav
