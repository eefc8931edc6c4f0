"""Spoken conversation: a protocol-free core (`VoiceSession`) and the `/voice` adapter (`protocol`)."""

from gateway.sessions.voice.config import SessionConfig, TurnDetection
from gateway.sessions.voice.errors import VoiceError
from gateway.sessions.voice.session import VoiceSession

__all__ = ["SessionConfig", "TurnDetection", "VoiceError", "VoiceSession"]
