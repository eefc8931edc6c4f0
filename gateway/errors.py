"""One error convention: HTTP `{"error": {"code", "message"}}`; WebSocket `{"type": "error", ...}`."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

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


def from_engine_error(exc: Exception) -> APIError | None:
    """The client-facing error for an engine exception, or None when it is a server fault."""
    from gateway.engines.base import EngineNotReadyError, UnknownVoiceError, UnsupportedLanguageError

    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, UnknownVoiceError):
        return APIError(400, "unknown_voice", str(exc))
    if isinstance(exc, UnsupportedLanguageError):
        return APIError(400, "unsupported_language", str(exc))
    if isinstance(exc, EngineNotReadyError):
        return engine_unavailable(exc.component, str(exc))
    return None


def install_error_handlers(app: FastAPI) -> None:
    from gateway.engines.base import EngineNotReadyError, UnknownVoiceError, UnsupportedLanguageError

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    async def _engine_error(_: Request, exc: Exception) -> JSONResponse:
        err = from_engine_error(exc)
        assert err is not None
        return JSONResponse(err.body(), status_code=err.status)

    for cls in (UnknownVoiceError, UnsupportedLanguageError, EngineNotReadyError):
        app.add_exception_handler(cls, _engine_error)

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
