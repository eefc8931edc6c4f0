"""One real `voice-gateway engine-server` and one gateway with VOICE_ENGINE=vllm-omni in front of it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import ServerProcess

CLIP_TEXT = "The quick brown fox jumps over the lazy dog near the quiet river bank."


@pytest.fixture(scope="session")
def engine_server() -> Iterator[ServerProcess]:
    """The engine server; while it loads, connections must be refused and never answered (vLLM's way)."""
    server = ServerProcess("engine-server")
    observed: list[str] = []
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                raise RuntimeError(f"engine-server exited:\n{server.log()}")
            try:
                r = httpx.get(server.url + "/health", timeout=2)
            except httpx.ConnectError:
                observed.append("refused")
                time.sleep(0.1)
                continue
            observed.append(f"{r.status_code} {r.text}")
            break
        server.load_observations = observed  # type: ignore[attr-defined]
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def voices_dir(engine_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A mounted-voices directory: one reference clip (audio + exact transcript), made by real TTS."""
    root = tmp_path_factory.mktemp("voices")
    r = httpx.post(engine_server.url + "/v1/audio/speech", json={"input": CLIP_TEXT}, timeout=60)
    r.raise_for_status()
    (root / "narrator.wav").write_bytes(r.content)
    (root / "narrator.txt").write_text(CLIP_TEXT + "\n")
    (root / "narrator.json").write_text('{"language": "en", "description": "Narrator (reference clip)"}')
    return root


@pytest.fixture(scope="session")
def omni_gateway(engine_server: ServerProcess, voices_dir: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(
        "serve",
        env={
            "VOICE_ENGINE": "vllm-omni",
            "OMNI_SERVICE_URL": engine_server.url,
            "TTS_SERVICE_URL": engine_server.url,
            "TTS_VOICES_DIR": str(voices_dir),
            "BACKEND_POLL_INTERVAL": "1",
        },
    )
    try:
        server.wait_ready(timeout=60)
        yield server
    finally:
        server.stop()
