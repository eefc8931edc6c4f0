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
    """VOICE_ENGINE=embedded: Piper (and Kokoro for Japanese where the [ja] extra is installed),
    faster-whisper and SmolLM2 sharing one thread pool."""
    from gateway.engines.base import Synthesizer
    from gateway.engines.embedded import kokoro_tts
    from gateway.engines.embedded.llm import LlamaResponder
    from gateway.engines.embedded.piper_tts import PiperSynthesizer
    from gateway.engines.embedded.routed_tts import RoutedSynthesizer
    from gateway.engines.embedded.whisper_asr import WhisperTranscriber
    from gateway.engines.registry import Engines

    # A few more workers than cores: a synthesis and a transcription must not queue behind each other.
    workers = max(4, (os.cpu_count() or 2) * 2)
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="engine")
    synth: Synthesizer = PiperSynthesizer(
        settings.audio_sample_rate,
        executor,
        noise_scale=settings.piper_noise_scale,
        noise_w_scale=settings.piper_noise_w_scale,
        workers=settings.piper_workers,
    )
    if settings.tts_japanese and kokoro_tts.available():  # the [ja] extra: Japanese beside Piper's English
        synth = RoutedSynthesizer(
            [
                synth,
                kokoro_tts.KokoroSynthesizer(
                    settings.audio_sample_rate,
                    executor,
                    cache_dir=settings.model_cache_dir,
                    threads=settings.cpu_threads,
                ),
            ]
        )
    asr = WhisperTranscriber(
        executor,
        model=settings.asr_model,
        cache_dir=settings.model_cache_dir,
        compute_type=settings.asr_compute_type,
        beam_size=settings.asr_beam_size,
        cpu_threads=settings.cpu_threads,
        batched_min_seconds=settings.asr_batched_min_seconds,
    )
    responder = LlamaResponder.from_settings(executor, settings)
    return Engines(
        kind="embedded", synthesizer=synth, transcriber=asr, responder=responder, _executor=executor
    )
