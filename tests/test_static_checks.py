"""The project's static checks, as CI runs them: `ruff check`, `ruff format --check` and `mypy` over the
gateway and the operator, each with the one configuration in pyproject.toml. A failure prints the tool's
own report, so the fix starts from the test log."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support import REPO

# A cold mypy run (no .mypy_cache) takes about 20 s on 2 cores; the bound leaves room for a busy machine.
TOOL_TIMEOUT_S = 300

CHECKS = {
    "ruff-check": [sys.executable, "-m", "ruff", "check", "--no-fix", "."],
    "ruff-format": [sys.executable, "-m", "ruff", "format", "--check", "."],
    "mypy": [
        sys.executable,
        "-m",
        "mypy",
        "--config-file",
        "pyproject.toml",
        "gateway",
        "operator/voice_operator",
    ],
}


@pytest.mark.timeout(TOOL_TIMEOUT_S + 30)
@pytest.mark.parametrize("name", list(CHECKS))
def test_static_check_is_clean(name: str) -> None:
    proc = subprocess.run(
        CHECKS[name],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_S,
        check=False,
    )
    report = (proc.stdout + proc.stderr).strip()
    rc = proc.returncode  # a plain int: pytest's assertion report then shows the tool's output only
    assert rc == 0, f"{name} exited {rc}:\n{report}"
