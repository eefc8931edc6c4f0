"""API-key authentication as pure ASGI middleware: one check for HTTP and WebSocket, every route included."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import APIError, json_error_bytes
from gateway.security.keys import KeyStore

log = logging.getLogger(__name__)

# Subprotocol prefixes that carry a key, for browsers (which cannot set headers on a WebSocket):
# ours, and the one OpenAI's realtime clients send, so they work against /v1/realtime unchanged.
AUTH_SUBPROTOCOL_PREFIXES = ("bearer.", "openai-insecure-api-key.")
# Offered alongside the key, one of these is what the gateway selects, so the key is not echoed back.
PLAIN_SUBPROTOCOLS = ("voice-gateway", "realtime")
QUERY_KEY_NAMES = ("api_key", "access_token")
KEY_SCOPE = "gateway.key_id"

WS_POLICY_VIOLATION = 1008


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", ()):
        if k == name:
            return v.decode("latin-1")
    return None


def _split_subprotocols(offered: Iterable[str]) -> tuple[list[str], list[str]]:
    keys, plain = [], []
    for proto in offered:
        for prefix in AUTH_SUBPROTOCOL_PREFIXES:
            if proto.startswith(prefix):
                keys.append(proto[len(prefix) :])
                break
        else:
            plain.append(proto)
    return keys, plain


def presented_keys(scope: Scope) -> list[str]:
    """Every key the client presented, in order of preference: header, then subprotocol, then query."""
    out: list[str] = []
    auth = _header(scope, b"authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            out.append(value.strip())
    api_key = _header(scope, b"x-api-key")
    if api_key:
        out.append(api_key.strip())
    if scope["type"] == "websocket":
        out.extend(_split_subprotocols(scope.get("subprotocols") or ())[0])
    query = scope.get("query_string", b"").decode("latin-1")
    if query:
        out.extend(v for k, v in parse_qsl(query) if k in QUERY_KEY_NAMES and v)
    return out


def chosen_subprotocol(offered: Iterable[str], app_choice: str | None) -> str | None:
    """Browsers fail a handshake that offered subprotocols but got none back, so pick one for the app
    when it did not: a plain one when offered, else the auth one (the client's own key, on its own socket)."""
    if app_choice:
        return app_choice
    offered = list(offered)
    for proto in offered:
        if proto in PLAIN_SUBPROTOCOLS:
            return proto
    for proto in offered:
        if proto.startswith(AUTH_SUBPROTOCOL_PREFIXES):
            return proto
    return None


class APIKeyMiddleware:
    """Refuses requests without an accepted key: HTTP 401 JSON, WebSocket close 1008.

    `open_paths` (e.g. /health for probes) pass without a key; CORS preflights pass so the browser
    can learn that it may send the Authorization header at all."""

    def __init__(
        self,
        app: ASGIApp,
        keys: KeyStore,
        open_paths: Iterable[str] = ("/health",),
        open_prefixes: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self.keys = keys
        self.open_paths = frozenset(open_paths)
        self.open_prefixes = open_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        presented = presented_keys(scope)
        if kind == "websocket":
            send = self._subprotocol_send(scope, send)
        if not self.keys.enabled:
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if (
            path in self.open_paths
            or (kind == "http" and path.startswith(self.open_prefixes) and self.open_prefixes)
            or (kind == "http" and scope.get("method") == "OPTIONS")
        ):
            await self.app(scope, receive, send)
            return
        key_id = next((fp for fp in map(self.keys.check, presented) if fp), None)
        if key_id is None:
            reason = "invalid API key" if presented else "missing API key"
            log.warning("request refused", extra={"reason": reason, "path": path, "transport": kind})
            await _refuse(scope, receive, send, reason)
            return
        scope[KEY_SCOPE] = key_id
        await self.app(scope, receive, send)

    @staticmethod
    def _subprotocol_send(scope: Scope, send: Send) -> Send:
        offered = list(scope.get("subprotocols") or ())
        if not offered:
            return send
        # The app never sees the key-bearing entries: nothing downstream can log or echo them by accident.
        scope["subprotocols"] = _split_subprotocols(offered)[1]

        async def wrapped(message: Message) -> None:
            if message["type"] == "websocket.accept":
                message = {**message, "subprotocol": chosen_subprotocol(offered, message.get("subprotocol"))}
            await send(message)

        return wrapped


async def _refuse(scope: Scope, receive: Receive, send: Send, reason: str) -> None:
    if scope["type"] == "http":
        err = APIError(401, "unauthorized", reason)
        body = json_error_bytes(err)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", b'Bearer realm="voice-gateway"'),
        ]
        await send({"type": "http.response.start", "status": err.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    # Accept, then close with a code: a refused handshake reaches browser code only as a bare 1006.
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": WS_POLICY_VIOLATION, "reason": f"unauthorized: {reason}"})
