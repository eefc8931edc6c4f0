"""What every embedded model shares: a blocking load in the engine's executor, and a state /health reports."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Sequence
from concurrent.futures import ThreadPoolExecutor

from gateway.audio.text import TextSpan, split_sentences
from gateway.engines.base import (
    EngineNotReadyError,
    ModelInfo,
    ModelState,
    SynthesisChunk,
    SynthesisRequest,
    Voice,
    VoiceCatalog,
    WordTiming,
)

log = logging.getLogger(__name__)


class EmbeddedModel:
    """Subclasses implement `_load` (blocking) and set `_executor` and `_label` in their constructor."""

    _executor: ThreadPoolExecutor
    _label: str  # for the log line when loading fails
    _state: ModelState = ModelState.LOADING
    _error: str | None = None

    @property
    def state(self) -> ModelState:
        return self._state

    def _load(self) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._load)
            self._state = ModelState.READY
        except Exception as exc:  # a broken install must show in /health, not kill the process
            log.exception("%s failed to load", self._label)
            self._state = ModelState.FAILED
            self._error = str(exc)


class EmbeddedVoices(EmbeddedModel):
    """A local synthesizer: a fixed set of voices in its own languages, speaking sentence by sentence.
    Subclasses implement `voices`, `languages` and `_sentence`, and set `_model_id`, `sample_rate` and
    `_max_sentence_chars`."""

    name = "embedded"
    _model_id: str
    sample_rate: int
    _max_sentence_chars: int

    async def _sentence(
        self, span: TextSpan, request: SynthesisRequest
    ) -> tuple[bytes, tuple[WordTiming, ...]]:
        """One sentence's PCM at `sample_rate` and its word marks (in the whole text's offsets)."""
        raise NotImplementedError

    async def stream(self, request: SynthesisRequest) -> AsyncGenerator[SynthesisChunk, None]:
        if self._state is not ModelState.READY:
            raise EngineNotReadyError("tts", self._error)
        for index, span in enumerate(split_sentences(request.text, self._max_sentence_chars)):
            # One sentence at a time: a consumer that stops iterating stops the work after this one.
            t0 = time.perf_counter()
            pcm, words = await self._sentence(span, request)
            yield SynthesisChunk(
                pcm=pcm,
                sample_rate=self.sample_rate,
                index=index,
                text_start=span.start,
                text_end=span.end,
                generation_s=time.perf_counter() - t0,
                words=words,
            )

    def voices(self) -> Sequence[Voice]:
        raise NotImplementedError

    def languages(self) -> Sequence[str]:
        raise NotImplementedError

    def models(self) -> Sequence[ModelInfo]:
        return (ModelInfo("tts", self._model_id, self.name, self._state, self._error),)

    def catalog(self) -> VoiceCatalog:
        return VoiceCatalog(tuple(self.voices()), tuple(self.languages()))

    def check_language(self, language: str | None) -> str:
        catalog = self.catalog()
        return catalog.check_language(language, catalog.default())

    def resolve(self, request: SynthesisRequest) -> SynthesisRequest:
        return self.catalog().resolve_request(request)
