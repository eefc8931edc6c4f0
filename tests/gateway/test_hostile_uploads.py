"""Issue 18, hostile uploads: only the documented audio containers are opened. A network description (SDP,
HLS, an ffconcat list) is refused with 415 at once and opens no socket; a WAV header FFmpeg has no decoder
for (0 bits per sample) is a 415, not a 500. Real uploads against a real gateway process."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import psutil
import pytest

from tests.gateway.test_http_api import encode_with_pyav
from tests.support import ServerProcess

ROUTES = ("/voice/transcribe", "/v1/audio/transcriptions")


@pytest.fixture(scope="module")
def client(gateway: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=60) as c:
        yield c


def upload(client: httpx.Client, route: str, data: bytes, name: str = "a.wav") -> httpx.Response:
    if route == "/voice/transcribe":
        return client.post(route, files={"audio": (name, data, "audio/wav")})
    return client.post(route, files={"file": (name, data, "audio/wav")}, data={"model": "whisper-1"})


def udp_sockets(pid: int) -> list[tuple[str, int]]:
    """UDP sockets of the gateway and its children (the engine worker processes)."""
    root = psutil.Process(pid)
    found = []
    for proc in [root, *root.children(recursive=True)]:
        found += [(c.laddr.ip, c.laddr.port) for c in proc.net_connections(kind="udp")]
    return found


class Listener:
    """A loopback TCP port that records whether anyone connected: where a playlist would send FFmpeg."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]

    def connections(self) -> int:
        n = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return n
            conn.close()
            n += 1

    def close(self) -> None:
        self.sock.close()


def sdp(address: str, port: int = 5004) -> bytes:
    return (
        f"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=upload\r\nc=IN IP4 {address}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    ).encode()


def _upload_watching_sockets(
    gateway: ServerProcess, client: httpx.Client, route: str, payload: bytes
) -> tuple[httpx.Response, set[tuple[str, int]], float]:
    """The response, every UDP socket the gateway held while the upload was in flight, and its seconds."""
    result: dict[str, httpx.Response] = {}
    thread = threading.Thread(target=lambda: result.setdefault("r", upload(client, route, payload)))
    t0 = time.monotonic()
    thread.start()
    seen: set[tuple[str, int]] = set()
    while thread.is_alive() and time.monotonic() - t0 < 30:  # FFmpeg held its RTP sockets ~20 s
        seen |= set(udp_sockets(gateway.proc.pid))
        time.sleep(0.02)
    thread.join()
    elapsed = time.monotonic() - t0
    return result["r"], seen | set(udp_sockets(gateway.proc.pid)), elapsed


def test_sdp_upload_is_refused_at_once_and_binds_no_socket(
    gateway: ServerProcess, client: httpx.Client
) -> None:
    before = set(udp_sockets(gateway.proc.pid))
    for payload in (sdp("0.0.0.0"), sdp("239.1.2.3/32"), sdp("127.0.0.1", 5010)):
        assert len(payload) < 200
        for route in ROUTES:
            r, seen, elapsed = _upload_watching_sockets(gateway, client, route, payload)
            assert seen <= before, f"{route}: the gateway bound UDP sockets {seen - before}"
            assert elapsed < 5, f"{route}: {elapsed:.1f} s"
            assert r.status_code == 415, r.text
            assert r.json()["error"]["code"] == "invalid_audio"
            assert "not a supported audio file" in r.json()["error"]["message"]


def test_playlists_and_concat_lists_fetch_nothing(client: httpx.Client) -> None:
    listener = Listener()
    try:
        url = f"http://127.0.0.1:{listener.port}"
        hls = f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{url}/a.ts\n#EXT-X-ENDLIST\n".encode()
        concat = f"ffconcat version 1.0\nfile '{url}/a.wav'\n".encode()
        rtsp = f"rtsp://127.0.0.1:{listener.port}/stream\n".encode()
        for payload in (hls, concat, rtsp):
            for route in ROUTES:
                r = upload(client, route, payload, name="list.m3u8")
                assert r.status_code == 415, r.text
        time.sleep(0.5)
        assert listener.connections() == 0
    finally:
        listener.close()


def wav_header(bits: int, rate: int = 16000, channels: int = 1, data_len: int = 32000) -> bytes:
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * block, block, bits)
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_len)
        + b"WAVEfmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + struct.pack("<I", data_len)
    )


@pytest.mark.parametrize("route", ROUTES)
def test_wav_with_zero_bits_per_sample_is_415(client: httpx.Client, route: str) -> None:
    r = upload(client, route, wav_header(bits=0) + b"\0" * 32000)
    assert r.status_code == 415, r.text
    assert r.json()["error"]["code"] == "invalid_audio"


@pytest.mark.parametrize(
    "header",
    [
        wav_header(bits=16, rate=0),
        wav_header(bits=16, channels=0),
        wav_header(bits=13),
        wav_header(bits=16, data_len=0xFFFFFF00),
        b"fLaC" + b"\0" * 60,
        b"OggS" + b"\xff" * 60,
        b"ID3\x04\x00\x00\x7f\x7f\x7f\x7f",
        b"\x00\x00\x00\x18ftypM4A " + b"\0" * 40,
    ],
    ids=["rate-0", "channels-0", "bits-13", "huge-data", "flac-junk", "ogg-junk", "id3-only", "m4a-junk"],
)
def test_hostile_headers_of_allowed_containers_get_an_answer_not_a_500(
    client: httpx.Client, header: bytes
) -> None:
    for route in ROUTES:
        r = upload(client, route, header + b"\x01\x02" * 4000)
        # A header FFmpeg can make sense of (13-bit samples, a data size past the file's end) is transcribed.
        if r.status_code == 200:
            assert isinstance(r.json()["text"], str)
        else:
            assert r.status_code in (400, 413, 415), (route, r.status_code, r.text)
            assert r.json()["error"]["code"]


def encode_tone(container: str, codec: str, sample_fmt: str, rate: int = 48000) -> bytes:
    """One second of a 440 Hz tone in the given container, encoded for real by PyAV."""
    t = np.arange(rate) / rate
    return encode_with_pyav(0.37 * np.sin(2 * np.pi * 440 * t), rate, container, codec, sample_fmt)


@pytest.mark.parametrize(
    ("container", "codec", "sample_fmt"),
    [
        ("ipod", "aac", "fltp"),
        ("webm", "libopus", "s16"),
        ("adts", "aac", "fltp"),
        ("aiff", "pcm_s16be", "s16"),
    ],
    ids=["m4a", "webm", "aac", "aiff"],
)
def test_every_documented_container_is_still_accepted(
    client: httpx.Client, container: str, codec: str, sample_fmt: str
) -> None:
    # WAV, MP3, Ogg and FLAC: tests/gateway/test_http_api.py (with a word error rate).
    r = upload(client, "/voice/transcribe", encode_tone(container, codec, sample_fmt), name="tone.bin")
    assert r.status_code == 200, r.text
    assert r.json()["duration"] == pytest.approx(1.0, abs=0.1)
