"""The one WebSocket connection base under /read/stream, /voice and /v1/realtime.

Each adapter is a subclass that knows only its protocol (event names, JSON shapes); what every connection
needs is here, once:

- writes: one lock, so events and audio frames stay whole and ordered; JSON ASCII-escaped, because an
  echoed client string (a ping id, an unknown type) may hold a lone surrogate that UTF-8 cannot encode,
  which used to drop the connection (bench/fuzz_ws.py). A failed send marks the connection gone.
- the serve loop: text and binary frames dispatched to the adapter until the client leaves, then the
  adapter's `aclose` whatever ended it, and the `voice_gateway_active_streams` gauge around it.
- admission and refusals: the conversation slots /voice and /v1/realtime share (close 1013), and the close
  an adapter makes when it cannot serve at all (1011).

What sits below the app is not here: the send deadline (WS_SEND_TIMEOUT_SECONDS), the idle timeout, the
stream limits and the 1001 on shutdown are the ASGI guard's (gateway/limits.py), the frame size limit is
uvicorn's (WS_MAX_MESSAGE_BYTES, gateway/shutdown.py), so a route added later is covered without code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

from starlette.websockets import WebSocketDisconnect

from gateway.errors import GatewayError, error_event
from gateway.metrics import Metrics
from gateway.transport import WS_INTERNAL_ERROR, WS_TRY_AGAIN_LATER

log = logging.getLogger(__name__)


class Transport(Protocol):
    """What a connection needs from its socket; Starlette's WebSocket satisfies it as is."""

    async def send_bytes(self, data: bytes) -> None: ...

    async def send_text(self, data: str) -> None: ...

    async def receive(self) -> Any: ...

    async def close(self, code: int = 1000, reason: str | None = None) -> None: ...


class ConnectionGone(Exception):
    """The transport failed to send: the client is gone and the session must stop."""


Message = dict[str, Any] | bytes


def encode_json(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


class WebSocketConnection:
    """One accepted WebSocket. Subclasses handle frames (`receive_text`, `receive_bytes`) and may override
    `admit` (a refusal before anything starts), `start` (the greeting), `aclose` (what dies with the
    connection) and `gauge_kind`."""

    gauge_kind: ClassVar[str | None] = None  # the active-streams label; None: the adapter counts itself

    def __init__(self, ws: Transport, metrics: Metrics | None) -> None:
        self.ws = ws
        self.metrics = metrics
        self.send_lock = asyncio.Lock()
        self.gone = False

    # -- output ----------------------------------------------------------------------------------------
    async def send_locked(self, message: Message) -> None:
        """Send one message; the caller holds `send_lock`. Raises ConnectionGone once the client is gone."""
        if self.gone:
            raise ConnectionGone
        try:
            if isinstance(message, bytes):
                await self.ws.send_bytes(message)
            else:
                await self.ws.send_text(encode_json(message))
        except Exception as exc:
            self.gone = True
            raise ConnectionGone from exc

    async def send_message(self, message: Message) -> None:
        async with self.send_lock:
            await self.send_locked(message)

    async def write(self, message: Message | None) -> None:
        """`send` for callers that need not stop when the client leaves: the serve loop sees it go."""
        if message is not None:
            with contextlib.suppress(ConnectionGone):
                await self.send_message(message)

    async def close_unserved(self, event: Message, reason: str) -> None:
        """This connection cannot be served at all (no conversation model): say why, close 1011."""
        await self.write(event)
        await self.ws.close(code=WS_INTERNAL_ERROR, reason=reason)

    # -- the adapter's part ----------------------------------------------------------------------------
    async def admit(self) -> bool:
        """False when the connection cannot be served; it has then told the client and closed."""
        return True

    async def start(self) -> None:
        """Before the first frame is read: the greeting, if the protocol has one."""

    async def receive_text(self, text: str) -> None:
        raise NotImplementedError

    async def receive_bytes(self, data: bytes) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        """The connection is over, however it ended: stop the session's work."""

    # -- lifecycle -------------------------------------------------------------------------------------
    async def serve(self) -> None:
        if not await self.admit():
            return
        gauge = None
        if self.metrics is not None and self.gauge_kind is not None:
            gauge = self.metrics.active_streams.labels(kind=self.gauge_kind)
            gauge.inc()
        try:
            await self.start()
            while not self.gone:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                if message.get("text") is not None:
                    await self.receive_text(message["text"])
                elif message.get("bytes") is not None:
                    await self.receive_bytes(message["bytes"])
        except (WebSocketDisconnect, ConnectionGone):
            log.debug("websocket client left")
        finally:
            self.gone = True
            await self.aclose()
            if gauge is not None:
                gauge.dec()


# -- admission: a process-wide cap on concurrent conversations -------------------------------------------


class SessionSlots:
    """Each conversation holds CPU (or GPU) for the models, whichever protocol it speaks."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    def try_acquire(self) -> bool:
        if self.active >= self.limit:
            return False
        self.active += 1
        return True

    def release(self) -> None:
        self.active = max(0, self.active - 1)


def session_slots(state: Any, limit: int) -> SessionSlots:
    """The app's one SessionSlots (created on first use), shared by every conversation protocol."""
    slots = getattr(state, "conversation_slots", None)
    if slots is None:
        slots = SessionSlots(limit)
        state.conversation_slots = slots
    return slots


async def serve_conversation(
    ws: Transport, state: Any, limit: int, connect: Callable[[], WebSocketConnection]
) -> None:
    """Serve a conversation in one of the app's slots, or tell the client to try again later (1013)."""
    slots = session_slots(state, limit)
    if not slots.try_acquire():
        reason = f"too many concurrent voice sessions (limit {slots.limit}); try again later"
        with contextlib.suppress(Exception):
            await ws.send_text(encode_json(error_event(GatewayError(reason, code="too_many_sessions"))))
            await ws.close(code=WS_TRY_AGAIN_LATER, reason=reason)
        return
    try:
        await connect().serve()
    finally:
        slots.release()
