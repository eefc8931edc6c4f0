"""Gateway overhead against the REAL vLLM-Omni 0.30.0 servers (CPU, shrunken dummy weights, see
support/vllm_omni_cpu), measured in one run with requests interleaved: the same speech through the gateway and
straight to the server.

  1. POST /read of one sentence (whole WAV)      vs  POST /v1/audio/speech, streamed raw PCM, read to the end
  2. first byte of POST /v1/audio/speech streamed  vs  first byte of the server's `stream_format: "audio"`
Plus the start-up time (process start -> /v1/models 200) and summed RSS of each real server.

Both paths name the same reference clip inline (`ref_audio` data URL) and the same seed, so the server does
the same work either way. Goal: through / direct <= 1.05 at p50.

    python bench/real_vllm_omni_bench.py [--rounds 10]
    # servers already running:
    VGW_REAL_TTS_URL=... VGW_REAL_OMNI_URL=... python bench/real_vllm_omni_bench.py
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.real_vllm_omni.conftest import CLIP_TEXT, reference_clip
from tests.real_vllm_omni_server import OMNI, TTS, RealVllmOmni
from tests.support import ServerProcess

SENTENCE = "The model server does the heavy work, and the gateway adds almost nothing."
SEED = 7


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timed(client: httpx.Client, url: str, body: dict[str, object]) -> tuple[float, float, int]:
    """(seconds to the first body byte, seconds to the last, bytes)."""
    t0 = time.perf_counter()
    first: float | None = None
    size = 0
    with client.stream("POST", url, json=body) as r:
        r.raise_for_status()
        for chunk in r.iter_raw():
            if first is None and chunk:
                first = time.perf_counter() - t0
            size += len(chunk)
    return first or 0.0, time.perf_counter() - t0, size


def row(name: str, through: list[float], direct: list[float]) -> str:
    tp50, tp95, dp50, dp95 = pct(through, 0.5), pct(through, 0.95), pct(direct, 0.5), pct(direct, 0.95)
    return (
        f"| {name} | {1000 * tp50:.0f} / {1000 * tp95:.0f} | {1000 * dp50:.0f} / {1000 * dp95:.0f} "
        f"| {tp50 / dp50:.3f} | {tp95 / dp95:.3f} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()

    own: list[RealVllmOmni] = []
    tts_url, omni_url = os.environ.get("VGW_REAL_TTS_URL"), os.environ.get("VGW_REAL_OMNI_URL")
    if tts_url and omni_url:
        tts, omni = RealVllmOmni.attached(TTS, tts_url), RealVllmOmni.attached(OMNI, omni_url)
    else:
        tts, omni = RealVllmOmni(TTS).start(), RealVllmOmni(OMNI).start()
        own = [tts, omni]
        tts.wait_ready()
        omni.wait_ready()
    voices = Path(tempfile.mkdtemp(prefix="bench-voices-"))
    clip = reference_clip()
    (voices / "narrator.wav").write_bytes(clip)
    (voices / "narrator.txt").write_text(CLIP_TEXT)
    gateway = ServerProcess(
        "serve",
        env={
            "VOICE_ENGINE": "vllm-omni",
            "TTS_SERVICE_URL": tts.url,
            "OMNI_SERVICE_URL": omni.url,
            "TTS_VOICES_DIR": str(voices),
            "TTS_VOICE_MODE": "inline",
            "TTS_SEED": str(SEED),
            "BACKEND_READ_TIMEOUT": "120",
            "BACKEND_TOTAL_TIMEOUT": "300",
            "LOG_LEVEL": "warning",
        },
    )
    try:
        gateway.wait_ready(timeout=180)
        direct_body: dict[str, object] = {
            "input": SENTENCE,
            "model": TTS.served_name,
            "language": "English",
            "task_type": "Base",
            "ref_audio": "data:audio/wav;base64," + base64.b64encode(clip).decode(),
            "ref_text": CLIP_TEXT,
            "response_format": "pcm",
            "stream": True,
            "stream_format": "audio",
            "seed": SEED,
        }
        read_body = {"text": SENTENCE, "voice": "narrator", "response_format": "pcm"}
        speech_body = {"model": "tts-1", "voice": "narrator", "input": SENTENCE, "response_format": "pcm"}
        results: dict[str, list[float]] = {k: [] for k in ("read", "direct", "first_gw", "first_direct")}
        with httpx.Client(timeout=300) as client:
            pairs: list[tuple[str, Callable[[], tuple[float, float, int]]]] = [
                ("read", lambda: timed(client, gateway.url + "/read", read_body)),
                ("direct", lambda: timed(client, tts.url + "/v1/audio/speech", direct_body)),
                ("first_gw", lambda: timed(client, gateway.url + "/v1/audio/speech", speech_body)),
                ("first_direct", lambda: timed(client, tts.url + "/v1/audio/speech", direct_body)),
            ]
            for _, call in pairs:  # warm-up: every path once
                call()
            for n in range(args.rounds):
                order = pairs if n % 2 == 0 else pairs[::-1]
                for name, call in order:
                    first, last, _ = call()
                    results[name].append(first if name.startswith("first") else last)
        rss = {s.spec.kind: s.rss_bytes() for s in (tts, omni)}
        print(
            f"rounds: {args.rounds}; machine: {os.cpu_count()} cores; "
            "real vLLM-Omni 0.30.0 (CPU, dummy weights)"
        )
        print("| measure | through gateway p50 / p95 (ms) | direct p50 / p95 (ms) | ratio p50 | ratio p95 |")
        print("|---|---|---|---|---|")
        print(row("POST /read, one sentence, to the last byte", results["read"], results["direct"]))
        print(row("streamed speech, first byte", results["first_gw"], results["first_direct"]))
        for s in (tts, omni):
            started = f"{s.ready_after:.0f} s" if s.ready_after else "n/a (attached)"
            print(f"{s.spec.kind} server: start-up {started}, RSS {rss[s.spec.kind] / 2**30:.2f} GiB")
    finally:
        gateway.stop()
        for s in own:
            s.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
