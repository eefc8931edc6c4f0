"""Sessions cut at every stage (before start, mid-synthesis, paused, mid-upload, mid-reply; TCP resets and
polite closes) leave nothing behind: the gateway's asyncio tasks and stream gauges return to their idle
values. The 1,000-session run with RSS checkpoints is `python bench/fault_bench.py`."""

from __future__ import annotations

import asyncio

import httpx

from bench import fault_bench
from tests.support import ServerProcess


def test_aborted_sessions_leave_no_task_or_stream_behind(gateway: ServerProcess) -> None:
    assert asyncio.run(fault_bench.aborted_sessions(gateway, 54, concurrency=6))
    gauges = fault_bench.gauges(gateway.url)
    assert gauges["voice_gateway_websocket_connections"] == 0
    assert all(v == 0 for k, v in gauges.items() if k.startswith("voice_gateway_active_streams"))
    assert httpx.get(gateway.url + "/health").status_code == 200
