"""The embedded CPU engines the engine server serves, loaded before it listens (as vLLM does)."""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from gateway.engines.base import ModelState
from gateway.engines.embedded.piper_tts import PiperSynthesizer
from gateway.engines.embedded.whisper_asr import WhisperTranscriber
from gateway.settings import Settings

log = logging.getLogger(__name__)

# Fact sheet §1/§3: the Omni and TTS served names default to the model path. These are ours, honest about
# what runs: the gateway finds them through /v1/models (OMNI_MODEL / TTS_MODEL may name them).
DEFAULT_OMNI_NAME = "voice-gateway/omni-cpu"
DEFAULT_TTS_NAME = "voice-gateway/tts-cpu"
SAMPLE_RATE = 24000  # vLLM-Omni's output rate for both servers (fact sheet §2, §3)


@dataclass
class EngineSet:
    settings: Settings
    omni_name: str = DEFAULT_OMNI_NAME
    tts_name: str = DEFAULT_TTS_NAME
    executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(
            max_workers=max(4, (os.cpu_count() or 2) * 2), thread_name_prefix="engine-server"
        )
    )
    tts: PiperSynthesizer | None = None
    asr: WhisperTranscriber | None = None
    llm: Any = None  # gateway.engines.embedded.llm.LlamaResponder

    def __post_init__(self) -> None:
        s = self.settings
        self.tts = PiperSynthesizer(
            SAMPLE_RATE, self.executor, noise_scale=s.piper_noise_scale, noise_w_scale=s.piper_noise_w_scale
        )
        self.asr = WhisperTranscriber(
            self.executor,
            model=s.asr_model,
            cache_dir=s.model_cache_dir,
            compute_type=s.asr_compute_type,
            beam_size=s.asr_beam_size,
            cpu_threads=s.cpu_threads,
        )
        from gateway.engines.embedded.llm import LlamaResponder

        self.llm = LlamaResponder.from_settings(self.executor, s)

    def parts(self) -> dict[str, Any]:
        return {"tts": self.tts, "asr": self.asr, "llm": self.llm}

    async def start(self) -> None:
        await asyncio.gather(*(p.start() for p in self.parts().values()))
        log.info("engine-server models: %s", {k: p.state.value for k, p in self.parts().items()})

    @property
    def ready(self) -> bool:
        return all(p.state is ModelState.READY for p in self.parts().values())

    @property
    def failed(self) -> list[str]:
        return [k for k, p in self.parts().items() if p.state is ModelState.FAILED]

    async def aclose(self) -> None:
        for part in self.parts().values():
            await part.aclose()
        self.executor.shutdown(wait=False, cancel_futures=True)
