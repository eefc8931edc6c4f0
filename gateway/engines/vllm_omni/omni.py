"""Transcriber and Responder over the Qwen3-Omni server's `POST /v1/chat/completions` (fact sheet §2, §5)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import numpy as np

from gateway.audio.resample import resample
from gateway.engines.base import (
    ConversationRequest,
    ModelInfo,
    ModelState,
    ResponseEvent,
    Task,
    Transcription,
    TranscriptSegment,
)
from gateway.engines.languages import NAMES, check_language
from gateway.engines.vllm_omni.audio import PcmJoiner
from gateway.engines.vllm_omni.backend import BackendClient, bad_answer
from gateway.engines.vllm_omni.protocol import (
    ASR_INSTRUCTION,
    DONE,
    OMNI_SPEAKERS,
    QWEN_OMNI_SYSTEM_PROMPT,
    QWEN_TTS_LANGUAGES,
    TRANSLATE_INSTRUCTION,
    ProtocolError,
    audio_content_part,
    chat_request,
    decode_wav_b64,
    parse_chat_response,
    parse_sse_data,
    parse_stream_chunk,
    wav_base64,
)
from gateway.engines.vllm_omni.tools import ToolCallReader, message, request_fields

log = logging.getLogger(__name__)

ASR_RATE = 16000  # the Omni processor resamples audio input to 16 kHz (fact sheet §2): send it at that rate


class OmniComponent:
    """A role served by the Omni backend: its lifecycle and readiness are the backend's, and it speaks every
    language Qwen3-Omni does."""

    backend: BackendClient

    async def start(self) -> None:
        await self.backend.start()

    async def aclose(self) -> None:
        await self.backend.aclose()

    @property
    def state(self) -> ModelState:
        return self.backend.state

    def languages(self) -> Sequence[str]:
        # The ten the Qwen3 speech models share (fact sheet §3), not every name the gateway knows.
        return tuple(code for code, name in NAMES.items() if name in QWEN_TTS_LANGUAGES)


def conversation_language(component: OmniComponent, language: str | None) -> str:
    """The Omni responders' language check: any language Qwen3-Omni speaks, English when none is named."""
    code = check_language(language, component.languages(), "omni", default="en")
    assert code is not None
    return code


class VllmOmniTranscriber(OmniComponent):
    """ASR through chat completions: the audio part plus an instruction, `modalities: ["text"]` (§5)."""

    name = "vllm-omni"
    sample_rate = ASR_RATE

    def __init__(self, backend: BackendClient, instruction: str = ASR_INSTRUCTION) -> None:
        self.backend = backend
        self._instruction = instruction

    def models(self) -> Sequence[ModelInfo]:
        return (
            ModelInfo(
                "asr", self.backend.model_id or "(not discovered)", self.name, self.state, self.backend.detail
            ),
        )

    def check_language(self, language: str | None) -> str | None:
        return check_language(language, self.languages(), "asr", default=None)  # None: Omni detects it

    @property
    def can_translate(self) -> bool:
        return True

    @property
    def can_time_words(self) -> bool:
        return False  # a chat completion has no timestamps: the service answers 400 before asking

    async def transcribe(self, samples: object, language: str | None = None) -> Transcription:
        return await self._ask(samples, language, self._instruction)

    async def transcribe_detailed(
        self, samples: object, language: str | None, *, words: bool, task: Task
    ) -> Transcription:
        instruction = TRANSLATE_INSTRUCTION if task == "translate" else self._instruction
        return await self._ask(samples, language, instruction)

    async def _ask(self, samples: object, language: str | None, instruction: str) -> Transcription:
        self.backend.check_usable("asr")
        code = self.check_language(language)
        array = np.asarray(samples, dtype=np.float32)
        duration = array.size / ASR_RATE
        if code:
            instruction += f" The audio is in {NAMES[code]}."
        b64 = await asyncio.to_thread(wav_base64, array, ASR_RATE)
        body = chat_request(
            [{"role": "user", "content": [audio_content_part(b64), {"type": "text", "text": instruction}]}],
            model=self.backend.model_id,
            modalities=["text"],
            speaker=None,
            stream=False,
            max_tokens=int(min(4096, 64 + 10 * duration)),
            temperature=0.0,
        )
        answer = await self.backend.request_json("POST", "/v1/chat/completions", json_body=body)
        try:
            result = parse_chat_response(answer)
        except ProtocolError as exc:
            err = bad_answer(self.backend.name, f"the omni backend's transcription is malformed: {exc}")
            self.backend.record_failure(err)
            raise err from None
        text = result.text.strip()
        segments = [TranscriptSegment(0.0, round(duration, 3), text)] if text else []
        return Transcription(text=text, language=code or "en", duration=round(duration, 3), segments=segments)


class VllmOmniResponder(OmniComponent):
    """The conversation engine: the user's audio in, streamed text and audio out, with the history.

    Audio out comes from Qwen3-Omni itself (SSE chunks with `modality: "audio"`, each a whole 24 kHz WAV,
    §2). Where the deployment has none, the reply is text only and the voice pipeline speaks it with the
    Synthesizer: `OMNI_AUDIO_OUTPUT=off` says so up front (`produces_audio` False); with `auto` the first
    reply that comes back without audio (a thinker-only deploy config) says so (`has_audio` False on its
    usage event), and later replies ask for text only.
    """

    name = "vllm-omni"
    accepts_audio = True

    def __init__(
        self,
        backend: BackendClient,
        sample_rate: int,
        speaker: str = "ethan",
        audio_output: str = "auto",
        system_prompt: str = QWEN_OMNI_SYSTEM_PROMPT,
    ) -> None:
        self.backend = backend
        self.sample_rate = sample_rate
        self._speaker = speaker.lower()
        self._audio_output = audio_output  # "auto" | "on" | "off"
        self._system_prompt = system_prompt
        self.last_tokens_per_second: float | None = None

    @property
    def produces_audio(self) -> bool:
        return self._audio_output != "off"

    def check_language(self, language: str | None) -> str:
        return conversation_language(self, language)

    def models(self) -> Sequence[ModelInfo]:
        return (
            ModelInfo(
                "omni",
                self.backend.model_id or "(not discovered)",
                self.name,
                self.state,
                self.backend.detail,
            ),
        )

    def _messages(self, request: ConversationRequest, b64_audio: str | None) -> list[dict[str, Any]]:
        history = list(request.history)
        system = next((m.content for m in history if m.role == "system"), None)
        turns = [m for m in history if m.role in ("user", "assistant", "tool")]
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": [{"type": "text", "text": system or self._system_prompt}]}
        ]
        if b64_audio is not None and turns and turns[-1].role == "user":
            turns = turns[:-1]  # the user's turn goes in as audio, not as our transcript of it
        for m in turns:
            messages.append(message(m))
        if b64_audio is not None:
            messages.append({"role": "user", "content": [audio_content_part(b64_audio)]})
        return messages

    def _speaker_for(self, voice: str) -> str:
        wanted = voice.strip().lower()
        return wanted if wanted in OMNI_SPEAKERS else self._speaker

    async def respond(self, request: ConversationRequest) -> AsyncGenerator[ResponseEvent, None]:
        self.backend.check_usable("omni")
        b64 = None
        if request.audio is not None:
            samples = np.asarray(request.audio, dtype=np.float32)
            if request.audio_rate != ASR_RATE:
                samples = await asyncio.to_thread(resample, samples, request.audio_rate, ASR_RATE)
            b64 = await asyncio.to_thread(wav_base64, samples, ASR_RATE)
        want_audio = self._audio_output != "off"
        body = chat_request(
            self._messages(request, b64),
            model=self.backend.model_id,
            modalities=["text", "audio"] if want_audio else ["text"],
            speaker=self._speaker_for(request.voice),
            stream=True,
            max_tokens=request.max_tokens,
        )
        body |= request_fields(request.tools, request.tool_choice)
        calls = ToolCallReader()
        joiner = PcmJoiner(self.sample_rate)
        reply_text = ""
        got_audio = False
        tokens = 0
        t_first: float | None = None
        t_last = 0.0
        usage: dict[str, Any] | None = None
        async with self.backend.stream("POST", "/v1/chat/completions", json_body=body) as resp:
            try:
                async for line in resp.iter_lines():
                    event = parse_sse_data(line)
                    if event is None:
                        continue
                    if event == DONE:
                        break
                    assert isinstance(event, dict)
                    for call in calls.read(event):
                        yield call
                    chunk = parse_stream_chunk(event)
                    if chunk is None:
                        continue
                    if chunk.usage:
                        usage = chunk.usage
                    if chunk.modality == "text" and chunk.text:
                        now = time.perf_counter()
                        t_first = t_first or now
                        t_last = now
                        tokens += 1
                        reply_text += chunk.text
                        yield ResponseEvent(kind="text", text=chunk.text)
                    elif chunk.modality == "audio" and chunk.audio_b64:
                        wav = decode_wav_b64(chunk.audio_b64)
                        got_audio = True
                        pcm = joiner.push(wav.pcm, wav.sample_rate)
                        if pcm:
                            yield ResponseEvent(kind="audio", pcm=pcm)
                else:
                    raise bad_answer(self.backend.name, "the omni backend's stream ended without [DONE]")
                tail = joiner.finish()
                if tail:
                    yield ResponseEvent(kind="audio", pcm=tail)
            except (ProtocolError, ValueError) as exc:
                raise bad_answer(
                    self.backend.name, f"the omni backend's stream is malformed: {exc}"
                ) from None
        if want_audio and not got_audio and reply_text.strip() and self._audio_output == "auto":
            log.warning("the omni deployment returned no audio: replies are spoken by the TTS engine")
            self._audio_output = "off"
        completion = int((usage or {}).get("completion_tokens") or 0) or tokens
        # Throughput from the server's own count (`usage.completion_tokens`) over the span the text streamed
        # in; a delta can carry several tokens, so counting deltas would under-report.
        span = t_last - t_first if t_first is not None else 0.0
        tps = (completion - 1) / span if completion > 1 and span > 0 else None
        self.last_tokens_per_second = tps
        yield ResponseEvent(
            kind="usage", completion_tokens=completion, tokens_per_second=tps, has_audio=got_audio
        )
