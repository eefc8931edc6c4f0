"""Server VAD turn detection: speech start / stop decisions over Silero probabilities, on stream time.

Decisions use the audio's own clock (samples received), not the wall clock, so a client that streams faster
than real time gets the same turns as one that streams live.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from gateway.audio.vad import StreamingVAD
from gateway.sessions.voice.config import TurnDetection

# Hysteresis as in Silero's own get_speech_timestamps: speech ends below threshold - 0.15.
_NEG_OFFSET = 0.15


class TurnSignal(enum.Enum):
    SPEECH_STARTED = "speech_started"
    SPEECH_STOPPED = "speech_stopped"


@dataclass(frozen=True)
class TurnEvent:
    signal: TurnSignal
    stream_ms: int  # where in the input stream: speech start, or speech end (before the silence)


class TurnDetector:
    def __init__(self, sample_rate: int, config: TurnDetection) -> None:
        self.sample_rate = sample_rate
        self.config = config
        self._vad = StreamingVAD(sample_rate)
        self.in_speech = False
        self._run_start: float | None = None  # start of a run of speech windows not yet confirmed
        self._silence_start: float | None = None
        self._now = 0.0  # stream time at the end of the last window
        self.speech_windows = 0  # windows heard as speech so far: it moves whenever the user talks

    def reconfigure(self, config: TurnDetection) -> None:
        self.config = config

    @property
    def silence_ms(self) -> int:
        """How long the current in-turn pause has lasted (0 outside speech or while talking)."""
        if not self.in_speech or self._silence_start is None:
            return 0
        return int((self._now - self._silence_start) * 1000)

    def reset(self) -> None:
        """Forget the current turn (after a commit), keeping the stream clock and model state."""
        self.in_speech = False
        self._run_start = None
        self._silence_start = None

    def feed(self, samples: np.ndarray) -> list[TurnEvent]:
        cfg = self.config
        window_s = 0.032
        events: list[TurnEvent] = []
        for w in self._vad.process(samples):
            start_s = w.end_s - window_s
            self._now = w.end_s
            if w.probability >= cfg.threshold:
                self.speech_windows += 1
            if not self.in_speech:
                if w.probability >= cfg.threshold:
                    if self._run_start is None:
                        self._run_start = start_s
                    if (w.end_s - self._run_start) * 1000 >= cfg.min_speech_ms:
                        self.in_speech = True
                        self._silence_start = None
                        events.append(TurnEvent(TurnSignal.SPEECH_STARTED, int(self._run_start * 1000)))
                else:
                    self._run_start = None
            else:
                if w.probability < cfg.threshold - _NEG_OFFSET:
                    if self._silence_start is None:
                        self._silence_start = start_s
                    if (w.end_s - self._silence_start) * 1000 >= cfg.silence_duration_ms:
                        events.append(TurnEvent(TurnSignal.SPEECH_STOPPED, int(self._silence_start * 1000)))
                        self.in_speech = False
                        self._run_start = None
                        self._silence_start = None
                elif w.probability >= cfg.threshold:
                    self._silence_start = None
        return events
