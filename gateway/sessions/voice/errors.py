"""The conversation core's errors: the gateway's one error tree (gateway/errors.py) with a voice `code`.

A branch of its own so the core can raise without naming an HTTP status: its errors only ever reach a
client as a WebSocket `error` event (/voice, /v1/realtime)."""

from __future__ import annotations

from gateway.errors import GatewayError


class VoiceError(GatewayError):
    status = 400

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code)
