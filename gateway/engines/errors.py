"""What engines raise: the engine branch of the gateway's error tree, named by a stable domain `code`.

The code is what a client reads (`{"error": {"code": ...}}` over HTTP, an `error` event over a WebSocket);
an engine never picks an HTTP status: `EngineError` takes it from the one table of engine codes
(gateway/errors.py ENGINE_STATUS). `extra` holds fields the client body carries besides code and message
(the component that is not ready, the backend that failed and its status).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.errors import ENGINE_STATUS, GatewayError


class EngineError(GatewayError):
    """Base of every engine failure a client can act on."""

    code = "engine_error"

    def __init__(self, message: str, *, component: str, code: str | None = None, **extra: Any) -> None:
        super().__init__(message, code=code, **extra)
        self.status = ENGINE_STATUS.get(self.code, 503)
        self.component = component  # "tts" | "asr" | "omni", or a backend's name


class EngineNotReadyError(EngineError):
    """The component is loading, failed to load, or has nothing to serve with (no voice configured)."""

    code = "engine_unavailable"

    def __init__(self, component: str, detail: str | None = None) -> None:
        super().__init__(detail or f"{component} is not ready", component=component)
        self.extra = {"component": component}  # the client body names it


class UnknownVoiceError(EngineError):
    code = "unknown_voice"

    def __init__(self, message: str, *, component: str = "tts", available: Sequence[str] = ()) -> None:
        super().__init__(message, component=component)
        self.available = tuple(available)  # every name resolve() accepts (ids and aliases)


class UnsupportedLanguageError(EngineError):
    code = "unsupported_language"

    def __init__(self, message: str, *, component: str, supported: Sequence[str] = ()) -> None:
        super().__init__(message, component=component)
        self.supported = tuple(supported)


class SynthesisFailedError(EngineError):
    """The engine could not render this text. `retryable`: its worker died and was replaced, a retry may
    work (code `synthesis_failed`); otherwise the engine refused the text itself (`synthesis_rejected`)."""

    def __init__(self, message: str, *, retryable: bool, component: str = "tts") -> None:
        super().__init__(
            message, component=component, code="synthesis_failed" if retryable else "synthesis_rejected"
        )
        self.retryable = retryable


class BackendError(EngineError):
    """A model server failed us. `code` is one of BACKEND_CODES; the client body names the backend and,
    when the server answered with an error, its HTTP status (`backend_status`). `upstream_status` /
    `upstream_type` / `upstream_message` are that answer's status and vLLM's `error.type` / `error.message`.
    """

    def __init__(
        self,
        code: str,
        backend: str,
        message: str,
        *,
        counts: bool = True,
        upstream_status: int | None = None,
        upstream_type: str = "",
        upstream_message: str = "",
    ) -> None:
        if code not in BACKEND_CODES:
            raise ValueError(f"unknown backend error code {code!r}")
        extra: dict[str, Any] = {"backend": backend}
        if upstream_status is not None:
            extra["backend_status"] = upstream_status
        super().__init__(message, component=backend, code=code, **extra)
        self.backend = backend
        self.counts = counts  # False for failures that say nothing about the backend's health
        self.upstream_status = upstream_status
        self.upstream_type = upstream_type
        self.upstream_message = upstream_message


BACKEND_CODES = frozenset(
    {
        "backend_unavailable",  # cannot connect, or the server said 503
        "backend_loading",  # the server is still loading its model
        "backend_circuit_open",  # failed repeatedly; not tried for a while
        "backend_timeout",  # no answer in time
        "backend_bad_response",  # an answer we cannot use (5xx, malformed, truncated)
        "backend_rejected",  # the server refused our request (4xx)
    }
)
