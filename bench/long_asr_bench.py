"""Long files on the embedded Whisper engine: one sequential pass vs VAD-segmented, batched decoding
(faster-whisper's BatchedInferencePipeline with its Silero VAD), measured in the same run, per model.

Material: ~3 minutes of the gateway's own Piper voice reading known prose, cut at sentence ends into clips of
about 10, 20, 29, 60 and 180 s. Each clip is transcribed by gateway/engines/embedded/whisper_asr.py both ways
(ASR_BATCHED_MIN_SECONDS forced to infinity / zero), interleaved, `--rounds` times; WER against the known
text (tests/support.py `wer`) and wall time p50. The ratio batched/one-pass below 1 means batched is faster.

    python bench/long_asr_bench.py [--rounds 3] [--models base tiny.en] [--seconds 10 29 60 180]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.audio.pcm import pcm16_to_float
from gateway.audio.resample import resample
from gateway.engines.base import SynthesisRequest
from gateway.engines.embedded.piper_tts import PiperSynthesizer
from gateway.engines.embedded.whisper_asr import WhisperTranscriber
from tests.support import wer

RATE = 22050
# Written for this bench (plain English prose, no names or numbers Whisper could spell two ways).
PROSE = (
    "The lighthouse stood at the end of a long stone pier, and every evening the keeper climbed its narrow "
    "stairs to light the lamp. He had done this for many years, through calm summer nights and through "
    "storms that shook the windows in their frames. The village below depended on him, although few of the "
    "people who lived there ever thought about it. Fishing boats came home by his light, and the ships that "
    "passed far out at sea used it to keep away from the rocks. One autumn a young woman arrived in the "
    "village to study the birds that rested on the cliffs during their long journey south. She rented a "
    "small room above the bakery and spent her days walking along the shore with a notebook and a pair of "
    "old field glasses. The keeper noticed her on the pier one afternoon, watching a flock of grey birds "
    "that had settled on the water. He asked her what they were, and she told him their name and where they "
    "were going. They talked until the light began to fade, and then he invited her to see the lamp. From "
    "the top of the tower the whole coast was spread out below them, with the dark hills behind the village "
    "and the open sea in front. She said it was the most beautiful place she had ever seen. After that she "
    "came to the tower most evenings, and the keeper showed her how the lamp worked, how the lens turned "
    "and how the clockwork had to be wound by hand every few hours. In return she taught him the names of "
    "the birds and the ways to tell them apart by their calls and by the shape of their wings. Winter came "
    "early that year. The wind blew from the north for weeks, and the sea was too rough for the fishing "
    "boats to leave the harbour. The keeper and the young woman watched the waves break over the end of the "
    "pier and throw white spray high into the air. One night the storm was worse than any the keeper could "
    "remember. The power failed in the village, and the clockwork of the lamp began to slow down. He wound "
    "it again and again, but a spring had worn out and the lens would not turn properly. Far out on the "
    "water a small cargo ship was trying to reach the shelter of the bay. Without the turning beam its "
    "captain could not tell the lighthouse from the lights of the houses on the hill. The young woman held "
    "a lantern while the keeper took the mechanism apart with cold and tired hands. Together they found a "
    "spare spring in an old wooden box at the bottom of a cupboard. It took them almost an hour to fit it, "
    "and all that time the wind screamed around the tower. At last the lens began to turn again, slowly at "
    "first and then at its proper speed. They watched from the gallery as the lights of the ship changed "
    "course and moved away from the rocks toward the calm water of the bay. In the morning the captain "
    "came to the tower to thank them. He brought bread and cheese and a bottle of wine, and they ate "
    "together at the small table in the keeper's kitchen while the storm slowly blew itself out. In the "
    "spring the birds returned to the cliffs, and the young woman returned with them. She stayed in the "
    "village for the rest of her life, and when the old keeper finally retired, she took his place at the "
    "top of the narrow stairs. People say that on clear evenings you can still see her on the pier, "
    "watching the birds with the same old field glasses, before she climbs the tower to light the lamp. "
    "The children of the village like to follow her along the shore and ask her questions about the sea. "
    "She tells them how the tides rise and fall twice a day, how the birds find their way across the ocean "
    "at night, and why the keeper must never fall asleep while the lamp is burning. Some of them have "
    "started notebooks of their own, full of drawings of wings and feathers and the shapes of the clouds. "
    "When the weather is fine she takes them up the narrow stairs, one small group at a time, and lets "
    "them look out over the water from the top of the tower. They always ask whether she is ever lonely up "
    "there on the long winter nights. She smiles and tells them that a lighthouse is never lonely, because "
    "somewhere out on the dark water there is always someone who is glad to see its light."
)


async def piper_sentences() -> list[tuple[str, np.ndarray]]:
    """The prose read by the embedded Piper voice, sentence by sentence, as 16 kHz float audio."""
    executor = ThreadPoolExecutor(2)
    synth = PiperSynthesizer(RATE, executor)
    await synth.start()
    out: list[tuple[str, np.ndarray]] = []
    try:
        request = synth.resolve(SynthesisRequest(text=PROSE))
        async for chunk in synth.stream(request):
            out.append((PROSE[chunk.text_start : chunk.text_end], pcm16_to_float(chunk.pcm)))
    finally:
        await synth.aclose()
        executor.shutdown()
    return [(text, resample(audio, RATE, 16000)) for text, audio in out]


def clips(sentences: list[tuple[str, np.ndarray]], targets: list[float]) -> list[tuple[str, np.ndarray]]:
    """For each target, the run of whole sentences from the start whose length is closest to it."""
    ends = np.cumsum([audio.size for _, audio in sentences]) / 16000
    out: list[tuple[str, np.ndarray]] = []
    for target in targets:
        n = int(np.argmin(np.abs(ends - target))) + 1
        chosen = sentences[:n]
        out.append((" ".join(t for t, _ in chosen), np.concatenate([a for _, a in chosen])))
    return out


async def loaded(model: str, batched_min_seconds: float) -> WhisperTranscriber:
    asr = WhisperTranscriber(ThreadPoolExecutor(2), model=model, batched_min_seconds=batched_min_seconds)
    await asr.start()
    return asr


def measure(model: str, material: list[tuple[str, np.ndarray]], rounds: int) -> list[dict[str, float]]:
    one = asyncio.run(loaded(model, float("inf")))
    batched = asyncio.run(loaded(model, 0.0))
    rows: list[dict[str, float]] = []
    for text, audio in material:
        times: dict[str, list[float]] = {"one": [], "batched": []}
        errors: dict[str, float] = {}
        for _ in range(rounds):
            for name, asr in (("one", one), ("batched", batched)):  # interleaved: the same machine load
                t0 = time.perf_counter()
                result = asr._run(audio, "en")
                times[name].append(time.perf_counter() - t0)
                errors[name] = wer(text, result.text)
        p50 = {name: statistics.median(values) * 1000 for name, values in times.items()}
        rows.append(
            {
                "seconds": audio.size / 16000,
                "one_ms": p50["one"],
                "batched_ms": p50["batched"],
                "ratio": p50["batched"] / p50["one"],
                "one_wer": errors["one"] * 100,
                "batched_wer": errors["batched"] * 100,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=["base", "tiny.en"])
    parser.add_argument("--seconds", nargs="+", type=float, default=[10, 20, 29, 60, 180])
    args = parser.parse_args()
    sentences = asyncio.run(piper_sentences())
    total = sum(a.size for _, a in sentences) / 16000
    print(f"material: {len(sentences)} Piper sentences, {total:.1f} s; p50 of {args.rounds} interleaved runs")
    material = clips(sentences, args.seconds)
    print("| model | clip s | one-pass ms | batched ms | batched/one-pass | WER one-pass % | WER batched % |")
    print("|---|---|---|---|---|---|---|")
    for model in args.models:
        for row in measure(model, material, args.rounds):
            print(
                f"| {model} | {row['seconds']:.1f} | {row['one_ms']:.0f} | {row['batched_ms']:.0f} | "
                f"{row['ratio']:.2f} | {row['one_wer']:.1f} | {row['batched_wer']:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
