"""What every embedded model shares: a blocking load in the engine's executor, and a state /health reports."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from gateway.engines.base import ModelInfo, ModelState, SynthesisRequest, Voice, VoiceCatalog

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
    """A local synthesizer's catalogue: a fixed set of voices in its own languages. Subclasses implement
    `voices` and `languages` and set `_model_id`."""

    name = "embedded"
    _model_id: str

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
