"""A /voice test client: real WebSocket, real speech (made by the server's own TTS), every message logged."""

from __future__ import annotations

import asyncio
import functools
import json
from typing import Any

import httpx
import websockets

from gateway.audio.pcm import read_wav, wav_bytes

RATE = 24000
FRAME_BYTES = RATE * 20 // 1000 * 2  # 20 ms of s16le mono
WAIT_S = 60  # a bound for a loaded machine; never reached when things work


@functools.lru_cache(maxsize=32)
def spoken(base_url: str, text: str) -> bytes:
    """`text` spoken by the gateway (POST /read), as 24 kHz s16le PCM."""
    r = httpx.post(f"{base_url}/read", json={"text": text}, timeout=WAIT_S)
    r.raise_for_status()
    wav = read_wav(r.content)
    assert wav.sample_rate == RATE
    return wav.pcm


async def aspoken(base_url: str, text: str) -> bytes:
    return await asyncio.to_thread(spoken, base_url, text)


def silence(seconds: float) -> bytes:
    return bytes(int(RATE * seconds) * 2)


def transcribe(base_url: str, pcm: bytes) -> str:
    """Reply audio -> text with the gateway's ASR (POST /voice/transcribe)."""
    files = {"audio": ("reply.wav", wav_bytes(pcm, RATE), "audio/wav")}
    r = httpx.post(f"{base_url}/voice/transcribe", files=files, data={"language": "en"}, timeout=WAIT_S)
    r.raise_for_status()
    return str(r.json()["text"])


class VoiceClient:
    """Records events and audio in arrival order: `log` holds event dicts and byte counts of binary frames."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.log: list[dict[str, Any] | int] = []
        self.audio = bytearray()  # all reply audio received
        self.session: dict[str, Any] = {}

    @classmethod
    async def connect(cls, ws_url: str, **session: Any) -> VoiceClient:
        ws = await websockets.connect(f"{ws_url}/voice", max_size=None)
        client = cls(ws)
        created = await client.next_event()
        assert created["type"] == "session.created", created
        client.session = created["session"]
        if session:
            await client.send("session.update", session=session)
            updated = await client.wait_for("session.updated")
            client.session = updated["session"]
        return client

    async def close(self) -> None:
        await self.ws.close()

    async def send(self, type_: str, **fields: Any) -> None:
        await self.ws.send(json.dumps({"type": type_, **fields}))

    async def stream(self, pcm: bytes, realtime: bool = False) -> None:
        """Send `pcm` as 20 ms frames (at real-time pace when asked, else as fast as the socket takes)."""
        for i in range(0, len(pcm), FRAME_BYTES):
            await self.ws.send(pcm[i : i + FRAME_BYTES])
            if realtime:
                await asyncio.sleep(0.02)

    async def next_event(self) -> dict[str, Any]:
        """The next JSON event; binary frames on the way are recorded."""
        while True:
            message = await asyncio.wait_for(self.ws.recv(), WAIT_S)
            if isinstance(message, bytes):
                self.audio += message
                self.log.append(len(message))
                continue
            event = json.loads(message)
            self.log.append(event)
            return event

    async def wait_for(self, type_: str) -> dict[str, Any]:
        while True:
            event = await self.next_event()
            if event["type"] == type_:
                return event

    async def wait_audio(self, nbytes: int) -> None:
        """Read until at least `nbytes` of reply audio arrived (events on the way are logged)."""
        while len(self.audio) < nbytes:
            message = await asyncio.wait_for(self.ws.recv(), WAIT_S)
            if isinstance(message, bytes):
                self.audio += message
                self.log.append(len(message))
            else:
                self.log.append(json.loads(message))

    def events(self, type_: str) -> list[dict[str, Any]]:
        return [e for e in self.log if isinstance(e, dict) and e["type"] == type_]

    def text_of(self, response_id: str) -> str:
        return "".join(
            e["delta"] for e in self.events("response.text.delta") if e["response_id"] == response_id
        )


# Spoken questions the voice and realtime benchmarks ask, the same on both protocols.
QUESTIONS = [
    "What is the capital of France?",
    "How many legs does a spider have?",
    "Why is the sky blue?",
    "Can you recommend a good book to read?",
    "What should I cook for dinner tonight?",
    "Tell me a fun fact about the moon.",
]
