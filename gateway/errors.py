"""One error convention: HTTP `{"error": {"code", "message"}}`; WebSocket `{"type": "error", ...}`."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.engines.errors import EngineError

log = logging.getLogger(__name__)


class APIError(Exception):
    """An error the client can act on. `code` is stable; `message` is for people."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self.extra}}


def bad_request(code: str, message: str, **extra: Any) -> APIError:
    return APIError(400, code, message, **extra)


def engine_unavailable(component: str, message: str | None = None) -> APIError:
    return APIError(
        503, "engine_unavailable", message or f"{component} is not ready yet", component=component
    )


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


def _describe_validation(exc: RequestValidationError) -> tuple[str, list[dict[str, Any]]]:
    details = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
        details.append({"field": ".".join(loc) or "body", "message": err.get("msg", "invalid")})
    message = "; ".join(f"{d['field']}: {d['message']}" for d in details) or "invalid request"
    return message, details


# Engine error code (gateway/engines/errors.py) -> HTTP status: the one place a domain code meets HTTP.
# WebSocket edges send the code itself in their `error` events.
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


def engine_status(exc: EngineError) -> int:
    return ENGINE_STATUS.get(exc.code, 503)


def from_engine_error(exc: BaseException) -> APIError | None:
    """The client-facing error for an engine exception, or None when it is a server fault."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, EngineError):
        return APIError(engine_status(exc), exc.code, exc.message, **exc.extra)
    return None


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(EngineError)
    async def _engine_error(_: Request, exc: EngineError) -> JSONResponse:
        err = from_engine_error(exc)
        assert err is not None
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, details = _describe_validation(exc)
        body = {"error": {"code": "invalid_request", "message": message, "details": details}}
        return JSONResponse(body, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return JSONResponse(
            {"error": {"code": code, "message": message}}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return JSONResponse(
            {"error": {"code": "internal_error", "message": "internal error"}}, status_code=500
        )
