"""The Synthesizer over vLLM-Omni's TTS server (Qwen3-TTS 0.6B Base): sentence by sentence, each sentence's
PCM handed on in pieces as the server streams it (the first audio does not wait for the sentence's end).

Voices: the Base model has no built-in voices (fact sheet §3 "0.6B Base has no built-in voices"), so the
gateway's voices are reference clips from configuration: `TTS_VOICES_DIR/<name>.<wav|flac|mp3|ogg>` with its
exact transcript in `<name>.txt` (and optionally `<name>.json`: `{"language": "en", "description": "..."}`).
With `TTS_VOICE_MODE=register` (or `auto`, the default, when the server has `/v1/audio/voices`) each clip is
uploaded at start-up and on every reconnect unless the server already holds that very clip (vLLM-Omni 0.30.0
overwrites an upload of the same name, so re-uploading is idempotent), then named by `voice`; with `inline`
every request carries the clip as a `ref_audio` data URL plus `ref_text`. Speakers the server has of its own
(a CustomVoice checkpoint, or the engine-server's CPU voice) are offered as well; the "default" every
listing carries is not one (see `protocol.offered_voices`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import mimetypes
import time
from collections import deque
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.audio.decode import AudioDecodeError, decode_audio
from gateway.audio.text import split_sentences
from gateway.engines.base import (
    ModelInfo,
    ModelState,
    SynthesisChunk,
    SynthesisRequest,
    Voice,
    VoiceCatalog,
)
from gateway.engines.languages import NAMES, normalize_language
from gateway.engines.vllm_omni.audio import PcmJoiner, change_tempo
from gateway.engines.vllm_omni.backend import BackendClient, BackendError, BackendResponse, bad_answer
from gateway.engines.vllm_omni.protocol import (
    BACKEND_SAMPLE_RATE,
    DONE,
    QWEN_TTS_LANGUAGES,
    ProtocolError,
    is_lost_voice_error,
    offered_voices,
    parse_sse_data,
    speech_request,
    speech_sse_pcm,
)

log = logging.getLogger(__name__)

_AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".m4a")
# Fact sheet §3: reference audio must last 1-30 s; uploads are at most 10 MB.
MIN_REF_S, MAX_REF_S, MAX_REF_BYTES = 1.0, 30.0, 10 * 1024 * 1024


class VoiceConfigError(ValueError):
    pass


@dataclass(frozen=True)
class VoiceClip:
    name: str
    audio: bytes
    mime_type: str
    ref_text: str
    language: str
    duration: float
    description: str = ""

    def data_url(self) -> str:
        """`ref_audio` must start with `data:` (or http/file); raw base64 is rejected (fact sheet §3)."""
        return f"data:{self.mime_type};base64,{base64.b64encode(self.audio).decode('ascii')}"


def load_voice_clips(directory: str | Path) -> list[VoiceClip]:
    """Read and check every clip of the voices directory (a mounted ConfigMap/volume). Blocking."""
    root = Path(directory)
    if not root.is_dir():
        raise VoiceConfigError(f"TTS_VOICES_DIR={str(root)!r} is not a directory")
    clips: list[VoiceClip] = []
    for audio_path in sorted(p for p in root.iterdir() if p.suffix.lower() in _AUDIO_SUFFIXES):
        name = audio_path.stem.strip().lower()
        text_path = audio_path.with_suffix(".txt")
        if not text_path.is_file():
            raise VoiceConfigError(
                f"voice {name!r}: {text_path.name} (the clip's exact transcript) is missing"
            )
        ref_text = text_path.read_text(encoding="utf-8").strip()
        if not ref_text:
            raise VoiceConfigError(f"voice {name!r}: {text_path.name} is empty")
        meta: dict[str, Any] = {}
        meta_path = audio_path.with_suffix(".json")
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        audio = audio_path.read_bytes()
        if len(audio) > MAX_REF_BYTES:
            raise VoiceConfigError(f"voice {name!r}: the clip is larger than 10 MB")
        try:
            duration = decode_audio(audio, 16000, MAX_REF_S + 1).duration
        except (AudioDecodeError, ValueError) as exc:
            raise VoiceConfigError(f"voice {name!r}: {audio_path.name} is not usable audio: {exc}") from None
        if not MIN_REF_S <= duration <= MAX_REF_S:
            raise VoiceConfigError(f"voice {name!r}: the clip lasts {duration:.1f} s; it must last 1-30 s")
        mime = mimetypes.guess_type(audio_path.name)[0] or "audio/wav"
        if mime == "audio/x-wav":
            mime = "audio/wav"
        language = normalize_language(str(meta.get("language", "en"))) or "en"
        clips.append(
            VoiceClip(name, audio, mime, ref_text, language, duration, str(meta.get("description", "")))
        )
    return clips


class VllmOmniSynthesizer:
    """`Synthesizer` over `POST /v1/audio/speech` with `stream: true`, `response_format: "pcm"`."""

    name = "vllm-omni"

    def __init__(
        self,
        backend: BackendClient,
        sample_rate: int,
        clips: Sequence[VoiceClip] = (),
        voice_mode: str = "auto",
        consent: str = "voice-gateway",
        seed: int | None = None,
        lookahead: int = 1,
        max_sentence_chars: int = 240,
    ) -> None:
        self.backend = backend
        self.sample_rate = sample_rate
        self._clips = {c.name: c for c in clips}
        self._voice_mode = voice_mode
        self._consent = consent
        self._seed = seed
        self._lookahead = max(0, lookahead)
        self._max_sentence_chars = max_sentence_chars
        self._registered: set[str] = set()
        self._inline = voice_mode == "inline"
        self._builtin: list[str] = []
        self._server_languages: tuple[str, ...] | None = None
        self._listed = False  # a voices listing (or its absence) has been read since start
        self._reregistering: dict[str, asyncio.Task[None]] = {}
        backend.on_ready(self._discover_voices)

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        await self.backend.start()

    async def aclose(self) -> None:
        for task in self._reregistering.values():
            task.cancel()
        if self._reregistering:
            await asyncio.gather(*self._reregistering.values(), return_exceptions=True)
        await self.backend.aclose()

    async def _discover_voices(self) -> None:
        """`GET /v1/audio/voices` -> `{"voices": [...], "uploaded_voices": [{"name", "file_size", "ref_text",
        ...}]}` (fact sheet §3), then upload each clip the server does not hold as ours: `POST
        /v1/audio/voices` multipart with `audio_sample`, `name`, `consent`, `ref_text`. Re-run on every
        reconnect. vLLM-Omni 0.30.0 answers 200 to a second upload of a name and overwrites the first, so a
        listed voice whose size or transcript differs from our clip (another clip under our name) is simply
        uploaded again."""
        try:
            listing = await self.backend.request_json("GET", "/v1/audio/voices")
        except BackendError as exc:
            if self._voice_mode == "register" or not _is_missing_route(exc):
                raise
            listing = None
        self._listed = True
        if isinstance(listing, dict):
            self._builtin = offered_voices(listing)
            langs = listing.get("languages")  # the engine-server says which it speaks; vLLM-Omni does not
            if isinstance(langs, list) and langs:
                self._server_languages = tuple(str(x) for x in langs)
        if isinstance(listing, dict) and not self._clips and not self._builtin:
            log.warning(
                "the TTS server offers no speaker of its own (%s lists only the placeholder 'default', which "
                "a Qwen3-TTS Base model cannot speak without a reference clip) and TTS_VOICES_DIR has no "
                "clips: speech requests will be refused until clips are configured",
                self.backend.model_id or "its model",
            )
        if self._voice_mode == "inline" or not self._clips:
            return
        if listing is None:
            log.info("the TTS server has no /v1/audio/voices: sending reference clips with every request")
            self._inline = True
            return
        held = {
            str(v.get("name", "")).lower(): v
            for v in listing.get("uploaded_voices") or []
            if isinstance(v, dict)
        }
        for clip in self._clips.values():
            if _holds(held.get(clip.name), clip):
                self._registered.add(clip.name)
                continue
            await self._upload(clip)
        self._inline = False

    async def _upload(self, clip: VoiceClip) -> None:
        """Upload (or overwrite) one clip. A refusal (4xx: a name reserved by a built-in speaker, a server
        whose policy forbids overwriting, a clip it cannot decode) leaves that voice inline: every request
        then carries the clip, and the server's verdict on it comes with the first request."""
        files = {
            "audio_sample": (
                f"{clip.name}{mimetypes.guess_extension(clip.mime_type) or '.wav'}",
                clip.audio,
                clip.mime_type,
            )
        }
        data = {"name": clip.name, "consent": self._consent, "ref_text": clip.ref_text}
        try:
            await self.backend.request_json("POST", "/v1/audio/voices", files=files, data=data)
        except BackendError as exc:
            if exc.upstream_status is None or not 400 <= exc.upstream_status < 500:
                raise
            self._registered.discard(clip.name)
            log.warning(
                "the TTS server refused to register voice %r (%s): sending its clip with every request",
                clip.name,
                exc.upstream_message or exc.message,
            )
            return
        self._registered.add(clip.name)
        log.info("registered voice %r with the TTS server", clip.name)

    def _reregister(self, clip: VoiceClip) -> None:
        """Upload a voice the server lost again, in the background; requests go inline meanwhile."""
        task = self._reregistering.get(clip.name)
        if task is not None and not task.done():
            return

        async def upload() -> None:
            try:
                await self._upload(clip)
            except BackendError as exc:  # the next reconnect tries again
                log.warning("re-registering voice %r failed: %s", clip.name, exc.message)

        self._reregistering[clip.name] = asyncio.create_task(upload(), name=f"reregister-{clip.name}")

    # -- catalogue ---------------------------------------------------------------------------
    @property
    def state(self) -> ModelState:
        return self.backend.state

    def voices(self) -> Sequence[Voice]:
        out = [
            Voice(
                id=c.name,
                name=c.description or f"{c.name} (reference clip)",
                language=c.language,
                sample_rate=BACKEND_SAMPLE_RATE,
            )
            for c in self._clips.values()
        ]
        out += [
            Voice(id=v, name=f"{v} (built-in)", language="en", sample_rate=BACKEND_SAMPLE_RATE)
            for v in self._builtin
            if v not in self._clips
        ]
        if out:
            first = out[0]
            out[0] = Voice(first.id, first.name, first.language, first.sample_rate, aliases=("default",))
        return out

    def _no_voice_reason(self) -> str:
        return (
            f"the TTS server ({self.backend.model_id or 'not discovered'}) has no speaker of its own: a "
            "Qwen3-TTS Base model speaks only by cloning a reference clip; mount clips (name.wav + "
            "name.txt) in TTS_VOICES_DIR"
        )

    def languages(self) -> Sequence[str]:
        names = self._server_languages or QWEN_TTS_LANGUAGES
        by_name = {v.lower(): k for k, v in NAMES.items()}
        return tuple(by_name[n.lower()] for n in names if n.lower() in by_name)

    def models(self) -> Sequence[ModelInfo]:
        detail = self.backend.detail
        if self.state is ModelState.READY and self._listed and not self.voices():
            detail = "; ".join(d for d in (detail, self._no_voice_reason()) if d)
        return (ModelInfo("tts", self.backend.model_id or "(not discovered)", self.name, self.state, detail),)

    def catalog(self) -> VoiceCatalog:
        unavailable = self._no_voice_reason() if self.state is ModelState.READY else self.backend.detail
        return VoiceCatalog(tuple(self.voices()), tuple(self.languages()), unavailable=unavailable)

    def check_language(self, language: str | None) -> str:
        catalog = self.catalog()
        return catalog.check_language(language, catalog.default())

    def resolve(self, request: SynthesisRequest) -> SynthesisRequest:
        return self.catalog().resolve_request(request)

    # -- synthesis ---------------------------------------------------------------------------
    def _body(self, text: str, voice: str, language: str) -> dict[str, Any]:
        lang_name = NAMES.get(language, "Auto")
        clip = self._clips.get(voice)
        model = self.backend.model_id
        if clip is None:  # a built-in voice of the server
            return speech_request(
                text, model=model, language=lang_name, voice=voice, task_type=None, seed=self._seed
            )
        if self._inline or clip.name not in self._registered:
            return speech_request(
                text,
                model=model,
                language=lang_name,
                ref_audio=clip.data_url(),
                ref_text=clip.ref_text,
                seed=self._seed,
            )
        return speech_request(
            text, model=model, language=lang_name, voice=clip.name, ref_text=clip.ref_text, seed=self._seed
        )

    def _recover_lost_voice(self, exc: BackendError, voice: str) -> bool:
        """Can a sentence refused with `exc` go again with the clip inline? True when the server lost a voice
        we uploaded (restarted on empty storage: 400 "Base task with built-in speaker 'x' requires
        'ref_audio'"); the voice is then uploaded again in the background."""
        if exc.upstream_status != 400 or not is_lost_voice_error(exc.upstream_message):
            return False
        clip = self._clips.get(voice)
        if clip is None:
            # A speaker the server listed cannot speak without a reference after all: stop offering it.
            if voice in self._builtin:
                log.warning("the TTS server cannot speak its voice %r: %s", voice, exc.upstream_message)
                self._builtin.remove(voice)
            return False
        if voice not in self._registered:
            return False
        log.warning("the TTS server no longer knows voice %r: sending its clip inline", voice)
        self._registered.discard(voice)
        self._reregister(clip)
        return True

    async def _audio(self, text: str, voice: str, language: str) -> AsyncGenerator[bytes, None]:
        """One sentence's PCM, piece by piece, with one inline retry for a voice the server lost (refused
        before any audio, so nothing is said twice)."""
        try:
            async with contextlib.aclosing(self._fetch(text, voice, language)) as pieces:
                async for pcm in pieces:
                    yield pcm
            return
        except BackendError as exc:
            if not self._recover_lost_voice(exc, voice):
                raise
        async with contextlib.aclosing(self._fetch(text, voice, language)) as pieces:
            async for pcm in pieces:
                yield pcm

    async def _fetch(self, text: str, voice: str, language: str) -> AsyncGenerator[bytes, None]:
        """One sentence as the server streams it: PCM16 24 kHz brought to the gateway's rate, yielded as the
        bytes arrive (vLLM-Omni sends a first codec chunk early: `initial_codec_chunk_frames`).

        We ask for raw bytes (`stream_format: "audio"`); a server that answers with events anyway
        (`text/event-stream`: vLLM-Omni 0.30.0's default for `stream: true`) is read as events. A refusal
        comes before the first piece (the status line), never after one."""
        joiner = PcmJoiner(self.sample_rate)
        produced = False
        async with self.backend.stream(
            "POST", "/v1/audio/speech", json_body=self._body(text, voice, language)
        ) as resp:
            ctype = resp.response.headers.get("content-type", "")
            if ctype.startswith("text/event-stream"):
                chunks = _sse_pcm(resp)
            elif not ctype or ctype.startswith(("audio/", "application/octet-stream")):
                chunks = resp.iter_bytes()
            else:
                raise bad_answer("tts", f"the TTS server answered {ctype!r} instead of PCM audio")
            async with contextlib.aclosing(chunks):
                async for chunk in chunks:
                    pcm = joiner.push(chunk, BACKEND_SAMPLE_RATE)
                    if pcm:
                        produced = True
                        yield pcm
            try:
                tail = joiner.finish()
            except ValueError as exc:
                raise bad_answer("tts", f"the TTS server sent truncated audio: {exc}") from None
            if tail:
                produced = True
                yield tail
        if not produced:
            raise bad_answer("tts", "the TTS server sent no audio for a sentence")

    async def _produce(
        self, audio: _SentenceAudio, text: str, voice: str, language: str, speed: float
    ) -> None:
        try:
            async with contextlib.aclosing(self._audio(text, voice, language)) as pieces:
                if abs(speed - 1.0) > 1e-3:
                    # vLLM-Omni refuses `speed` with `stream`; re-timing needs the whole sentence.
                    pcm = b"".join([p async for p in pieces])
                    audio.put(await asyncio.to_thread(change_tempo, pcm, self.sample_rate, speed))
                else:
                    async for pcm in pieces:
                        audio.put(pcm)
        except Exception as exc:  # handed to the consumer, in order after the pieces that came
            audio.finish(exc)
        else:
            audio.finish()

    def _request(self, text: str, request: SynthesisRequest) -> _SentenceAudio:
        audio = _SentenceAudio()
        audio.task = asyncio.create_task(
            self._produce(audio, text, request.voice, request.language, request.speed), name="tts-sentence"
        )
        return audio

    async def stream(self, request: SynthesisRequest) -> AsyncGenerator[SynthesisChunk, None]:
        """Sentences in order, each in pieces as its audio streams in (whole when `speed` is not 1)."""
        self.backend.check_usable("tts")
        spans = split_sentences(request.text, self._max_sentence_chars)
        # Pipelining: later sentences are requested while earlier ones are handed out, hiding the server's
        # time to first audio between sentences. The first sentence goes alone, so it does not share the
        # server with the second one: time to first audio comes first. Closing the iterator cancels what
        # is still in flight, the sentence being handed out included.
        inflight: list[_SentenceAudio] = []
        try:
            for index, span in enumerate(spans):
                depth = 0 if index == 0 else self._lookahead
                while len(inflight) <= depth and len(inflight) + index < len(spans):
                    inflight.append(self._request(spans[index + len(inflight)].text, request))
                audio = inflight[0]
                final = False
                while (piece := await audio.next()) is not None:
                    pcm, at, final = piece
                    yield SynthesisChunk(
                        pcm=pcm,
                        sample_rate=self.sample_rate,
                        index=index,
                        text_start=span.start,
                        text_end=span.end,
                        generation_s=at - audio.started,
                        final=final,
                    )
                if not final:  # the end of the stream came after its last piece was handed out
                    yield SynthesisChunk(
                        pcm=b"",
                        sample_rate=self.sample_rate,
                        index=index,
                        text_start=span.start,
                        text_end=span.end,
                        generation_s=time.perf_counter() - audio.started,
                    )
                inflight.pop(0)
        finally:
            for audio in inflight:
                if audio.task is not None:
                    audio.task.cancel()
            tasks = [a.task for a in inflight if a.task is not None]
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)


class _SentenceAudio:
    """One sentence requested from the TTS server: its PCM pieces collect here as they stream in, so the
    consumer can hand each out at once and knows, when the stream has ended already, which one is last."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.task: asyncio.Task[None] | None = None
        self._pieces: deque[tuple[bytes, float]] = deque()  # (pcm, arrival time)
        self._done = False
        self._error: BaseException | None = None
        self._changed = asyncio.Event()

    def put(self, pcm: bytes) -> None:
        self._pieces.append((pcm, time.perf_counter()))
        self._changed.set()

    def finish(self, error: BaseException | None = None) -> None:
        self._done, self._error = True, error
        self._changed.set()

    async def next(self) -> tuple[bytes, float, bool] | None:
        """(pcm, arrival time, is the last piece), or None once every piece was handed out; raises the
        sentence's failure after the pieces that came before it."""
        while not self._pieces and not self._done:
            self._changed.clear()
            await self._changed.wait()
        if self._pieces:
            pcm, at = self._pieces.popleft()
            return pcm, at, self._done and self._error is None and not self._pieces
        if self._error is not None:
            raise self._error
        return None


async def _sse_pcm(resp: BackendResponse) -> AsyncGenerator[bytes, None]:
    """PCM from `/v1/audio/speech` events (`speech.audio.delta` ... `speech.audio.done`). A stream that ends
    before `speech.audio.done` is truncated; a `speech.audio.error` event fails the sentence."""
    try:
        async for line in resp.iter_lines():
            event = parse_sse_data(line)
            if event is None:
                continue
            if event == DONE or not isinstance(event, dict):
                break
            pcm = speech_sse_pcm(event)
            if pcm is None:
                return
            if pcm:
                yield pcm
    except ProtocolError as exc:
        raise bad_answer("tts", f"the TTS server's event stream failed: {exc}") from None
    raise bad_answer("tts", "the TTS server's event stream ended before speech.audio.done (truncated audio)")


def _holds(listed: dict[str, Any] | None, clip: VoiceClip) -> bool:
    """Does the server's listing entry describe this very clip (same size and transcript)?"""
    if listed is None:
        return False
    size = listed.get("file_size")
    if isinstance(size, int) and size != len(clip.audio):
        return False
    return (listed.get("ref_text") or "").strip() == clip.ref_text.strip()


def _is_missing_route(exc: BackendError) -> bool:
    return exc.upstream_status in (404, 405)
