"""Make PyPI's CUDA builds of torchvision/torchaudio/torchcodec importable beside CPU torch 2.13.0.

vllm-omni 0.30.0 pulls in torchvision 0.28.0, torchaudio 2.11.1 and torchcodec 0.17.0 from PyPI; their native
libraries link `libc10_cuda.so`, which a CPU torch does not have, and transformers' Qwen2-VL image processor
imports torchvision unconditionally, so `vllm serve` dies on import. Their pure-Python parts work without the
native libraries: torchcodec goes (audio decoding falls back to soundfile/PyAV), the native libraries of
torchaudio and torchvision move aside, and torchvision's fake-op registrations for `nms`/`qnms` (which need
its C++ ops) are skipped when those ops are absent. Idempotent; `--check` only verifies the imports.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

SITE = Path(sysconfig.get_paths()["purelib"])
ASIDE = SITE.parent / "vgw-moved-cuda-libs"
_FAKE_OPS = ("torchvision::nms", "torchvision::qnms")


def _move_aside(paths: list[Path]) -> None:
    ASIDE.mkdir(exist_ok=True)
    for path in paths:
        if path.exists():
            target = ASIDE / path.relative_to(SITE).as_posix().replace("/", "__")
            shutil.move(str(path), str(target))
            print(f"moved aside {path.relative_to(SITE)}")


def _guard_fake_registrations() -> None:
    meta = SITE / "torchvision" / "_meta_registrations.py"
    if not meta.exists():
        return
    text = meta.read_text()
    for op in _FAKE_OPS:
        plain = f'@torch.library.register_fake("{op}")\n'
        # A decorator may be any expression (PEP 614): register only where the C++ ops exist.
        guarded = (
            f'@(torch.library.register_fake("{op}") if torchvision.extension._has_ops() else (lambda f: f))\n'
        )
        text = text.replace(plain, guarded)
    meta.write_text(text)


def fix() -> None:
    subprocess.run([sys.executable, "-m", "pip", "uninstall", "--quiet", "-y", "torchcodec"], check=False)
    _move_aside(sorted((SITE / "torchaudio" / "lib").glob("*.so")))
    _move_aside([SITE / "torchvision" / "_C.so", SITE / "torchvision" / "image.so"])
    _guard_fake_registrations()


def check() -> None:
    code = "import torch, torchvision, torchaudio, transformers, vllm, vllm_omni; print(torch.__version__)"
    subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    if "--check" not in sys.argv:
        fix()
    check()
