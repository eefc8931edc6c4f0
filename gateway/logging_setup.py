"""Structured logs: one JSON object per line, each carrying the request (or WebSocket session) id.

The id lives in a contextvar, so every line logged while serving a request carries it, including lines
from tasks and threads started for it (asyncio copies the context into both). Access lines record the
method, path (never the query string: it may hold an API key), status and duration, never the audio or
text that passed through."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
import traceback
import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
_fields_var: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "log_fields", default=None
)

access_log = logging.getLogger("gateway.access")

_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}
_VALID_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
# Every place a key travels, as it shows up in a log line: uvicorn logs WebSocket handshakes with their
# query string (where browsers put the key); at LOG_LEVEL=debug the websockets library logs each handshake
# header ("< Authorization: Bearer …", "< Sec-WebSocket-Protocol: voice-gateway, bearer.…") and its
# response ("> Sec-WebSocket-Protocol: bearer.…" when only the key was offered). Redacting the formatted
# line catches all of them whatever the logger and level, and whatever the argument layout.
_SECRETS = (
    (re.compile(r"((?:api_key|access_token)=)[^&\s\"']*"), r"\1***"),
    # Header lines and ASGI header tuples: "Authorization: …", "x-api-key=…", (b'authorization', b'…').
    (
        re.compile(r"(?i)((?:proxy-)?authorization|x-api-key)(['\"]?\s*[:=,]\s*(?:b?['\"])?)[^\r\n'\"]*"),
        r"\1\2***",
    ),
    (re.compile(r"(?i)\b(bearer|basic)(\s+)[^\s'\",;]+"), r"\1\2***"),
    # Subprotocols that carry a key (gateway/security/auth.py AUTH_SUBPROTOCOL_PREFIXES).
    (re.compile(r"(?i)\b(bearer|openai-insecure-api-key)\.[^\s'\",;\])]+"), r"\1.***"),
)


def redact(message: str) -> str:
    for pattern, replacement in _SECRETS:
        message = pattern.sub(replacement, message)
    return message


def bind(**fields: Any) -> None:
    """Add fields (e.g. session_id) to every later log line of the current request or session."""
    _fields_var.set({**(_fields_var.get() or {}), **fields})


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        rid = request_id_var.get()
        if rid:
            out["request_id"] = rid
        out.update(_fields_var.get() or {})
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = redact("".join(traceback.format_exception(*record.exc_info)).rstrip())
        return json.dumps(out, default=str, ensure_ascii=False)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        rid = request_id_var.get()
        record.rid = f" [{rid}]" if rid else ""
        return redact(super().format(record))


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s%(rid)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's own loggers go through ours; its access log is replaced by gateway.access (with ids).
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    logging.getLogger("uvicorn.access").disabled = True


def _incoming_id(scope: Scope) -> str:
    for k, v in scope.get("headers", ()):
        if k == b"x-request-id":
            value = v.decode("latin-1")
            if _VALID_ID.match(value):
                return value
    return uuid.uuid4().hex


class RequestContextMiddleware:
    """Gives each request and WebSocket session an id (the client's X-Request-ID when well formed),
    echoes it as X-Request-ID, and writes one access line per request or session."""

    def __init__(self, app: ASGIApp) -> None:
        # Imported here: the Piper worker processes configure logging with this module, and the security
        # package brings the whole web stack (FastAPI, pydantic, prometheus_client) into each of them.
        from gateway.security.auth import KEY_SCOPE

        self.app = app
        self._key_scope = KEY_SCOPE

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        rid = _incoming_id(scope)
        token = request_id_var.set(rid)
        fields_token = _fields_var.set(None)
        start = time.perf_counter()
        header = (b"x-request-id", rid.encode())
        state: dict[str, Any] = {"status": None, "close_code": None}

        async def wrapped_send(message: Message) -> None:
            t = message["type"]
            if t in ("http.response.start", "websocket.accept"):
                message = {**message, "headers": [*message.get("headers", ()), header]}
                state["status"] = message.get("status", 101)
            elif t == "websocket.close":
                state["close_code"] = message.get("code", 1000)
            await send(message)

        async def wrapped_receive() -> Message:
            message = await receive()
            if message["type"] == "websocket.disconnect" and state["close_code"] is None:
                state["close_code"] = message.get("code", 1005)
            return message

        try:
            await self.app(scope, wrapped_receive, wrapped_send)
        finally:
            duration_ms = round((time.perf_counter() - start) * 1000, 1)
            extra: dict[str, Any] = {"path": scope.get("path", ""), "duration_ms": duration_ms}
            if scope.get(self._key_scope):
                extra["key_id"] = scope[self._key_scope]
            if scope["type"] == "http":
                extra.update(method=scope.get("method"), status=state["status"] or 500)
                access_log.info("http request", extra=extra)
            else:
                extra.update(accepted=state["status"] is not None, close_code=state["close_code"])
                access_log.info("websocket session", extra=extra)
            _fields_var.reset(fields_token)
            request_id_var.reset(token)
