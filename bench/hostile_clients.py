"""Hostile clients on plain sockets (issue 18): a WebSocket reader that stops reading, request heads and
bodies sent too slowly, an endless chunked body, a client that hangs up on its answer. Used by
tests/gateway/test_hostile_transport.py and by bench/fuzz_http.py and bench/fuzz_ws.py.

Plain sockets, because client libraries are polite: they read in the background, answer pings, and send a
request in one piece."""

from __future__ import annotations

import base64
import collections
import contextlib
import json
import os
import select
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The smallest receive buffer Linux grants (it doubles the value and floors it): the server's sends block
# after a few tens of KiB instead of megabytes.
TINY_RCVBUF = 4096


def _head(method: str, path: str, port: int, headers: Mapping[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def open_socket(port: int, rcvbuf: int | None = None, timeout: float = 30.0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:  # before connect: the window scale is agreed in the handshake
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", port))
    return sock


def ws_frame(text: str) -> bytes:
    """One masked text frame, as a client must send it (RFC 6455 5.2)."""
    payload = text.encode()
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        length = bytes([0x80 | n])
    elif n < 1 << 16:
        length = bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        length = bytes([0x80 | 127]) + n.to_bytes(8, "big")
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81]) + length + mask + masked


def ws_handshake(
    port: int, path: str, headers: Mapping[str, str] | None = None, rcvbuf: int | None = TINY_RCVBUF
) -> socket.socket:
    """An accepted WebSocket on a plain socket; the handshake response is read byte by byte, so not one
    byte of the frames behind it is consumed."""
    sock = open_socket(port, rcvbuf)
    upgrade = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
        **(headers or {}),
    }
    sock.sendall(_head("GET", path, port, upgrade))
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        if not byte:
            raise ConnectionError(f"closed during the handshake: {head!r}")
        head += byte
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(f"handshake refused: {head.splitlines()[0]!r}")
    return sock


def stuck_reader(
    port: int, text: str, headers: Mapping[str, str] | None = None, path: str = "/read/stream"
) -> socket.socket:
    """Starts a long read-aloud stream and never reads a byte of it."""
    sock = ws_handshake(port, path, headers)
    sock.sendall(ws_frame(json.dumps({"type": "start", "text": text})))
    return sock


def wait_buffered(sock: socket.socket, nbytes: int, timeout: float) -> bool:
    """Waits until the server's frames fill `nbytes` of this socket's receive buffer, without reading them
    (MSG_PEEK): the server is streaming, and from here on its sends back up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        readable, _, _ = select.select([sock], [], [], 0.2)
        if readable and len(sock.recv(1 << 16, socket.MSG_PEEK)) >= nbytes:
            return True
        time.sleep(0.1)
    return False


def wait_reset_by_server(sock: socket.socket, timeout: float) -> bool:
    """Waits until the server cuts the connection, without reading: a stuck reader that drained its buffer
    would no longer be stuck, and a reset does not show in recv() while unread data is queued. The kernel's
    TCP state does (Linux TCP_INFO: ESTABLISHED is 1; a reset makes it CLOSE, a FIN CLOSE_WAIT)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0] != 1:
            return True
        time.sleep(0.1)
    return False


def wait_closed_by_server(sock: socket.socket, timeout: float) -> bool:
    """Drain what the server sent until it closed the connection (EOF or reset); False on timeout."""
    deadline = time.monotonic() + timeout
    sock.settimeout(0.5)
    while time.monotonic() < deadline:
        try:
            if not sock.recv(1 << 16):
                return True
        except TimeoutError:
            continue
        except OSError:  # reset: the server aborted the socket
            return True
    return False


@dataclass
class Answer:
    status: int | None  # None: the connection closed without an answer
    head: bytes
    body: bytes
    elapsed: float

    def json(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


def read_answer(sock: socket.socket, started: float, timeout: float = 30.0) -> Answer:
    """One HTTP response (Content-Length framed, as the gateway's errors are), or what arrived before EOF."""
    sock.settimeout(timeout)
    data = b""
    with contextlib.suppress(OSError):
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            data += chunk
        head = data.partition(b"\r\n\r\n")[0]
        length = next(
            (
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            0,
        )
        while len(data) < len(head) + 4 + length:
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split()[1]) if head.startswith(b"HTTP/1.1 ") else None
    return Answer(status, head, body, time.monotonic() - started)


def half_sent_post(
    port: int,
    path: str,
    headers: Mapping[str, str] | None = None,
    declared: int = 1000,
    sent: bytes = b'{"text": ',
) -> socket.socket:
    """A POST whose head is complete but whose body stops after a few bytes: the slowloris body."""
    sock = open_socket(port)
    head = {"Content-Type": "application/json", "Content-Length": str(declared), **(headers or {})}
    sock.sendall(_head("POST", path, port, head) + sent)
    return sock


def slow_head(port: int, interval: float, timeout: float, headers: Mapping[str, str] | None = None) -> Answer:
    """Sends a request head one byte every `interval` s until the server answers or closes."""
    head = _head(
        "GET", "/health", port, {"User-Agent": "slowloris", "X-Padding": "x" * 200, **(headers or {})}
    )
    sock = open_socket(port, timeout=timeout)
    started = time.monotonic()
    try:
        for byte in head:
            try:
                sock.send(bytes([byte]))
            except OSError:
                break
            readable, _, _ = select.select([sock], [], [], interval)
            if readable:
                break
            if time.monotonic() - started > timeout:
                break
        return read_answer(sock, started, timeout=max(1.0, timeout - (time.monotonic() - started)))
    finally:
        sock.close()


def chunked_flood(
    port: int, path: str, total: int, headers: Mapping[str, str] | None = None, chunk: int = 1 << 20
) -> tuple[Answer, int]:
    """Streams a chunked body of up to `total` bytes and stops as soon as the server answers (or closes).
    Returns the answer and the bytes that left this client."""
    sock = open_socket(port, timeout=30.0)
    head = {"Content-Type": "application/json", "Transfer-Encoding": "chunked", **(headers or {})}
    started = time.monotonic()
    sent = 0
    piece = b"%x\r\n%s\r\n" % (chunk, b"a" * chunk)
    try:
        sock.sendall(_head("POST", path, port, head) + b'6\r\n{"text\r\n')
        while sent < total:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            try:
                sock.sendall(piece)
            except OSError:
                break
            sent += chunk
        return read_answer(sock, started), sent
    finally:
        sock.close()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


@dataclass
class TransportResult:
    """What a fuzzer's hostile-transport phase found: clients per check, findings, figures."""

    checks: collections.Counter[str] = field(default_factory=collections.Counter)
    findings: list[str] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    seconds: float = 0.0


def report_transport(result: TransportResult) -> None:
    print(f"hostile transports: {sum(result.checks.values())} clients in {result.seconds:.1f} s")
    for check, n in sorted(result.checks.items()):
        print(f"  {n:6d}  {check}")
    for figure in result.figures:
        print("  ", figure)
    print(f"findings: {len(result.findings)}")
    for finding in result.findings[:20]:
        print("  FINDING", finding)
