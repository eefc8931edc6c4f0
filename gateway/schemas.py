"""Request bodies of the HTTP API."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SPEED_MIN = 0.25
SPEED_MAX = 4.0


class ReadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(..., description="Text to read aloud.")
    voice: str = Field("default", min_length=1, max_length=64)
    language: str = Field("en", min_length=1, max_length=32)
    speed: float = Field(1.0, ge=SPEED_MIN, le=SPEED_MAX, description="1.0 is normal; 2.0 is twice as fast.")
    response_format: Literal["wav", "pcm", "mp3", "opus", "aac", "flac"] = "wav"


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str
    voice: str = Field("default", min_length=1, max_length=64)
    language: str = Field("en", min_length=1, max_length=32)
    speed: float = Field(1.0, ge=SPEED_MIN, le=SPEED_MAX)
    response_format: Literal["wav", "pcm", "mp3", "opus", "aac", "flac"] = "wav"


class OpenAISpeechRequest(BaseModel):
    """OpenAI `audio.speech.create` body; unknown extra fields are ignored as OpenAI-compatible servers do."""

    model: str
    input: str
    voice: str
    response_format: Literal["wav", "pcm", "mp3", "opus", "aac", "flac"] = "mp3"
    speed: float = Field(1.0, ge=SPEED_MIN, le=SPEED_MAX)
    instructions: str | None = Field(None, max_length=4096)
