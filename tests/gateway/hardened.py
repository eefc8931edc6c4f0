"""A gateway with every hardening knob set tight: keys from the environment and a mounted file,
two streams per key and three in total, a 2 s idle timeout, 64 KiB WebSocket messages, CORS for one origin."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from tests.support import ServerProcess

ENV_KEYS = ("env-key-alpha", "env-key-bravo")
FILE_KEY = "file-key-charlie"
ORIGIN = "https://reader.example"
MAX_STREAMS = 3
MAX_STREAMS_PER_KEY = 2
IDLE_SECONDS = 2.0
WS_MAX_BYTES = 64 * 1024


def hardened_server(tmp: Path) -> Iterator[ServerProcess]:
    key_file = tmp / "api-keys"
    key_file.write_text(f"# mounted from a Secret\n{FILE_KEY}\n")
    server = ServerProcess(
        "serve",
        env={
            "GATEWAY_API_KEYS": ",".join(ENV_KEYS),
            "GATEWAY_API_KEYS_FILE": str(key_file),
            "METRICS_REQUIRE_AUTH": "true",
            "MAX_STREAMS": str(MAX_STREAMS),
            "MAX_STREAMS_PER_KEY": str(MAX_STREAMS_PER_KEY),
            "WS_IDLE_TIMEOUT_SECONDS": str(IDLE_SECONDS),
            "WS_MAX_MESSAGE_BYTES": str(WS_MAX_BYTES),
            "CORS_ALLOW_ORIGINS": ORIGIN,
        },
    )
    server.key_file = key_file  # type: ignore[attr-defined]
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
