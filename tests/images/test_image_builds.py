"""The gateway and operator images built for real (buildah, no Docker daemon) and run as their user.

The base is a debootstrap stand-in for python:3.11-slim-bookworm (scripts/setup.d/80-image-builder.sh); layers
are cached under ~/.cache/voice-gateway-images, so only a changed step rebuilds: the gateway's first build
compiles llama-cpp-python (27 minutes measured, niced, on 2 cores under heavy load) in a step whose only
inputs are pyproject.toml and the two packages' __init__.py; with every layer cached both tests take 1.5 min.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.images import buildah
from tests.support import REPO, decode_wav, free_port, speech_ratio

pytestmark = pytest.mark.slow

GATEWAY = "localhost/voice-gateway:ci"
OPERATOR = "localhost/voice-gateway-operator:ci"
GATEWAY_BUILD_S = 3000.0
OPERATOR_BUILD_S = 900.0
UID = "10001"
READY_S = 300.0  # model loading: generous for a machine under heavy load


@pytest.fixture(scope="module")
def builder() -> None:
    reason = buildah.require_builder()
    if reason:
        pytest.skip(reason)


def _uid_of(pid: int) -> str:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"^Uid:\s+(\d+)", status, flags=re.M)
    assert found, status
    return found.group(1)


def _session_pids(sid: int, inside: bool = False) -> list[int]:
    """Processes of session sid; with inside, only those in another mount namespace (the container's)."""
    own_ns = os.readlink("/proc/self/ns/mnt")
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == sid and (
                    not inside or os.readlink(f"/proc/{entry}/ns/mnt") != own_ns
                ):
                    pids.append(int(entry))
            except (ProcessLookupError, FileNotFoundError):
                continue
    return pids


def _argv0(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except FileNotFoundError:
        return b""


def _stop_session(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to every process of the session, SIGKILL to what lingers.

    Signalling buildah's process group is not enough: `buildah run` puts the container's process in a group of
    its own (same session), and it outlives a killed buildah.
    """
    for sig, wait_s in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
        for pid in _session_pids(proc.pid):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                continue
        deadline = time.monotonic() + wait_s
        while _session_pids(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not _session_pids(proc.pid):
            break
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def gateway_image(builder: None) -> str:
    buildah.build("images/gateway/Dockerfile", GATEWAY, GATEWAY_BUILD_S)
    return GATEWAY


@pytest.fixture(scope="module")
def operator_image(builder: None) -> str:
    buildah.build("images/operator/Dockerfile", OPERATOR, OPERATOR_BUILD_S)
    return OPERATOR


@pytest.fixture(scope="module")
def gateway_container(gateway_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The image's own ENTRYPOINT + CMD as its own USER, on a loopback port instead of 0.0.0.0:8004."""
    config = buildah.image_config(gateway_image)
    assert config.user == f"{UID}:{UID}", config.user
    cmd = list(config.cmd)
    port = free_port()
    for flag, value in (("--host", "127.0.0.1"), ("--port", str(port))):
        assert flag in cmd, cmd
        cmd[cmd.index(flag) + 1] = value
    ctr = buildah.Container(gateway_image)
    log = tmp_path_factory.mktemp("gateway-image") / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ctr.argv(config.user, [*config.entrypoint, *cmd]),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_S
        while True:
            assert proc.poll() is None, (
                f"the image's server exited {proc.returncode}:\n{log.read_text()[-5000:]}"
            )
            try:
                if httpx.get(url + "/health", timeout=3).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (
                f"no /health 200 in {READY_S:.0f} s:\n{log.read_text()[-5000:]}"
            )
            time.sleep(0.5)
        # every process inside the image's root (tini and the server) runs as the image's user, not as root
        inside = [pid for pid in _session_pids(proc.pid, inside=True) if b"buildah" not in _argv0(pid)]
        assert inside and {_uid_of(p) for p in inside} == {UID}, {p: _uid_of(p) for p in inside}
        yield url
    finally:
        _stop_session(proc)
        ctr.close()
    assert not _session_pids(proc.pid), "processes of the image's server outlived it"


@pytest.mark.timeout(GATEWAY_BUILD_S + READY_S + 300)
def test_gateway_image_serves_health_and_speaks(gateway_container: str) -> None:
    health = httpx.get(gateway_container + "/health", timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "ok", health.text
    r = httpx.post(
        gateway_container + "/read",
        json={"text": "The image builds and speaks.", "language": "en"},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    wav = decode_wav(r.content)
    assert wav.sample_rate == 24000 and 0.8 < wav.duration < 10.0, wav.duration
    assert wav.rms > 0.01 and speech_ratio(wav.samples, wav.sample_rate) > 0.3


@pytest.mark.timeout(OPERATOR_BUILD_S + 300)
def test_operator_image_renders_as_its_user(operator_image: str) -> None:
    config = buildah.image_config(operator_image)
    assert config.user == f"{UID}:{UID}", config.user
    ctr = buildah.Container(operator_image)
    try:
        example = "/examples/voicegateway-gpu.yaml"
        argv = ctr.argv(
            config.user,
            [*config.entrypoint, "render", "-f", example],
            volumes=(f"{REPO / 'examples'}:/examples:ro",),
        )
        out = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        assert out.returncode == 0, out.stderr
        who = subprocess.run(
            ctr.argv(config.user, ["id", "-u"]), capture_output=True, text=True, timeout=60, check=False
        )
        assert who.stdout.strip() == UID, who.stdout + who.stderr
    finally:
        ctr.close()
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ConfigMap"} <= kinds, kinds
    # the image renders what the build context's own source renders on the host: the same source went in
    host = subprocess.run(
        [
            sys.executable,
            "-m",
            "voice_operator",
            "render",
            "-f",
            str(REPO / "examples" / "voicegateway-gpu.yaml"),
        ],
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "operator"), str(REPO)])},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert host.returncode == 0, host.stderr
    assert out.stdout == host.stdout
