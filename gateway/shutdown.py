"""Graceful shutdown on SIGTERM: stop accepting, close open WebSockets with 1001, let in-flight HTTP
requests finish within SHUTDOWN_GRACE_SECONDS, then stop the engines.

uvicorn alone would cut WebSockets with 1012 and no reason; clients deserve "going away" and a reason so
they reconnect to another replica at once. Whatever the clients do (read nothing, never answer the close),
the drain ends within SHUTDOWN_GRACE_SECONDS: what is still connected then is aborted at the socket."""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import uvicorn
from fastapi import FastAPI

from gateway.limits import WS_GOING_AWAY, ConnectionRegistry
from gateway.transport import TransportHandle, head_timeout_protocol, reset_and_abort

log = logging.getLogger(__name__)

# How long open sessions get to run their close handshake before uvicorn cuts what is left.
WS_CLOSE_WAIT_SECONDS = 5.0


class GatewayServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self.gateway_app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        start = time.monotonic()
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        self.gateway_app.state.draining = True
        registry: ConnectionRegistry = self.gateway_app.state.ws_registry
        grace = self.config.timeout_graceful_shutdown or 0
        closed = await registry.close_all(
            WS_GOING_AWAY, "server shutting down; reconnect", wait=min(WS_CLOSE_WAIT_SECONDS, grace)
        )
        log.info(
            "draining",
            extra={
                "websockets_closed": closed,
                "websockets_left": len(registry.connections),
                "grace_s": grace,
            },
        )
        # uvicorn counts its grace from here; keep the total within SHUTDOWN_GRACE_SECONDS.
        left = max(0.0, grace - (time.monotonic() - start))
        self.config.timeout_graceful_shutdown = int(left)
        # uvicorn waits for every connection to close, and a socket whose client reads nothing never does.
        cut = asyncio.get_running_loop().call_later(left, self._abort_connections)
        try:
            await super().shutdown(sockets)
        finally:
            cut.cancel()
        log.info("stopped", extra={"shutdown_s": round(time.monotonic() - start, 3)})

    def _abort_connections(self) -> None:
        left = list(self.server_state.connections)
        if left:
            log.warning("grace period over: aborting connections", extra={"connections": len(left)})
        for connection in left:
            transport = getattr(connection, "transport", None)
            if transport is not None:  # uvicorn drops a connection from this set once it is gone
                reset_and_abort(transport)


def serve(app: FastAPI, host: str, port: int) -> None:
    settings = app.state.settings
    config = uvicorn.Config(
        TransportHandle(app),  # lets the gateway abort a stuck socket (gateway/transport.py)
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        ws_max_size=settings.ws_max_message_bytes,
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
        http=head_timeout_protocol(settings.http_header_timeout_seconds),
        timeout_keep_alive=settings.http_keepalive_timeout_seconds,
        # Behind an ingress: trust X-Forwarded-For only from loopback (the uvicorn default).
        proxy_headers=True,
    )
    GatewayServer(config, app).run()
