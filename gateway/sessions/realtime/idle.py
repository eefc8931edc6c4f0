"""`turn_detection.idle_timeout_ms`: when the user has said nothing for that long after a reply.

Measured on the input audio stream, as OpenAI reports it (`input_audio_buffer.timeout_triggered`'s
`audio_start_ms` / `audio_end_ms` are offsets into the audio written to the input buffer): the window opens
where the last reply's audio finished playing and fires once the client has streamed `idle_timeout_ms` of
audio without speech. A client that stops streaming audio altogether stops the clock with it.
"""

from __future__ import annotations


class IdleWindow:
    def __init__(self) -> None:
        self.written_ms = 0.0  # audio written to the input buffer since the session began
        self._start_ms: float | None = None  # where the silent stretch began; None: not watching

    def wrote(self, ms: float) -> None:
        self.written_ms += ms

    def open(self, playback_left_ms: float) -> None:
        """A reply ended; its audio still plays for `playback_left_ms` at the client."""
        self._start_ms = self.written_ms + max(0.0, playback_left_ms)

    def close(self) -> None:
        """Speech, a commit or a new reply: nothing to time until the next reply ends."""
        self._start_ms = None

    def due(self, timeout_ms: int) -> tuple[int, int] | None:
        """(audio_start_ms, audio_end_ms) of the silent stretch once it lasts `timeout_ms`, else None."""
        if self._start_ms is None or self.written_ms - self._start_ms < timeout_ms:
            return None
        return round(self._start_ms), round(self.written_ms)
