"""Builds the engine set named by VOICE_ENGINE and owns its lifecycle.

Adding an engine set: one module with a `build(settings) -> Engines` function, one line in ENGINE_SETS, and
tests/engines/contract.py passing against it (docs/engines.md).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.engines.base import Component, ModelInfo, ModelState, Responder, Synthesizer, Transcriber

if TYPE_CHECKING:
    from prometheus_client.registry import Collector

    from gateway.settings import Settings

log = logging.getLogger(__name__)

# VOICE_ENGINE value -> "module:function" building that engine set (imported only when chosen).
ENGINE_SETS: dict[str, str] = {
    "embedded": "gateway.engines.embedded:build_embedded",
    "vllm-omni": "gateway.engines.vllm_omni:build_vllm_omni",
}


@dataclass
class Engines:
    kind: str
    synthesizer: Synthesizer
    transcriber: Transcriber
    responder: Responder | None = None  # the conversation engine, where the engine set has one
    _executor: ThreadPoolExecutor | None = None
    # Extra Prometheus collectors the app registers on its metrics registry (backend clients' counters).
    collectors: list[Collector] = field(default_factory=list)

    def components(self) -> dict[str, Component]:
        parts: dict[str, Component] = {"tts": self.synthesizer, "asr": self.transcriber}
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


def build_engines(settings: Settings) -> Engines:
    from gateway.settings import ConfigError

    target = ENGINE_SETS.get(settings.voice_engine)
    if target is None:
        raise ConfigError(f"VOICE_ENGINE={settings.voice_engine!r} is not available in this build")
    module, function = target.split(":")
    build: Callable[[Settings], Engines] = getattr(importlib.import_module(module), function)
    return build(settings)
