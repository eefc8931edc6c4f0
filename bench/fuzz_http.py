"""Property-based fuzzing of every HTTP route from the gateway's own OpenAPI schema (schemathesis).

Positive cases (valid by the schema) and negative cases (violating it) go to a real gateway process.
A finding is any 5xx answer or a dropped connection; after each operation the gateway must still answer
/health. Prints the case count per route, statuses seen, findings and the rate.

    python bench/fuzz_http.py [--cases 10000] [--time-limit 900] [--url http://127.0.0.1:8004]
                              [--transport-rounds 2] [--pid PID]

Without --url it starts its own gateway (embedded engine) with MAX_TEXT_CHARS=2000, so a positive case
cannot ask for minutes of speech; longer texts are answered 400 by the limit, which is itself checked.

Then hostile transports (issue 18), on plain sockets (bench/hostile_clients.py): half-sent bodies while a
normal request must still be served (then 408 within HTTP_BODY_TIMEOUT_SECONDS), request heads sent a byte
at a time and silent connections (closed within HTTP_HEADER_TIMEOUT_SECONDS), a chunked body far over the
limit on every POST route (413 before 32 MiB past it; RSS growth when the gateway's pid is known), clients
that hang up on a synthesis (its slot back within 5 s) and HEAD on every GET route. `--transport-rounds 0`
skips them; against --url on another machine they are skipped too (plain sockets go to 127.0.0.1).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import requests
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import schemathesis
from schemathesis import GenerationMode

from bench.hostile_clients import (
    TransportResult,
    chunked_flood,
    half_sent_post,
    open_socket,
    read_answer,
    report_transport,
    rss_bytes,
    slow_head,
    wait_closed_by_server,
)
from tests.support import ServerProcess

MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)


@dataclass
class FuzzResult:
    cases: int = 0
    per_route: collections.Counter[str] = field(default_factory=collections.Counter)
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    server_errors: list[str] = field(default_factory=list)
    crashes: list[str] = field(default_factory=list)
    generator_errors: collections.Counter[str] = field(default_factory=collections.Counter)
    not_found: collections.Counter[str] = field(default_factory=collections.Counter)
    unsendable: int = 0  # cases the HTTP client itself refuses to send (e.g. a header with a newline)
    seconds: float = 0.0

    @property
    def findings(self) -> list[str]:
        return self.server_errors + self.crashes


def _alive(base_url: str, headers: dict[str, str]) -> bool:
    try:
        return httpx.get(base_url + "/health", headers=headers, timeout=30).status_code == 200
    except httpx.HTTPError:
        return False


def fuzz(
    base_url: str,
    total_cases: int,
    time_limit: float,
    headers: dict[str, str] | None = None,
    exclude_paths: tuple[str, ...] = (),
) -> FuzzResult:
    """Spread `total_cases` over every (operation, mode) pair; loop until reached or out of time.
    Routes whose inputs run out (no parameters) stop early: hypothesis does not repeat itself."""
    headers = headers or {}
    schema = schemathesis.openapi.from_url(base_url + "/openapi.json", headers=headers)
    ops = [r.ok() for r in schema.get_all_operations()]
    ops = [op for op in ops if op.path not in exclude_paths]
    result = FuzzResult()
    session = requests.Session()
    deadline = time.monotonic() + time_limit
    start = time.monotonic()
    exhausted: set[tuple[str, str]] = set()
    round_no = 0
    current = {"label": ""}
    while result.cases < total_cases and time.monotonic() < deadline:
        pairs = [(op, m) for op in ops for m in MODES if (op.label, m.value) not in exhausted]
        if not pairs:
            break
        per_pair = max(1, (total_cases - result.cases) // len(pairs))
        for op, mode in pairs:
            if result.cases >= total_cases or time.monotonic() > deadline:
                break
            before = result.cases
            label = current["label"] = f"{op.method.upper()} {op.path}"

            @settings(
                max_examples=per_pair,
                deadline=None,
                database=None,
                derandomize=False,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
                report_multiple_bugs=True,
            )
            @given(case=op.as_strategy(generation_mode=mode))
            def run(case: schemathesis.Case) -> None:
                if result.cases >= total_cases or time.monotonic() > deadline:
                    return
                label = current["label"]
                result.cases += 1
                result.per_route[label] += 1
                try:
                    response = case.call(base_url=base_url, session=session, headers=headers, timeout=120)
                except (requests.exceptions.InvalidHeader, requests.exceptions.InvalidURL, ValueError):
                    result.unsendable += 1
                    return
                except requests.exceptions.ConnectionError as exc:
                    result.crashes.append(f"{label}: {type(exc).__name__}: {exc}"[:300])
                    return
                result.statuses[response.status_code] += 1
                if response.status_code == 404:
                    result.not_found[label] += 1
                if response.status_code >= 500:
                    detail = f"{label} -> {response.status_code}: {response.text[:200]}"
                    result.server_errors.append(f"{detail} | {case.as_curl_command()}"[:800])

            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    run()
            except Unsatisfiable:
                pass
            except Exception as exc:  # a failure inside generation, not in the gateway: note, go on
                result.generator_errors[f"{type(exc).__name__}: {str(exc)[:120]}"] += 1
            if result.cases - before < per_pair:
                exhausted.add((op.label, mode.value))
            if not _alive(base_url, headers):
                result.crashes.append(f"gateway stopped answering /health after {label} ({mode.value})")
                result.seconds = time.monotonic() - start
                return result
        round_no += 1
    result.seconds = time.monotonic() - start
    return result


def report(result: FuzzResult) -> None:
    print(
        f"cases: {result.cases} in {result.seconds:.1f} s ({result.cases / max(result.seconds, 1e-9):.1f}/s)"
    )
    for route, n in sorted(result.per_route.items()):
        print(f"  {n:6d}  {route}")
    print("statuses:", dict(sorted(result.statuses.items())), "404 by route:", dict(result.not_found))
    print(f"unsendable by the client: {result.unsendable}")
    for err, n in result.generator_errors.items():
        print(f"  generator error x{n}: {err}")
    print(f"5xx: {len(result.server_errors)}  crashes: {len(result.crashes)}")
    for finding in result.findings[:20]:
        print("  FINDING", finding)


# -- hostile transports ------------------------------------------------------------------------------------

JSON_POSTS = {
    "/read": lambda text: {"text": text},
    "/voice/batch": lambda text: {"text": text},
    "/v1/audio/speech": lambda text: {"model": "tts-1", "voice": "alloy", "input": text},
}
POST_ROUTES = (*JSON_POSTS, "/voice/transcribe", "/v1/audio/transcriptions")
SERVER_ENV = {
    "MAX_TEXT_CHARS": "2000",
    "LOG_LEVEL": "warning",
    "MAX_STREAMS": "4",
    "HTTP_HEADER_TIMEOUT_SECONDS": "3",
    "HTTP_BODY_TIMEOUT_SECONDS": "5",
}


def _config(base_url: str, headers: dict[str, str]) -> dict[str, object]:
    return dict(httpx.get(base_url + "/config", headers=headers, timeout=30).json()["config"])


def _slots(base_url: str, headers: dict[str, str]) -> float:
    text = httpx.get(base_url + "/metrics", headers=headers, timeout=30).text
    line = next(x for x in text.splitlines() if x.startswith("voice_gateway_stream_slots_in_use"))
    return float(line.split()[-1])


def transport_fuzz(
    base_url: str, rounds: int = 2, headers: dict[str, str] | None = None, pid: int | None = None
) -> TransportResult:
    """Slow, stuck and oversized HTTP clients. Timeouts the gateway does not report (an older build) are
    assumed at their defaults, so the same run measures a gateway without the protections."""
    headers = headers or {}
    port = urlsplit(base_url).port or 80
    cfg = _config(base_url, headers)
    head_s = float(cfg.get("HTTP_HEADER_TIMEOUT_SECONDS", 10))  # type: ignore[arg-type]
    body_s = float(cfg.get("HTTP_BODY_TIMEOUT_SECONDS", 60))  # type: ignore[arg-type]
    max_streams = int(cfg.get("MAX_STREAMS", 64))  # type: ignore[call-overload]
    max_body = int(cfg.get("MAX_UPLOAD_BYTES", 25 << 20)) + (64 << 10)  # type: ignore[call-overload]
    max_chars = int(cfg.get("MAX_TEXT_CHARS", 2000))  # type: ignore[call-overload]
    result = TransportResult()
    start = time.monotonic()

    def finding(check: str, detail: str) -> None:
        result.findings.append(f"{check}: {detail}")

    for _ in range(rounds):
        # 1. Half-sent bodies, more than MAX_STREAMS of them: a normal request is still served.
        n = min(max(max_streams, 1) + 2, 24) if max_streams else 6
        started = time.monotonic()
        half = [half_sent_post(port, POST_ROUTES[i % len(POST_ROUTES)], headers) for i in range(n)]
        try:
            with ThreadPoolExecutor(n) as pool:
                answers = [pool.submit(read_answer, sock, started, body_s + 15) for sock in half]
                probe = httpx.post(
                    base_url + "/read", headers=headers, json={"text": "Still here."}, timeout=60
                )
                result.checks["slow body: others served"] += 1
                if probe.status_code != 200:
                    finding("slow body", f"{n} half-sent bodies: a normal POST /read got {probe.status_code}")
                late = [a.result() for a in answers]
            result.checks["slow body: timed out"] += n
            bad = [a for a in late if a.status != 408 or a.elapsed > body_s + 5]
            if bad:
                finding(
                    "slow body",
                    f"{len(bad)}/{n} not answered 408 within {body_s + 5:g} s: {bad[0].head[:60]!r}",
                )
            result.figures.append(
                f"{n} half-sent bodies -> statuses {sorted({a.status for a in late}, key=str)}"
            )
        finally:
            for sock in half:
                sock.close()

        # 2. Request heads a byte at a time; 3. connections that send nothing.
        got = slow_head(port, interval=0.25, timeout=head_s + 10, headers=headers)
        result.checks["slow head"] += 1
        if got.elapsed > head_s + 3:
            finding("slow head", f"still open after {got.elapsed:.1f} s (head timeout {head_s:g} s)")
        result.figures.append(f"slow head -> {got.status} after {got.elapsed:.1f} s")
        silent = [open_socket(port) for _ in range(4)]
        t0 = time.monotonic()
        closed = [wait_closed_by_server(sock, head_s + 5) for sock in silent]
        result.checks["silent connection"] += len(silent)
        if not all(closed):
            finding(
                "silent connection", f"{closed.count(False)}/4 still open after {time.monotonic() - t0:.1f} s"
            )
        for sock in silent:
            sock.close()

        # 4. A chunked body far over the limit, on every POST route.
        for path in POST_ROUTES:
            rss0 = rss_bytes(pid) if pid else 0
            got, sent = chunked_flood(port, path, max_body + (64 << 20), headers)
            grew = (rss_bytes(pid) - rss0) if pid else 0
            result.checks["chunked flood"] += 1
            if got.status != 413 or sent > max_body + (32 << 20):
                finding("chunked flood", f"{path}: {got.status} after {sent >> 20} MiB sent")
            if pid and grew > 50 << 20:
                finding("chunked flood", f"{path}: RSS grew {grew >> 20} MiB")
            took = f"{sent >> 20} MiB, {got.elapsed:.1f} s"
            result.figures.append(f"chunked {path} -> {got.status} after {took}, RSS +{grew >> 20} MiB")

        # 5. Hang-ups on syntheses: the slot comes back within 5 s.
        for path, body in JSON_POSTS.items():
            baseline = _slots(base_url, headers)
            payload = json.dumps(
                body(("Long enough to keep the engine busy for a while. " * 60)[: max_chars - 1])
            )
            sock = open_socket(port)
            extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            sock.sendall(
                (
                    f"POST {path} HTTP/1.1\r\nHost: x\r\n{extra}Content-Type: application/json\r\n"
                    f"Content-Length: {len(payload)}\r\n\r\n{payload}"
                ).encode()
            )
            time.sleep(1.0)
            sock.close()
            t0 = time.monotonic()
            while _slots(base_url, headers) > baseline and time.monotonic() - t0 < 5:
                time.sleep(0.1)
            freed = time.monotonic() - t0
            result.checks["hang-up"] += 1
            if _slots(base_url, headers) > baseline:
                finding("hang-up", f"{path}: slot still held 5 s after the client left")
            result.figures.append(f"hang-up {path} -> slot back after {freed:.2f} s")

        # 6. HEAD on every GET route answers like GET, without a body.
        spec = httpx.get(base_url + "/openapi.json", headers=headers, timeout=30).json()
        for path in [p for p, item in spec["paths"].items() if "get" in item and "{" not in p]:
            head = httpx.head(base_url + path, headers=headers, timeout=30)
            result.checks["HEAD"] += 1
            if head.status_code != 200 or head.content:
                finding("HEAD", f"{path}: {head.status_code}, {len(head.content)} body bytes")
    result.seconds = time.monotonic() - start
    if not _alive(base_url, headers):
        result.findings.append("gateway stopped answering /health after the hostile transports")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--time-limit", type=float, default=900.0, help="seconds for the whole run")
    parser.add_argument("--url", default=None, help="fuzz a running gateway instead of starting one")
    parser.add_argument("--transport-rounds", type=int, default=2, help="rounds of hostile transports")
    parser.add_argument("--pid", type=int, default=None, help="the --url gateway's pid, for RSS figures")
    args = parser.parse_args()
    server = None
    url = args.url
    pid = args.pid
    if url is None:
        server = ServerProcess("serve", env=SERVER_ENV)
        server.wait_ready()
        url, pid = server.url, server.proc.pid
    transport = TransportResult()
    try:
        result = fuzz(url, args.cases, args.time_limit) if args.cases else FuzzResult()
        report(result)
        if args.transport_rounds and urlsplit(url).hostname in ("127.0.0.1", "localhost"):
            transport = transport_fuzz(url, args.transport_rounds, pid=pid)
            report_transport(transport)
        if server is not None and server.proc.poll() is not None:
            print("gateway process exited:", server.proc.returncode)
            return 1
    finally:
        if server is not None:
            server.stop()
    ok = not result.findings and result.cases >= args.cases and not transport.findings
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
