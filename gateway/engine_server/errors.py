"""vLLM's error body: `{"error": {"message", "type", "param", "code"}}`, as vLLM 0.30.0 builds it.

The engine server speaks vLLM-Omni's dialect, not the gateway's: where the two differ, vLLM-Omni wins.
What the real 0.30.0 server answered: a refused request is 400 `BadRequestError` with `param` null; an
unknown served name is 404 `NotFoundError` with `param` "model"; a body that fails schema validation is
400 with type "Bad Request" (the status phrase), `param` the field's dotted location and a message
"1 validation error: ..." (vLLM serve/exception_handling/handlers/validation.py).
"""

from __future__ import annotations

from http import HTTPStatus

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from gateway.engines.errors import EngineError
from gateway.errors import engine_status

_TYPES = {400: "BadRequestError", 404: "NotFoundError", 500: "InternalServerError"}


class VllmError(Exception):
    def __init__(
        self, status: int, message: str, param: str | None = None, err_type: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.err_type = err_type or _TYPES.get(status) or HTTPStatus(status).phrase

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, self.param, self.err_type)


def error_response(
    status: int, message: str, param: str | None = None, err_type: str | None = None
) -> JSONResponse:
    body = {
        "error": {
            "message": message,
            "type": err_type or _TYPES.get(status) or HTTPStatus(status).phrase,
            "param": param,
            "code": status,
        }
    }
    return JSONResponse(body, status_code=status)


def install(app: FastAPI) -> None:
    @app.exception_handler(VllmError)
    async def _vllm(_: Request, exc: VllmError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(EngineError)
    async def _engine(_: Request, exc: EngineError) -> JSONResponse:
        # A CPU engine failed (a Piper worker died and was replaced, a text it refused): vLLM's JSON error
        # body with the status the gateway gives the same engine code, never a plain-text 500.
        return error_response(engine_status(exc), exc.message)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # vLLM answers a malformed body with 400, not FastAPI's 422.
        errors = exc.errors()
        param = ".".join(str(p) for p in errors[0].get("loc", ())) if errors else None
        label = "error" if len(errors) == 1 else "errors"
        lines = "".join(f"  {_summary(err)}\n" for err in errors[:3])
        message = f"{len(errors)} validation {label}:\n{lines}".rstrip() if errors else "Validation error"
        return error_response(400, message, param or None, HTTPStatus.BAD_REQUEST.phrase)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), None, HTTPStatus(exc.status_code).phrase)


def _summary(err: object) -> str:
    """One validation error as vLLM prints it (the dict), with a long `input` cut short."""
    if isinstance(err, dict):
        err = {k: v for k, v in err.items() if k not in ("url", "ctx")}
        if "input" in err:
            text = str(err["input"])
            err["input"] = text if len(text) <= 200 else text[:200] + "...[truncated]"
    return str(err)[:1000]
