"""Daemonless image builds for the tests: Debian's buildah on the container storage and base that
scripts/setup.d/80-image-builder.sh prepares (a debootstrap stand-in for python:3.11-slim-bookworm)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support import REPO

CACHE = Path(os.environ.get("VOICE_GATEWAY_IMAGES_CACHE") or Path.home() / ".cache" / "voice-gateway-images")
BASE = "localhost/python-standin:3.11-slim-bookworm"
SETUP = "scripts/setup.d/80-image-builder.sh"


def driver() -> str:
    """The storage driver the set-up chose here (overlay, else vfs)."""
    chosen = CACHE / "driver"
    assert chosen.exists(), f"no image builder set up: run {SETUP}"
    return chosen.read_text().strip()


def command(*args: str) -> list[str]:
    d = driver()
    store = [
        "--root",
        str(CACHE / f"storage-{d}"),
        "--runroot",
        str(CACHE / f"run-{d}"),
        "--storage-driver",
        d,
    ]
    return ["buildah", *store, *args]


def run(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command(*args), capture_output=True, text=True, timeout=timeout, check=False)


def missing_capability() -> str | None:
    """Why buildah cannot run a container here (None when it can); any other failure is the test's to report.

    `buildah run --isolation chroot` needs a mount namespace and chroot(2) (CAP_SYS_ADMIN, CAP_SYS_CHROOT):
    a container without them refuses with "operation not permitted".
    """
    ctr = run("from", "--pull=never", BASE)
    if ctr.returncode != 0:
        return None  # no base: the caller fails with the set-up hint
    try:
        probe = run("run", "--isolation", "chroot", ctr.stdout.strip(), "--", "true")
    finally:
        run("rm", ctr.stdout.strip())
    denied = ("operation not permitted", "permission denied")
    if probe.returncode != 0 and any(d in probe.stderr.lower() for d in denied):
        return f"buildah run --isolation chroot is refused here: {probe.stderr.strip()[-400:]}"
    return None


def require_builder() -> str | None:
    """None when images can be built and run; a skip reason when this machine lacks the capability.

    A missing buildah or base is a set-up error, not a skip: the assertion names the script that provides it.
    """
    if os.geteuid() != 0:  # before the set-up checks: the set-up builds nothing for another user
        return (
            f"not root: debootstrap and buildah's chroot isolation need root ({SETUP} skips for other users)"
        )
    assert shutil.which("buildah"), f"buildah is not installed: run {SETUP}"
    assert run("inspect", "--type", "image", BASE).returncode == 0, f"no base image {BASE}: run {SETUP}"
    return missing_capability()


def build(dockerfile: str, tag: str, timeout: float) -> None:
    """`buildah bud` as CI runs it: chroot isolation, cached layers, niced (it compiles on shared cores)."""
    argv = [
        "nice",
        "-n",
        "10",
        *command(
            "bud",
            "--isolation",
            "chroot",
            "--layers",
            "--pull=never",
            "--build-arg",
            f"PYTHON_IMAGE={BASE}",
            "-f",
            dockerfile,
            "-t",
            tag,
            str(REPO),
        ),
    ]
    log = CACHE / f"build-{tag.rpartition('/')[2].replace(':', '-')}.log"
    with log.open("w") as out:
        rc = subprocess.run(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, timeout=timeout).returncode
    assert rc == 0, f"buildah bud {dockerfile} failed ({rc}):\n{log.read_text(errors='replace')[-6000:]}"


@dataclass(frozen=True)
class ImageConfig:
    user: str
    entrypoint: list[str]
    cmd: list[str]
    env: dict[str, str]


def image_config(tag: str) -> ImageConfig:
    out = run("inspect", "--type", "image", tag)
    assert out.returncode == 0, out.stderr
    config: dict[str, Any] = json.loads(out.stdout)["OCIv1"]["config"]
    env = dict(e.partition("=")[::2] for e in config.get("Env") or [])
    return ImageConfig(config.get("User", ""), config.get("Entrypoint") or [], config.get("Cmd") or [], env)


class Container:
    """A working container from an image; removed on close."""

    def __init__(self, tag: str) -> None:
        out = run("from", "--pull=never", tag)
        assert out.returncode == 0, out.stderr
        self.id = out.stdout.strip()

    def argv(self, user: str, words: list[str], volumes: tuple[str, ...] = ()) -> list[str]:
        vols = [arg for v in volumes for arg in ("--volume", v)]
        return command("run", "--isolation", "chroot", "--user", user, *vols, self.id, "--", *words)

    def close(self) -> None:
        run("rm", self.id)
