"""Stream limits for every WebSocket route: concurrent sessions in total and per API key, idle timeout,
and the registry that graceful shutdown uses to tell each open session to go away (close 1001).

Enforced in the ASGI layer, so routes added later are covered without code of their own. HTTP streaming
routes can take a slot explicitly: `async with app.state.stream_limiter.acquire(kind, key_id): ...`.

Hostile transports (issue 18): every send has a deadline, and a client that stops reading is cut at the
socket (gateway/transport.py), so no send, close, idle sweep or shutdown waits on it; a POST takes its slot
only once its body is in (gateway/request_body.py) and is cancelled when its client hangs up."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import GatewayError, json_error_bytes
from gateway.request_body import Body, BodyRejected, BodyReplay, ClientGone, read_body
from gateway.security.auth import KEY_SCOPE
from gateway.transport import (
    WS_ABNORMAL,
    WS_GOING_AWAY,
    WS_INTERNAL_ERROR,
    WS_TRY_AGAIN_LATER,
    SocketHandle,
    socket_handle,
)

log = logging.getLogger(__name__)

# nginx's "client closed request": logged and counted for a POST whose client hung up before its answer.
HTTP_CLIENT_CLOSED = 499

# A close frame is tiny: if it cannot leave within this, the client is not reading.
CLOSE_SEND_SECONDS = 5.0
# After the gateway's close frame (or the session's end), how long the client has to finish the close
# handshake before the socket is aborted: uvicorn's own close timer only calls transport.close(), which
# waits forever for a write buffer that a non-reading client never drains.
CLOSE_LINGER_SECONDS = 5.0

# Route prefix -> the `kind` label shared with voice_gateway_active_streams.
_KINDS = (("/read/stream", "read_stream"), ("/v1/realtime", "realtime"), ("/voice", "voice"))


def stream_kind(path: str) -> str:
    for prefix, kind in _KINDS:
        if path == prefix or path.startswith(prefix + "/"):
            return kind
    return path.strip("/").replace("/", "_") or "root"


class LimitExceeded(GatewayError):
    """No stream slot is free: HTTP 429, or a WebSocket closed 1013 with the message as its reason (short
    enough for a close frame, <= 123 bytes)."""

    code = "too_many_requests"
    status = 429

    @property
    def reason(self) -> str:
        return self.message


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
    socket: SocketHandle | None = None
    send_timeout: float = 0.0  # 0 = no deadline
    opened: float = field(default_factory=time.monotonic)
    last_activity: float = field(default_factory=time.monotonic)
    accepted: bool = False
    close_sent: bool = False
    closed_by_gateway: int | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    # The session's context (its request id): what the sweeper logs and does for it is logged as its own.
    context: contextvars.Context = field(default_factory=contextvars.copy_context)

    async def deliver(self, message: Message, limit_s: float | None = None) -> None:
        """Send with a deadline; past it the client is not reading: cut the socket and raise GatewayClosed."""
        limit = self.send_timeout if limit_s is None else limit_s
        try:
            async with asyncio.timeout(limit if limit > 0 else None):
                await self.send(message)
        except TimeoutError:
            log.warning(
                "websocket send timed out: the client is not reading; connection aborted",
                extra={"path": self.path, "timeout_s": limit},
            )
            self.abort(reset=True)  # a send is blocked on it: the connection is open
            raise GatewayClosed(f"send timed out after {limit:g} s") from None

    def abort(self, reset: bool = False) -> None:
        """Cut the socket: uvicorn then unblocks every pending send and tells the session `disconnect`."""
        if self.closed_by_gateway is None:
            self.closed_by_gateway = WS_ABNORMAL
        if self.socket is not None and reset:
            self.socket.reset()
        elif self.socket is not None:
            self.socket.abort()

    def linger_then_abort(self) -> None:
        """A client that never completes the close handshake (or never reads it) loses its socket later."""
        if self.socket is not None:
            asyncio.get_running_loop().call_later(CLOSE_LINGER_SECONDS, self.socket.abort)

    async def close(self, code: int, reason: str) -> None:
        if self.closed_by_gateway is not None or self.done.is_set():
            return
        self.closed_by_gateway = code
        if self.accepted:
            message: Message = {"type": "websocket.close", "code": code, "reason": reason}
        else:
            message = {"type": "websocket.close", "code": code}
        timeout = min(self.send_timeout, CLOSE_SEND_SECONDS) if self.send_timeout else CLOSE_SEND_SECONDS
        with contextlib.suppress(Exception):
            await self.deliver(message, timeout)
        self.linger_then_abort()


class ConnectionRegistry:
    """Open WebSockets, with one sweeper task (alive only while some are open) for the idle timeout."""

    def __init__(self, idle_timeout: float) -> None:
        self.idle_timeout = idle_timeout
        self.connections: set[Connection] = set()
        self.closed_idle = 0
        self._sweeper: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()

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
                    conn.context.run(
                        log.info,
                        "websocket idle timeout",
                        extra={"path": conn.path, "idle_s": self.idle_timeout},
                    )
                    # Each close in its own task: one client that does not read cannot hold up the others.
                    task = asyncio.create_task(
                        conn.close(WS_GOING_AWAY, f"idle for more than {self.idle_timeout:g} s"),
                        context=conn.context,
                    )
                    self._closing.add(task)
                    task.add_done_callback(self._closing.discard)

    async def close_all(self, code: int, reason: str, wait: float) -> int:
        """Close every open socket and give their handlers up to `wait` s in all to finish; the sockets of
        handlers still running after that are aborted, so nothing a client does holds up a shutdown."""
        conns = list(self.connections)
        if not conns:
            return 0
        closes = [asyncio.ensure_future(c.close(code, reason)) for c in conns]
        ends = [asyncio.ensure_future(c.done.wait()) for c in conns]
        await asyncio.wait([*closes, *ends], timeout=max(wait, 0.0), return_when=asyncio.ALL_COMPLETED)
        for c in conns:
            if not c.done.is_set():
                c.abort()
        for f in (*closes, *ends):
            f.cancel()
        return len(conns)


class WebSocketGuard:
    """Per WebSocket: take a stream slot (else close 1013 with the reason), track activity for the idle
    timeout, bound every send, and let shutdown close it with 1001. Per HTTP POST: read the body (limit,
    deadline), then take a slot (else 429), and cancel the work if the client hangs up."""

    def __init__(
        self,
        app: ASGIApp,
        limiter: StreamLimiter,
        registry: ConnectionRegistry,
        *,
        send_timeout: float = 0.0,
        max_body_bytes: int = 0,
        body_timeout: float = 0.0,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.registry = registry
        self.send_timeout = send_timeout
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout

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
        conn = Connection(
            send=send,
            kind=kind,
            path=path,
            socket=socket_handle(scope),
            send_timeout=self.send_timeout,
        )
        try:
            self.limiter.try_acquire(kind, key)
        except LimitExceeded as exc:
            log.warning("stream refused", extra={"reason": exc.reason, "path": path})
            if (await receive())["type"] == "websocket.connect":
                with contextlib.suppress(OSError):
                    await conn.deliver({"type": "websocket.accept"})
                    await conn.deliver(
                        {"type": "websocket.close", "code": WS_TRY_AGAIN_LATER, "reason": exc.reason}
                    )
            conn.linger_then_abort()
            return

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
            await conn.deliver(message)

        self.registry.add(conn)
        try:
            await self.app(scope, guarded_receive, guarded_send)
        except Exception:
            if not conn.accepted or conn.close_sent or conn.closed_by_gateway is not None:
                raise
            # A session bug must still end in a close frame with a code, not a dropped TCP connection.
            log.exception("websocket session failed", extra={"path": path})
            with contextlib.suppress(Exception):
                await conn.deliver(
                    {"type": "websocket.close", "code": WS_INTERNAL_ERROR, "reason": "internal error"}
                )
        finally:
            self.registry.discard(conn)
            self.limiter.release(kind, key)
            conn.linger_then_abort()

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Every POST synthesizes or transcribes: once its body is in, it holds a slot until its last byte,
        like a stream. A slow or endless body holds nothing but its own connection."""
        key = scope.get(KEY_SCOPE)
        path = scope.get("path", "")
        try:
            body = await read_body(receive, self.max_body_bytes or 2**63, self.body_timeout)
        except BodyRejected as exc:
            log.warning("request body refused", extra={"reason": exc.message, "path": path})
            # `connection: close`: uvicorn closes the socket after the answer, so the rest is never read.
            await _json_error(send, exc, [(b"connection", b"close")])
            return
        except ClientGone:
            await _client_closed(send)
            return
        try:
            try:
                self.limiter.try_acquire("http", key)
            except LimitExceeded as exc:
                log.warning("request refused", extra={"reason": exc.reason, "path": path})
                await _json_error(send, exc, [(b"retry-after", b"1")])
                return
            try:
                await self._run_watched(scope, body, receive, send)
            finally:
                self.limiter.release("http", key)
        finally:
            body.close()

    async def _run_watched(self, scope: Scope, body: Body, receive: Receive, send: Send) -> None:
        """Run the app while watching for the client's hang-up: then the work is cancelled (synthesis stops
        at its next sentence) instead of running on for nobody. Response sends have the send deadline."""
        replay = BodyReplay(body, receive)
        handle = socket_handle(scope)
        state = {"started": False, "complete": False}

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["started"] = True
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                state["complete"] = True
            try:
                async with asyncio.timeout(self.send_timeout if self.send_timeout > 0 else None):
                    await send(message)
            except TimeoutError:
                if handle is not None:
                    handle.reset()  # a send is blocked on it: the connection is open
                raise GatewayClosed(f"the client read nothing for {self.send_timeout:g} s") from None

        work: asyncio.Future[None] = asyncio.ensure_future(self.app(scope, replay.receive, timed_send))
        watcher = asyncio.create_task(replay.watch())
        try:
            await asyncio.wait([work, watcher], return_when=asyncio.FIRST_COMPLETED)
            if not work.done() and not state["complete"]:
                log.info("client disconnected; request cancelled", extra={"path": scope.get("path", "")})
                work.cancel()
                await asyncio.wait([work])
                if not state["started"]:
                    await _client_closed(send)
                return
            await asyncio.wait([work])
            try:
                work.result()
            except GatewayClosed as exc:
                log.warning("response send timed out; connection aborted", extra={"reason": str(exc)})
        finally:
            for task in (work, watcher):
                task.cancel()
            await asyncio.wait([work, watcher])


async def _json_error(send: Send, err: GatewayError, extra_headers: list[tuple[bytes, bytes]]) -> None:
    body = json_error_bytes(err)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *extra_headers,
    ]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _client_closed(send: Send) -> None:
    """The client is gone: the server drops this answer, but the access log and metrics record a 499
    instead of a 500 for a response that never started."""
    with contextlib.suppress(Exception):
        await send({"type": "http.response.start", "status": HTTP_CLIENT_CLOSED, "headers": []})
        await send({"type": "http.response.body", "body": b""})
