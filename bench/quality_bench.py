"""Quality of the embedded engine, side by side in one run (issue 21):

1. ASR word error rate on fixed sentences in two voices (Piper through the gateway's POST /read, and
   espeak-ng's robotic voice when `espeak-ng` is installed), per Whisper model that loads here.
2. Conversation: fixed 8-turn scripts through the real conversation memory (sessions/voice/history.py) and
   the real embedded responder, with the previous prompt design (`plain`) and the current one (`memory`):
   factual answers, memory checks at turns 4 and 8, replies in English.
3. WS /voice commit -> first reply audio p50/p95 for both designs: two gateway processes
   (EMBEDDED_LLM_PROMPT=plain / memory) answering the same spoken 8-turn conversation, turns interleaved so
   both see the same machine load. Goal: memory no worse than 1.1x plain.

    python bench/quality_bench.py [--asr-models tiny.en,base] [--rounds 1] [--skip-latency]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.audio.pcm import pcm16_to_float
from gateway.audio.resample import resample
from gateway.engines.base import ConversationRequest
from gateway.engines.embedded.chat_prompt import PromptDesign
from gateway.engines.embedded.llm import LlamaResponder
from gateway.engines.embedded.whisper_asr import WhisperTranscriber
from gateway.sessions.voice.config import DEFAULT_INSTRUCTIONS
from gateway.sessions.voice.history import ConversationHistory
from gateway.settings import load_settings
from tests.gateway.voice_client import RATE, VoiceClient, spoken
from tests.support import ServerProcess, wer

ASR_SENTENCES = [
    "Voice gateways should start speaking at once.",
    "The quick brown fox jumps over the lazy dog.",
    "Please book a table for two at the Italian restaurant tonight.",
    "My flight leaves from the north terminal early tomorrow morning.",
    "Turn the kitchen lights off and lock the front door.",
    "She sells fresh vegetables at the market every Saturday.",
]


@dataclass(frozen=True)
class Turn:
    user: str
    expect: tuple[str, ...] = ()  # all must appear in the reply (lower case); () = not scored
    kind: str = "fact"  # "fact" or "memory"


# Memory checks sit at turns 4 and 8 (and an earlier question recalled at 7).
SCRIPTS: list[list[Turn]] = [
    [
        Turn("Hi, my name is Sam."),
        Turn("What is the capital of France?", ("paris",)),
        Turn("My favourite number is 42."),
        Turn("What is my name?", ("sam",), "memory"),
        Turn("How many legs does a spider have?", ("8|eight",)),
        Turn("What is two plus three?", ("5|five",)),
        Turn("Which city did I ask you about?", ("paris|france",), "memory"),
        Turn("What is my name and what is my favourite number?", ("sam", "42|forty-two"), "memory"),
    ],
    [
        Turn("Hello, I'm Priya."),
        Turn("I have 3 cats."),
        Turn("What is the largest planet in our solar system?", ("jupiter",)),
        Turn("What is my name?", ("priya",), "memory"),
        Turn("What colour is the sky on a clear day?", ("blue",)),
        Turn("Tell me a fun fact about cats."),
        Turn("How many cats do I have?", ("3|three",), "memory"),
        Turn("What's my name?", ("priya",), "memory"),
    ],
    [
        Turn("My name is Lena and I live in Berlin."),
        Turn("I am 29 years old."),
        Turn("What is the boiling point of water in Celsius?", ("100|hundred",)),
        Turn("What city do I live in?", ("berlin",), "memory"),
        Turn("How many days are in a week?", ("7|seven",)),
        Turn("What is the capital of Italy?", ("rome",)),
        Turn("How old am I?", ("29|twenty-nine",), "memory"),
        Turn("What is my name?", ("lena",), "memory"),
    ],
]

_ENGLISH = frozenset(
    {
        "the",
        "a",
        "an",
        "is",
        "are",
        "was",
        "i",
        "i'm",
        "it's",
        "you",
        "it",
        "of",
        "to",
        "and",
        "in",
        "that",
        "this",
        "my",
        "your",
        "for",
        "on",
        "with",
        "be",
        "have",
        "has",
        "do",
        "not",
        "no",
        "yes",
        "what",
        "can",
        "there",
        "they",
        "he",
        "she",
        "we",
        "hello",
        "hi",
    }
)


def english(text: str) -> bool:
    """Rough: English function words make up a share of the reply and no French/German letters appear."""
    found = re.findall(r"[a-z']+", text.lower())
    return (
        bool(found)
        and (len(found) <= 2 or sum(w in _ENGLISH for w in found) / len(found) >= 0.12)
        and not re.search(r"[àâçéèêëîïôûùüÿœäöß]", text.lower())
    )


def scored(reply: str, expect: tuple[str, ...]) -> bool:
    low = reply.lower()
    return all(any(alt in low for alt in want.split("|")) for want in expect)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


# -- 1. ASR ------------------------------------------------------------------------------------------
def espeak_pcm16k(text: str) -> np.ndarray | None:
    exe = shutil.which("espeak-ng")
    if exe is None:
        return None
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        subprocess.run([exe, "-w", f.name, text], check=True, timeout=60)
        with wave.open(f.name) as w:
            rate, data = w.getframerate(), w.readframes(w.getnframes())
    return resample(pcm16_to_float(data), rate, 16000)


async def asr_rows(server_url: str, models: list[str]) -> list[tuple[str, str, float, float]]:
    """(model, voice, WER, real-time factor) for each model that loads and each voice available."""
    voices: dict[str, list[np.ndarray]] = {
        "piper": [resample(pcm16_to_float(spoken(server_url, s)), RATE, 16000) for s in ASR_SENTENCES]
    }
    robotic = [espeak_pcm16k(s) for s in ASR_SENTENCES]
    if all(r is not None for r in robotic):
        voices["espeak-ng"] = [r for r in robotic if r is not None]
    else:
        print("espeak-ng is not installed here: the robotic voice is skipped (apt-get install espeak-ng)")
    rows = []
    s = load_settings()
    for name in models:
        executor = ThreadPoolExecutor(max_workers=2)
        asr = WhisperTranscriber(executor, model=name, cache_dir=s.model_cache_dir, compute_type="int8")
        await asr.start()
        if asr.state.value != "ready":
            print(f"ASR model {name}: not available here ({asr.models()[0].error})")
            executor.shutdown()
            continue
        for voice, clips in voices.items():
            errors, audio_s, spent = [], 0.0, 0.0
            for text, clip in zip(ASR_SENTENCES, clips, strict=True):
                t0 = time.perf_counter()
                got = (await asr.transcribe(clip, "en")).text
                spent += time.perf_counter() - t0
                audio_s += len(clip) / 16000
                errors.append(wer(text, got))
            rows.append((name, voice, statistics.mean(errors), spent / audio_s))
        await asr.aclose()
        executor.shutdown()
    return rows


# -- 2. conversation ---------------------------------------------------------------------------------
@dataclass
class Score:
    facts: int = 0
    fact_total: int = 0
    memory: int = 0
    memory_total: int = 0
    turn4: int = 0
    turn8: int = 0
    english: int = 0
    replies: int = 0


async def converse(style: str, verbose: bool) -> Score:
    s = load_settings()
    executor = ThreadPoolExecutor(max_workers=1)
    llm = LlamaResponder(
        executor,
        threads=s.embedded_llm_threads or s.cpu_threads,
        temperature=s.embedded_llm_temperature,
        repeat_penalty=s.embedded_llm_repeat_penalty,
        design=PromptDesign(style="plain" if style == "plain" else "memory"),
    )
    await llm.start()
    score = Score()
    try:
        for script in SCRIPTS:
            # The memory as a /voice session holds it: pre-issue-21 turn cap for "plain", tokens only now.
            history = ConversationHistory(8 if style == "plain" else 0, s.voice_history_tokens)
            for number, turn in enumerate(script, 1):
                history.add("user", turn.user)
                request = ConversationRequest(history=history.messages(DEFAULT_INSTRUCTIONS), max_tokens=60)
                reply = "".join([e.text async for e in llm.respond(request) if e.kind == "text"]).strip()
                history.add("assistant", reply)
                score.replies += 1
                score.english += english(reply)
                ok = scored(reply, turn.expect)
                if turn.expect and turn.kind == "fact":
                    score.fact_total += 1
                    score.facts += ok
                elif turn.expect:
                    score.memory_total += 1
                    score.memory += ok
                    score.turn4 += ok and number == 4
                    score.turn8 += ok and number == 8
                if verbose:
                    mark = "" if not turn.expect else (" ok" if ok else " MISS")
                    print(f"  [{style}] {number} {turn.user} -> {reply!r}{mark}")
    finally:
        await llm.aclose()
        executor.shutdown()
    return score


# -- 3. /voice latency -------------------------------------------------------------------------------
async def voice_turn(client: VoiceClient, pcm: bytes) -> float:
    await client.stream(pcm)
    t0 = time.perf_counter()
    await client.send("audio.commit")
    first: float | None = None
    while True:
        message = await asyncio.wait_for(client.ws.recv(), 120)
        if isinstance(message, bytes):
            first = first if first is not None else time.perf_counter() - t0
            continue
        event = json.loads(message)
        if event["type"] == "response.done":
            break
        if event["type"] == "error":
            raise RuntimeError(event)
    assert first is not None
    return first * 1000


async def latency(servers: dict[str, ServerProcess], rounds: int) -> dict[str, list[float]]:
    first_url = next(iter(servers.values())).url
    spoken_turns = [[spoken(first_url, t.user) for t in script] for script in SCRIPTS[:2]]
    out: dict[str, list[float]] = {name: [] for name in servers}
    for _ in range(rounds):
        for turns in spoken_turns:
            clients = {
                name: await VoiceClient.connect(server.ws_url, turn_detection=None, max_response_tokens=60)
                for name, server in servers.items()
            }
            try:
                for pcm in turns:  # the same turn on each server, one after the other: equal load
                    for name, client in clients.items():
                        out[name].append(await voice_turn(client, pcm))
            finally:
                for client in clients.values():
                    await client.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--asr-models", default="tiny.en,base", help="comma-separated ASR_MODEL values")
    parser.add_argument("--rounds", type=int, default=1, help="passes of the spoken conversations")
    parser.add_argument("--skip-latency", action="store_true", help="no /voice latency (no second server)")
    parser.add_argument("--skip-asr", action="store_true")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every conversation turn")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    started = time.perf_counter()

    conv = {style: asyncio.run(converse(style, args.verbose)) for style in ("plain", "memory")}

    env = {"VOICE_AUDIO_LEAD_MS": "60000"}  # reply audio unpaced: turns end sooner, first frame unchanged
    servers: dict[str, ServerProcess] = {}
    asr: list[tuple[str, str, float, float]] = []
    lat: dict[str, list[float]] = {}
    try:
        styles = ("plain", "memory") if not args.skip_latency else () if args.skip_asr else ("memory",)
        for style in styles:
            servers[style] = ServerProcess("serve", env={**env, "EMBEDDED_LLM_PROMPT": style})
        for server in servers.values():
            server.wait_ready()
        if not args.skip_asr:
            asr = asyncio.run(asr_rows(servers["memory"].url, args.asr_models.split(",")))
        if not args.skip_latency:
            lat = asyncio.run(latency(servers, args.rounds))
    finally:
        for server in servers.values():
            server.stop()

    out = io.StringIO()
    print(
        f"machine: {os.cpu_count()} cores, load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after; {time.perf_counter() - started:.0f} s",
        file=out,
    )
    if asr:
        print(f"\nASR word error rate (mean over {len(ASR_SENTENCES)} sentences)", file=out)
        print(f"  {'model':10s} {'voice':10s} {'WER':>7s} {'RTF':>6s}", file=out)
        for model, voice, err, rtf in asr:
            print(f"  {model:10s} {voice:10s} {100 * err:6.1f}% {rtf:6.2f}", file=out)
    print(
        f"\nConversation ({len(SCRIPTS)} scripts x 8 turns, SmolLM2-135M)   plain (before)   memory (after)",
        file=out,
    )
    rows = [
        ("factual answers", lambda c: (c.facts, c.fact_total)),
        ("memory checks (turns 4, 7, 8)", lambda c: (c.memory, c.memory_total)),
        ("  recalled at turn 4", lambda c: (c.turn4, len(SCRIPTS))),
        ("  recalled at turn 8", lambda c: (c.turn8, len(SCRIPTS))),
        ("replies in English", lambda c: (c.english, c.replies)),
    ]
    for label, get in rows:
        cells = [f"{a}/{b}" for a, b in (get(conv["plain"]), get(conv["memory"]))]
        print(f"  {label:52s} {cells[0]:>14s} {cells[1]:>16s}", file=out)
    if lat:
        p = {k: (statistics.median(v), pct(v, 95)) for k, v in lat.items()}
        print(f"\n/voice commit -> first audio over {len(lat['memory'])} turns each, interleaved", file=out)
        for k, (p50, p95) in p.items():
            print(f"  {k:8s} p50 {p50:6.0f} ms   p95 {p95:6.0f} ms", file=out)
        ratio = p["memory"][0] / p["plain"][0]
        print(
            f"  ratio memory/plain p50 {ratio:.2f} (goal <= 1.1: {'met' if ratio <= 1.1 else 'NOT met'}), "
            f"p95 {p['memory'][1] / p['plain'][1]:.2f}",
            file=out,
        )
    print(out.getvalue())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
