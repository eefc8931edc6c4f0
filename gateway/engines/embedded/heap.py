"""Giving freed C heap back to the system.

glibc keeps what a native library freed (CTranslate2's decoding buffers, onnx's copies of a model) in each
thread's malloc arena for reuse, so the process's RSS only ever grows to the largest job it has done:
three transcriptions of a 74 s clip took a process holding Whisper base from 381 to 755 MiB, and
malloc_trim brought it back to 404 (bench/memory_bench.py, "after work", measures it in the engine).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import threading
from concurrent.futures import Executor


def release_free_heap() -> None:
    """malloc_trim(0): return free pages of every arena to the system (12-30 ms with a Whisper heap)."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)


class HeapTrimmer:
    """Runs release_free_heap on an executor after a job, off the reply's path, at most one pending at a time
    (a burst of jobs needs one trim after it, not one each)."""

    def __init__(self, executor: Executor) -> None:
        self._executor = executor
        self._lock = threading.Lock()
        self._pending = False

    def schedule(self) -> None:
        with self._lock:
            if self._pending:
                return
            self._pending = True
        try:
            self._executor.submit(self._run)
        except RuntimeError:  # the executor is shutting down: nothing left to trim for
            with self._lock:
                self._pending = False

    def _run(self) -> None:
        with self._lock:
            self._pending = False
        release_free_heap()
