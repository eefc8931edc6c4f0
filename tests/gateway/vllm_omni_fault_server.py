"""A real HTTP/1.1 server on 127.0.0.1 that answers like vLLM-Omni, or misbehaves on demand.

Written on raw asyncio streams (in a background thread) so every fault is byte-exact: refused connections
(the listening socket is closed, as while vLLM loads), a stall before the status line, a stall in the middle
of a streamed body, a 500, malformed JSON, truncated audio. The well-behaved answers are built like a real
vLLM-Omni 0.30.0 server's (docs/vllm-omni.md, "What the real 0.30.0 server answers"): one chat choice with
text and audio, SSE chunks with `modality` and `audio_metadata`, per-chunk WAVs, a usage chunk, `[DONE]`;
`/v1/audio/speech` streams events unless asked for `stream_format: "audio"`, refuses `speed` with streaming,
answers an unknown model 404 and the cloning mistakes 400 with the real messages; `/v1/audio/voices` lists
the placeholder "default", overwrites a second upload of a name; `/version` says 0.30.0.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.parser
import json
import threading
import time
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


def sse(event: dict[str, Any] | str, name: str | None = None) -> bytes:
    payload = event if isinstance(event, str) else json.dumps(event, separators=(",", ":"))
    head = f"event: {name}\n" if name else ""
    return f"{head}data: {payload}\n\n".encode()


def vllm_error(
    message: str, kind: str = "BadRequestError", param: str | None = None, code: int = 400
) -> bytes:
    """vLLM's error body, byte for byte as vLLM-Omni 0.30.0 sent it."""
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return json.dumps(body, separators=(",", ":")).encode()


def audio_metadata(pcm: bytes) -> dict[str, Any]:
    return {"format": "wav", "sample_rate_hz": RATE, "frame_count": len(pcm) // 2, "channels": 1}


def chat_chunks(
    text_tokens: list[str], audio: list[bytes], usage: dict[str, int] | None = None
) -> list[bytes]:
    """A streamed reply as vLLM-Omni 0.30.0 sent it: text chunks, audio chunks (each a whole WAV with
    `audio_metadata`, the last with finish_reason "stop"), the usage-only chunk, `[DONE]`."""
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1767000000, "model": MODEL}
    usage = usage or {"prompt_tokens": 120, "completion_tokens": 0, "total_tokens": 120}
    first = {
        "index": 0,
        "delta": {"role": "assistant", "content": ""},
        "logprobs": None,
        "finish_reason": None,
    }
    out = [
        sse({**base, "choices": [first], "prompt_token_ids": None, "prompt_text": None, "modality": "text"})
    ]
    for tok in text_tokens:
        choice = {
            "index": 0,
            "delta": {"content": tok},
            "logprobs": None,
            "finish_reason": None,
            "token_ids": None,
        }
        out.append(sse({**base, "choices": [choice], "metrics": {}, "modality": "text"}))
    for i, pcm in enumerate(audio):
        b64 = base64.b64encode(wav_bytes(pcm, RATE)).decode()
        choice = {
            "index": 0,
            "delta": {"role": "assistant", "content": b64},
            "logprobs": None,
            "finish_reason": "stop" if i == len(audio) - 1 else None,
            "stop_reason": None,
            "token_ids": None,
            "audio_metadata": audio_metadata(pcm),
        }
        out.append(sse({**base, "choices": [choice], "usage": usage, "metrics": None, "modality": "audio"}))
    done = {
        **usage,
        "completion_tokens": len(text_tokens),
        "total_tokens": usage["prompt_tokens"] + len(text_tokens),
    }
    out.append(sse({**base, "choices": [], "usage": done}))
    out.append(sse("[DONE]"))
    return out


def chat_full(
    text: str, audio: bytes | None, audio_first: bool = False, merged: bool = True
) -> dict[str, Any]:
    """A non-streaming reply. `merged` (vLLM-Omni 0.30.0, #7376): ONE choice with `message.content`,
    `message.audio` and `audio_metadata`. Not merged (older releases, fact sheet §2): separate text and
    audio choices, both with index 0, in either order."""
    audio_obj = None
    if audio is not None:
        audio_obj = {
            "id": "audio-1a2b3c4d5e6f7a8b",
            "data": base64.b64encode(wav_bytes(audio, RATE)).decode(),
            "expires_at": 1767086400,
            "transcript": "",
        }
    choices: list[dict[str, Any]] = [
        {
            "index": 0,
            "message": {"role": "assistant", "content": text, "audio": None},
            "finish_reason": "stop",
        }
    ]
    if audio is not None and merged:
        choices[0]["message"]["audio"] = audio_obj
        choices[0]["audio_metadata"] = audio_metadata(audio)
    elif audio is not None:
        audio_choice = {
            "index": 0,
            "message": {"role": "assistant", "content": None, "audio": audio_obj},
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
    malformed_json, truncated_audio, no_audio (Omni replies with text only), slow_stream (10 s of PCM),
    sse_only (speech answers events even when asked for raw audio), sse_error (such events that end in
    `speech.audio.error`), sse_truncated (such events without `speech.audio.done`), reject_speech (every
    speech request is answered the real 400 for a raw-base64 `ref_audio`).

    `builtin` are the TTS model's own speakers (["vivian"]: a CustomVoice-like model; [] a Base model, which
    lists only "default"); `uploaded` the voices registered through `/v1/audio/voices` (`forget()` loses
    them, as a restarted server on empty storage does); `version` what `/version` says (None: 404)."""

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
        self.builtin: list[str] = ["vivian"]
        self.uploaded: dict[str, dict[str, Any]] = {}
        self.version: str | None = "0.30.0"
        self.served_model = MODEL
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

    def forget(self) -> None:
        """Lose every uploaded voice (a server restarted on empty storage)."""
        self.uploaded.clear()

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
        reason = {
            200: "OK",
            400: "Bad Request",
            404: "Not Found",
            500: "Internal Server Error",
            503: "Service Unavailable",
        }[status]
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
        if path == "/version":
            if self.version is None:
                return await self._send(writer, 404, "application/json", b'{"detail":"Not Found"}')
            return await self._json(writer, {"version": self.version})
        if path == "/v1/models":
            model = self.served_model
            return await self._json(
                writer,
                {
                    "object": "list",
                    "data": [
                        {"id": model, "object": "model", "created": 0, "owned_by": "vllm", "root": model}
                    ],
                },
            )
        if path.startswith("/v1/audio/voices"):
            return await self._voices(method, path, headers, body, writer)
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
            return await self._speech(writer, mode, request)
        if path == "/v1/chat/completions":
            return await self._chat(writer, mode, request)
        return await self._json(writer, {"error": {"message": "not found"}}, 404)

    async def _stall(self) -> None:
        event = asyncio.Event()
        self._stalled.append(event)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), self.stall_s)

    # -- voices and speech, as vLLM-Omni 0.30.0 answers them -------------------------------------
    async def _voices(
        self, method: str, path: str, headers: dict[str, str], body: bytes, writer: asyncio.StreamWriter
    ) -> None:
        if method == "GET":
            names = sorted({*self.builtin, "default", *self.uploaded})
            listing = {"voices": names, "uploaded_voices": list(self.uploaded.values())}
            return await self._json(writer, listing)
        if method == "DELETE":
            name = path.rsplit("/", 1)[-1]
            if self.uploaded.pop(name.lower(), None) is None:
                error = vllm_error(f"Voice '{name}' not found", "NotFoundError", None, 404)
                return await self._send(writer, 404, "application/json", error)
            return await self._json(
                writer, {"success": True, "message": f"Voice '{name}' deleted successfully"}
            )
        form = _multipart(headers.get("content-type", ""), body)
        name = str(form.get("name") or "")
        sample = form.get("audio_sample")
        if not name or not isinstance(sample, bytes):
            error = vllm_error("Either 'audio_sample' or 'speaker_embedding' must be provided")
            return await self._send(writer, 400, "application/json", error)
        if name.lower() in self.builtin:
            message = (
                f"Voice name '{name}' is reserved by a built-in speaker of this model; "
                "choose a different name."
            )
            return await self._send(writer, 400, "application/json", vllm_error(message))
        voice = {
            "name": name,
            "consent": str(form.get("consent") or ""),
            "created_at": int(time.time()),
            "file_size": len(sample),
            "mime_type": "audio/wav",
            "embedding_source": "audio",
            "embedding_dim": None,
        }
        if form.get("ref_text"):
            voice["ref_text"] = str(form["ref_text"])
        self.uploaded[name.lower()] = voice  # a second upload of a name overwrites the first (200)
        return await self._json(writer, {"success": True, "voice": voice})

    def _speech_refusal(self, req: dict[str, Any]) -> tuple[int, bytes] | None:
        """vLLM-Omni 0.30.0's checks, in its order and with its messages."""
        model = req.get("model")
        if model and model != self.served_model:
            return 404, vllm_error(f"The model `{model}` does not exist.", "NotFoundError", "model", 404)
        raw = req.get("stream_format") == "audio"
        sse_stream = (bool(req.get("stream")) or req.get("stream_format") == "sse") and not raw
        speed = req.get("speed")
        if (raw or sse_stream) and speed is not None and speed != 1.0:
            label = "Streaming" if raw else "SSE streaming"
            message = (
                f"{label} is not supported with speed adjustment. "
                "Use a non-streaming request or remove the speed parameter."
            )
            return 400, vllm_error(message)
        voice = str(req.get("voice") or "").lower() or None
        if voice == "default" and "default" not in self.builtin:
            voice = None
        stored = voice is not None and voice in self.uploaded
        ref = req.get("ref_audio")
        task = req.get("task_type") or (
            "Base" if ref is not None or req.get("ref_text") is not None else None
        )
        task = "Base" if stored else task or "CustomVoice"
        if task == "CustomVoice":
            if not self.builtin:
                return 400, vllm_error(
                    "This model does not support CustomVoice task (no speakers configured)."
                )
            if voice is not None and voice not in {*self.builtin, *self.uploaded}:
                supported = ", ".join(sorted({*self.builtin, *self.uploaded}))
                return 400, vllm_error(f"Invalid voice '{voice}'. Supported: {supported}")
            return None
        if voice is None and ref is None:
            return 400, vllm_error("Base task requires 'ref_audio' or 'speaker_embedding' for voice cloning")
        if voice is not None and not stored and ref is None:
            message = f"Base task with built-in speaker '{voice}' requires 'ref_audio' for voice cloning"
            return 400, vllm_error(message)
        if ref is not None and not str(ref).startswith(("http://", "https://", "data:", "file://")):
            message = (
                "ref_audio must be a URL (http/https), base64 data URL (data:...), or file URI (file://...)"
            )
            return 400, vllm_error(message)
        return None

    async def _speech(self, writer: asyncio.StreamWriter, mode: str, req: dict[str, Any]) -> None:
        if mode == "reject_speech":
            message = (
                "ref_audio must be a URL (http/https), base64 data URL (data:...), or file URI (file://...)"
            )
            return await self._send(writer, 400, "application/json", vllm_error(message))
        refusal = self._speech_refusal(req)
        if refusal is not None:
            return await self._send(writer, refusal[0], "application/json", refusal[1])
        pcm = tone(0.6)
        events_anyway = mode.startswith("sse_")  # a server that answers events whatever was asked
        raw = req.get("stream_format") == "audio" and not events_anyway
        if not raw and not req.get("stream") and req.get("stream_format") != "sse" and not events_anyway:
            return await self._send(writer, 200, "audio/wav", wav_bytes(pcm, RATE))
        if not raw:
            return await self._speech_events(writer, mode, pcm)
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

    async def _speech_events(self, writer: asyncio.StreamWriter, mode: str, pcm: bytes) -> None:
        """`speech.audio.delta` events (base64 PCM in `audio`), then `speech.audio.done` with usage."""
        await self._start_chunked(writer, "text/event-stream; charset=utf-8")
        for piece in (pcm[:3840], pcm[3840:]):
            delta = {
                "type": "speech.audio.delta",
                "audio": base64.b64encode(piece).decode(),
                "response_format": "pcm",
            }
            await self._chunk(writer, sse(delta, "speech.audio.delta"))
            if mode == "sse_error":
                error = {
                    "type": "speech.audio.error",
                    "error": {"message": "engine died", "type": "server_error", "param": None, "code": 500},
                }
                await self._chunk(writer, sse(error, "speech.audio.error"))
                return await self._chunk(writer, b"")
        if mode != "sse_truncated":
            usage = {"input_tokens": 9, "output_tokens": 8, "total_tokens": 17}
            done = {
                "type": "speech.audio.done",
                "usage": {**usage, "input_token_details": {"text_tokens": 9}},
            }
            await self._chunk(writer, sse(done, "speech.audio.done"))
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


def _multipart(content_type: str, body: bytes) -> dict[str, bytes | str]:
    """A multipart/form-data body -> {field: text, or bytes for a file part}."""
    message = email.parser.BytesParser().parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    out: dict[str, bytes | str] = {}
    for part in message.walk():
        name = part.get_param("name", header="content-disposition")
        data = part.get_payload(decode=True)
        if name and isinstance(data, bytes):
            out[str(name)] = data if part.get_filename() else data.decode()
    return out
