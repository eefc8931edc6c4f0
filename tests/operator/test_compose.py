"""The single-host Compose files (issue 20 §2): generated from the operator's plan and checked in (CI fails
on drift), valid against the Compose Specification's JSON schema, the seed's GPU layout, and the `cpu`
profile run for real without Docker: each service's own command, environment and port as a local process
on loopback, driven through one POST /read and one /voice turn."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import site
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from voice_operator.compose import render_compose
from voice_operator.render import render

from tests.gateway.voice_client import VoiceClient, aspoken
from tests.support import decode_wav, free_port, wer

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "deploy" / "compose"
SCHEMA = json.loads((COMPOSE / "compose-spec.json").read_text())
Obj = dict[str, Any]
QUESTION = "What is the capital of France?"


def _load(profile: str) -> Obj:
    doc = yaml.safe_load((COMPOSE / profile / "compose.yaml").read_text())
    assert isinstance(doc, dict)
    return doc


def _schema_errors(doc: Obj) -> list[str]:
    return [e.message for e in jsonschema.Draft7Validator(SCHEMA).iter_errors(doc)]


def test_checked_in_compose_files_are_what_the_cli_prints() -> None:
    # Their drift from the operator is checked with the chart's copies (tests/charts/test_chart_rbac_sync.py,
    # scripts/sync-generated.py --check); here: the generated file is exactly the documented command's output.
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "voice_operator",
            "render",
            "--format",
            "compose",
            "-f",
            "examples/voicegateway-cpu.yaml",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO / "operator")},
    )
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout == (COMPOSE / "cpu" / "compose.yaml").read_text()


@pytest.mark.parametrize("profile", ["gpu", "cpu"])
def test_compose_files_validate_against_the_compose_specification(profile: str) -> None:
    doc = _load(profile)
    assert _schema_errors(doc) == []
    # the schema does reject what Compose would: a misspelt key, a wrong depends_on condition
    bad = copy.deepcopy(doc)
    bad["services"]["gateway"]["healthchek"] = bad["services"]["gateway"].pop("healthcheck")
    bad["services"]["gateway"]["depends_on"]["omni-service"]["condition"] = "service_ready"
    assert len(_schema_errors(bad)) >= 2


def test_gpu_profile_is_the_seeds_single_gpu_host() -> None:
    doc = _load("gpu")
    svcs = doc["services"]
    assert list(svcs) == ["omni-service", "tts-service", "gateway"]
    shares = {}
    for name in ("omni-service", "tts-service"):
        s = svcs[name]
        (dev,) = s["deploy"]["resources"]["reservations"]["devices"]
        assert dev == {"driver": "nvidia", "device_ids": ["${GPU_DEVICE:-1}"], "capabilities": ["gpu"]}
        hc = s["healthcheck"]
        assert int(hc["start_period"].rstrip("s")) >= 3600  # a first download of the 26 GB checkpoint
        assert s["volumes"] == [
            {"type": "bind", "source": "${HF_HOME:-/mnt/aetherpro-extra1/hf}", "target": "/models/hf"}
        ]
        assert s["environment"]["HF_HOME"] == "/models/hf"
        (cfg,) = s["configs"]
        assert cfg["target"] == "/etc/vllm-omni/deploy.yaml"
        argv = s["entrypoint"] + s["command"]
        assert argv[:2] == ["vllm", "serve"] and argv[argv.index("--deploy-config") + 1] == cfg["target"]
        deploy = yaml.safe_load(doc["configs"][cfg["source"]]["content"])
        stages = deploy["stages"]
        # every stage on the one reserved card (device 0 inside the container is GPU_DEVICE on the host)
        assert {st["devices"] for st in stages} == {"0"}
        shares[name] = round(sum(st["gpu_memory_utilization"] for st in stages), 3)
    assert shares == {"omni-service": 0.65, "tts-service": 0.1}  # the seed: 65 % + 10 % of one card
    gw = svcs["gateway"]
    assert gw["ports"] == ["${GATEWAY_PORT:-8004}:8004"]
    assert gw["depends_on"] == {
        "omni-service": {"condition": "service_healthy"},
        "tts-service": {"condition": "service_healthy"},
    }
    env = gw["environment"]
    assert env["OMNI_SERVICE_URL"] == "http://omni-service:8000"  # the seed's defaults
    assert env["OMNI_WS_URL"] == "ws://omni-service:8000"
    assert env["TTS_SERVICE_URL"] == "http://tts-service:8001"
    assert env["GATEWAY_API_KEYS"].startswith("${GATEWAY_API_KEYS:?")  # the example's apiKeysSecret
    # the gateway sees the card (NVML gauges) without computing on it
    assert gw["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["utility"]


@pytest.mark.parametrize("example", ["voicegateway-gpu.yaml", "voicegateway-cpu.yaml"])
def test_compose_and_kubernetes_run_the_same_processes(example: str) -> None:
    vg = yaml.safe_load((REPO / "examples" / example).read_text())
    compose, _ = render_compose(vg)
    deployments = {
        o["metadata"]["labels"]["app.kubernetes.io/component"]: o
        for o in render(vg)
        if o["kind"] == "Deployment"
    }
    for comp, svc in zip(("omni", "tts", "gateway"), ("omni-service", "tts-service", "gateway"), strict=True):
        c = deployments[comp]["spec"]["template"]["spec"]["containers"][0]
        s = compose["services"][svc]
        assert s["entrypoint"] + s["command"] == c["command"] + c["args"]
        assert s["image"].endswith(c["image"] + "}") or s["image"] == c["image"]
        if comp != "gateway":
            assert s["environment"] == {e["name"]: e["value"] for e in c["env"]}


# ---------------------------------------------------------------- the cpu profile, for real


def _on_loopback(value: str, hosts: dict[str, tuple[int, int]]) -> str:
    """A compose value with the service host names (and their ports) rewritten to loopback ones."""
    for host, (port, local) in hosts.items():
        value = value.replace(f"{host}:{port}", f"127.0.0.1:{local}")
    return value


class LocalService:
    """One compose service as a local process: its entrypoint + command and environment, with host names
    and ports rewritten to loopback ones and its tmpfs /tmp a private directory."""

    def __init__(self, name: str, svc: Obj, ports: dict[str, tuple[int, int]], tmp: Path) -> None:
        self.name = name
        self.svc = svc
        self.port, self.local = ports[name]
        self.tmp = tmp / name
        self.tmp.mkdir()
        argv = [str(a) for a in svc["entrypoint"] + svc["command"]]
        argv = ["127.0.0.1" if a == "0.0.0.0" else a for a in argv]
        argv[argv.index("--port") + 1] = str(self.local)
        env = {k: _on_loopback(str(v), ports) for k, v in svc["environment"].items()}
        env = {k: str(self.tmp) + v[4:] if v.startswith("/tmp") else v for k, v in env.items()}
        self.log = (tmp / f"{name}.log").open("wb")
        self.proc = subprocess.Popen(
            argv,
            cwd=self.tmp,
            # HOME moves to the private /tmp (as in the container): where the project is installed in the
            # user's site (a user on Debian's python3, PEP 668), PYTHONUSERBASE keeps it importable.
            env={
                "PATH": os.environ["PATH"],
                "PYTHONUNBUFFERED": "1",
                "PYTHONUSERBASE": site.getuserbase(),
                **env,
            },
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def healthy(self) -> bool:
        """The service's own healthcheck command, pointed at the local port."""
        test = [t.replace(f":{self.port}/", f":{self.local}/") for t in self.svc["healthcheck"]["test"][1:]]
        if test[0] == "python3":
            test[0] = sys.executable
        return subprocess.run(test, capture_output=True, timeout=30).returncode == 0

    def wait_healthy(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            assert self.proc.poll() is None, f"{self.name} exited:\n{self.tail()}"
            if self.healthy():
                return
            time.sleep(1)
        raise AssertionError(f"{self.name} not healthy after {timeout} s:\n{self.tail()}")

    def tail(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def _start_order(services: Obj) -> list[str]:
    order: list[str] = []
    while len(order) < len(services):
        for name, svc in services.items():
            if name not in order and all(d in order for d in svc.get("depends_on", {})):
                order.append(name)
    return order


@pytest.fixture(scope="module")
def cpu_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    doc = _load("cpu")
    services = doc["services"]
    ports: dict[str, tuple[int, int]] = {}
    for name, svc in services.items():
        port = int((svc.get("expose") or [p.split(":")[-1] for p in svc.get("ports", [])])[0])
        ports[name] = (port, free_port())
    tmp = tmp_path_factory.mktemp("compose-cpu")
    started: list[LocalService] = []
    try:
        for name in _start_order(services):
            for dep, cond in services[name].get("depends_on", {}).items():
                assert cond == {"condition": "service_healthy"}
                next(s for s in started if s.name == dep).wait_healthy(240)
            started.append(LocalService(name, services[name], ports, tmp))
        gateway = started[-1]
        gateway.wait_healthy(120)
        yield f"http://127.0.0.1:{gateway.local}"
    finally:
        for s in reversed(started):
            s.stop()


def test_cpu_profile_reads_aloud(cpu_stack: str) -> None:
    r = httpx.post(f"{cpu_stack}/read", json={"text": "The compose stack speaks."}, timeout=120)
    assert r.status_code == 200, r.text
    wav = decode_wav(r.content)
    assert wav.sample_rate == 24000 and wav.duration > 0.5 and wav.rms > 0.01
    models = httpx.get(f"{cpu_stack}/health", timeout=10).json()
    assert models["components"]["omni"]["ready"] is True


def test_cpu_profile_answers_a_voice_turn(cpu_stack: str) -> None:
    async def turn() -> tuple[VoiceClient, dict[str, Any]]:
        client = await VoiceClient.connect(
            cpu_stack.replace("http://", "ws://"), turn_detection=None, max_response_tokens=24
        )
        try:
            await client.stream(await aspoken(cpu_stack, QUESTION))
            await client.send("audio.commit")
            return client, await client.wait_for("response.done")
        finally:
            await client.close()

    client, done = asyncio.run(asyncio.wait_for(turn(), 240))
    transcript = client.events("transcript")[0]
    assert wer(QUESTION, transcript["text"]) <= 0.2, transcript
    assert done["status"] == "completed" and done["text"].strip()
    assert done["audio_ms"] > 300 and len(client.audio) > 0
