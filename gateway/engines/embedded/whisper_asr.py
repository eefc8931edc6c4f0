"""faster-whisper (CTranslate2, int8): Whisper base (multilingual: language detection, translation into
English) by default, or the English-only tiny.en (ASR_MODEL) where memory and CPU matter more than languages.
Model files: model_files.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from gateway.engines.base import (
    DecoderSegment,
    EngineNotReadyError,
    ModelInfo,
    ModelState,
    Task,
    TranscribedWord,
    Transcription,
    TranscriptSegment,
)
from gateway.engines.embedded.heap import HeapTrimmer
from gateway.engines.embedded.lifecycle import EmbeddedModel
from gateway.engines.embedded.model_files import DEFAULT_CACHE_DIR, WHISPER_MODELS, whisper_model_dir
from gateway.engines.languages import check_language

log = logging.getLogger(__name__)

# Whisper's language tokens (OpenAI Whisper tokenizer.py), as the ISO 639-1 codes the gateway speaks: Whisper
# writes Javanese "jw" (ISO "jv"); Hawaiian and Cantonese have no two-letter code, so a request cannot name
# them, but detection still reports them ("haw", "yue").
WHISPER_LANGUAGES = (
    "af",
    "am",
    "ar",
    "as",
    "az",
    "ba",
    "be",
    "bg",
    "bn",
    "bo",
    "br",
    "bs",
    "ca",
    "cs",
    "cy",
    "da",
    "de",
    "el",
    "en",
    "es",
    "et",
    "eu",
    "fa",
    "fi",
    "fo",
    "fr",
    "gl",
    "gu",
    "ha",
    "he",
    "hi",
    "hr",
    "ht",
    "hu",
    "hy",
    "id",
    "is",
    "it",
    "ja",
    "jv",
    "ka",
    "kk",
    "km",
    "kn",
    "ko",
    "la",
    "lb",
    "ln",
    "lo",
    "lt",
    "lv",
    "mg",
    "mi",
    "mk",
    "ml",
    "mn",
    "mr",
    "ms",
    "mt",
    "my",
    "ne",
    "nl",
    "nn",
    "no",
    "oc",
    "pa",
    "pl",
    "ps",
    "pt",
    "ro",
    "ru",
    "sa",
    "sd",
    "si",
    "sk",
    "sl",
    "sn",
    "so",
    "sq",
    "sr",
    "su",
    "sv",
    "sw",
    "ta",
    "te",
    "tg",
    "th",
    "tk",
    "tl",
    "tr",
    "tt",
    "uk",
    "ur",
    "uz",
    "vi",
    "yi",
    "yo",
    "zh",
)
# Clips longer than this go through VAD-segmented, batched decoding (bench/long_asr_bench.py measured where it
# wins: bench/README.md); shorter ones through one sequential pass, which keeps Whisper's own timestamps.
BATCHED_MIN_SECONDS = 25.0
_TO_WHISPER = {"jv": "jw"}
_FROM_WHISPER = {v: k for k, v in _TO_WHISPER.items()}


class WhisperTranscriber(EmbeddedModel):
    name = "embedded"
    sample_rate = 16000  # Whisper's input rate

    def __init__(
        self,
        executor: ThreadPoolExecutor,
        model: str = "base",
        cache_dir: str = DEFAULT_CACHE_DIR,
        compute_type: str = "int8",
        beam_size: int = 1,
        cpu_threads: int = 0,
        batched_min_seconds: float = BATCHED_MIN_SECONDS,
        batch_size: int = 8,
    ) -> None:
        self._executor = executor
        self._trimmer = HeapTrimmer(executor)  # decoding a long clip leaves hundreds of MiB in malloc arenas
        self._model_name = model
        self._cache_dir = cache_dir
        self._compute_type = compute_type
        self._beam_size = beam_size
        self._cpu_threads = cpu_threads
        self._batched_min_seconds = batched_min_seconds
        self._batch_size = batch_size
        self._model = None
        self._state = ModelState.LOADING
        self._label = "faster-whisper"
        self._error: str | None = None
        self._model_id = WHISPER_MODELS.get(model, model)
        # Known before loading (the name says it), so /languages is right while the model loads.
        self._multilingual = not model.endswith(".en")

    def _load(self) -> None:
        from faster_whisper import WhisperModel

        path = whisper_model_dir(self._model_name, self._cache_dir)
        self._model = WhisperModel(
            str(path),
            device="cpu",
            compute_type=self._compute_type,
            cpu_threads=self._cpu_threads,
            num_workers=2,
        )
        # Warm-up: the first transcription pays for CTranslate2's allocations; do it before "ready",
        # not inside the first user's turn.
        self._run(np.zeros(self.sample_rate, dtype=np.float32), "en")
        if self._batched_min_seconds < float("inf"):
            # Silero VAD (ONNX, inside the faster-whisper package) loads now, not in the first long file.
            from faster_whisper.vad import get_vad_model

            get_vad_model()

    async def aclose(self) -> None:
        self._model = None

    def languages(self) -> Sequence[str]:
        return WHISPER_LANGUAGES if self._multilingual else ("en",)

    def models(self) -> Sequence[ModelInfo]:
        return (ModelInfo("asr", self._model_id, self.name, self._state, self._error),)

    def check_language(self, language: str | None) -> str | None:
        # No hint: a multilingual model detects the language; an English-only one has nothing to detect.
        return check_language(language, self.languages(), "asr", default=None if self._multilingual else "en")

    @property
    def can_time_words(self) -> bool:
        return True

    @property
    def can_translate(self) -> bool:
        # Whisper's "translate" task exists only in its multilingual models; tiny.en has none.
        model = self._model
        return model is not None and bool(model.model.is_multilingual)

    def _run(
        self, samples: np.ndarray, language: str | None, words: bool = False, task: Task = "transcribe"
    ) -> Transcription:
        model = self._model
        if model is None:
            raise EngineNotReadyError("asr")
        whisper_language = _TO_WHISPER.get(language, language) if language else None
        seconds = len(samples) / self.sample_rate
        batched = seconds > self._batched_min_seconds
        # Which path ran is logged: the observable difference (tests and operators read it), never timing.
        log.info("asr %s: %.1f s of audio", "batched" if batched else "one-pass", seconds)
        if batched:
            from faster_whisper import BatchedInferencePipeline

            # A pipeline per call: it keeps state (last_speech_timestamp) that two workers must not share.
            # Silero VAD cuts the clip at pauses into chunks of at most 30 s, decoded together in batches; the
            # pipeline maps every start/end (and word) back into the whole clip's time (faster-whisper 1.2.1
            # transcribe.py, restore_speech_timestamps).
            segments, info = BatchedInferencePipeline(model).transcribe(
                samples,
                language=whisper_language,
                task=task,
                beam_size=self._beam_size,
                temperature=0.0,
                vad_filter=True,
                batch_size=self._batch_size,
                word_timestamps=words,
            )
        else:
            segments, info = model.transcribe(
                samples,
                language=whisper_language,
                task=task,
                beam_size=self._beam_size,
                temperature=0.0,
                condition_on_previous_text=False,
                vad_filter=False,
                word_timestamps=words,  # costs a cross-attention alignment pass: only when asked
            )
        out: list[TranscriptSegment] = [
            # float(): the batched path's times come back as numpy floats (mapped through the VAD chunks).
            DecoderSegment(
                round(float(s.start), 3),
                round(float(s.end), 3),
                s.text.strip(),
                seek=s.seek,
                tokens=tuple(s.tokens),
                temperature=float(s.temperature or 0.0),
                avg_logprob=float(s.avg_logprob),
                compression_ratio=float(s.compression_ratio),
                no_speech_prob=float(s.no_speech_prob),
                words=tuple(
                    TranscribedWord(w.word.strip(), round(float(w.start), 3), round(float(w.end), 3))
                    for w in s.words or ()
                ),
            )
            for s in segments
        ]
        text = " ".join(s.text for s in out if s.text).strip()
        # The language heard (detected, or the hint as given); a translation's text is English either way.
        heard = _FROM_WHISPER.get(info.language, info.language)
        return Transcription(text=text, language=heard, duration=round(float(info.duration), 3), segments=out)

    async def transcribe(self, samples: object, language: str | None = None) -> Transcription:
        return await self.transcribe_detailed(samples, language, words=False, task="transcribe")

    async def transcribe_detailed(
        self, samples: object, language: str | None, *, words: bool, task: Task
    ) -> Transcription:
        if self._state is not ModelState.READY:
            raise EngineNotReadyError("asr", self._error)
        code = self.check_language(language)
        array = np.asarray(samples, dtype=np.float32)
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self._executor, self._run, array, code, words, task)
        self._trimmer.schedule()
        return result
