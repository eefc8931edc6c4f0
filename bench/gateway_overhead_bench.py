"""Gateway overhead with VOICE_ENGINE=vllm-omni: the same speech through the gateway and straight to the
model server (a real `voice-gateway engine-server`), measured in the same run, requests interleaved.

  1. POST /read (whole WAV)             vs  POST /v1/audio/speech on the engine server (whole WAV)
  2. POST /v1/audio/speech streamed PCM vs  the engine server's streamed PCM (`stream: true`, `pcm`)
  3. the gateway's own cost per request: POST /read of one sentence against an instant canned backend
     (tests/gateway/vllm_omni_fault_server.py), against the same backend request made directly

Reports p50/p95 latency (to the last byte; first byte too for streams), audio bytes per second of wall time,
and the ratios through/direct (goal: within 5 %).

    python bench/gateway_overhead_bench.py [--rounds 12]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.gateway.vllm_omni_fault_server import FaultServer
from tests.support import ServerProcess

TEXT = (
    "The gateway reads articles aloud, one sentence at a time. It streams audio as soon as the first "
    "sentence is ready. Listeners can pause, resume, or cancel at any moment. The model server does the "
    "heavy work, and the gateway should add almost nothing to it."
)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timed(client: httpx.Client, url: str, body: dict[str, object]) -> tuple[float, float, int]:
    """(seconds to first body byte, seconds to last byte, bytes)."""
    t0 = time.perf_counter()
    first = None
    size = 0
    with client.stream("POST", url, json=body) as r:
        r.raise_for_status()
        for chunk in r.iter_raw():
            if first is None:
                first = time.perf_counter() - t0
            size += len(chunk)
    return first or 0.0, time.perf_counter() - t0, size


def run_pair(
    rounds: int,
    name: str,
    through: Callable[[], tuple[float, float, int]],
    direct: Callable[[], tuple[float, float, int]],
) -> dict[str, float]:
    for _ in range(2):  # warm-up: connection pools, first ONNX runs
        through()
        direct()
    res: dict[str, list[tuple[float, float, int]]] = {"through": [], "direct": []}
    for i in range(rounds):
        order = (
            [("through", through), ("direct", direct)]
            if i % 2 == 0
            else [("direct", direct), ("through", through)]
        )
        for key, fn in order:
            res[key].append(fn())
    out: dict[str, float] = {}
    print(f"\n{name}  ({rounds} rounds each, interleaved)")
    print(
        f"  {'':8} {'ttfb p50':>9} {'ttfb p95':>9} {'total p50':>10} {'total p95':>10} {'bytes':>9}"
        f" {'MB/s':>7}"
    )
    for key in ("direct", "through"):
        ttfb = [r[0] for r in res[key]]
        total = [r[1] for r in res[key]]
        size = statistics.median([r[2] for r in res[key]])
        rate = sum(r[2] for r in res[key]) / sum(total)
        out.update(
            {
                f"{key}_p50": pct(total, 0.5),
                f"{key}_p95": pct(total, 0.95),
                f"{key}_ttfb50": pct(ttfb, 0.5),
                f"{key}_rate": rate,
            }
        )
        print(
            f"  {key:8} {pct(ttfb, 0.5) * 1000:8.0f}ms {pct(ttfb, 0.95) * 1000:8.0f}ms "
            f"{pct(total, 0.5) * 1000:9.0f}ms {pct(total, 0.95) * 1000:9.0f}ms {size:9.0f} {rate / 1e6:7.3f}"
        )
    print(
        f"  ratio through/direct: p50 {out['through_p50'] / out['direct_p50']:.3f}  "
        f"p95 {out['through_p95'] / out['direct_p95']:.3f}  "
        f"ttfb p50 {out['through_ttfb50'] / max(out['direct_ttfb50'], 1e-9):.3f}  "
        f"bytes/s {out['through_rate'] / out['direct_rate']:.3f}"
    )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=12)
    args = parser.parse_args()
    engine = ServerProcess("engine-server")
    gateway = None
    try:
        engine.wait_ready(timeout=240)
        gateway = ServerProcess(
            "serve",
            env={
                "VOICE_ENGINE": "vllm-omni",
                "OMNI_SERVICE_URL": engine.url,
                "TTS_SERVICE_URL": engine.url,
                "LOG_LEVEL": "warning",
            },
        )
        gateway.wait_ready(timeout=120)
        with httpx.Client(timeout=120) as client:
            read = run_pair(
                args.rounds,
                "/read (WAV) vs engine /v1/audio/speech (WAV)",
                lambda: timed(client, gateway.url + "/read", {"text": TEXT, "voice": "joe"}),
                lambda: timed(client, engine.url + "/v1/audio/speech", {"input": TEXT, "voice": "joe"}),
            )
            streamed = run_pair(
                args.rounds,
                "streamed PCM: gateway /v1/audio/speech vs engine /v1/audio/speech stream",
                lambda: timed(
                    client,
                    gateway.url + "/v1/audio/speech",
                    {"model": "tts-1", "input": TEXT, "voice": "joe", "response_format": "pcm"},
                ),
                lambda: timed(
                    client,
                    engine.url + "/v1/audio/speech",
                    {
                        "input": TEXT,
                        "voice": "joe",
                        "response_format": "pcm",
                        "stream": True,
                        "stream_format": "audio",  # raw PCM, as the gateway asks (vLLM-Omni 0.30.0)
                    },
                ),
            )
        canned = FaultServer()
        proxy_gw = None
        try:
            proxy_gw = ServerProcess(
                "serve",
                env={
                    "VOICE_ENGINE": "vllm-omni",
                    "OMNI_SERVICE_URL": canned.url,
                    "TTS_SERVICE_URL": canned.url,
                    "LOG_LEVEL": "warning",
                },
            )
            proxy_gw.wait_ready(timeout=120)
            with httpx.Client(timeout=60) as client:
                speech = {
                    "input": "Hello there.",
                    "voice": "vivian",
                    "response_format": "pcm",
                    "stream": True,
                    "stream_format": "audio",
                }
                proxy = run_pair(
                    args.rounds * 5,
                    "gateway cost per request: /read (one sentence) vs the backend request, "
                    "instant canned backend",
                    lambda: timed(
                        client,
                        proxy_gw.url + "/read",
                        {"text": "Hello there.", "voice": "vivian", "response_format": "pcm"},
                    ),
                    lambda: timed(client, canned.url + "/v1/audio/speech", speech),
                )
        finally:
            if proxy_gw is not None:
                proxy_gw.stop()
            canned.close()
        added50 = (proxy["through_p50"] - proxy["direct_p50"]) * 1000
        added95 = (proxy["through_p95"] - proxy["direct_p95"]) * 1000
        print(f"\ngateway cost per request (instant backend): p50 +{added50:.1f} ms, p95 +{added95:.1f} ms")
        print(
            "\nsummary: /read p50 ratio {:.3f}, p95 ratio {:.3f}; streamed bytes/s ratio {:.3f}"
            " (goal: within 5 %)".format(
                read["through_p50"] / read["direct_p50"],
                read["through_p95"] / read["direct_p95"],
                streamed["through_rate"] / streamed["direct_rate"],
            )
        )
    finally:
        if gateway is not None:
            gateway.stop()
        engine.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
