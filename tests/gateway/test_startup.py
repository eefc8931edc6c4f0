"""Start-up: invalid configuration fails fast naming the variable; /health says 503 while models load."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.settings import ConfigError, load_settings
from tests.support import REPO


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("AUDIO_SAMPLE_RATE", "not-a-number"),
        ("AUDIO_SAMPLE_RATE", "1000"),
        ("VOICE_ENGINE", "magic"),
        ("OMNI_SERVICE_URL", "omni-service:8000"),
        ("GPU_DEVICE", "-1"),
    ],
)
def test_invalid_environment_fails_at_start_naming_the_variable(var: str, value: str) -> None:
    env = {**os.environ, var: value}
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--port", "1"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert var in proc.stderr and "invalid configuration" in proc.stderr


def test_settings_redact_api_keys() -> None:
    settings = load_settings(GATEWAY_API_KEYS="secret-one,secret-two")
    cfg = settings.redacted()
    assert cfg["GATEWAY_API_KEYS"] == "***"
    assert "secret" not in repr(cfg) and "secret" not in repr(settings)
    with pytest.raises(ConfigError, match="AUDIO_SAMPLE_RATE"):
        load_settings(AUDIO_SAMPLE_RATE=5)


def test_health_is_503_and_synthesis_refused_while_models_load() -> None:
    # No lifespan (no `with`): the real engines exist but have not loaded, as during start-up.
    client = TestClient(create_app(load_settings()))
    r = client.get("/health")
    assert r.status_code == 503 and r.json()["status"] == "loading"
    assert r.json()["components"]["tts"]["state"] == "loading"
    r = client.post("/read", json={"text": "Too early."})
    assert r.status_code == 503 and r.json()["error"]["code"] == "engine_unavailable"
