"""The conversation core's one error type: a stable `code` the client can act on and a message for people."""

from __future__ import annotations

from gateway.errors import from_engine_error


class VoiceError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def from_exception(exc: Exception) -> VoiceError | None:
    """The client-facing error for an engine exception (same mapping as HTTP), or None for a server fault."""
    if isinstance(exc, VoiceError):
        return exc
    api = from_engine_error(exc)
    return VoiceError(api.code, api.message) if api is not None else None
