"""Embedded CPU engine: real models that ship inside PyPI packages, run in-process off the event loop
(Piper in worker processes)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.engines.registry import Engines
    from gateway.settings import Settings


def build_embedded(settings: Settings) -> Engines:
    """VOICE_ENGINE=embedded: Piper, faster-whisper and SmolLM2 sharing one thread pool."""
    from gateway.engines.embedded.llm import LlamaResponder
    from gateway.engines.embedded.piper_tts import PiperSynthesizer
    from gateway.engines.embedded.whisper_asr import WhisperTranscriber
    from gateway.engines.registry import Engines

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
