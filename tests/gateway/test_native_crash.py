"""Issue 18.1: native speech code never shares a fate with the gateway.

A real gateway process of its own (these tests kill its Piper workers): the strings that made espeak-ng
segfault inside the gateway, and the class the fuzzing found, through every speech surface; then a worker
killed with SIGSEGV in the middle of a request. The gateway must stay up, other sessions must carry on, the
failed request must get a clear `synthesis_failed` error, the death must be counted and the worker replaced.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.gateway.test_read_stream import WAIT_S, connect, metric
from tests.support import ServerProcess, decode_wav, pcm_to_float, speech_ratio

WORKER_MODULE = "gateway.engines.embedded.piper_worker"
RESTARTS = "voice_gateway_engine_worker_restarts_total"

ALPHABET = "".join(c + "." for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
# The three strings, and members of the class the fuzzing found (see phonemizer_guard.py).
CRASHERS = {
    "a_dot_x100": "a." * 100,
    "ie_x50": "i.e." * 50,
    "alphabet_x4": ALPHABET * 4,
    "ie_x91": "i.e." * 91,
    "accented_x60": "é.ü.ø.å.ç.ñ." * 10,
    "spaced_runs": " ".join("u.m.q.f.p.r.g.t.z.c." * 5 for _ in range(3)),
}


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    s = ServerProcess("serve")
    try:
        s.wait_ready()
        yield s
    finally:
        s.stop()


def rss_mib(pid: int) -> float:
    found = re.search(r"^VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text(), re.M)
    assert found, pid
    return int(found.group(1)) / 1024


def worker_pids(server: ServerProcess) -> list[int]:
    """The gateway's Piper worker processes: its children whose command line names the worker module."""
    pids = []
    for task in Path(f"/proc/{server.proc.pid}/task").iterdir():
        try:  # threads and children come and go while we look
            children = (task / "children").read_text().split()
        except FileNotFoundError:
            continue
        for child in children:
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            except FileNotFoundError:
                continue
            if WORKER_MODULE.encode() in cmdline:
                pids.append(int(child))
    return sorted(pids)


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def restarts(server: ServerProcess) -> float:
    return metric(server, RESTARTS, engine="piper", reason="SIGSEGV")


def assert_speech(wav: bytes, min_seconds: float = 0.5) -> None:
    audio = decode_wav(wav)
    assert audio.duration >= min_seconds and speech_ratio(audio.samples, audio.sample_rate) > 0.2


def assert_alive(server: ServerProcess) -> None:
    assert server.proc.poll() is None, server.log()
    assert httpx.get(server.url + "/health", timeout=30).status_code == 200


@pytest.mark.parametrize("name", sorted(CRASHERS))
def test_crashing_text_is_spoken_through_post_read(server: ServerProcess, name: str) -> None:
    before = restarts(server)
    r = httpx.post(server.url + "/read", json={"text": CRASHERS[name]}, timeout=WAIT_S * 3)
    assert r.status_code == 200, r.text
    assert_speech(r.content, min_seconds=2.0)  # every initial is spelled: seconds of speech
    assert_alive(server)
    assert restarts(server) == before  # the pre-pass kept espeak-ng away from it: no worker died


def test_workers_load_only_the_speech_stack(server: ServerProcess) -> None:
    """A worker holds Piper, onnxruntime and numpy, not the web stack: the gateway's logging set-up and
    error tree once brought FastAPI, pydantic and prometheus_client into each (about 27 MiB of RSS each)."""
    pids = worker_pids(server)
    assert len(pids) == 2, pids
    for pid in pids:
        mapped = Path(f"/proc/{pid}/maps").read_text()
        assert "onnxruntime" in mapped, "not a Piper worker"
        # FastAPI is pure Python; the pydantic it stands on maps a native library.
        assert "pydantic_core" not in mapped, f"worker {pid} loaded the web stack"


def test_idle_workers_give_back_what_long_sentences_took(server: ServerProcess) -> None:
    """onnxruntime keeps the buffers of the longest sentence a worker rendered (about 220 MiB more per
    worker); a worker idle for IDLE_RELEASE_S (2 s) hands them back."""
    long_sentence = (
        "The lighthouse stood at the end of a long stone pier, and every evening the keeper climbed its "
        "narrow stairs to light the lamp, as his father had done before him for many, many years."
    )
    time.sleep(3.0)  # idle since the tests before: the workers' resting size
    before = {pid: rss_mib(pid) for pid in worker_pids(server)}
    r = httpx.post(f"{server.url}/voice/batch", json={"text": " ".join([long_sentence] * 4)}, timeout=WAIT_S)
    assert r.status_code == 200, r.text
    assert_speech(r.content, min_seconds=20.0)
    grown = {pid: rss_mib(pid) for pid in worker_pids(server)}
    time.sleep(5.0)
    after = {pid: rss_mib(pid) for pid in worker_pids(server)}
    assert set(after) == set(before), "a worker was replaced"
    assert sum(after.values()) < sum(before.values()) + 60, (before, grown, after)


def test_crashing_text_through_batch_and_openai_routes(server: ServerProcess) -> None:
    before = restarts(server)
    r = httpx.post(server.url + "/voice/batch", json={"text": CRASHERS["alphabet_x4"]}, timeout=WAIT_S * 3)
    assert r.status_code == 200, r.text
    assert_speech(r.content, min_seconds=2.0)
    r = httpx.post(
        server.url + "/v1/audio/speech",
        json={"model": "tts-1", "voice": "alloy", "input": CRASHERS["ie_x50"], "response_format": "wav"},
        timeout=WAIT_S * 3,
    )
    assert r.status_code == 200, r.text
    assert_speech(r.content, min_seconds=2.0)
    assert_alive(server)
    assert restarts(server) == before


async def test_crashing_text_through_read_stream_with_word_marks(server: ServerProcess) -> None:
    text = "Spell it: " + CRASHERS["a_dot_x100"] + " Done."
    c = await connect(server)
    try:
        await c.send("start", text=text, word_marks=True)
        done = await c.until("complete", "error")
        assert done["type"] == "complete", done
        assert speech_ratio(pcm_to_float(bytes(c.pcm)), 24000) > 0.2
        # Word marks still point at the right characters: the pre-pass never moves one.
        words = [e for e in c.events("mark") if e["kind"] == "word"]
        assert [text[w["char_start"] : w["char_end"]] for w in words][:3] == ["Spell", "it", "a"]
        assert all(text[w["char_start"] : w["char_end"]] == w["word"] for w in words)
        assert sum(1 for w in words if w["word"] == "a") == 100
    finally:
        await c.ws.close()
    assert_alive(server)


# One long sentence (a few seconds of rendering) so that a kill lands while a worker is busy with it.
LONG_SENTENCE = (
    "The committee reviewed the long report about the harbour and the railway and the old market hall "
    "and the new school and the bridge over the river and the park near the station before it agreed "
    "to meet again in the spring"
)
KILL_TRIES = 3  # a kill can land just after the render ended (then nothing fails): try again


def _busy_worker(server: ServerProcess, deadline: float) -> int:
    """The worker that is rendering right now: its CPU time grows in four 50 ms windows in a row. An idle
    worker blocks on a read (no CPU at all) but spins for about 100 ms after each job (onnxruntime's
    thread pool): a streak is needed to tell the two apart."""
    last: dict[int, int] = {}
    streak: dict[int, int] = {}
    while time.monotonic() < deadline:
        for pid in worker_pids(server):
            try:
                ticks = cpu_ticks(pid)
            except FileNotFoundError:
                continue
            grew = pid in last and ticks > last[pid]
            streak[pid] = streak.get(pid, 0) + 1 if grew else 0
            last[pid] = ticks
            if streak[pid] >= 4:
                return pid
        time.sleep(0.05)
    raise AssertionError("no worker started rendering")


def kill_mid_request(server: ServerProcess, path: str, body: dict[str, object]) -> tuple[httpx.Response, int]:
    """POST `body` and SIGSEGV the worker rendering it: the response of the first request a kill hit, and
    how many workers were killed to get there."""
    workers = len(worker_pids(server))
    assert workers >= 1
    for kills in range(1, KILL_TRIES + 1):
        result: dict[str, httpx.Response] = {}

        def post(out: dict[str, httpx.Response] = result) -> None:
            out["r"] = httpx.post(server.url + path, json=body, timeout=WAIT_S * 3)

        request = threading.Thread(target=post)
        request.start()
        victim = _busy_worker(server, time.monotonic() + WAIT_S)
        os.kill(victim, signal.SIGSEGV)
        request.join(WAIT_S * 3)
        assert not request.is_alive()
        _wait_for_workers(server, workers, victim)  # replaced by a fresh process
        if result["r"].status_code != 200:
            return result["r"], kills
        # The render had finished before the signal arrived: the worker died idle. Try again.
    raise AssertionError(f"no kill landed mid-request in {KILL_TRIES} tries")


def wait_restarts(server: ServerProcess, expected: float) -> None:
    """A death found while idle is counted by the pool's watch (within a second), not by a request."""
    deadline = time.monotonic() + WAIT_S
    while restarts(server) < expected and time.monotonic() < deadline:
        time.sleep(0.1)
    assert restarts(server) == expected


def _wait_for_workers(server: ServerProcess, count: int, gone: int) -> None:
    """Until `gone` is replaced and every worker is idle (done loading: its CPU time stands still)."""
    deadline = time.monotonic() + WAIT_S * 3
    while time.monotonic() < deadline:
        pids = worker_pids(server)
        if len(pids) == count and gone not in pids:
            ticks = [cpu_ticks(pid) for pid in pids]
            time.sleep(0.3)
            if ticks == [cpu_ticks(pid) for pid in pids]:
                return
        time.sleep(0.2)
    raise AssertionError(f"workers not replaced: {worker_pids(server)}")


async def test_a_worker_killed_mid_request_fails_that_request_only(server: ServerProcess) -> None:
    # A session opened before the crash must be unaffected by it.
    bystander = await connect(server)
    try:
        await bystander.send("ping", id=1)
        assert (await bystander.event())["type"] == "pong"
        before = restarts(server)
        r, kills = await asyncio.to_thread(kill_mid_request, server, "/read", {"text": LONG_SENTENCE})
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "synthesis_failed"
        # Every death counted once: the one that failed the request, and any earlier one that found the
        # worker idle.
        await asyncio.to_thread(wait_restarts, server, before + kills)
        assert_alive(server)

        # The next request succeeds, and the session opened before the crash still streams.
        r = await asyncio.to_thread(
            httpx.post, server.url + "/read", json={"text": "Back to normal."}, timeout=WAIT_S * 3
        )
        assert r.status_code == 200, r.text
        assert_speech(r.content)
        await bystander.send("start", text="Still here. Still reading.")
        done = await bystander.until("complete", "error")
        assert done["type"] == "complete", done
        assert speech_ratio(pcm_to_float(bytes(bystander.pcm)), 24000) > 0.2
    finally:
        await bystander.ws.close()


async def test_a_worker_killed_mid_stream_is_an_error_event_and_the_connection_goes_on(
    server: ServerProcess,
) -> None:
    c = await connect(server)
    try:
        workers = len(worker_pids(server))
        text = " ".join([LONG_SENTENCE + "."] * 6)
        for _ in range(KILL_TRIES):
            before = restarts(server)
            await c.send("start", text=text)
            await c.first_audio()
            victim = await asyncio.to_thread(_busy_worker, server, time.monotonic() + WAIT_S)
            os.kill(victim, signal.SIGSEGV)
            event = await c.until("error", "complete")
            await asyncio.to_thread(wait_restarts, server, before + 1)
            await asyncio.to_thread(_wait_for_workers, server, workers, victim)
            if event["type"] == "complete":
                continue  # the kill found the worker idle: it was replaced and the stream went on
            assert event["code"] == "synthesis_failed", event
            break
        else:
            pytest.fail(f"no kill landed mid-stream in {KILL_TRIES} tries")
        # The connection stays usable: a new stream plays to the end.
        await c.send("start", text="A new stream after the crash.")
        done = await c.until("complete", "error")
        assert done["type"] == "complete", done
    finally:
        await c.ws.close()
    assert_alive(server)


@pytest.fixture(scope="module")
def engine_server() -> Iterator[ServerProcess]:
    s = ServerProcess("engine-server")
    try:
        s.wait_ready()
        yield s
    finally:
        s.stop()


def test_engine_server_cpu_mode_survives_crashing_text_and_a_killed_worker(
    engine_server: ServerProcess,
) -> None:
    url = engine_server.url + "/v1/audio/speech"
    for text in (CRASHERS["a_dot_x100"], CRASHERS["accented_x60"]):
        r = httpx.post(url, json={"input": text, "response_format": "wav"}, timeout=WAIT_S * 3)
        assert r.status_code == 200, r.text
        assert_speech(r.content, min_seconds=2.0)
    r, _ = kill_mid_request(
        engine_server, "/v1/audio/speech", {"input": LONG_SENTENCE, "response_format": "wav"}
    )
    # vLLM's error dialect, as the real server answers a failed request: JSON, never a plain-text 500.
    assert r.status_code == 503, r.text
    err = r.json()["error"]
    assert err["code"] == 503 and err["type"] and "worker" in err["message"], err
    assert engine_server.proc.poll() is None, engine_server.log()
    r = httpx.post(url, json={"input": "Back to normal.", "response_format": "wav"}, timeout=WAIT_S * 3)
    assert r.status_code == 200, r.text
    assert_speech(r.content)


def test_one_worker_when_memory_is_tight() -> None:
    """PIPER_WORKERS=1 (a small deployment): one worker process, and it still speaks and still survives a
    crash (the pre-pass keeps crashing text away from it)."""
    s = ServerProcess("serve", env={"PIPER_WORKERS": "1", "TTS_JAPANESE": "false"})
    try:
        s.wait_ready()
        assert len(worker_pids(s)) == 1
        assert httpx.get(f"{s.url}/config", timeout=WAIT_S).json()["config"]["PIPER_WORKERS"] == 1
        for text in ("One worker speaks.", CRASHERS["alphabet_x4"]):
            r = httpx.post(f"{s.url}/read", json={"text": text}, timeout=WAIT_S)
            assert r.status_code == 200, r.text
            assert_speech(r.content)
        assert len(worker_pids(s)) == 1 and restarts(s) == 0
    finally:
        s.stop()
