"""What every embedded model shares: a blocking load in the engine's executor, and a state /health reports."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from gateway.engines.base import ModelState

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
