"""The Responder over the Omni server's `/v1/realtime` WebSocket, OpenAI Realtime GA schema only.

vLLM-Omni's `/v1/realtime` spoke three dialects (fact sheet §4): (a) legacy `transcription.*` +
`response.audio.delta`, (b) `response.output_audio.delta`, (c) from vLLM 0.29 (PRs #7339/#7426) the OpenAI
GA schema. Only (c) is used, and only when `OMNI_REALTIME=on` and `OMNI_SERVER_VERSION` is 0.29 or later;
HTTP streaming (`omni.py`) stays the default. One WebSocket per reply: the history goes in as
`conversation.item.create` messages, the user's audio as `input_audio_buffer.append` (PCM16 mono 24 kHz, the
only format, §4c) and `commit`, then `response.create`; `response.output_audio.delta` (field `delta`) and
`response.output_audio_transcript.delta` / `response.output_text.delta` come back until `response.done`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncGenerator, Sequence
from typing import Any
from urllib.parse import quote

import numpy as np
import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from gateway.audio.pcm import float_to_pcm16
from gateway.audio.resample import resample
from gateway.engines.base import ConversationRequest, ModelInfo, ResponseEvent
from gateway.engines.vllm_omni.audio import PcmJoiner
from gateway.engines.vllm_omni.backend import BackendClient, BackendError, bad_answer, timed_out, unavailable
from gateway.engines.vllm_omni.omni import OmniComponent, conversation_language
from gateway.engines.vllm_omni.protocol import BACKEND_SAMPLE_RATE, OMNI_SPEAKERS, QWEN_OMNI_SYSTEM_PROMPT

log = logging.getLogger(__name__)

_APPEND_SAMPLES = BACKEND_SAMPLE_RATE // 2  # half a second per input_audio_buffer.append


class VllmOmniRealtimeResponder(OmniComponent):
    name = "vllm-omni"
    accepts_audio = True
    produces_audio = True

    def __init__(
        self,
        backend: BackendClient,
        ws_url: str,
        sample_rate: int,
        speaker: str = "ethan",
        system_prompt: str = QWEN_OMNI_SYSTEM_PROMPT,
    ) -> None:
        self.backend = backend  # HTTP health, served model name and breaker are shared with the HTTP path
        self.ws_url = ws_url.rstrip("/")
        self.sample_rate = sample_rate
        self._speaker = speaker
        self._system_prompt = system_prompt
        self.last_tokens_per_second: float | None = None

    def models(self) -> Sequence[ModelInfo]:
        model = self.backend.model_id or "(not discovered)"
        return (ModelInfo("omni", model, self.name, self.state, self.backend.detail),)

    def check_language(self, language: str | None) -> str:
        return conversation_language(self, language)

    async def respond(self, request: ConversationRequest) -> AsyncGenerator[ResponseEvent, None]:
        backend = self.backend
        backend.check_usable("omni")
        backend.admit()
        cfg = backend.config
        url = f"{self.ws_url}/v1/realtime?model={quote(backend.model_id)}"
        try:
            async with websockets.connect(
                url,
                open_timeout=cfg.connect_timeout,
                max_size=None,
                additional_headers=backend.auth_headers(),
            ) as ws:
                async for event in self._converse(ws, request):
                    yield event
        except BackendError as failed:
            backend.stats.count("error")
            backend.record_failure(failed)
            raise
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            if isinstance(exc, TimeoutError):
                err = timed_out("omni", f"the omni realtime WebSocket was silent for {cfg.read_timeout:g} s")
            elif isinstance(exc, InvalidStatus) and exc.response.status_code < 500:
                err = bad_answer("omni", f"the omni server refused the realtime WebSocket: {exc}")
            else:
                err = unavailable(
                    "omni", f"cannot open the omni realtime WebSocket: {exc.__class__.__name__}"
                )
            backend.stats.count("error")
            backend.record_failure(err)
            raise err from None
        except ConnectionClosed as exc:
            err = bad_answer("omni", f"the omni server closed the realtime WebSocket mid-reply ({exc.rcvd})")
            backend.stats.count("error")
            backend.record_failure(err)
            raise err from None
        except BaseException:
            backend.breaker.release()  # the caller went away: no verdict on the backend
            raise
        backend.stats.count("ok")
        backend.record_success()

    async def _recv(self, ws: Any, deadline: float) -> dict[str, Any]:
        timeout = min(self.backend.config.read_timeout, max(0.0, deadline - time.monotonic()))
        raw = await asyncio.wait_for(ws.recv(), timeout)
        if isinstance(raw, bytes):
            raise bad_answer("omni", "the omni realtime WebSocket sent a binary frame")
        try:
            event = json.loads(raw)
        except ValueError:
            raise bad_answer("omni", "the omni realtime WebSocket sent malformed JSON") from None
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            raise bad_answer("omni", "the omni realtime WebSocket sent an event without a type")
        return event

    async def _send(self, ws: Any, type_: str, **fields: Any) -> None:
        await ws.send(json.dumps({"type": type_, **fields}))

    async def _converse(self, ws: Any, request: ConversationRequest) -> AsyncGenerator[ResponseEvent, None]:
        deadline = time.monotonic() + self.backend.config.total_timeout
        while (await self._recv(ws, deadline))["type"] != "session.created":
            pass
        history = list(request.history)
        system = next((m.content for m in history if m.role == "system"), None) or self._system_prompt
        speaker = request.voice.lower() if request.voice.lower() in OMNI_SPEAKERS else self._speaker
        session = {
            "type": "realtime",
            "instructions": system,
            "output_modalities": ["audio"],
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": BACKEND_SAMPLE_RATE},
                    "turn_detection": None,
                },
                "output": {"format": {"type": "audio/pcm", "rate": BACKEND_SAMPLE_RATE}, "voice": speaker},
            },
        }
        await self._send(ws, "session.update", session=session)
        while True:  # a server that refuses a setting keeps its default and says so: go on with it
            event = await self._recv(ws, deadline)
            if event["type"] == "session.updated":
                break
            if event["type"] == "error":
                log.info("the omni realtime server refused part of the session: %s", event.get("error"))
                break
        turns = [m for m in history if m.role in ("user", "assistant")]
        if request.audio is not None and turns and turns[-1].role == "user":
            turns = turns[:-1]  # the user's turn goes in as audio
        for m in turns:
            part = {"type": "input_text" if m.role == "user" else "output_text", "text": m.content}
            await self._send(
                ws, "conversation.item.create", item={"type": "message", "role": m.role, "content": [part]}
            )
        if request.audio is not None:
            samples = np.asarray(request.audio, dtype=np.float32)
            if request.audio_rate != BACKEND_SAMPLE_RATE:
                samples = await asyncio.to_thread(resample, samples, request.audio_rate, BACKEND_SAMPLE_RATE)
            pcm = float_to_pcm16(samples)
            step = _APPEND_SAMPLES * 2
            for i in range(0, len(pcm), step):
                await self._send(
                    ws, "input_audio_buffer.append", audio=base64.b64encode(pcm[i : i + step]).decode("ascii")
                )
            await self._send(ws, "input_audio_buffer.commit")
        await self._send(
            ws,
            "response.create",
            response={"output_modalities": ["audio"], "max_output_tokens": request.max_tokens},
        )
        joiner = PcmJoiner(self.sample_rate)
        t_first: float | None = None
        t_last = 0.0
        deltas = 0
        got_audio = False
        while True:
            event = await self._recv(ws, deadline)
            kind = event["type"]
            if kind in ("response.output_audio_transcript.delta", "response.output_text.delta"):
                text = event.get("delta")
                if isinstance(text, str) and text:
                    now = time.perf_counter()
                    t_first = t_first or now
                    t_last = now
                    deltas += 1
                    yield ResponseEvent(kind="text", text=text)
            elif kind == "response.output_audio.delta":
                try:
                    data = base64.b64decode(event.get("delta") or "", validate=True)
                except ValueError:
                    raise bad_answer("omni", "an output_audio delta is not valid base64") from None
                pcm = joiner.push(data, BACKEND_SAMPLE_RATE)
                got_audio = got_audio or bool(data)
                if pcm:
                    yield ResponseEvent(kind="audio", pcm=pcm)
            elif kind == "error":
                detail = event.get("error")
                message = detail.get("message") if isinstance(detail, dict) else detail
                raise bad_answer("omni", f"the omni realtime server reported an error: {message}")
            elif kind == "response.done":
                response = event.get("response") or {}
                if response.get("status") == "failed":
                    raise bad_answer(
                        "omni", f"the omni realtime response failed: {response.get('status_details')}"
                    )
                try:
                    tail = joiner.finish()
                except ValueError as exc:
                    raise bad_answer("omni", f"truncated realtime audio: {exc}") from None
                if tail:
                    yield ResponseEvent(kind="audio", pcm=tail)
                usage = response.get("usage") or {}
                tokens = int(usage.get("output_tokens") or 0) or deltas
                span = t_last - t_first if t_first is not None else 0.0
                tps = (tokens - 1) / span if tokens > 1 and span > 0 else None
                self.last_tokens_per_second = tps
                yield ResponseEvent(
                    kind="usage", completion_tokens=tokens, tokens_per_second=tps, has_audio=got_audio
                )
                return
