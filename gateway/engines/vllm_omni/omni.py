"""Transcriber and Responder over the Qwen3-Omni server's `POST /v1/chat/completions` (fact sheet §2, §5)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import numpy as np

from gateway.audio.resample import resample
from gateway.audio.text import split_sentences
from gateway.engines.base import (
    ConversationRequest,
    ModelInfo,
    ModelState,
    ResponseEvent,
    SynthesisRequest,
    Synthesizer,
    Transcription,
    TranscriptSegment,
    UnknownVoiceError,
    UnsupportedLanguageError,
)
from gateway.engines.languages import NAMES, normalize_language
from gateway.engines.vllm_omni.audio import PcmJoiner
from gateway.engines.vllm_omni.backend import BackendClient, BackendError, bad_answer
from gateway.engines.vllm_omni.protocol import (
    ASR_INSTRUCTION,
    DONE,
    OMNI_SPEAKERS,
    QWEN_OMNI_SYSTEM_PROMPT,
    ProtocolError,
    audio_content_part,
    chat_request,
    decode_wav_b64,
    parse_chat_response,
    parse_sse_data,
    parse_stream_chunk,
    wav_base64,
)

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
        return tuple(NAMES)


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
        code = normalize_language(language)
        if code is not None and code not in self.languages():
            raise UnsupportedLanguageError(
                f"language {language!r} is not supported for transcription; supported: "
                + ", ".join(self.languages())
            )
        return code

    async def transcribe(self, samples: object, language: str | None = None) -> Transcription:
        self.backend.check_usable("asr")
        code = self.check_language(language)
        array = np.asarray(samples, dtype=np.float32)
        duration = array.size / ASR_RATE
        instruction = self._instruction
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
    §2). When the deployment has no audio output (`OMNI_AUDIO_OUTPUT=off`, a thinker-only deploy config, or
    `auto` and a reply that came back without audio) the text is spoken by the TTS Synthesizer instead,
    sentence by sentence as it streams.
    """

    name = "vllm-omni"
    accepts_audio = True

    def __init__(
        self,
        backend: BackendClient,
        sample_rate: int,
        tts: Synthesizer | None,
        speaker: str = "ethan",
        audio_output: str = "auto",
        system_prompt: str = QWEN_OMNI_SYSTEM_PROMPT,
    ) -> None:
        self.backend = backend
        self.sample_rate = sample_rate
        self._tts = tts
        self._speaker = speaker.lower()
        self._audio_output = audio_output  # "auto" | "on" | "off"
        self._system_prompt = system_prompt
        self.last_tokens_per_second: float | None = None

    @property
    def produces_audio(self) -> bool:
        return self._audio_output != "off" or self._tts is not None

    def voices(self) -> Sequence[str]:
        return OMNI_SPEAKERS

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
        turns = [m for m in history if m.role in ("user", "assistant")]
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": [{"type": "text", "text": system or self._system_prompt}]}
        ]
        if b64_audio is not None and turns and turns[-1].role == "user":
            turns = turns[:-1]  # the user's turn goes in as audio, not as our transcript of it
        for m in turns:
            messages.append({"role": m.role, "content": m.content})
        if b64_audio is not None:
            messages.append({"role": "user", "content": [audio_content_part(b64_audio)]})
        return messages

    def _speaker_for(self, voice: str) -> str:
        wanted = voice.strip().lower()
        return wanted if wanted in OMNI_SPEAKERS else self._speaker

    async def respond(self, request: ConversationRequest) -> AsyncIterator[ResponseEvent]:
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
        joiner = PcmJoiner(self.sample_rate)
        pending_text = ""  # text not yet spoken by the TTS fallback
        reply_text = ""
        spoken_by_tts = not want_audio and self._tts is not None
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
                        if spoken_by_tts:
                            pending_text += chunk.text
                            spans = split_sentences(pending_text)
                            if len(spans) >= 2:
                                ready, pending_text = (
                                    pending_text[: spans[-1].start],
                                    pending_text[spans[-1].start :],
                                )
                                async for ev in self._speak(ready, request):
                                    yield ev
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
        completion = int((usage or {}).get("completion_tokens") or 0) or tokens
        if want_audio and not got_audio and self._tts is not None and reply_text.strip():
            if self._audio_output == "auto":
                log.warning("the omni deployment returned no audio: replies are spoken by the TTS server")
                self._audio_output = "off"
            async for ev in self._speak(reply_text, request):
                yield ev
        elif spoken_by_tts and pending_text.strip():
            async for ev in self._speak(pending_text, request):
                yield ev
        # Throughput from the server's own count (`usage.completion_tokens`) over the span the text streamed
        # in; a delta can carry several tokens, so counting deltas would under-report.
        span = t_last - t_first if t_first is not None else 0.0
        tps = (completion - 1) / span if completion > 1 and span > 0 else None
        self.last_tokens_per_second = tps
        yield ResponseEvent(kind="usage", completion_tokens=completion, tokens_per_second=tps)

    async def _speak(self, text: str, request: ConversationRequest) -> AsyncIterator[ResponseEvent]:
        if self._tts is None or not text.strip():
            return
        try:
            try:  # the session's voice is a TTS voice name when it is not an Omni speaker
                synth_request = self._tts.resolve(
                    SynthesisRequest(text=text, voice=request.voice, language=request.language or "en")
                )
            except UnknownVoiceError:
                synth_request = self._tts.resolve(
                    SynthesisRequest(text=text, voice="default", language=request.language or "en")
                )
        except ValueError as exc:
            raise BackendError(503, "backend_unavailable", "tts", f"cannot speak the reply: {exc}") from None
        gen = self._tts.stream(synth_request)
        try:
            async for chunk in gen:
                yield ResponseEvent(kind="audio", pcm=chunk.pcm)
        finally:
            await gen.aclose()  # type: ignore[attr-defined]
