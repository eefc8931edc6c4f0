"""EMBEDDED_LLM_MODEL_PATH (issue 21): an operator's own GGUF chat model, prompted with the chat template in
its metadata. Tested with the shipped SmolLM2 file reached through that setting (under another name, so the
path is what the gateway loads), in a real gateway process answering a real /v1/realtime text conversation;
a missing or non-GGUF file stops start-up with a message naming the variable."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI

from gateway.engines.embedded.llm import bundled_model_path
from tests.support import REPO, ServerProcess

WAIT_S = 90  # a bound for a loaded machine; a text reply takes about a second when quiet
MODEL_NAME = "operator-chat-model.gguf"

pytestmark = pytest.mark.timeout(400)


@pytest.fixture(scope="module")
def custom_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    model = tmp_path_factory.mktemp("models") / MODEL_NAME
    model.symlink_to(bundled_model_path())
    server = ServerProcess("serve", env={"EMBEDDED_LLM_MODEL_PATH": str(model), "EMBEDDED_LLM_THREADS": "1"})
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def test_the_configured_file_is_the_conversation_model(custom_gateway: ServerProcess) -> None:
    models = httpx.get(f"{custom_gateway.url}/models", timeout=10).json()["models"]
    omni = [m for m in models if m["role"] == "omni"]
    assert omni and omni[0]["id"] == MODEL_NAME and omni[0]["state"] == "ready", models
    config = httpx.get(f"{custom_gateway.url}/config", timeout=10).json()["config"]
    assert config["EMBEDDED_LLM_MODEL_PATH"].endswith(MODEL_NAME) and config["EMBEDDED_LLM_THREADS"] == 1


async def say(conn: Any, text: str) -> str:
    """One user text item and the model's text reply to it."""
    await conn.conversation.item.create(
        item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    )
    await conn.response.create(response={"max_output_tokens": 60})
    while True:
        ev = await asyncio.wait_for(conn.recv(), WAIT_S)
        assert ev.type != "error", ev
        if ev.type == "response.output_text.done":
            reply = str(ev.text)
        if ev.type == "response.done":
            assert ev.response.status == "completed", ev
            return reply


async def test_a_text_conversation_through_the_configured_model(custom_gateway: ServerProcess) -> None:
    client = AsyncOpenAI(base_url=custom_gateway.url + "/v1", api_key="sk-test", max_retries=0)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        assert (await asyncio.wait_for(conn.recv(), WAIT_S)).type == "session.created"
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        assert (await asyncio.wait_for(conn.recv(), WAIT_S)).type == "session.updated"
        capital = await say(conn, "What is the capital of France?")
        assert "paris" in capital.lower(), capital
        # A second turn: the conversation so far goes through the GGUF's own chat template again.
        legs = await say(conn, "How many legs does a spider have?")
        assert "8" in legs or "eight" in legs.lower(), legs


def start_with(path: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EMBEDDED_LLM_MODEL_PATH": path}
    return subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--port", "1"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_missing_model_file_stops_start_up_naming_the_setting(tmp_path: Path) -> None:
    proc = start_with(str(tmp_path / "no-such-model.gguf"))
    assert proc.returncode == 2, proc.stderr
    assert "EMBEDDED_LLM_MODEL_PATH" in proc.stderr and "no such file" in proc.stderr


def test_a_file_that_is_not_gguf_stops_start_up(tmp_path: Path) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"<html>a download error page, not a model</html>")
    proc = start_with(str(fake))
    assert proc.returncode == 2, proc.stderr
    assert "EMBEDDED_LLM_MODEL_PATH" in proc.stderr and "not a GGUF model file" in proc.stderr
    proc = start_with(str(tmp_path))  # a directory
    assert proc.returncode == 2 and "EMBEDDED_LLM_MODEL_PATH" in proc.stderr, proc.stderr
