"""Request bodies of the HTTP API."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SPEED_MIN = 0.25
SPEED_MAX = 4.0

AudioFormatName = Literal["wav", "pcm", "mp3", "opus", "aac", "flac"]
SpeechOutput = Literal["audio", "json", "vtt"]
_NORMALIZE_DOC = (
    "Read numbers, dates, money, units, abbreviations, URLs and symbols as words (default). "
    "False sends the text to the voice as written."
)
_OUTPUT_DOC = (
    "`audio`: the audio file. `json`: {audio (base64 in response_format), words: [{word, start, end, "
    "char_start, char_end, spoken?}], sentences, duration...}; offsets point into the text as sent. "
    "`vtt`: WebVTT captions, one cue per word."
)


class ReadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(..., description="Text to read aloud.")
    voice: str = Field("default", min_length=1, max_length=64)
    language: str = Field("en", min_length=1, max_length=32)
    speed: float = Field(1.0, ge=SPEED_MIN, le=SPEED_MAX, description="1.0 is normal; 2.0 is twice as fast.")
    response_format: AudioFormatName = "wav"
    normalize: bool = Field(True, description=_NORMALIZE_DOC)
    output: SpeechOutput = Field("audio", description=_OUTPUT_DOC)


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str
    voice: str = Field("default", min_length=1, max_length=64)
    language: str = Field("en", min_length=1, max_length=32)
    speed: float = Field(1.0, ge=SPEED_MIN, le=SPEED_MAX)
    response_format: AudioFormatName = "wav"
    normalize: bool = Field(True, description=_NORMALIZE_DOC)
    output: SpeechOutput = Field("audio", description=_OUTPUT_DOC)


class OpenAISpeechRequest(BaseModel):
    """OpenAI `audio.speech.create` body; unknown extra fields are ignored as OpenAI-compatible servers do."""

    model: str
    input: str
    voice: str
    response_format: AudioFormatName = "mp3"
    speed: float = Field(1.0, ge=SPEED_MIN, le=SPEED_MAX)
    instructions: str | None = Field(None, max_length=4096)
    # Gateway extensions (the openai SDK passes them with `extra_body`).
    stream: bool = Field(True, description="Chunked transfer while synthesizing (output=audio only).")
    stream_format: Literal["audio", "sse"] = Field(
        "audio",
        description="`sse`: server-sent events as OpenAI sends them (speech.audio.delta, speech.audio.done); "
        "with output=json also a speech.words event before each sentence's audio.",
    )
    normalize: bool = Field(True, description=_NORMALIZE_DOC)
    output: SpeechOutput = Field("audio", description=_OUTPUT_DOC)
