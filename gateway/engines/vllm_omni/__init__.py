"""VOICE_ENGINE=vllm-omni: the gateway does no inference and fronts vLLM-Omni's Omni and TTS servers.

See docs/vllm-omni.md. The wire shapes are in `protocol.py`, the resilience (pooling, timeouts, retries,
circuit breaker, health polling, error mapping) in `backend.py`.
"""

from __future__ import annotations

import logging

from gateway.engines.base import Responder
from gateway.engines.registry import Engines
from gateway.engines.vllm_omni.backend import BackendClient, BackendCollector, BackendConfig
from gateway.engines.vllm_omni.omni import VllmOmniResponder, VllmOmniTranscriber
from gateway.engines.vllm_omni.protocol import parse_version
from gateway.engines.vllm_omni.tts import VllmOmniSynthesizer, VoiceConfigError, load_voice_clips
from gateway.settings import ConfigError, Settings

log = logging.getLogger(__name__)

# OpenAI Realtime GA event names replaced the legacy ones in vLLM-Omni PRs #7339/#7426 (vLLM 0.29, fact
# sheet §4c); earlier servers speak one of two older dialects, so HTTP streaming stays the default there.
REALTIME_GA_MIN_VERSION = (0, 29)


def realtime_ws_supported(server_version: str) -> bool:
    """True only when OMNI_SERVER_VERSION names a release whose /v1/realtime speaks the OpenAI GA schema."""
    version = parse_version(server_version)
    return version is not None and version >= REALTIME_GA_MIN_VERSION


def backend_config(settings: Settings, name: str, url: str, model: str, hint: str) -> BackendConfig:
    secret = settings.omni_api_key if name == "omni" else settings.tts_api_key
    return BackendConfig(
        api_key=secret.get_secret_value() if secret is not None else "",
        name=name,
        url=url,
        connect_timeout=settings.backend_connect_timeout,
        read_timeout=settings.backend_read_timeout,
        total_timeout=settings.backend_total_timeout,
        retries=settings.backend_retries,
        breaker_threshold=settings.backend_breaker_threshold,
        breaker_reset=settings.backend_breaker_reset,
        poll_interval=settings.backend_poll_interval,
        load_grace=settings.backend_load_grace,
        model=model,
        model_hint=hint,
    )


def build_vllm_omni(settings: Settings) -> Engines:
    # httpx logs every request at INFO: on the hot path of every sentence that is noise and cost.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        clips = load_voice_clips(settings.tts_voices_dir) if settings.tts_voices_dir else []
    except VoiceConfigError as exc:
        raise ConfigError(f"invalid configuration: TTS_VOICES_DIR: {exc}") from None
    omni = BackendClient(
        backend_config(settings, "omni", settings.omni_service_url, settings.omni_model, "omni")
    )
    tts_backend = BackendClient(
        backend_config(settings, "tts", settings.tts_service_url, settings.tts_model, "tts")
    )
    synth = VllmOmniSynthesizer(
        tts_backend,
        settings.audio_sample_rate,
        clips,
        voice_mode=settings.tts_voice_mode,
        seed=settings.tts_seed,
    )
    asr = VllmOmniTranscriber(omni)
    responder: Responder = VllmOmniResponder(
        omni,
        settings.audio_sample_rate,
        speaker=settings.omni_speaker,
        audio_output=settings.omni_audio_output,
    )
    if settings.omni_realtime:
        if realtime_ws_supported(settings.omni_server_version):
            from gateway.engines.vllm_omni.realtime import VllmOmniRealtimeResponder

            responder = VllmOmniRealtimeResponder(
                omni, settings.omni_ws_url, settings.audio_sample_rate, speaker=settings.omni_speaker
            )
            log.info("conversation over %s/v1/realtime (OpenAI GA schema)", settings.omni_ws_url)
        else:
            log.warning(
                "OMNI_REALTIME is on but OMNI_SERVER_VERSION=%r does not speak the GA realtime schema "
                "(vLLM-Omni >= 0.29): using HTTP streaming",
                settings.omni_server_version,
            )
    return Engines(
        kind="vllm-omni",
        synthesizer=synth,
        transcriber=asr,
        responder=responder,
        collectors=[BackendCollector([omni, tts_backend])],
    )
