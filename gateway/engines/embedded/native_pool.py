"""A supervised pool of worker processes for native code: a crash costs one job, never the gateway.

Each slot is a thread that owns one worker process and serves jobs from the pool's queue one at a time, so
a worker that dies (a SIGSEGV in espeak-ng, the OOM killer, kill -9) was serving exactly one job. That job
fails with WorkerCrashed; the death is logged and counted (voice_gateway_engine_worker_restarts_total) and
the slot starts a fresh worker before it takes the next job. A worker found dead while idle is counted and
replaced the same way, within a second. Jobs are concurrent.futures.Futures: a caller that stops waiting
before its job starts cancels it; a job already running finishes and its answer is dropped.

Workers are `python -m <module> FD` (fork + exec: nothing of the gateway's threads is copied) talking over a
multiprocessing Connection on a socket pair; the module's protocol is its own (piper_worker.py), the pool
only needs the first message to be ("ready", info) or ("failed", message) and the answers ("ok", *payload)
or ("error", message).
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from concurrent.futures import Future
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from gateway.metrics import ENGINE_WORKER_RESTARTS

log = logging.getLogger(__name__)

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[3])  # the directory that holds `gateway/`


class WorkerCrashed(RuntimeError):
    def __init__(self, reason: str, pid: int | None) -> None:
        super().__init__(f"worker process {pid} died ({reason})")
        self.reason = reason
        self.pid = pid


class WorkerStartError(RuntimeError):
    """No worker could be started (the model does not load): the engine is unavailable, not the text."""


class WorkerError(RuntimeError):
    """The worker raised on this job and carries on: the job's input is at fault."""


def _exit_reason(returncode: int | None) -> str:
    if returncode is None:
        return "unknown"
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal_{-returncode}"
    return "exit"


class _Process:
    """One worker process and its end of the connection; used by its slot's thread only."""

    def __init__(self, module: str, config: dict[str, Any]) -> None:
        self._module = module
        self._config = config
        self.proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float) -> dict[str, Any]:
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        with theirs:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self._module, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env=env,
            )
        self._conn = Connection(ours.detach())
        try:
            self._conn.send(self._config)
            if not self._conn.poll(timeout):
                raise WorkerStartError(f"worker did not load within {timeout:.0f} s")
            message = self._conn.recv()
            if message[0] != "ready":
                raise WorkerStartError(str(message[1]))
        except (EOFError, OSError) as exc:
            self.discard()
            raise WorkerStartError("worker died while loading") from exc
        except WorkerStartError:
            self.discard()
            raise
        return dict(message[1])

    def discard(self) -> None:
        """Stop the process at once and forget it: a dead or failed worker is not counted twice."""
        self.stop(0)
        self.proc = None

    def kill(self) -> None:
        """From another thread: a signal only; the owning thread sees the connection break."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.kill()

    def call(self, request: Any, timeout: float) -> Any:
        conn = self._conn
        assert conn is not None and self.proc is not None
        try:
            conn.send(request)
            if not conn.poll(timeout):
                self.proc.kill()  # stuck in native code: only a kill gets the slot back
                self.proc.wait()
                raise WorkerCrashed("timeout", self.proc.pid)
            return conn.recv()
        except (EOFError, OSError) as exc:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # the pipe broke yet the process lives: make it so
                self.proc.kill()
                self.proc.wait()
            raise WorkerCrashed(_exit_reason(self.proc.returncode), self.proc.pid) from exc

    def stop(self, grace: float) -> None:
        conn, proc = self._conn, self.proc
        self._conn = None
        if conn is not None:
            try:
                if grace > 0 and proc is not None and proc.poll() is None:
                    conn.send(None)
            except OSError:
                pass
            conn.close()  # the worker reads EOF and exits even if the None never arrived
        if proc is not None and proc.poll() is None:
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class _Slot:
    def __init__(self, pool: WorkerPool, index: int) -> None:
        self._pool = pool
        self.process = _Process(pool.module, pool.config)
        self.ready = threading.Event()
        self.info: dict[str, Any] | None = None
        self.start_error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"{pool.engine}-worker-{index}", daemon=True)

    def _start(self) -> None:
        self.info = self.process.start(self._pool.start_timeout)

    def _replace(self) -> None:
        try:
            self._start()
            self._log_restart()
        except WorkerStartError:  # tried again when the next job comes
            log.exception("%s worker could not be restarted", self._pool.engine)

    def _died(self, reason: str, pid: int | None, busy: bool) -> None:
        ENGINE_WORKER_RESTARTS.inc(self._pool.engine, reason)
        log.error(
            "%s worker pid %s died (%s) %s; restarting it",
            self._pool.engine,
            pid,
            reason,
            "while serving a request" if busy else "while idle",
            extra={"engine": self._pool.engine, "reason": reason, "worker_pid": pid},
        )

    def _ensure_worker(self) -> None:
        if self.process.alive():
            return
        if self.process.proc is not None:  # it was running: it died while idle
            self._died(_exit_reason(self.process.proc.poll()), self.process.pid, busy=False)
            self.process.discard()
        self._start()
        self._log_restart()

    def _log_restart(self) -> None:
        log.info(
            "%s worker restarted as pid %s",
            self._pool.engine,
            self.process.pid,
            extra={"engine": self._pool.engine},
        )

    def _run(self) -> None:
        try:
            self._start()
        except BaseException as exc:
            self.start_error = exc
        finally:
            self.ready.set()
        pool = self._pool
        while True:
            try:
                job = pool.jobs.get(timeout=pool.watch_interval)
            except queue.Empty:
                # A worker that died idle is replaced now, not by the next request. One that could not be
                # restarted (proc is None) is retried by the next job only: no start loop on a broken install.
                if not pool.closing and self.process.proc is not None and not self.process.alive():
                    self._ensure_worker_quietly()
                continue
            if job is None:
                self.process.stop(pool.stop_grace)
                return
            request, future = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                self._ensure_worker()
                reply = self.process.call(request, pool.call_timeout)
            except WorkerCrashed as crashed:
                self.process.discard()
                if pool.closing:
                    future.set_exception(crashed)
                    return
                self._died(crashed.reason, crashed.pid, busy=True)  # counted before the caller hears of it
                future.set_exception(crashed)
                self._replace()
                continue
            except BaseException as exc:
                future.set_exception(exc)
                continue
            if reply[0] == "ok":
                future.set_result(reply[1:])
            else:
                future.set_exception(WorkerError(str(reply[1])))

    def _ensure_worker_quietly(self) -> None:
        try:
            self._ensure_worker()
        except WorkerStartError:
            log.exception("%s worker could not be restarted", self._pool.engine)


class WorkerPool:
    def __init__(
        self,
        engine: str,
        module: str,
        config: dict[str, Any],
        size: int = 2,
        call_timeout: float = 120.0,
        start_timeout: float = 180.0,
        watch_interval: float = 1.0,
    ) -> None:
        self.engine = engine
        self.module = module
        self.config = config
        self.call_timeout = call_timeout
        self.start_timeout = start_timeout
        self.watch_interval = watch_interval
        self.jobs: queue.Queue[tuple[Any, Future[Any]] | None] = queue.Queue()
        self.closing = False
        self.stop_grace = 2.0
        self._slots = [_Slot(self, i) for i in range(max(1, size))]

    def start(self) -> dict[str, Any]:
        """Blocking: start every worker (in parallel); the first one's ready info."""
        for slot in self._slots:
            slot.thread.start()
        for slot in self._slots:
            slot.ready.wait()
        errors = [s.start_error for s in self._slots if s.start_error is not None]
        if errors:
            self.close()
            raise WorkerStartError(str(errors[0])) from errors[0]
        info = self._slots[0].info
        assert info is not None
        return info

    def submit(self, request: Any) -> Future[Any]:
        future: Future[Any] = Future()
        if self.closing:
            future.set_exception(WorkerStartError(f"{self.engine} workers are shut down"))
            return future
        self.jobs.put((request, future))
        return future

    def pids(self) -> list[int]:
        return [pid for s in self._slots if (pid := s.process.pid) is not None and s.process.alive()]

    def close(self, grace: float = 2.0) -> None:
        """Blocking: cancel queued jobs, let each worker finish its job for `grace` seconds (then kill it),
        end the slot threads."""
        self.closing = True
        self.stop_grace = grace
        while True:
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                break
            # Failed, not cancelled: a cancelled future would raise CancelledError in the awaiting task.
            if job is not None and job[1].set_running_or_notify_cancel():
                job[1].set_exception(WorkerStartError(f"{self.engine} workers are shut down"))
        for _ in self._slots:
            self.jobs.put(None)
        started = [slot for slot in self._slots if slot.thread.ident is not None]
        for slot in started:
            slot.thread.join(timeout=grace)
        for slot in started:
            if slot.thread.is_alive():
                slot.process.kill()  # its job fails at once; the thread then sees `closing` and ends
                slot.thread.join(timeout=grace + 5)
