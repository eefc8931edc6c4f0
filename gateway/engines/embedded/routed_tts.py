"""One Synthesizer in front of several single-language ones (Piper for English, Kokoro for Japanese): each
request goes to the engine that owns its voice, or, for the default voice, to the one that speaks its
language. The first engine is the primary: its default voice is the default, and its state is the state once
all have loaded (a secondary that failed to load is named in /models, its voices and language are no longer
listed, and English keeps working)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from dataclasses import replace

from gateway.engines.base import (
    EngineNotReadyError,
    ModelInfo,
    ModelState,
    SynthesisChunk,
    SynthesisRequest,
    Synthesizer,
    Voice,
    VoiceCatalog,
)


class RoutedSynthesizer:
    name = "embedded"

    def __init__(self, engines: Sequence[Synthesizer]) -> None:
        assert engines, "at least one synthesizer"
        self._engines = tuple(engines)
        self.sample_rate = self._engines[0].sample_rate
        assert all(e.sample_rate == self.sample_rate for e in self._engines)

    async def start(self) -> None:
        await asyncio.gather(*(e.start() for e in self._engines))

    async def aclose(self) -> None:
        for engine in self._engines:
            await engine.aclose()

    @property
    def state(self) -> ModelState:
        # Loading until every engine has loaded or failed: a gateway that says ready speaks every language
        # it lists.
        if any(e.state is ModelState.LOADING for e in self._engines):
            return ModelState.LOADING
        return self._engines[0].state

    def models(self) -> Sequence[ModelInfo]:
        # One entry per role (the engine contract): the primary's, naming a secondary that failed to load.
        primary = replace(self._engines[0].models()[0], state=self.state)
        failed = [
            f"{m.id} ({', '.join(e.languages())}): {m.detail or 'failed to load'}"
            for e in self._engines[1:]
            for m in e.models()
            if m.state is ModelState.FAILED
        ]
        if not failed:
            return (primary,)
        return (replace(primary, detail="; ".join(filter(None, [primary.detail, *failed]))),)

    def _live(self) -> tuple[Synthesizer, ...]:
        # A secondary engine that failed to load offers nothing: its voices and language are not listed.
        return tuple(e for i, e in enumerate(self._engines) if i == 0 or e.state is not ModelState.FAILED)

    def voices(self) -> Sequence[Voice]:
        return tuple(v for e in self._live() for v in e.voices())

    def languages(self) -> Sequence[str]:
        return tuple(dict.fromkeys(code for e in self._live() for code in e.languages()))

    def catalog(self) -> VoiceCatalog:
        return VoiceCatalog(tuple(self.voices()), tuple(self.languages()))

    def check_language(self, language: str | None) -> str:
        catalog = self.catalog()
        return catalog.check_language(language, catalog.default())

    def _engine_for(self, request: SynthesisRequest) -> Synthesizer:
        """The engine owning the (resolved) voice."""
        for engine in self._engines:
            if any(v.id == request.voice for v in engine.voices()):
                return engine
        return self._engines[0]

    def resolve(self, request: SynthesisRequest) -> SynthesisRequest:
        catalog = self.catalog()
        resolved = catalog.resolve_request(request)
        owner = self._engine_for(resolved)
        if resolved.language in owner.languages():
            return resolved
        # The default (or an OpenAI-named) voice asked to speak another language: that language's engine
        # speaks it with its own default voice.
        if catalog.find(request.voice) is catalog.default():
            for engine in self._live():
                own = engine.catalog().default()
                if own is not None and resolved.language in engine.languages():
                    return engine.resolve(replace(request, voice=own.id, language=resolved.language))
        # A voice named for itself speaks its own language (SynthesisRequest's language defaults to "en",
        # so "jm_kumo" alone must not be refused).
        return owner.resolve(replace(resolved, language=""))

    async def stream(self, request: SynthesisRequest) -> AsyncGenerator[SynthesisChunk, None]:
        engine = self._engine_for(request)
        if engine.state is not ModelState.READY:
            raise EngineNotReadyError("tts", next((m.detail for m in engine.models() if m.detail), None))
        stream = engine.stream(request)
        try:
            async for chunk in stream:
                yield chunk
        finally:
            await stream.aclose()
