"""Wire fidelity: requests and what must come back, written once as data, run against a model server.

The expectations are what a real vLLM-Omni 0.30.0 server answered (its captured requests and responses, see
docs/vllm-omni.md "What the real 0.30.0 server answers"), plus, where no capture exists, what its source does
(marked "source"). `speech_server` / `omni_server` give the server under test here: the engine-server (the
CPU stand-in the operator runs in `cpu` mode). tests/real_vllm_omni/test_wire_fidelity.py runs every case
unchanged against the REAL vLLM-Omni 0.30.0 servers, so the stand-in and the real thing are held to one list.
"""

from __future__ import annotations

import base64
import io
import json
import secrets
import struct
import wave
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import numpy as np
import pytest

from gateway.engine_server.models import DEFAULT_OMNI_NAME, DEFAULT_TTS_NAME

# -- the servers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class WireServer:
    url: str
    model: str  # the served model name requests must carry


SPEECH_SERVERS = ["engine-server"]
OMNI_SERVERS = ["engine-server"]


def _server(request: pytest.FixtureRequest, role: str) -> WireServer:
    if request.param == "engine-server":  # one process serves both roles
        engine = request.getfixturevalue("engine_server")
        return WireServer(engine.url, DEFAULT_TTS_NAME if role == "speech" else DEFAULT_OMNI_NAME)
    raise NotImplementedError(f"no {role} server named {request.param!r}")


@pytest.fixture(scope="module", params=SPEECH_SERVERS)
def speech_server(request: pytest.FixtureRequest) -> WireServer:
    return _server(request, "speech")


@pytest.fixture(scope="module", params=OMNI_SERVERS)
def omni_server(request: pytest.FixtureRequest) -> WireServer:
    return _server(request, "omni")


# -- what a case is ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Has:
    """A list that contains these items."""

    items: tuple[Any, ...]


@dataclass(frozen=True)
class Includes:
    """A list with exactly one element matching this shape."""

    shape: Any


@dataclass(frozen=True)
class Prefix:
    text: str


class WavB64:
    """A base64 WAV file: 24 kHz, mono, 16-bit PCM, not empty."""


@dataclass(frozen=True)
class Exchange:
    """One request and what must come back. Strings may name `{model}`, `{voice}` (a fresh name per case),
    `{ref}` (a 2 s reference clip as a data URL) and `{ref_b64}` (the same clip as raw base64)."""

    method: str
    path: str
    json: dict[str, Any] | None = None
    form: dict[str, str] | None = None  # multipart, with the reference clip as `audio_sample`
    status: int = 200
    content_type: str = "application/json"  # a prefix of the answer's content-type
    shape: Any = None  # the JSON answer must match (dict: these keys; type: any such value; list: each)
    error: tuple[str, str | None, str] | None = None  # (error.type, error.param, a message substring)
    audio: str | None = None  # "wav" | "pcm" | "wav-stream" | "speech-sse" | "chat-sse"
    headers: tuple[str, ...] = ()  # headers that must be present


@dataclass(frozen=True)
class Case:
    id: str
    exchanges: tuple[Exchange, ...]
    note: str = ""


MODEL_JSON = {"model": "{model}"}
BASE = {**MODEL_JSON, "input": "Hello from the voice gateway.", "language": "English", "task_type": "Base"}
CLONE = {**BASE, "ref_audio": "{ref}", "ref_text": "A short reference clip."}
USAGE_HEADERS = (
    "x-vllm-omni-input-tokens",
    "x-vllm-omni-output-tokens",
    "x-vllm-omni-total-tokens",
    "x-vllm-omni-input-text-tokens",
    "x-vllm-omni-input-audio-tokens",
)
SPEED_SSE = "SSE streaming is not supported with speed adjustment. Use a non-streaming request"
SPEED_RAW = "Streaming is not supported with speed adjustment. Use a non-streaming request"
REF_FORMAT = "ref_audio must be a URL (http/https), base64 data URL (data:...), or file URI (file://...)"
NO_REF = "Base task requires 'ref_audio' or 'speaker_embedding' for voice cloning"


def refused(
    message: str, status: int = 400, kind: str = "BadRequestError", param: str | None = None
) -> dict[str, Any]:
    return {"status": status, "error": (kind, param, message)}


def speech(body: dict[str, Any], **expect: Any) -> tuple[Exchange, ...]:
    return (Exchange("POST", "/v1/audio/speech", json=body, **expect),)


SPEECH_CASES = [
    Case(
        "whole-wav",
        speech(
            {**CLONE, "response_format": "wav"},
            content_type="audio/wav",
            audio="wav",
            headers=USAGE_HEADERS,
        ),
    ),
    Case(
        "whole-pcm",
        speech(
            {**CLONE, "response_format": "pcm"},
            content_type="audio/pcm",
            audio="pcm",
            headers=USAGE_HEADERS,
        ),
    ),
    Case(
        "stream-is-sse",
        speech(
            {**CLONE, "response_format": "pcm", "stream": True},
            content_type="text/event-stream",
            audio="speech-sse",
        ),
        "stream: true alone answers events, not bytes",
    ),
    Case(
        "stream-format-sse",
        speech(
            {**CLONE, "response_format": "pcm", "stream_format": "sse"},
            content_type="text/event-stream",
            audio="speech-sse",
        ),
        "source: protocol/audio.py is_sse_stream",
    ),
    Case(
        "stream-format-audio-pcm",
        speech(
            {**CLONE, "response_format": "pcm", "stream": True, "stream_format": "audio"},
            content_type="audio/pcm",
            audio="pcm",
        ),
    ),
    Case(
        "stream-format-audio-wav",
        speech(
            {**CLONE, "response_format": "wav", "stream": True, "stream_format": "audio"},
            content_type="audio/wav",
            audio="wav-stream",
        ),
        "source: serving_speech.py _create_wav_header",
    ),
    Case(
        "speed-with-sse",
        speech({**CLONE, "response_format": "pcm", "stream": True, "speed": 1.5}, **refused(SPEED_SSE)),
    ),
    Case(
        "speed-with-raw-stream",
        speech(
            {**CLONE, "response_format": "pcm", "stream": True, "stream_format": "audio", "speed": 1.5},
            **refused(SPEED_RAW),
        ),
        "source: serving_speech.py _validate_speech_streaming_request",
    ),
    Case(
        "stream-needs-pcm-or-wav",
        speech(
            {**CLONE, "response_format": "mp3", "stream": True},
            **refused("requires response_format='pcm' or 'wav'", kind="Bad Request", param="body"),
        ),
        "source: protocol/audio.py validate_streaming_constraints, vLLM's validation handler",
    ),
    Case("base-without-reference", speech({**BASE, "response_format": "pcm"}, **refused(NO_REF))),
    Case(
        "base-default-placeholder",
        speech({**BASE, "voice": "default", "response_format": "pcm"}, **refused(NO_REF)),
        "the listing's 'default' is no speaker: a Base request naming it has no reference",
    ),
    Case(
        "base-unknown-voice",
        speech(
            {**BASE, "voice": "nobody", "response_format": "pcm"},
            **refused("Base task with built-in speaker 'nobody' requires 'ref_audio' for voice cloning"),
        ),
    ),
    Case(
        "raw-base64-reference",
        speech({**CLONE, "ref_audio": "{ref_b64}", "response_format": "pcm"}, **refused(REF_FORMAT)),
    ),
    Case(
        "reference-without-transcript",
        speech(
            {**BASE, "ref_audio": "{ref}", "response_format": "pcm"},
            **refused("Base task requires non-empty 'ref_text' (transcript of the reference audio)"),
        ),
        "source: tts_adapters/qwen3_tts.py validate",
    ),
    Case(
        "wrong-model",
        speech(
            {**CLONE, "model": "nope", "response_format": "pcm"},
            **refused("The model `nope` does not exist.", 404, "NotFoundError", "model"),
        ),
    ),
    Case(
        "voices-upload-overwrite-use-delete",
        (
            Exchange(
                "GET",
                "/v1/audio/voices",
                shape={"voices": Has(("default",)), "uploaded_voices": list},
            ),
            Exchange(
                "POST",
                "/v1/audio/voices",
                form={"name": "{voice}", "consent": "true", "ref_text": "A short reference clip."},
                shape={
                    "success": True,
                    "voice": {
                        "name": "{voice}",
                        "consent": "true",
                        "created_at": int,
                        "mime_type": "audio/wav",
                        "file_size": int,
                        "ref_text": "A short reference clip.",
                    },
                },
            ),
            Exchange(  # the same name again: 200, and the second upload replaces the first
                "POST",
                "/v1/audio/voices",
                form={"name": "{voice}", "consent": "true", "ref_text": "A short reference clip."},
                shape={"success": True, "voice": {"name": "{voice}"}},
            ),
            Exchange(
                "GET",
                "/v1/audio/voices",
                shape={
                    "voices": Has(("default", "{voice}")),
                    "uploaded_voices": Includes(
                        {
                            "name": "{voice}",
                            "consent": "true",
                            "created_at": int,
                            "file_size": int,
                            "mime_type": "audio/wav",
                            "embedding_source": "audio",
                            "embedding_dim": None,
                            "ref_text": "A short reference clip.",
                        }
                    ),
                },
            ),
            Exchange(
                "POST",
                "/v1/audio/speech",
                json={**BASE, "voice": "{voice}", "response_format": "pcm"},
                content_type="audio/pcm",
                audio="pcm",
                headers=USAGE_HEADERS,
            ),
            Exchange(
                "POST",
                "/v1/audio/speech",
                json={**BASE, "voice": "{voice}", "response_format": "pcm", "stream": True},
                content_type="text/event-stream",
                audio="speech-sse",
            ),
            Exchange(
                "DELETE",
                "/v1/audio/voices/{voice}",
                shape={"success": True, "message": "Voice '{voice}' deleted successfully"},
            ),
            Exchange(
                "DELETE",
                "/v1/audio/voices/{voice}",
                status=404,
                error=("NotFoundError", None, "Voice '{voice}' not found"),
            ),
            Exchange(  # a voice the server does not hold (lost, deleted): the 400 the gateway recovers from
                "POST",
                "/v1/audio/speech",
                json={**BASE, "voice": "{voice}", "response_format": "pcm"},
                status=400,
                error=(
                    "BadRequestError",
                    None,
                    "Base task with built-in speaker '{voice}' requires 'ref_audio'",
                ),
            ),
        ),
    ),
    Case(
        "version-models-health",
        (
            Exchange("GET", "/version", shape={"version": Prefix("0.30.")}),
            Exchange(
                "GET",
                "/v1/models",
                shape={
                    "object": "list",
                    "data": Includes({"id": "{model}", "object": "model", "owned_by": "vllm"}),
                },
            ),
            Exchange("GET", "/health", content_type=""),
        ),
    ),
]

QUESTION = {"type": "text", "text": "Say hello."}


def chat(stream: bool, modalities: list[str], **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        **MODEL_JSON,
        "messages": [
            {"role": "system", "content": "You are a voice assistant."},
            {
                "role": "user",
                "content": [
                    {"type": "input_audio", "input_audio": {"data": "{q}", "format": "wav"}},
                    QUESTION,
                ],
            },
        ],
        "modalities": modalities,
        "stream": stream,
        "max_tokens": 16,
        **extra,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


MESSAGE = {"role": "assistant", "content": str}
OMNI_CASES = [
    Case(
        "chat-text-only",
        (
            Exchange(
                "POST",
                "/v1/chat/completions",
                json=chat(False, ["text"]),
                shape={
                    "object": "chat.completion",
                    "model": "{model}",
                    "choices": [{"index": 0, "message": {**MESSAGE, "audio": None}, "finish_reason": str}],
                    "usage": {"prompt_tokens": int, "completion_tokens": int, "total_tokens": int},
                },
            ),
        ),
    ),
    Case(
        "chat-text-and-audio-one-choice",
        (
            Exchange(
                "POST",
                "/v1/chat/completions",
                json=chat(False, ["text", "audio"], speaker="ethan"),
                shape={
                    "object": "chat.completion",
                    "choices": [
                        {
                            "index": 0,
                            "message": {
                                **MESSAGE,
                                "audio": {
                                    "id": Prefix("audio-"),
                                    "data": WavB64(),
                                    "expires_at": int,
                                    "transcript": "",
                                },
                            },
                            "audio_metadata": {
                                "format": "wav",
                                "sample_rate_hz": 24000,
                                "frame_count": int,
                                "channels": 1,
                            },
                        }
                    ],
                },
            ),
        ),
    ),
    Case(
        "chat-stream-text-then-audio",
        (
            Exchange(
                "POST",
                "/v1/chat/completions",
                json=chat(True, ["text", "audio"], speaker="ethan"),
                content_type="text/event-stream",
                audio="chat-sse",
            ),
        ),
    ),
    Case(
        "chat-wrong-model",
        (
            Exchange(
                "POST",
                "/v1/chat/completions",
                json={**chat(False, ["text"]), "model": "nope"},
                status=404,
                error=("NotFoundError", "model", "The model `nope` does not exist."),
            ),
        ),
    ),
]


# -- running a case ----------------------------------------------------------------------------


def _wav(seconds: float, rate: int, freq: float) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    pcm = (np.sin(2 * np.pi * freq * t) * 0.3 * 32767).astype("<i2").tobytes()
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return out.getvalue()


REF_WAV = _wav(2.0, 24000, 220.0)
QUESTION_WAV = _wav(1.0, 16000, 330.0)


@dataclass
class Context:
    server: WireServer
    voice: str = field(default_factory=lambda: f"wire{secrets.token_hex(4)}")

    def values(self) -> dict[str, str]:
        ref_b64 = base64.b64encode(REF_WAV).decode()
        return {
            "{model}": self.server.model,
            "{voice}": self.voice,
            "{ref}": f"data:audio/wav;base64,{ref_b64}",
            "{ref_b64}": ref_b64,
            "{q}": base64.b64encode(QUESTION_WAV).decode(),
        }


def fill(value: Any, values: dict[str, str]) -> Any:
    if isinstance(value, str):
        if value in values:
            return values[value]
        for key, sub in values.items():
            value = value.replace(key, sub)
        return value
    if isinstance(value, dict):
        return {k: fill(v, values) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(fill(v, values) for v in value)
    if isinstance(value, Has):
        return Has(fill(value.items, values))
    if isinstance(value, Includes):
        return Includes(fill(value.shape, values))
    return value


def match(actual: Any, expected: Any, where: str = "body") -> None:
    if isinstance(expected, type):
        assert isinstance(actual, expected) and not (expected is int and isinstance(actual, bool)), (
            f"{where}: {actual!r} is not {expected.__name__}"
        )
    elif isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: {actual!r} is not an object"
        for key, value in expected.items():
            assert key in actual, f"{where}: no {key!r} in {sorted(actual)}"
            match(actual[key], value, f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{where}: {actual!r}"
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            match(a, e, f"{where}[{i}]")
    elif isinstance(expected, Has):
        assert isinstance(actual, list) and all(i in actual for i in expected.items), f"{where}: {actual!r}"
    elif isinstance(expected, Includes):
        found = [a for a in actual if _matches(a, expected.shape)]
        assert len(found) == 1, f"{where}: {len(found)} elements match {expected.shape!r} in {actual!r}"
    elif isinstance(expected, Prefix):
        assert isinstance(actual, str) and actual.startswith(expected.text), f"{where}: {actual!r}"
    elif isinstance(expected, WavB64):
        check_wav(base64.b64decode(actual), where)
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


def _matches(actual: Any, expected: Any) -> bool:
    try:
        match(actual, expected)
    except AssertionError:
        return False
    return True


def check_wav(data: bytes, where: str) -> int:
    """A whole WAV file: 24 kHz mono PCM16 with audio; returns its frame count."""
    with wave.open(io.BytesIO(data), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (24000, 1, 2), where
        frames = w.getnframes()
        assert frames > 0 and len(w.readframes(frames)) == frames * 2, where
    return frames


def sse_events(raw: bytes) -> list[tuple[str | None, str]]:
    """(event name or None, data) per event of a `text/event-stream` body."""
    out = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        name = None
        data = []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        out.append((name, "\n".join(data)))
    return out


def check_speech_sse(raw: bytes) -> None:
    """`speech.audio.delta` events with base64 PCM16 in `audio`, then one `speech.audio.done` with usage."""
    events = sse_events(raw)
    names = [n for n, _ in events]
    assert names[-1] == "speech.audio.done" and set(names[:-1]) == {"speech.audio.delta"}, names
    pcm = b""
    for name, data in events:
        event = json.loads(data)
        assert event["type"] == name
        if name == "speech.audio.delta":
            assert event["response_format"] == "pcm"
            pcm += base64.b64decode(event["audio"], validate=True)
    assert pcm and len(pcm) % 2 == 0
    usage = json.loads(events[-1][1])["usage"]
    match(
        usage,
        {
            "input_tokens": int,
            "output_tokens": int,
            "total_tokens": int,
            "input_token_details": {"text_tokens": int, "audio_tokens": int},
        },
        "usage",
    )
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


def check_chat_sse(raw: bytes) -> None:
    """Text chunks start the stream (the first `{"role": "assistant", "content": ""}`), audio chunks end it
    (each a whole WAV with `audio_metadata`; the last one alone carries finish_reason "stop"), then a
    usage-only chunk and `[DONE]`. The captured 16-token reply had all its text before the audio; chunks
    are sent as each stage produces them (serving_chat.py), so a longer reply may interleave."""
    events = [data for _, data in sse_events(raw)]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    usage_chunk = chunks.pop()
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] > 0
    assert "modality" not in usage_chunk
    modalities = [c["modality"] for c in chunks]
    assert modalities[0] == "text" and modalities[-1] == "audio", modalities
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    finishes = [c["choices"][0]["finish_reason"] for c in chunks]
    assert finishes[-1] == "stop" and not any(finishes[:-1]), finishes
    for c in chunks:
        assert c["object"] == "chat.completion.chunk" and c["choices"][0]["index"] == 0
        if c["modality"] != "audio":
            continue
        choice = c["choices"][0]
        assert choice["delta"]["role"] == "assistant"
        frames = check_wav(base64.b64decode(choice["delta"]["content"]), "audio chunk")
        metadata = {"format": "wav", "sample_rate_hz": 24000, "frame_count": frames, "channels": 1}
        match(choice["audio_metadata"], metadata, "audio_metadata")
        assert c["usage"]["completion_tokens"] == 0


def check_whole_wav(raw: bytes) -> None:
    check_wav(raw, "wav")


def check_pcm(raw: bytes) -> None:
    assert raw and len(raw) % 2 == 0, f"{len(raw)} bytes are not PCM16 audio"


def check_wav_stream(raw: bytes) -> None:
    """A streamed WAV: a 44-byte header whose sizes are 0xFFFFFFFF (unknown), then PCM16."""
    assert raw[:4] == b"RIFF" and raw[8:12] == b"WAVE", raw[:12]
    assert struct.unpack("<I", raw[4:8])[0] == 0xFFFFFFFF and struct.unpack("<I", raw[40:44])[0] == 0xFFFFFFFF
    check_pcm(raw[44:])


CHECKS: dict[str, Callable[[bytes], None]] = {
    "speech-sse": check_speech_sse,
    "chat-sse": check_chat_sse,
    "wav": check_whole_wav,
    "pcm": check_pcm,
    "wav-stream": check_wav_stream,
}


def run(server: WireServer, case: Case) -> None:
    ctx = Context(server)
    values = ctx.values()
    with httpx.Client(base_url=server.url, timeout=120) as http:
        for step, raw_exchange in enumerate(case.exchanges):
            ex = replace(
                raw_exchange,
                **{
                    k: fill(getattr(raw_exchange, k), values)
                    for k in ("path", "json", "form", "shape", "error")
                },
            )
            where = f"{case.id}[{step}] {ex.method} {ex.path}"
            kwargs: dict[str, Any] = {}
            if ex.json is not None:
                kwargs["json"] = ex.json
            if ex.form is not None:
                kwargs["data"] = ex.form
                kwargs["files"] = {"audio_sample": ("ref.wav", REF_WAV, "audio/wav")}
            r = http.request(ex.method, ex.path, **kwargs)
            assert r.status_code == ex.status, f"{where}: {r.status_code} {r.text[:300]}"
            assert r.headers.get("content-type", "").startswith(ex.content_type), (where, r.headers)
            for header in ex.headers:
                assert r.headers.get(header, "").isdigit(), f"{where}: header {header} missing"
            if ex.error is not None:
                kind, param, words = ex.error
                body = r.json()
                assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
                err = body["error"]
                assert (err["type"], err["param"], err["code"]) == (kind, param, ex.status), (where, err)
                assert words in err["message"], (where, err["message"])
            if ex.shape is not None:
                match(r.json(), ex.shape, where)
            if ex.audio is not None:
                CHECKS[ex.audio](r.content)


@pytest.mark.parametrize("case", SPEECH_CASES, ids=[c.id for c in SPEECH_CASES])
def test_speech_server_answers_like_vllm_omni(speech_server: WireServer, case: Case) -> None:
    run(speech_server, case)


@pytest.mark.parametrize("case", OMNI_CASES, ids=[c.id for c in OMNI_CASES])
def test_omni_server_answers_like_vllm_omni(omni_server: WireServer, case: Case) -> None:
    run(omni_server, case)


def test_every_case_checks_what_it_names() -> None:
    """A typo in a case must fail here, not silently check nothing."""
    for case in [*SPEECH_CASES, *OMNI_CASES]:
        for ex in case.exchanges:
            assert ex.audio is None or ex.audio in CHECKS, (case.id, ex.audio)
            assert (ex.status >= 400) == (ex.error is not None), case.id
