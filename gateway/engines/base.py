"""The protocols the routers and sessions use. Routers never know which engine runs behind them."""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


class ModelState(enum.StrEnum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    UNAVAILABLE = "unavailable"  # a remote backend that does not answer


@dataclass(frozen=True)
class ModelInfo:
    role: str  # "tts" | "asr" | "omni"
    id: str
    engine: str
    state: ModelState
    detail: str | None = None


@dataclass(frozen=True)
class Voice:
    id: str
    name: str
    language: str
    sample_rate: int  # the model's native rate before resampling
    aliases: tuple[str, ...] = ()


class UnknownVoiceError(ValueError):
    pass


class UnsupportedLanguageError(ValueError):
    pass


class EngineNotReadyError(RuntimeError):
    def __init__(self, component: str, detail: str | None = None) -> None:
        super().__init__(detail or f"{component} is not ready")
        self.component = component


@dataclass(frozen=True)
class SynthesisRequest:
    text: str
    voice: str = "default"
    language: str = "en"
    speed: float = 1.0
    normalize: bool = True  # numbers, dates, symbols... to words (gateway.text) before synthesis
    timings: bool = False  # ask for word timings (SynthesisChunk.words)


@dataclass(frozen=True)
class WordTiming:
    """One spoken word: seconds relative to the start of its chunk, char offsets into SynthesisRequest.text.

    After normalization several spoken words can stand for one written token ("$3.5" -> "three point five
    dollars"): the services layer merges them into one timing whose `text` is the original token and
    `spoken` the words said.
    """

    text: str
    start: float
    end: float
    text_start: int
    text_end: int
    spoken: str = ""


@dataclass(frozen=True)
class SynthesisChunk:
    """Audio for one span of the input text, PCM s16le mono at the gateway's AUDIO_SAMPLE_RATE."""

    pcm: bytes
    sample_rate: int
    index: int  # sentence index
    text_start: int  # character offsets into SynthesisRequest.text
    text_end: int
    generation_s: float = 0.0  # wall time the engine spent on this chunk
    words: tuple[WordTiming, ...] = ()  # filled when SynthesisRequest.timings asked and the engine can


@runtime_checkable
class Synthesizer(Protocol):
    name: str
    sample_rate: int

    @property
    def state(self) -> ModelState: ...

    def voices(self) -> Sequence[Voice]: ...

    def languages(self) -> Sequence[str]: ...

    def models(self) -> Sequence[ModelInfo]: ...

    def resolve(self, request: SynthesisRequest) -> SynthesisRequest:
        """Validate voice and language against what the engine really offers (raises on unknown)."""
        ...

    def stream(self, request: SynthesisRequest) -> AsyncIterator[SynthesisChunk]:
        """Yield audio sentence by sentence; closing the iterator stops further synthesis work."""
        ...


@dataclass(frozen=True)
class TranscriptSegment:
    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Transcription:
    text: str
    language: str
    duration: float
    segments: list[TranscriptSegment] = field(default_factory=list)


@runtime_checkable
class Transcriber(Protocol):
    name: str
    sample_rate: int  # the rate `transcribe` expects its samples at

    @property
    def state(self) -> ModelState: ...

    def languages(self) -> Sequence[str]: ...

    def models(self) -> Sequence[ModelInfo]: ...

    async def transcribe(self, samples: object, language: str | None = None) -> Transcription:
        """`samples`: float32 mono numpy array at `sample_rate`."""
        ...


class Lifecycle(Protocol):
    async def start(self) -> None: ...

    async def aclose(self) -> None: ...


# -- conversation ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatMessage:
    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass(frozen=True)
class ConversationRequest:
    """One assistant turn. `history` ends with the user's turn as text when the transcript is known.

    `audio` is the user's turn as float32 mono samples at `audio_rate`, for responders that take audio
    in directly (Omni); responders that need text ignore it.
    """

    history: list[ChatMessage]
    audio: object | None = None
    audio_rate: int = 16000
    voice: str = "default"
    language: str = "en"
    max_tokens: int = 256


@dataclass(frozen=True)
class ResponseEvent:
    """One piece of a streamed reply: text (a token/delta), audio (PCM s16le at the gateway rate) or usage."""

    kind: str  # "text" | "audio" | "usage"
    text: str = ""
    pcm: bytes = b""
    completion_tokens: int = 0
    tokens_per_second: float | None = None


@runtime_checkable
class Responder(Protocol):
    """The conversation engine. Embedded: a small local LLM (text out, spoken by the Synthesizer).
    vLLM-Omni: Qwen3-Omni (audio in; text and audio out)."""

    name: str
    accepts_audio: bool
    produces_audio: bool

    @property
    def state(self) -> ModelState: ...

    def languages(self) -> Sequence[str]: ...

    def models(self) -> Sequence[ModelInfo]: ...

    def respond(self, request: ConversationRequest) -> AsyncIterator[ResponseEvent]:
        """Stream the reply; closing the iterator stops generation."""
        ...
