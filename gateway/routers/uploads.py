"""Reading multipart uploads with a hard size limit."""

from __future__ import annotations

from fastapi import UploadFile

from gateway.errors import APIError

_CHUNK = 1 << 20


async def read_upload(upload: UploadFile, max_bytes: int) -> bytes:
    parts: list[bytes] = []
    total = 0
    while chunk := await upload.read(_CHUNK):
        total += len(chunk)
        if total > max_bytes:
            raise APIError(
                413,
                "file_too_large",
                f"the upload is larger than the limit of {max_bytes} bytes",
                limit=max_bytes,
            )
        parts.append(chunk)
    return b"".join(parts)
