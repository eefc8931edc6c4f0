"""OpenAI's voice names, which every OpenAI-compatible surface maps onto the engine's default voice, so SDK
defaults (e.g. `voice="alloy"`) work unchanged."""

OPENAI_VOICES = frozenset(
    (
        "alloy",
        "ash",
        "ballad",
        "coral",
        "echo",
        "fable",
        "nova",
        "onyx",
        "sage",
        "shimmer",
        "verse",
        "marin",
        "cedar",
    )
)

# OpenAI ships new audio model names often (dated snapshots such as `gpt-4o-mini-tts-2025-12-15`, new families
# such as `gpt-transcribe`); a client must not break when it does. So each audio route accepts any name of its
# family and refuses only a name that clearly belongs to the other role. These lists are what `/v1/models`
# advertises, not what the routes accept.
OPENAI_TTS_MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
OPENAI_ASR_MODELS = ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe", "gpt-transcribe")


def is_asr_name(model: str) -> bool:
    """A transcription model name in OpenAI's naming: `whisper*` or anything with `transcribe` in it."""
    name = model.strip().lower()
    return name.startswith("whisper") or "transcribe" in name


def is_tts_name(model: str) -> bool:
    """A speech model name in OpenAI's naming: `tts-1*`, `gpt-4o-mini-tts*`, any name with a `tts` part."""
    name = model.strip().lower()
    return "tts" in name.replace("_", "-").split("-") or name.startswith("tts")
