"""Builds the engine set named by VOICE_ENGINE and owns its lifecycle."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from gateway.engines.base import ModelInfo, ModelState, Synthesizer, Transcriber
from gateway.settings import ConfigError, Settings

log = logging.getLogger(__name__)


@dataclass
class Engines:
    kind: str
    synthesizer: Synthesizer
    transcriber: Transcriber
    responder: Any | None = None  # the conversation engine, where the engine set has one
    _closers: list[Any] = field(default_factory=list)
    _executor: ThreadPoolExecutor | None = None
    # Extra Prometheus collectors the app registers on its metrics registry (backend clients' counters).
    collectors: list[Any] = field(default_factory=list)

    def components(self) -> dict[str, Any]:
        parts: dict[str, Any] = {"tts": self.synthesizer, "asr": self.transcriber}
        if self.responder is not None:
            parts["omni"] = self.responder
        return parts

    def models(self) -> Sequence[ModelInfo]:
        return [m for part in self.components().values() for m in part.models()]

    @property
    def ready(self) -> bool:
        return all(part.state is ModelState.READY for part in self.components().values())

    @property
    def loading(self) -> bool:
        return any(part.state is ModelState.LOADING for part in self.components().values())

    async def start(self) -> None:
        # Load concurrently: each component does its heavy work in the executor.
        await asyncio.gather(*(part.start() for part in self.components().values()))
        log.info("engines %s: %s", self.kind, {m.role: m.state.value for m in self.models()})

    async def aclose(self) -> None:
        for part in self.components().values():
            try:
                await part.aclose()
            except Exception:  # closing must release everything else too
                log.exception("error while closing %s", part)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)


def _embedded(settings: Settings) -> Engines:
    from gateway.engines.embedded.llm import LlamaResponder
    from gateway.engines.embedded.piper_tts import PiperSynthesizer
    from gateway.engines.embedded.whisper_asr import WhisperTranscriber

    # A few more workers than cores: a synthesis and a transcription must not queue behind each other.
    workers = max(4, (os.cpu_count() or 2) * 2)
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="engine")
    synth = PiperSynthesizer(
        settings.audio_sample_rate,
        executor,
        noise_scale=settings.piper_noise_scale,
        noise_w_scale=settings.piper_noise_w_scale,
    )
    asr = WhisperTranscriber(
        executor,
        compute_type=settings.asr_compute_type,
        beam_size=settings.asr_beam_size,
        cpu_threads=settings.cpu_threads,
    )
    responder = LlamaResponder(executor, threads=settings.cpu_threads)
    return Engines(
        kind="embedded", synthesizer=synth, transcriber=asr, responder=responder, _executor=executor
    )


def build_engines(settings: Settings) -> Engines:
    if settings.voice_engine == "embedded":
        return _embedded(settings)
    if settings.voice_engine == "vllm-omni":
        from gateway.engines.vllm_omni import build_vllm_omni

        return build_vllm_omni(settings)
    raise ConfigError(f"VOICE_ENGINE={settings.voice_engine!r} is not available in this build")
