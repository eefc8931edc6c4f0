"""README's first command, exactly as written, on a clean copy of the repository (fresh HOME and venv).

It runs until `/health` answers 200 and `POST /read` returns real speech, then the command's whole process
group is stopped. pip's cache is the project set-up's own (PIP_CACHE_DIR), so the llama-cpp-python wheel that
set-up compiled is reused and a second run only installs; a first run on a bare machine downloads everything.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support import REPO, decode_wav, free_port, speech_ratio

# A bound that proves the property, not speed: a cold pip cache downloads ~1 GB and compiles llama-cpp-python.
INSTALL_AND_START_S = 1800.0
REAL_PIP_CACHE = Path(os.environ.get("PIP_CACHE_DIR") or Path.home() / ".cache" / "pip")


def readme_command(n: int) -> str:
    """The n-th (1-based) fenced bash block of the README's set-up section: one line, verbatim."""
    text = (REPO / "README.md").read_text()
    section = re.search(r"^## Set-up.*?(?=^## )", text, flags=re.S | re.M)
    assert section, "README.md has no '## Set-up' section"
    blocks = re.findall(r"^```bash\n(.*?)^```", section.group(0), flags=re.S | re.M)
    assert len(blocks) >= n, f"README set-up has {len(blocks)} bash blocks"
    lines = [ln for ln in blocks[n - 1].splitlines() if ln.strip()]
    assert len(lines) == 1, f"README command {n} is not one line: {lines}"
    return lines[0]


def copy_checkout(dest: Path) -> None:
    """The files a fresh clone would have (tracked, plus new files not ignored), nothing built."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout.split(b"\0")
    for raw in filter(None, listed):
        rel = os.fsdecode(raw)
        src = REPO / rel
        if not src.exists() and not src.is_symlink():
            continue  # deleted in the work tree, not yet in the index
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            target.symlink_to(os.readlink(src))
        else:
            shutil.copy2(src, target)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    checkout: Path

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the command's process group (bash, pip or the server), SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def readme_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    command = readme_command(1)
    assert "--port" not in command, "command 1 names a port: the test would need to rewrite it"
    root = tmp_path_factory.mktemp("readme-install")
    checkout, home = root / "checkout", root / "home"
    home.mkdir()
    copy_checkout(checkout)
    assert not (checkout / ".venv").exists()
    port = 8004 if port_free(8004) else free_port()
    keep = ("PATH", "LANG", "LC_ALL", "TMPDIR", "PIP_FIND_LINKS", "PIP_DEFAULT_TIMEOUT")
    env = {k: v for k, v in os.environ.items() if k in keep or k.endswith(("_CA_BUNDLE", "_CERT", "_CERTS"))}
    # a PATH with a virtualenv's bin first would let `python3` in the command be that venv's
    if venv := os.environ.get("VIRTUAL_ENV"):
        env["PATH"] = os.pathsep.join(
            p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(venv)
        )
    env |= {
        "HOME": str(home),
        "PIP_CACHE_DIR": str(REAL_PIP_CACHE),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": str(port),
        "LOG_FORMAT": "text",
    }
    log = root / "command.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["bash", "-c", command],
            cwd=checkout,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    running = Running(proc, f"http://127.0.0.1:{port}", log, checkout)
    try:
        deadline = time.monotonic() + INSTALL_AND_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"README command 1 exited with {proc.returncode}:\n{running.tail()}")
            try:
                if httpx.get(running.url + "/health", timeout=3).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"no /health 200 within {INSTALL_AND_START_S:.0f} s:\n{running.tail()}")
            time.sleep(1.0)
        yield running
    finally:
        stop_group(proc)
        shutil.rmtree(checkout / ".venv", ignore_errors=True)


@pytest.mark.slow
@pytest.mark.timeout(INSTALL_AND_START_S + 300)
def test_readme_command_1_installs_into_a_fresh_venv_and_speaks(readme_gateway: Running) -> None:
    health = httpx.get(readme_gateway.url + "/health", timeout=10)
    assert health.status_code == 200, health.text
    r = httpx.post(
        readme_gateway.url + "/read",
        json={"text": "The quick brown fox jumps over the lazy dog.", "language": "en"},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("audio/wav")
    wav = decode_wav(r.content)
    assert wav.sample_rate == 24000 and wav.channels == 1
    assert 1.0 < wav.duration < 10.0, wav.duration
    assert wav.rms > 0.01, wav.rms
    assert speech_ratio(wav.samples, wav.sample_rate) > 0.3
    # the server answering is the one the command installed: the copy's .venv script, in the command's session
    assert any(
        argv[i].endswith(b".venv/bin/voice-gateway")
        and argv[i + 1 : i + 2] == [b"serve"]
        and cwd == readme_gateway.checkout.resolve()
        for cwd, argv in session_processes(readme_gateway.proc.pid)
        for i in range(len(argv))
    ), "no `.venv/bin/voice-gateway serve` from the copy in the command's session"


def session_processes(sid: int) -> Iterator[tuple[Path, list[bytes]]]:
    """(working directory, argv) of each process in session sid."""
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit():
            continue
        try:
            if os.getsid(int(proc_dir.name)) != sid:
                continue
            yield (proc_dir / "cwd").resolve(), (proc_dir / "cmdline").read_bytes().split(b"\0")
        except (ProcessLookupError, PermissionError, FileNotFoundError):
            continue
