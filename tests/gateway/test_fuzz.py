"""Fuzzing in the normal suite, kept small: a few hundred schema-generated HTTP cases (schemathesis) and
150 hostile WebSocket messages per protocol (/read/stream, /voice, /v1/realtime) against the session
gateway. The big runs are `python bench/fuzz_http.py` (10,000 cases) and `python bench/fuzz_ws.py`;
see docs/hardening.md."""

from __future__ import annotations

import asyncio

from bench import fuzz_http, fuzz_ws
from tests.support import ServerProcess


def test_http_routes_never_answer_5xx(gateway: ServerProcess) -> None:
    result = fuzz_http.fuzz(gateway.url, total_cases=300, time_limit=240)
    fuzz_http.report(result)
    assert not result.findings, result.findings
    assert result.cases >= 250  # every generated case reached the server
    assert {400, 422} <= set(result.statuses)  # negative cases really were refused, not all accepted
    assert gateway.proc.poll() is None


def test_websocket_protocols_survive_hostile_messages(gateway: ServerProcess) -> None:
    result = asyncio.run(fuzz_ws.fuzz(gateway.url, cases_per_protocol=150, time_limit=240, seed=3))
    fuzz_ws.report(result)
    assert not result.findings, result.findings
    assert result.total == 150 * len(fuzz_ws.PROTOCOLS)  # /read/stream, /voice, /v1/realtime
    assert {"invalid_json", "binary_not_allowed", "odd_length_frame"} <= set(result.errors_seen)
    assert result.closes.get(1009, 0) >= 1  # oversized frames were among them and closed cleanly
    assert gateway.proc.poll() is None
