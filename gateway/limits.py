"""Stream limits for every WebSocket route: concurrent sessions in total and per API key, idle timeout,
and the registry that graceful shutdown uses to tell each open session to go away (close 1001).

Enforced in the ASGI layer, so routes added later are covered without code of their own. HTTP streaming
routes can take a slot explicitly: `async with app.state.stream_limiter.acquire(kind, key_id): ...`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.security.auth import KEY_SCOPE

log = logging.getLogger(__name__)

WS_GOING_AWAY = 1001
WS_INTERNAL_ERROR = 1011
WS_TRY_AGAIN_LATER = 1013

# Route prefix -> the `kind` label shared with voice_gateway_active_streams.
_KINDS = (("/read/stream", "read_stream"), ("/v1/realtime", "realtime"), ("/voice", "voice"))


def stream_kind(path: str) -> str:
    for prefix, kind in _KINDS:
        if path == prefix or path.startswith(prefix + "/"):
            return kind
    return path.strip("/").replace("/", "_") or "root"


class LimitExceeded(Exception):
    """No stream slot is free. `reason` is short enough for a WebSocket close frame (<= 123 bytes)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class StreamLimiter:
    """Counts open streams. 0 means unlimited. Keyless streams (auth off) count only towards the total."""

    max_total: int
    max_per_key: int
    total: int = 0
    per_key: Counter[str] = field(default_factory=Counter)
    per_kind: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)

    def try_acquire(self, kind: str, key: str | None) -> None:
        if self.max_total and self.total >= self.max_total:
            self.rejected["total"] += 1
            raise LimitExceeded(f"too many concurrent streams: the gateway limit is {self.max_total}")
        if key is not None and self.max_per_key and self.per_key[key] >= self.max_per_key:
            self.rejected["per_key"] += 1
            raise LimitExceeded(
                f"too many concurrent streams for this API key: the limit is {self.max_per_key}"
            )
        self.total += 1
        self.per_kind[kind] += 1
        if key is not None:
            self.per_key[key] += 1

    def release(self, kind: str, key: str | None) -> None:
        self.total -= 1
        self.per_kind[kind] -= 1
        if key is not None:
            self.per_key[key] -= 1
            if self.per_key[key] <= 0:
                del self.per_key[key]

    @contextlib.asynccontextmanager
    async def acquire(self, kind: str, key: str | None = None) -> AsyncIterator[None]:
        """Raises LimitExceeded when full; HTTP routes turn it into 429."""
        self.try_acquire(kind, key)
        try:
            yield
        finally:
            self.release(kind, key)


class GatewayClosed(OSError):
    """Raised to the app when it sends on a socket the gateway closed (idle, shutdown). An OSError, like a
    vanished client, so Starlette turns it into the WebSocketDisconnect that sessions already handle."""


@dataclass(eq=False)
class Connection:
    send: Send
    kind: str
    path: str
    opened: float = field(default_factory=time.monotonic)
    last_activity: float = field(default_factory=time.monotonic)
    accepted: bool = False
    close_sent: bool = False
    closed_by_gateway: int | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def close(self, code: int, reason: str) -> None:
        if self.closed_by_gateway is not None or self.done.is_set():
            return
        self.closed_by_gateway = code
        with contextlib.suppress(Exception):
            if self.accepted:
                await self.send({"type": "websocket.close", "code": code, "reason": reason})
            else:
                await self.send({"type": "websocket.close", "code": code})


class ConnectionRegistry:
    """Open WebSockets, with one sweeper task (alive only while some are open) for the idle timeout."""

    def __init__(self, idle_timeout: float) -> None:
        self.idle_timeout = idle_timeout
        self.connections: set[Connection] = set()
        self.closed_idle = 0
        self._sweeper: asyncio.Task[None] | None = None

    def add(self, conn: Connection) -> None:
        self.connections.add(conn)
        if self.idle_timeout and (self._sweeper is None or self._sweeper.done()):
            self._sweeper = asyncio.create_task(self._sweep(), name="ws-idle-sweeper")

    def discard(self, conn: Connection) -> None:
        self.connections.discard(conn)
        conn.done.set()

    async def _sweep(self) -> None:
        period = min(1.0, self.idle_timeout / 4)
        while self.connections:
            await asyncio.sleep(period)
            now = time.monotonic()
            for conn in list(self.connections):
                if conn.closed_by_gateway is None and now - conn.last_activity > self.idle_timeout:
                    self.closed_idle += 1
                    log.info("websocket idle timeout", extra={"path": conn.path, "idle_s": self.idle_timeout})
                    await conn.close(WS_GOING_AWAY, f"idle for more than {self.idle_timeout:g} s")

    async def close_all(self, code: int, reason: str, wait: float) -> int:
        """Close every open socket and wait up to `wait` s for their handlers to finish."""
        conns = list(self.connections)
        await asyncio.gather(*(c.close(code, reason) for c in conns), return_exceptions=True)
        if conns and wait > 0:
            await asyncio.wait([asyncio.ensure_future(c.done.wait()) for c in conns], timeout=wait)
        return len(conns)


class WebSocketGuard:
    """Per WebSocket: take a stream slot (else close 1013 with the reason), track activity for the idle
    timeout, and let shutdown close it with 1001. Per HTTP POST: take a slot too (else 429)."""

    def __init__(self, app: ASGIApp, limiter: StreamLimiter, registry: ConnectionRegistry) -> None:
        self.app = app
        self.limiter = limiter
        self.registry = registry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") == "POST":
            await self._http(scope, receive, send)
            return
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        kind = stream_kind(path)
        key = scope.get(KEY_SCOPE)
        try:
            self.limiter.try_acquire(kind, key)
        except LimitExceeded as exc:
            log.warning("stream refused", extra={"reason": exc.reason, "path": path})
            if (await receive())["type"] == "websocket.connect":
                await send({"type": "websocket.accept"})
                await send({"type": "websocket.close", "code": WS_TRY_AGAIN_LATER, "reason": exc.reason})
            return
        conn = Connection(send=send, kind=kind, path=path)

        async def guarded_receive() -> Message:
            if conn.closed_by_gateway is not None:
                return {"type": "websocket.disconnect", "code": conn.closed_by_gateway}
            message = await receive()
            conn.last_activity = time.monotonic()
            return message

        async def guarded_send(message: Message) -> None:
            if conn.closed_by_gateway is not None:
                if message["type"] == "websocket.close":
                    return
                raise GatewayClosed(f"closed by the gateway ({conn.closed_by_gateway})")
            if message["type"] == "websocket.accept":
                conn.accepted = True
            elif message["type"] == "websocket.close":
                conn.close_sent = True
            conn.last_activity = time.monotonic()
            await send(message)

        self.registry.add(conn)
        try:
            await self.app(scope, guarded_receive, guarded_send)
        except Exception:
            if not conn.accepted or conn.close_sent or conn.closed_by_gateway is not None:
                raise
            # A session bug must still end in a close frame with a code, not a dropped TCP connection.
            log.exception("websocket session failed", extra={"path": path})
            with contextlib.suppress(Exception):
                await send({"type": "websocket.close", "code": WS_INTERNAL_ERROR, "reason": "internal error"})
        finally:
            self.registry.discard(conn)
            self.limiter.release(kind, key)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Every POST synthesizes or transcribes: it holds a slot until its last byte, like a stream."""
        key = scope.get(KEY_SCOPE)
        try:
            self.limiter.try_acquire("http", key)
        except LimitExceeded as exc:
            log.warning("request refused", extra={"reason": exc.reason, "path": scope.get("path", "")})
            body = json.dumps({"error": {"code": "too_many_requests", "message": exc.reason}}).encode()
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", b"1"),
            ]
            await send({"type": "http.response.start", "status": 429, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.limiter.release("http", key)
