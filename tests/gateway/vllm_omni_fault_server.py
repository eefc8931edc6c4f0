"""A real HTTP/1.1 server on 127.0.0.1 that answers like vLLM-Omni, or misbehaves on demand.

Written on raw asyncio streams (in a background thread) so every fault is byte-exact: refused connections
(the listening socket is closed, as while vLLM loads), a stall before the status line, a stall in the middle
of a streamed body, a 500, malformed JSON, truncated audio. The well-behaved answers are built exactly like
the fact sheet's examples (two choices with index 0, SSE chunks with `modality`, per-chunk WAVs, `[DONE]`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import threading
from collections import Counter
from typing import Any

import numpy as np

from gateway.audio.pcm import wav_bytes
from tests.support import free_port

MODEL = "Qwen/Qwen3-Omni-fake"
RATE = 24000


def tone(seconds: float, freq: float = 440.0, rate: int = RATE) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * freq * t) * 0.3 * 32767).astype("<i2").tobytes()


def sse(event: dict[str, Any] | str) -> bytes:
    payload = event if isinstance(event, str) else json.dumps(event)
    return f"data: {payload}\n\n".encode()


def chat_chunks(
    text_tokens: list[str], audio: list[bytes], usage: dict[str, int] | None = None
) -> list[bytes]:
    """The fact sheet §2 streaming example, chunk for chunk."""
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1767000000, "model": MODEL}
    usage = usage or {"prompt_tokens": 120, "completion_tokens": 0, "total_tokens": 120}
    out = [
        sse(
            {
                **base,
                "choices": [
                    {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                ],
                "modality": "text",
            }
        )
    ]
    for tok in text_tokens:
        out.append(sse({**base, "choices": [{"index": 0, "delta": {"content": tok}}], "modality": "text"}))
    for i, pcm in enumerate(audio):
        b64 = base64.b64encode(wav_bytes(pcm, RATE)).decode()
        finish = "stop" if i == len(audio) - 1 else None
        out.append(
            sse(
                {
                    **base,
                    "choices": [
                        {
                            "index": 0,
                            "delta": {"role": "assistant", "content": b64},
                            "logprobs": None,
                            "finish_reason": finish,
                        }
                    ],
                    "modality": "audio",
                    "usage": usage,
                }
            )
        )
    out.append(sse("[DONE]"))
    return out


def chat_full(text: str, audio: bytes | None, audio_first: bool = False) -> dict[str, Any]:
    """The fact sheet §2 non-streaming example: separate choices, both with index 0."""
    choices: list[dict[str, Any]] = [
        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
    ]
    if audio is not None:
        audio_choice = {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "audio": {
                    "id": "audio-1a2b3c4d5e6f7a8b",
                    "data": base64.b64encode(wav_bytes(audio, RATE)).decode(),
                    "expires_at": 1767086400,
                    "transcript": "",
                },
            },
            "finish_reason": "stop",
        }
        choices = [audio_choice, *choices] if audio_first else [*choices, audio_choice]
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1767000000,
        "model": MODEL,
        "choices": choices,
        "usage": {"prompt_tokens": 120, "completion_tokens": 9, "total_tokens": 129},
        "metrics": None,
    }


class FaultServer:
    """Modes: ok, loading (503 No engine initialized), unhealthy, refuse, stall_before, stall_mid, http500,
    malformed_json, truncated_audio, no_audio (Omni replies with text only), slow_stream (10 s of PCM)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.mode = "ok"
        self.hits: Counter[str] = Counter()
        self.last_bodies: dict[str, Any] = {}
        self.request_ids: list[str] = []
        self.aborted = 0  # streams whose client went away mid-way
        self.stall_s = 30.0
        self.reply_text = ["Hello", "!", " How", " can", " I", " help", "?"]
        self.reply_audio = [tone(0.32), tone(2.0, 330), tone(0.5, 550)]
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._stalled: list[asyncio.Event] = []
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="fault-server")
        self._thread.start()
        self.listen()

    # -- control (from the test thread) -------------------------------------------------------
    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def listen(self) -> None:
        async def start() -> None:
            if self._server is None:
                self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

        self._call(start())

    def refuse(self) -> None:
        """Close the listening socket: new connections are refused, like vLLM-Omni while it loads."""

        async def stop() -> None:
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()
                self._server = None

        self._call(stop())

    def set_mode(self, mode: str) -> None:
        if mode == "refuse":
            self.refuse()
        else:
            self.listen()
        self.mode = mode

    def close(self) -> None:
        self.refuse()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    # -- HTTP ---------------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {
                k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)
            }
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.hits[f"{method} {path}"] += 1
            await self._route(method, path, headers, body, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, status: int, ctype: str, body: bytes) -> None:
        reason = {200: "OK", 404: "Not Found", 500: "Internal Server Error", 503: "Service Unavailable"}[
            status
        ]
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()

    @staticmethod
    async def _start_chunked(writer: asyncio.StreamWriter, ctype: str) -> None:
        writer.write(
            f"HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nTransfer-Encoding: chunked\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        await writer.drain()

    @staticmethod
    async def _chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        await writer.drain()

    async def _json(self, writer: asyncio.StreamWriter, obj: Any, status: int = 200) -> None:
        await self._send(writer, status, "application/json", json.dumps(obj).encode())

    async def _route(
        self, method: str, path: str, headers: dict[str, str], body: bytes, writer: asyncio.StreamWriter
    ) -> None:
        mode = self.mode
        if path == "/health":
            if mode == "loading":
                return await self._json(writer, {"reason": "No engine initialized"}, 503)
            if mode == "unhealthy":
                return await self._json(writer, {"status": "unhealthy"}, 503)
            return await self._json(writer, {"status": "healthy"})
        if path == "/v1/models":
            return await self._json(
                writer,
                {
                    "object": "list",
                    "data": [
                        {"id": MODEL, "object": "model", "created": 0, "owned_by": "vllm-omni", "root": MODEL}
                    ],
                },
            )
        if path == "/v1/audio/voices" and method == "GET":
            return await self._json(writer, {"voices": ["vivian"], "uploaded_voices": []})
        request = (
            json.loads(body)
            if body and headers.get("content-type", "").startswith("application/json")
            else {}
        )
        self.last_bodies[path] = request
        self.request_ids.append(headers.get("x-request-id", ""))
        if mode == "stall_before":
            await self._stall()
            return None
        if mode == "http500":
            return await self._json(
                writer, {"error": {"message": "boom", "type": "InternalServerError", "code": 500}}, 500
            )
        if path == "/v1/audio/speech":
            return await self._speech(writer, mode)
        if path == "/v1/chat/completions":
            return await self._chat(writer, mode, request)
        return await self._json(writer, {"error": {"message": "not found"}}, 404)

    async def _stall(self) -> None:
        event = asyncio.Event()
        self._stalled.append(event)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), self.stall_s)

    async def _speech(self, writer: asyncio.StreamWriter, mode: str) -> None:
        pcm = tone(0.6)
        await self._start_chunked(writer, "audio/pcm")
        if mode == "slow_stream":  # a long stream, to see that a client leaving closes it
            try:
                for _ in range(200):
                    await self._chunk(writer, pcm[:4800])
                    await asyncio.sleep(0.05)
            except ConnectionError:
                self.aborted += 1
            return
        await self._chunk(writer, pcm[: len(pcm) // 2])
        if mode == "stall_mid":
            await self._stall()
            return
        rest = pcm[len(pcm) // 2 :]
        if mode == "truncated_audio":
            rest = rest[:-1]  # half a sample: the stream ends mid-sample
        await self._chunk(writer, rest)
        await self._chunk(writer, b"")

    async def _chat(self, writer: asyncio.StreamWriter, mode: str, request: dict[str, Any]) -> None:
        if mode == "malformed_json":
            return await self._send(writer, 200, "application/json", b'{"choices": [ {"index": 0, "mess')
        want_audio = "audio" in (request.get("modalities") or ["text", "audio"]) and mode != "no_audio"
        if not request.get("stream"):
            return await self._json(
                writer, chat_full("".join(self.reply_text), tone(1.0) if want_audio else None)
            )
        audio = self.reply_audio if want_audio else []
        chunks = chat_chunks(self.reply_text, audio)
        if mode == "truncated_audio" and audio:
            wav = wav_bytes(audio[0], RATE)
            bad = base64.b64encode(wav[: len(wav) // 2]).decode()
            base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": MODEL}
            chunks.insert(
                len(self.reply_text) + 1,
                sse(
                    {
                        **base,
                        "choices": [
                            {
                                "index": 0,
                                "delta": {"role": "assistant", "content": bad},
                                "finish_reason": None,
                            }
                        ],
                        "modality": "audio",
                    }
                ),
            )
        await self._start_chunked(writer, "text/event-stream")
        for i, chunk in enumerate(chunks):
            if mode == "stall_mid" and i == 3:
                await self._stall()
                return
            await self._chunk(writer, chunk)
        await self._chunk(writer, b"")

    def release_stalls(self) -> None:
        def release() -> None:
            for event in self._stalled:
                event.set()
            self._stalled.clear()

        self._loop.call_soon_threadsafe(release)
