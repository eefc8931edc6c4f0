"""The connection under the ASGI app: a deadline on request heads, a handle that aborts a socket, and a
cap on a WebSocket's kernel send buffer.

uvicorn (0.30 – 0.55) has no header timeout: its keep-alive timer is cancelled by the first byte of a request
and is not armed at all before a connection's first request, so a client that sends nothing, or a request
head one byte at a time, holds its connection (and file descriptor) forever. `head_timeout_protocol` adds
the deadline by subclassing the HTTP protocol uvicorn would pick itself ("auto": httptools, else h11); both
expose the same hooks (`data_received`, `cycle`, `on_response_complete`).

An ASGI app cannot close its own socket: `websocket.close` and the last response bytes queue behind a full
write buffer when the client stops reading, and `transport.close()` waits for that buffer to drain, which
never happens. `TransportHandle` puts a handle on the socket in the scope, so the gateway can cut a stuck
connection at the transport (uvicorn then delivers `disconnect` to the app and unblocks its pending sends)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import GatewayError, json_error_bytes

log = logging.getLogger(__name__)

SOCKET_SCOPE = "gateway.socket"

# WebSocket close codes the gateway sends (RFC 6455 7.4.1; 1013 from the IANA registry). 1008 (policy
# violation) is the key check's, in gateway/security/auth.py.
WS_GOING_AWAY = 1001  # shutdown, idle timeout
WS_ABNORMAL = 1006  # never sent: what a session sees when the gateway cut its socket
WS_INTERNAL_ERROR = 1011  # a session that failed, or cannot be served (no conversation model)
WS_TRY_AGAIN_LATER = 1013  # no stream or conversation slot free

_TIMEOUT_BODY = json_error_bytes(
    GatewayError("the request head did not arrive in time", code="request_timeout", status=408)
)
_REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(_TIMEOUT_BODY), _TIMEOUT_BODY)
)


class SocketHandle:
    """What the gateway may do to a connection's socket from inside the ASGI app."""

    def __init__(self, transport: Any) -> None:
        self._transport = transport

    def abort(self) -> None:
        """Close at once, dropping what is still buffered. A no-op once the connection is gone."""
        self._transport.abort()

    def reset(self) -> None:
        """Abort with a TCP reset (SO_LINGER 0, as nginx's reset_timedout_connection): a plain close leaves
        the unsent bytes to the kernel, which keeps probing the client's zero window for minutes. Only while
        the connection is known to be open: uvloop caches the socket object, and once it is closed its
        descriptor number may already belong to another connection."""
        reset_and_abort(self._transport)


def socket_handle(scope: Scope) -> SocketHandle | None:
    """The connection's socket handle, when the server exposed one (uvicorn with TransportHandle)."""
    handle = scope.get(SOCKET_SCOPE)
    return handle if isinstance(handle, SocketHandle) else None


class TransportHandle:
    """Outermost ASGI wrapper, given to uvicorn: puts a handle on each connection's socket in the scope,
    and caps a WebSocket's kernel send buffer.

    uvicorn's `send` is a bound method of its per-request cycle (HTTP) or per-connection protocol
    (WebSocket), both holding `.transport`. Under another server, or a wrapped send, there is no handle and
    the gateway falls back to raising on the stuck send alone."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            transport = getattr(getattr(send, "__self__", None), "transport", None)
            if callable(getattr(transport, "abort", None)):
                scope[SOCKET_SCOPE] = SocketHandle(transport)
                if scope["type"] == "websocket":
                    _cap_send_buffer(transport)
        await self.app(scope, receive, send)


def reset_and_abort(transport: Any) -> None:
    """SocketHandle.reset for a transport the caller knows to be open."""
    sock = _socket_of(transport)
    if sock is not None:
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _socket_of(transport: Any) -> Any:
    get_extra_info = getattr(transport, "get_extra_info", None)
    with contextlib.suppress(Exception):
        return get_extra_info("socket") if callable(get_extra_info) else None
    return None


# Linux autotunes a socket's send buffer up to net.ipv4.tcp_wmem's maximum (4 MiB): a WebSocket client that
# reads nothing then absorbs ~90 s of 24 kHz PCM, in kernel memory, before a send even blocks and its
# deadline starts. WebSocket traffic is audio: 128 KiB (256 KiB once the kernel doubles it) still carries
# 50x real-time PCM at 100 ms round trip. HTTP keeps autotuning for whole-file downloads.
WS_SEND_BUFFER_BYTES = 128 * 1024


def _cap_send_buffer(transport: object) -> None:
    sock = _socket_of(transport)
    if sock is not None:
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, WS_SEND_BUFFER_BYTES)


def head_timeout_protocol(seconds: float) -> type[asyncio.Protocol]:
    """uvicorn's own HTTP protocol with a deadline from a request's first byte (or the connection's
    opening) to its complete head; `seconds` <= 0 returns the protocol unchanged."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    if seconds <= 0:
        return AutoHTTPProtocol
    base: Any = AutoHTTPProtocol

    class HeadTimeoutProtocol(base):
        head_timeout = seconds

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._head_timer: asyncio.TimerHandle | None = None
            self._head_cycle: object = None
            self._head_bytes = 0

        def _arm_head_timer(self) -> None:
            self._head_cycle = self.cycle
            self._head_bytes = 0
            self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

        def _disarm_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            self._arm_head_timer()  # a connection that never sends a byte is closed too

        def data_received(self, data: bytes) -> None:
            cycle = self.cycle
            if self._head_timer is None and (cycle is None or cycle.response_complete):
                self._arm_head_timer()  # the first byte of the next request on a kept-alive connection
            if self._head_timer is not None:
                self._head_bytes += len(data)
            super().data_received(data)
            if self._head_timer is not None and (
                self.cycle is not self._head_cycle or self.transport.get_protocol() is not self
            ):
                self._disarm_head_timer()  # a head was parsed, or the connection became a WebSocket

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_head_timer()
            super().connection_lost(exc)

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if self.transport.is_closing() or self.transport.get_protocol() is not self:
                return
            log.info(
                "request head timeout", extra={"timeout_s": self.head_timeout, "bytes": self._head_bytes}
            )
            if self._head_bytes:  # a client that started a request is told why; an idle one just closed
                self.transport.write(_REQUEST_TIMEOUT)
            self.transport.close()

    return HeadTimeoutProtocol
