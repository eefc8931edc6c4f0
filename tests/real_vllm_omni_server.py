"""A REAL vLLM-Omni 0.30.0 server (`vllm serve --omni`) in its own process group, on loopback.

Started the way the operator starts it on a GPU node (`--omni --deploy-config ... --served-model-name`), with
the CPU deploy configs and shrunken dummy-weight checkpoints of support/vllm_omni_cpu/. The API server spawns
an engine core and a worker per stage; `stop()` ends the whole process group by the leader's PID.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
from voice_operator.plan import OMNI_TOOL_FLAGS

from tests import vllm_omni_env as env
from tests.support import free_port


@dataclass(frozen=True)
class ServerSpec:
    kind: str  # "tts" | "omni"
    checkpoint: Path
    deploy_config: Path
    served_name: str
    flags: tuple[str, ...] = ()  # what the operator adds to this server's command line


TTS = ServerSpec("tts", env.TTS_CHECKPOINT, env.DEPLOY / "qwen3_tts.yaml", env.TTS_SERVED_NAME)
OMNI = ServerSpec(
    "omni", env.OMNI_CHECKPOINT, env.DEPLOY / "qwen3_omni_moe.yaml", env.OMNI_SERVED_NAME, OMNI_TOOL_FLAGS
)


class RealVllmOmni:
    def __init__(self, spec: ServerSpec, port: int | None = None) -> None:
        self.spec = spec
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.model = spec.served_name
        self.log_path = Path(tempfile.mkstemp(prefix=f"vllm-omni-{spec.kind}-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.ready_after: float | None = None

    @classmethod
    def attached(cls, spec: ServerSpec, url: str) -> RealVllmOmni:
        """A server someone else started (a developer's, kept between test runs): never stopped by us."""
        server = cls(spec, port=int(url.rsplit(":", 1)[1].strip("/")))
        server.url = url.rstrip("/")
        return server

    def start(self) -> RealVllmOmni:
        why = env.missing()
        if why:
            raise RuntimeError(why)
        cmd = [
            str(env.VLLM),
            "serve",
            str(self.spec.checkpoint),
            "--omni",
            "--deploy-config",
            str(self.spec.deploy_config),
            "--served-model-name",
            self.spec.served_name,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--stage-init-timeout",
            "900",
            *self.spec.flags,
        ]
        run_env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            "PYTHONUNBUFFERED": "1",
            # The tests' own interpreter settings must not leak into the venv's.
            "PYTHONPATH": "",
            "VIRTUAL_ENV": str(env.VENV),
        }
        log = self.log_path.open("ab")
        self.started_at = time.monotonic()
        self.ready_after = None
        self.proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=run_env, start_new_session=True, cwd=env.CACHE
        )
        log.close()
        return self

    def wait_ready(self, timeout: float = 900.0) -> None:
        """Ready = `/v1/models` answers 200 (the socket refuses connections while the stages load)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"vllm serve ({self.spec.kind}) exited {self.proc.returncode}:\n{self.log()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/v1/models", timeout=5).status_code == 200:
                    self.ready_after = time.monotonic() - self.started_at
                    return
            time.sleep(1.0)
        raise TimeoutError(f"vllm serve ({self.spec.kind}) not ready after {timeout:.0f} s:\n{self.log()}")

    def rss_bytes(self) -> int:
        """Summed RSS of the API server and every process it spawned (engine cores, workers)."""
        if self.proc is None or self.proc.poll() is not None:
            return 0
        try:
            root = psutil.Process(self.proc.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0
        total = 0
        for p in procs:
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total

    def log(self, tail: int = 8000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:]

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """End the whole process group (API server, engine cores, stage workers) by the leader's PID."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def stop(self, grace: float = 20.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.kill(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=grace)
        self.kill(signal.SIGKILL)  # stragglers of the group (stage processes) even when the leader is gone
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
