"""All configuration in one place: environment variables with the seed's names and defaults."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConfigError(RuntimeError):
    """Raised at start-up when the environment holds an invalid value; the message names the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True)

    # Engine selection: "embedded" runs CPU models in-process; "vllm-omni" fronts the model servers over HTTP.
    voice_engine: str = Field("embedded", alias="VOICE_ENGINE")  # a name in engines/registry.py ENGINE_SETS

    # The seed's variables.
    omni_service_url: str = Field("http://omni-service:8000", alias="OMNI_SERVICE_URL")
    omni_ws_url: str = Field("ws://omni-service:8000", alias="OMNI_WS_URL")
    tts_service_url: str = Field("http://tts-service:8001", alias="TTS_SERVICE_URL")
    gpu_device: int = Field(1, ge=0, alias="GPU_DEVICE")
    audio_sample_rate: int = Field(24000, ge=8000, le=48000, alias="AUDIO_SAMPLE_RATE")
    hf_home: str = Field("/mnt/aetherpro-extra1/hf", alias="HF_HOME")

    # Server.
    host: str = Field("0.0.0.0", alias="GATEWAY_HOST")
    port: int = Field(8004, ge=1, le=65535, alias="GATEWAY_PORT")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", alias="LOG_LEVEL")

    # Limits: every one answers with a clear 4xx, never a crash.
    max_text_chars: int = Field(50_000, ge=1, alias="MAX_TEXT_CHARS")
    max_upload_bytes: int = Field(25 * 1024 * 1024, ge=1024, alias="MAX_UPLOAD_BYTES")
    max_audio_seconds: float = Field(600.0, gt=0, alias="MAX_AUDIO_SECONDS")
    # Issue 18: a short text can ask for hours of audio ("9" * 10_000 reads for 46 minutes). Half an hour
    # is a long chapter read aloud; WS /read/stream is paced by its listener and not capped.
    max_speech_seconds: float = Field(1800.0, gt=0, alias="MAX_SPEECH_SECONDS")
    # Issue 18: the text of a Realtime conversation's items (60 items of 8 MB held 520 MB in one session).
    realtime_max_conversation_bytes: int = Field(
        1024 * 1024, ge=1024, alias="REALTIME_MAX_CONVERSATION_BYTES"
    )

    # Embedded engine tuning. Zero noise makes Piper deterministic (byte-identical audio for equal input).
    piper_noise_scale: float = Field(0.0, ge=0, le=2, alias="PIPER_NOISE_SCALE")
    piper_noise_w_scale: float = Field(0.0, ge=0, le=2, alias="PIPER_NOISE_W_SCALE")
    # Piper's crash-isolated worker processes, about 225 MiB each: two render two sentences at once, one
    # halves Piper's memory for a small deployment (bench/memory_bench.py).
    piper_workers: int = Field(2, ge=1, le=16, alias="PIPER_WORKERS")
    # Issue 21: multilingual Whisper base (detection, translation); tiny.en is English only and smaller.
    asr_model: Literal["base", "tiny.en"] = Field("base", alias="ASR_MODEL")
    # Where model files shipped in parts are joined once (Whisper base; Kokoro with the [ja] extra).
    model_cache_dir: str = Field("~/.cache/voice-gateway", alias="MODEL_CACHE_DIR")
    # Japanese voices (Kokoro, ~200 MiB) where the [ja] extra is installed; false saves the memory.
    tts_japanese: bool = Field(True, alias="TTS_JAPANESE")
    asr_compute_type: str = Field("int8", alias="ASR_COMPUTE_TYPE")
    asr_beam_size: int = Field(1, ge=1, le=10, alias="ASR_BEAM_SIZE")
    # Issue 21: clips longer than this (s) are cut at pauses by Silero VAD and decoded in batches (faster and
    # closer on long files: bench/long_asr_bench.py); "inf" keeps one sequential pass for every length.
    asr_batched_min_seconds: float = Field(25.0, ge=0, alias="ASR_BATCHED_MIN_SECONDS")
    cpu_threads: int = Field(0, ge=0, le=256, alias="CPU_THREADS")
    # Issue 21: the embedded conversation model. "" = the bundled SmolLM2-135M-Instruct; a path = any GGUF
    # chat model (its own chat template is used). Threads 0 = CPU_THREADS, else 1 (llm.py says why).
    embedded_llm_model_path: str = Field("", alias="EMBEDDED_LLM_MODEL_PATH")
    embedded_llm_threads: int = Field(0, ge=0, le=256, alias="EMBEDDED_LLM_THREADS")
    embedded_llm_context_tokens: int = Field(2048, ge=256, le=131_072, alias="EMBEDDED_LLM_CONTEXT_TOKENS")
    embedded_llm_temperature: float = Field(0.0, ge=0, le=2, alias="EMBEDDED_LLM_TEMPERATURE")
    embedded_llm_repeat_penalty: float = Field(1.2, ge=1, le=2, alias="EMBEDDED_LLM_REPEAT_PENALTY")
    # "memory": recent turns + a note of the user's stated facts; "plain": the pre-issue-21 prompt.
    embedded_llm_prompt: Literal["memory", "plain"] = Field("memory", alias="EMBEDDED_LLM_PROMPT")
    # Earlier exchanges sent verbatim with "memory": -1 = 0 for the bundled 135M model (it copies its old
    # replies; the note carries the facts), all that fit for a model of your own.
    embedded_llm_recent_turns: int = Field(-1, ge=-1, le=1000, alias="EMBEDDED_LLM_RECENT_TURNS")

    # WS /voice conversation: limits per connection and for the whole process.
    max_voice_sessions: int = Field(8, ge=1, alias="MAX_VOICE_SESSIONS")
    voice_max_input_seconds: float = Field(30.0, gt=0, alias="VOICE_MAX_INPUT_SECONDS")
    voice_max_response_tokens: int = Field(160, ge=1, le=4096, alias="VOICE_MAX_RESPONSE_TOKENS")
    voice_history_turns: int = Field(0, ge=0, alias="VOICE_HISTORY_TURNS")  # 0: bounded by tokens only
    voice_history_tokens: int = Field(1024, ge=0, alias="VOICE_HISTORY_TOKENS")
    # How far reply audio may run ahead of real time: more absorbs network jitter, less makes barge-in
    # cut closer to what the user really heard.
    voice_audio_lead_ms: int = Field(300, ge=0, le=60_000, alias="VOICE_AUDIO_LEAD_MS")

    # VOICE_ENGINE=vllm-omni: the model servers (docs/vllm-omni.md). "" model names = discover via /v1/models.
    omni_model: str = Field("", alias="OMNI_MODEL")
    tts_model: str = Field("", alias="TTS_MODEL")
    omni_server_version: str = Field("", alias="OMNI_SERVER_VERSION")  # picks /v1/realtime or HTTP streaming
    omni_realtime: bool = Field(False, alias="OMNI_REALTIME")  # opt-in; needs OMNI_SERVER_VERSION >= 0.29
    # vLLM's --api-key: sent as `Authorization: Bearer`; never logged or shown in /config.
    omni_api_key: SecretStr | None = Field(None, alias="OMNI_API_KEY")
    tts_api_key: SecretStr | None = Field(None, alias="TTS_API_KEY")
    omni_speaker: Literal["ethan", "chelsie", "aiden"] = Field("ethan", alias="OMNI_SPEAKER")
    omni_audio_output: Literal["auto", "on", "off"] = Field("auto", alias="OMNI_AUDIO_OUTPUT")
    tts_voices_dir: str = Field("", alias="TTS_VOICES_DIR")  # <name>.wav + <name>.txt reference clips
    tts_voice_mode: Literal["auto", "register", "inline"] = Field("auto", alias="TTS_VOICE_MODE")
    tts_seed: int | None = Field(None, alias="TTS_SEED")
    backend_connect_timeout: float = Field(3.0, gt=0, alias="BACKEND_CONNECT_TIMEOUT")
    backend_read_timeout: float = Field(30.0, gt=0, alias="BACKEND_READ_TIMEOUT")
    backend_total_timeout: float = Field(120.0, gt=0, alias="BACKEND_TOTAL_TIMEOUT")
    backend_retries: int = Field(2, ge=0, le=10, alias="BACKEND_RETRIES")
    backend_breaker_threshold: int = Field(5, ge=1, alias="BACKEND_BREAKER_THRESHOLD")
    backend_breaker_reset: float = Field(10.0, gt=0, alias="BACKEND_BREAKER_RESET")
    backend_poll_interval: float = Field(5.0, gt=0, alias="BACKEND_POLL_INTERVAL")
    backend_load_grace: float = Field(900.0, ge=0, alias="BACKEND_LOAD_GRACE")

    # Security: keys are never logged or shown in /config.
    api_keys: SecretStr | None = Field(None, validation_alias=AliasChoices("GATEWAY_API_KEYS"))
    # Hardening (docs/hardening.md). A mounted Secret file holds one key per line (or comma separated).
    api_keys_file: str | None = Field(None, alias="GATEWAY_API_KEYS_FILE")
    metrics_require_auth: bool = Field(False, alias="METRICS_REQUIRE_AUTH")
    max_streams: int = Field(64, ge=0, alias="MAX_STREAMS")
    max_streams_per_key: int = Field(16, ge=0, alias="MAX_STREAMS_PER_KEY")
    ws_idle_timeout_seconds: float = Field(300.0, ge=0, alias="WS_IDLE_TIMEOUT_SECONDS")
    ws_max_message_bytes: int = Field(16 * 1024 * 1024, ge=1024, alias="WS_MAX_MESSAGE_BYTES")
    cors_allow_origins: str = Field("", alias="CORS_ALLOW_ORIGINS")
    log_format: Literal["json", "text"] = Field("json", alias="LOG_FORMAT")
    shutdown_grace_seconds: float = Field(100.0, ge=0, alias="SHUTDOWN_GRACE_SECONDS")
    # Hostile transports (issue 18): a client that stops reading, or sends slowly, holds nothing for long.
    ws_send_timeout_seconds: float = Field(20.0, ge=0, alias="WS_SEND_TIMEOUT_SECONDS")
    http_header_timeout_seconds: float = Field(10.0, ge=0, alias="HTTP_HEADER_TIMEOUT_SECONDS")
    http_body_timeout_seconds: float = Field(60.0, ge=0, alias="HTTP_BODY_TIMEOUT_SECONDS")
    http_keepalive_timeout_seconds: int = Field(5, ge=1, alias="HTTP_KEEPALIVE_TIMEOUT_SECONDS")

    @field_validator("voice_engine")
    @classmethod
    def _engine_set(cls, value: str) -> str:
        from gateway.engines.registry import ENGINE_SETS  # the registry imports this module

        if value not in ENGINE_SETS:
            raise ValueError("must be one of: " + ", ".join(ENGINE_SETS))
        return value

    @field_validator("omni_service_url", "tts_service_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("embedded_llm_model_path")
    @classmethod
    def _gguf_file(cls, value: str) -> str:
        if not value:
            return value
        path = Path(value).expanduser()
        if not path.is_file():
            raise ValueError(f"no such file: {path}")
        try:
            with path.open("rb") as f:
                magic = f.read(4)
        except OSError as exc:
            raise ValueError(f"cannot read {path}: {exc.strerror}") from None
        if magic != b"GGUF":  # llama.cpp's own error for a wrong file is a bare "failed to load model"
            raise ValueError(f"{path} is not a GGUF model file")
        return str(path)

    @field_validator("omni_ws_url")
    @classmethod
    def _ws_url(cls, value: str) -> str:
        if not value.startswith(("ws://", "wss://")):
            raise ValueError("must start with ws:// or wss://")
        return value.rstrip("/")

    def redacted(self) -> dict[str, Any]:
        """Effective configuration keyed by environment variable, with secrets hidden."""
        out: dict[str, Any] = {}
        for name, field in type(self).model_fields.items():
            key = field.alias or (
                field.validation_alias.choices[0]
                if isinstance(field.validation_alias, AliasChoices)
                else name.upper()
            )
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = "***" if value.get_secret_value() else None
            out[str(key)] = value
        return out


def load_settings(**overrides: Any) -> Settings:
    """Read the environment; turn pydantic's error into one that names each bad variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "?"
            problems.append(f"{loc}={err.get('input')!r}: {err['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
