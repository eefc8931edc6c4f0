"""Every bad input gets a 4xx with the JSON error envelope; the server stays up."""

from __future__ import annotations

import httpx
import pytest

from tests.support import ServerProcess, decode_wav


@pytest.fixture(scope="module")
def client(gateway: ServerProcess):
    with httpx.Client(base_url=gateway.url, timeout=60) as c:
        yield c


def error_of(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body["error"]) >= {"code", "message"} and body["error"]["message"]
    return body["error"]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"text": ""}, 400, "empty_text"),
        ({"text": "   \n\t "}, 400, "empty_text"),
        ({"text": "...!?"}, 400, "nothing_to_say"),
        ({"text": "x" * 50_001}, 413, "text_too_long"),
        ({"text": "hello", "voice": "nobody"}, 400, "unknown_voice"),
        ({"text": "hello", "language": "fr"}, 400, "unsupported_language"),
        ({"text": "hello", "speed": 0}, 422, "invalid_request"),
        ({"text": "hello", "speed": 4.5}, 422, "invalid_request"),
        ({"text": "hello", "speed": "fast"}, 422, "invalid_request"),
        ({"voice": "default"}, 422, "invalid_request"),
        ({"text": "hello", "unexpected": 1}, 422, "invalid_request"),
        ({"text": "hello", "response_format": "ogg-vorbis"}, 422, "invalid_request"),
    ],
)
def test_read_rejects_bad_input(client: httpx.Client, body: dict, status: int, code: str) -> None:
    assert error_of(client.post("/read", json=body), status)["code"] == code


def test_validation_error_names_the_field(client: httpx.Client) -> None:
    err = error_of(client.post("/read", json={"text": "hi", "speed": 9}), 422)
    assert err["details"][0]["field"] == "speed" and "speed" in err["message"]


def test_read_rejects_non_json(client: httpx.Client) -> None:
    r = client.post(
        "/read", content=b"text=hello", headers={"content-type": "application/x-www-form-urlencoded"}
    )
    error_of(r, 422)
    r = client.post("/read", content=b"{not json", headers={"content-type": "application/json"})
    error_of(r, 422)


def test_batch_rejects_empty_text(client: httpx.Client) -> None:
    assert error_of(client.post("/voice/batch", json={"text": ""}), 400)["code"] == "empty_text"


@pytest.mark.parametrize("payload", [b"", b"this is not audio at all" * 100, b"RIFF\x00\x00\x00\x00WAVEjunk"])
def test_transcribe_rejects_files_that_are_not_audio(client: httpx.Client, payload: bytes) -> None:
    r = client.post("/voice/transcribe", files={"audio": ("x.wav", payload, "audio/wav")})
    assert error_of(r, 415)["code"] == "invalid_audio"


def test_transcribe_needs_the_audio_field(client: httpx.Client) -> None:
    r = client.post("/voice/transcribe", data={"language": "en"})
    assert error_of(r, 422)["details"][0]["field"] == "audio"


def test_transcribe_rejects_unsupported_language(client: httpx.Client) -> None:
    audio = client.post("/read", json={"text": "Hello there."}).content
    r = client.post("/voice/transcribe", files={"audio": ("a.wav", audio)}, data={"language": "xx"})
    assert error_of(r, 400)["code"] == "unsupported_language"


def test_unknown_route_and_method(client: httpx.Client) -> None:
    assert error_of(client.get("/nowhere"), 404)["code"] == "not_found"
    assert error_of(client.get("/read"), 405)["code"] == "method_not_allowed"


def test_server_is_still_healthy_after_bad_input(client: httpx.Client) -> None:
    assert client.get("/health").status_code == 200


# -- limits, on a server configured with small ones --------------------------------------------


@pytest.fixture(scope="module")
def limited() -> ServerProcess:
    server = ServerProcess(
        "serve",
        env={
            "MAX_UPLOAD_BYTES": "200000",
            "MAX_AUDIO_SECONDS": "2",
            "MAX_TEXT_CHARS": "100",
            "AUDIO_SAMPLE_RATE": "16000",
        },
    )
    server.wait_ready()
    yield server
    server.stop()


def test_limits_and_sample_rate_come_from_the_environment(limited: ServerProcess) -> None:
    with httpx.Client(base_url=limited.url, timeout=60) as c:
        wav = decode_wav(c.post("/read", json={"text": "Sixteen kilohertz output."}).content)
        assert wav.sample_rate == 16000 and wav.duration > 0.5
        assert error_of(c.post("/read", json={"text": "y" * 101}), 413)["code"] == "text_too_long"
        long_audio = c.post(
            "/read", json={"text": "This sentence is long enough to last well over two seconds."}
        )
        assert decode_wav(long_audio.content).duration > 2
        r = c.post("/voice/transcribe", files={"audio": ("a.wav", long_audio.content)})
        assert error_of(r, 413)["code"] == "audio_too_long"
        big = b"\0" * 300_000
        r = c.post("/voice/transcribe", files={"audio": ("a.wav", big)})
        assert error_of(r, 413)["code"] in ("payload_too_large", "file_too_large")
        assert c.get("/health").status_code == 200
