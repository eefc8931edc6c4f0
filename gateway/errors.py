"""One error tree for the whole gateway, mapped once at each edge.

Every error a client can act on is a `GatewayError`: a stable `code`, an HTTP `status`, a `message` for
people and `extra` fields its body carries besides them. The engine tree (gateway/engines/errors.py), the
conversation core's `VoiceError`, the Realtime protocol's `RealtimeError`, the stream limiter's
`LimitExceeded` and the body reader's `BodyRejected` all derive from it, so an edge needs no table of types:

- HTTP: `body()` (`{"error": {"code", "message", ...extra}}`) with `status`: `install_error_handlers` for
  routes, `error_response` / `json_error_bytes` for the ASGI layers in front of them (app, limits,
  transport).
- WebSocket, gateway protocols (/read/stream, /voice): `error_event` (`{"type": "error", "code", "message"}`).
- WebSocket, OpenAI Realtime: `RealtimeError.of` (gateway/sessions/realtime/protocol.py), which also
  renames core codes to OpenAI's.

Anything else that escapes is a server fault: logged, and answered as `internal_error`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # Only the HTTP edge needs the web framework. The tree itself is imported by every engine, the Piper
    # worker processes included, where importing FastAPI cost about 23 MiB of RSS each.
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

log = logging.getLogger(__name__)


class GatewayError(Exception):
    """An error the client can act on. `code` is stable; `message` is for people."""

    code = "internal_error"
    status = 500

    def __init__(
        self, message: str, *, code: str | None = None, status: int | None = None, **extra: Any
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self.extra}}


class APIError(GatewayError):
    """A GatewayError raised by HTTP-facing code, which names its status first."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message, code=code, status=status, **extra)


def bad_request(code: str, message: str, **extra: Any) -> APIError:
    return APIError(400, code, message, **extra)


def engine_unavailable(component: str, message: str | None = None) -> APIError:
    return APIError(
        503, "engine_unavailable", message or f"{component} is not ready yet", component=component
    )


def internal_error(message: str = "internal error") -> GatewayError:
    """What a client is told of a server fault (the fault itself is logged, not sent)."""
    return GatewayError(message, code="internal_error", status=500)


def from_engine_error(exc: BaseException) -> GatewayError | None:
    """The client-facing error for any exception, or None when it is a server fault."""
    return exc if isinstance(exc, GatewayError) else None


# Engine error code (gateway/engines/errors.py) -> HTTP status: the one place a domain code meets HTTP.
# EngineError reads it when it is raised; WebSocket edges send the code itself in their `error` events.
ENGINE_STATUS: dict[str, int] = {
    "unknown_voice": 400,
    "unsupported_language": 400,
    "synthesis_rejected": 422,  # the engine refused this very text
    "engine_unavailable": 503,  # loading, failed to load, or nothing to serve with
    "synthesis_failed": 503,  # its worker died and was replaced: a retry may work
    "backend_unavailable": 503,
    "backend_loading": 503,
    "backend_circuit_open": 503,
    "backend_bad_response": 502,
    "backend_rejected": 502,  # the model server refused our request: the gateway's fault, not the client's
    "backend_timeout": 504,
}


def engine_status(exc: GatewayError) -> int:
    return exc.status


# -- the edges ---------------------------------------------------------------------------------------------


def json_error_bytes(err: GatewayError) -> bytes:
    """The HTTP body for ASGI layers that answer before FastAPI's handlers can."""
    return json.dumps(err.body()).encode()


def error_event(err: GatewayError, *, extra: bool = True, **fields: Any) -> dict[str, Any]:
    """The `error` event of the gateway's own WebSocket protocols. /voice sends code and message only
    (`extra=False`): its events have carried no more since the protocol was published (docs/voice.md)."""
    return {
        "type": "error",
        "code": err.code,
        "message": err.message,
        **(err.extra if extra else {}),
        **fields,
    }


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
}


def _validation_error(exc: RequestValidationError) -> GatewayError:
    details = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
        details.append({"field": ".".join(loc) or "body", "message": err.get("msg", "invalid")})
    message = "; ".join(f"{d['field']}: {d['message']}" for d in details) or "invalid request"
    return GatewayError(message, code="invalid_request", status=422, details=details)


def error_response(err: GatewayError, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The HTTP edge: the error's body with its status."""
    from fastapi.responses import JSONResponse

    return JSONResponse(err.body(), status_code=err.status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(GatewayError)
    async def _gateway_error(_: Request, exc: GatewayError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(_validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return error_response(GatewayError(message, code=code, status=exc.status_code), exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return error_response(internal_error())
