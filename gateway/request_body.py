"""POST bodies, read whole before any work starts: bytes counted as they arrive (Content-Length or chunked),
a deadline on the whole body, then replayed to the app while a watcher waits for the client to hang up.

Reading first means a half-sent body holds no stream slot, and a body over the limit is refused at the byte
that passes it, with the rest never read. Bodies spill from memory to a temporary file past 1 MiB (as
Starlette's multipart parser does), so many concurrent uploads cost disk pages, not RSS."""

from __future__ import annotations

import asyncio
import tempfile
from typing import IO

from starlette.types import Message, Receive

from gateway.errors import APIError

# Multipart framing around an upload: the MAX_UPLOAD_BYTES limit applies to the audio inside.
MULTIPART_OVERHEAD = 64 * 1024
# Past this a body lives in a temporary file; writes of uvicorn's ~64 KiB chunks go to the page cache in
# microseconds, so they stay on the event loop.
_SPOOL_BYTES = 1 << 20
_REPLAY_CHUNK = 1 << 16


class BodyRejected(APIError):
    """The body broke a limit: answered with `status` and the gateway's JSON error, connection closed."""


class ClientGone(Exception):
    """The client hung up before its body was complete."""


class Body:
    def __init__(self, spool: IO[bytes], size: int) -> None:
        self.spool = spool
        self.size = size

    def close(self) -> None:
        self.spool.close()


async def read_body(receive: Receive, max_bytes: int, deadline_s: float) -> Body:
    """The whole body, or BodyRejected (413 past `max_bytes`, 408 past `deadline_s`; 0 = no deadline)."""
    spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)  # noqa: SIM115 (Body closes it)
    size = 0
    try:
        async with asyncio.timeout(deadline_s if deadline_s > 0 else None):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientGone
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > max_bytes:
                    raise BodyRejected(
                        413,
                        "payload_too_large",
                        f"the request body is larger than the limit of {max_bytes} bytes",
                    )
                if chunk:
                    spool.write(chunk)
                if not message.get("more_body", False):
                    break
    except TimeoutError:
        spool.close()
        raise BodyRejected(
            408, "request_timeout", f"the request body did not arrive within {deadline_s:g} s"
        ) from None
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return Body(spool, size)


class BodyReplay:
    """The app's `receive`: the buffered body, then what the server itself would say once the body is
    complete, `http.disconnect` when the client hangs up. Only `watch` reads the server's receive, so the app
    (Starlette's streaming responses listen for the disconnect too) and the watcher never race for it."""

    def __init__(self, body: Body, receive: Receive) -> None:
        self._body = body
        self._receive = receive
        self._replayed = False
        self.gone = asyncio.Event()

    async def receive(self) -> Message:
        if not self._replayed:
            chunk = self._body.spool.read(_REPLAY_CHUNK)
            more = self._body.spool.tell() < self._body.size
            self._replayed = not more
            return {"type": "http.request", "body": chunk, "more_body": more}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def watch(self) -> None:
        """Returns when the server reports the client gone (or the response complete)."""
        while (await self._receive())["type"] != "http.disconnect":
            pass  # the server's receive answers only a disconnect once the body is complete; be tolerant
        self.gone.set()
