"""The engine contract: what routers and sessions may rely on, whichever engine runs behind them.

One protocol per role (Synthesizer, Transcriber, Responder), each with the same lifecycle (`start` /
`aclose`, `state`), catalogue (`models`, `languages`, `check_language`) and error tree (engines/errors.py:
EngineError with a domain code). Voices resolve one way for every engine (VoiceCatalog). Callers never probe
an engine with getattr: what varies between engines is a declared member (`Responder.produces_audio`).

tests/engines/contract.py proves the contract on every engine set; docs/engines.md says how to add one.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol, runtime_checkable

from gateway.engines.errors import (
    BackendError,
    EngineError,
    EngineNotReadyError,
    SynthesisFailedError,
    UnknownVoiceError,
    UnsupportedLanguageError,
)
from gateway.engines.languages import check_language
from gateway.engines.openai_names import OPENAI_VOICES

__all__ = [
    "BackendError",
    "ChatMessage",
    "Component",
    "ConversationRequest",
    "EngineError",
    "EngineNotReadyError",
    "ModelInfo",
    "ModelState",
    "NamedTool",
    "Responder",
    "ResponseEvent",
    "SynthesisChunk",
    "SynthesisFailedError",
    "SynthesisRequest",
    "Synthesizer",
    "Tool",
    "ToolCall",
    "ToolChoice",
    "Transcriber",
    "TranscriptSegment",
    "Transcription",
    "UnknownVoiceError",
    "UnsupportedLanguageError",
    "Voice",
    "VoiceCatalog",
    "WordTiming",
]


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


@runtime_checkable
class Component(Protocol):
    """What every role shares: a name (the metrics' `engine` label), a lifecycle and a catalogue."""

    name: str

    async def start(self) -> None:
        """Load or connect. Never raises for a broken model or a server that is down: `state` says so."""
        ...

    async def aclose(self) -> None:
        """Release everything; calling it again does nothing."""
        ...

    @property
    def state(self) -> ModelState: ...

    def models(self) -> Sequence[ModelInfo]: ...

    def languages(self) -> Sequence[str]:
        """ISO 639-1 codes this component really supports."""
        ...


# -- voices ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Voice:
    id: str
    name: str
    language: str
    sample_rate: int  # the model's native rate before resampling
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class VoiceCatalog:
    """A synthesizer's voices and languages, and the one way every engine resolves a requested voice.

    A name matches a voice's id, then one of its aliases ("default"), case and spaces ignored; an OpenAI
    voice name ("alloy", ...) that no voice claims means the default voice, so SDK defaults work on every
    surface. The default voice is the one aliased "default", else the first.
    """

    voices: tuple[Voice, ...]
    languages: tuple[str, ...]
    component: str = "tts"
    # Why there is no voice at all (the engine is not ready, or has nothing configured): the
    # EngineNotReadyError every request then gets.
    unavailable: str | None = None

    def names(self) -> tuple[str, ...]:
        return tuple(sorted({v.id for v in self.voices} | {a for v in self.voices for a in v.aliases}))

    def default(self) -> Voice | None:
        return next(
            (v for v in self.voices if "default" in v.aliases), self.voices[0] if self.voices else None
        )

    def find(self, name: str) -> Voice | None:
        wanted = name.strip().lower()
        voice = next((v for v in self.voices if v.id.lower() == wanted), None)
        voice = voice or next((v for v in self.voices if wanted in v.aliases), None)
        if voice is None and wanted in OPENAI_VOICES:
            voice = self.default()
        return voice

    def resolve(self, name: str) -> Voice:
        if not self.voices:
            raise EngineNotReadyError(self.component, self.unavailable)
        voice = self.find(name)
        if voice is None:
            names = self.names()
            raise UnknownVoiceError(
                f"unknown voice {name!r}; available: {', '.join(names)}",
                component=self.component,
                available=names,
            )
        return voice

    def check_language(self, language: str | None, voice: Voice | None = None) -> str:
        """The language code to speak in; an empty or "auto" language is the voice's own."""
        fallback = voice.language if voice is not None else (self.languages[0] if self.languages else "en")
        code = check_language(language, self.languages, self.component, fallback)
        assert code is not None
        return code

    def resolve_request(self, request: SynthesisRequest) -> SynthesisRequest:
        voice = self.resolve(request.voice)
        return replace(request, voice=voice.id, language=self.check_language(request.language, voice))


# -- speech out --------------------------------------------------------------------------------


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
    """Audio for one sentence of the input text, or one piece of it: PCM s16le mono at `sample_rate` (the
    gateway's AUDIO_SAMPLE_RATE), always whole samples.

    An engine that streams inside a sentence yields its audio in pieces as it comes: consecutive chunks
    with the same `index` and offsets, the last one `final` (it may carry no audio: the stream's end was
    only known after its last bytes). An engine that renders whole sentences yields one final chunk each.
    `words` come only on a whole sentence (a final chunk that is also its sentence's first).
    """

    pcm: bytes
    sample_rate: int
    index: int  # sentence index
    text_start: int  # character offsets into SynthesisRequest.text
    text_end: int
    generation_s: float = 0.0  # wall time from the start of this sentence's synthesis to this chunk
    words: tuple[WordTiming, ...] = ()  # filled when SynthesisRequest.timings asked and the engine can
    final: bool = True  # the last chunk of its sentence


@runtime_checkable
class Synthesizer(Component, Protocol):
    sample_rate: int

    def voices(self) -> Sequence[Voice]: ...

    def catalog(self) -> VoiceCatalog:
        """The voices and languages as of now (a remote engine's can change when its server does)."""
        ...

    def check_language(self, language: str | None) -> str:
        """The code of a supported language (empty or "auto": the default voice's); UnsupportedLanguageError
        otherwise."""
        ...

    def resolve(self, request: SynthesisRequest) -> SynthesisRequest:
        """The request with its voice id and language code resolved through `catalog()` (raises
        UnknownVoiceError, UnsupportedLanguageError, or EngineNotReadyError when there is no voice)."""
        ...

    def stream(self, request: SynthesisRequest) -> AsyncGenerator[SynthesisChunk, None]:
        """Yield audio sentence by sentence (or in pieces of sentences, see SynthesisChunk); closing the
        iterator stops further synthesis work."""
        ...


# -- speech in ---------------------------------------------------------------------------------


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


Task = Literal["transcribe", "translate"]


@dataclass(frozen=True)
class TranscribedWord:
    word: str
    start: float
    end: float


@dataclass(frozen=True)
class DecoderSegment(TranscriptSegment):
    """A segment with the decoder's own figures (Whisper's), which OpenAI's `verbose_json` reports."""

    seek: int = 0
    tokens: tuple[int, ...] = ()
    temperature: float = 0.0
    avg_logprob: float = 0.0
    compression_ratio: float = 0.0
    no_speech_prob: float = 0.0
    words: tuple[TranscribedWord, ...] = ()


@runtime_checkable
class DetailedTranscriber(Protocol):
    """An engine that can time words and/or translate into English (Whisper's multilingual models do both,
    Qwen3-Omni translates). An optional capability beside `Transcriber`: OpenAI's `verbose_json` words and
    /v1/audio/translations use it where an engine implements it, and answer a clear 400 where it does not."""

    @property
    def can_translate(self) -> bool: ...

    @property
    def can_time_words(self) -> bool:
        """Word timestamps (`words=True`); an engine that cannot answers a clear 400 through the service."""
        ...

    async def transcribe_detailed(
        self, samples: object, language: str | None, *, words: bool, task: Task
    ) -> Transcription: ...


@runtime_checkable
class Transcriber(Component, Protocol):
    sample_rate: int  # the rate `transcribe` expects its samples at

    def check_language(self, language: str | None) -> str | None:
        """The code to transcribe in, None to detect it (empty or "auto", where the engine can);
        UnsupportedLanguageError for a language the engine does not know."""
        ...

    async def transcribe(self, samples: object, language: str | None = None) -> Transcription:
        """`samples`: float32 mono numpy array at `sample_rate`."""
        ...


# -- conversation ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tool:
    """A function the model may call: OpenAI's function tool (`parameters` is a JSON schema object)."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NamedTool:
    """`tool_choice` naming one function: the reply must be a call to it."""

    name: str


# "auto": text or a call, as the model decides; "none": text only; "required": a call to some tool.
ToolChoice = Literal["auto", "none", "required"] | NamedTool


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as the model wrote it


@dataclass(frozen=True)
class ChatMessage:
    """One message of the prompt. An assistant message may carry the calls it made (`tool_calls`); a
    "tool" message is a call's result (`tool_call_id` names the call, `content` is the output)."""

    role: str  # "system" | "user" | "assistant" | "tool"
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None


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
    # Functions the model may call and whether it must: a call comes back as "tool_call" events.
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice = "auto"


@dataclass(frozen=True)
class ResponseEvent:
    """One piece of a streamed reply: text (a token/delta), audio (PCM s16le at the gateway rate), a
    tool call's piece, or usage.

    Usage comes last, once per reply. `has_audio` says whether the reply came with audio: a responder that
    `produces_audio` but answered in text only (a deployment without audio output) leaves the speaking to
    the caller's Synthesizer.
    """

    kind: str  # "text" | "audio" | "tool_call" | "usage"
    text: str = ""  # text: the delta; tool_call: a piece of the call's JSON arguments
    pcm: bytes = b""
    completion_tokens: int = 0
    tokens_per_second: float | None = None
    has_audio: bool = False  # usage: audio events came with this reply
    # tool_call: the first event of a call carries its id and name, the following ones (same id) more
    # of its arguments; a call is complete when the reply ends normally (its usage event came).
    call_id: str = ""
    name: str = ""


@runtime_checkable
class Responder(Component, Protocol):
    """The conversation engine. It emits text and, where it can, audio; never does it speak text itself:
    the voice pipeline chunks text into sentences and speaks them with the Synthesizer (word timings
    included) whenever `produces_audio` is False or a reply came without audio.

    Embedded: a small local LLM (text out). vLLM-Omni: Qwen3-Omni (audio in; text and audio out).
    """

    accepts_audio: bool  # ConversationRequest.audio is heard (else the caller transcribes first)

    @property
    def produces_audio(self) -> bool:
        """Replies are expected to carry audio. May turn False once the engine learns its deployment has
        none (vLLM-Omni `OMNI_AUDIO_OUTPUT=auto`)."""
        ...

    def check_language(self, language: str | None) -> str:
        """The code of a language the model converses in; UnsupportedLanguageError otherwise."""
        ...

    def respond(self, request: ConversationRequest) -> AsyncGenerator[ResponseEvent, None]:
        """Stream the reply: text and audio events, then one usage event; closing the iterator stops
        generation."""
        ...
