"""The one module that talks to the Kubernetes API: server-side apply under one field manager, reads,
pruning deletes, status patches and served-kind discovery. Retries conflicts (409), throttling (429),
server errors (5xx) and connection failures with exponential backoff and jitter."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import kopf

from voice_operator import FIELD_MANAGER, GROUP, PLURAL, VERSION
from voice_operator.kinds import Kind, kind_of
from voice_operator.metrics import API_REQUESTS, API_RETRIES

log = logging.getLogger("voice_operator.kube")
Obj = dict[str, Any]
RETRY_STATUSES = {
    409: "conflict",
    429: "throttled",
    500: "server",
    502: "server",
    503: "server",
    504: "server",
}


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str):
        self.status = status
        self.reason = reason
        self.message = message
        super().__init__(f"{status} {reason}: {message}")


class NamespaceTerminating(ApiError):
    """403 from the NamespaceLifecycle admission plugin: the namespace is going away with everything in it.
    Not a permission problem, and nothing to retry."""


class TransientError(Exception):
    """Retries exhausted on a retryable failure; the caller should try again later."""


def vg_path(namespace: str, name: str, sub: str = "") -> str:
    p = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}"
    return f"{p}/{sub}" if sub else p


class Kube:
    def __init__(
        self,
        login: Callable[[], kopf.ConnectionInfo],
        attempts: int = 6,
        base_delay: float = 0.2,
        max_delay: float = 5.0,
    ):
        self._login = login
        self._info: kopf.ConnectionInfo | None = None
        self._session: aiohttp.ClientSession | None = None
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._served: dict[str, tuple[float, set[str]]] = {}

    async def _get_session(self, relogin: bool = False) -> tuple[aiohttp.ClientSession, str]:
        if relogin or self._session is None or self._info is None:
            if self._session is not None:
                await self._session.close()
            self._info = self._login()
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=32, ssl=self._info.as_ssl_context()),
                headers={**self._info.as_http_headers(), "User-Agent": FIELD_MANAGER},
                timeout=aiohttp.ClientTimeout(total=30, connect=5),
            )
        return self._session, self._info.server.rstrip("/")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        retry_conflicts: bool = True,
    ) -> Obj | None:
        """One API call with retries. Returns the decoded body, None for 404; raises ApiError for other
        client errors and TransientError once retries are exhausted."""
        relogin = False
        last = ""
        for attempt in range(self.attempts):
            session, server = await self._get_session(relogin)
            relogin = False
            try:
                async with session.request(
                    method,
                    server + path,
                    params=params,
                    data=None if body is None else json.dumps(body),
                    headers={"Content-Type": content_type, "Accept": "application/json"},
                ) as resp:
                    text = await resp.text()
                    terminating = resp.status == 403 and "because it is being terminated" in text
                    code = "403-namespace-terminating" if terminating else str(resp.status)
                    API_REQUESTS.labels(method.lower(), code).inc()
                    if terminating:
                        e = _api_error(resp.status, text)
                        raise NamespaceTerminating(e.status, e.reason, e.message)
                    if resp.status < 300:
                        return json.loads(text) if text else {}
                    if resp.status == 404:
                        return None
                    err = _api_error(resp.status, text)
                    if resp.status == 401 and attempt == 0:
                        relogin = True  # rotated service-account token: read it again
                        continue
                    reason = RETRY_STATUSES.get(resp.status)
                    # an object server-side apply cannot type (e.g. a number where the schema wants a
                    # string) comes back as a 500 from older apiservers; retrying cannot fix it
                    malformed = resp.status == 500 and "failed to create typed patch object" in err.message
                    if reason is None or malformed or (resp.status == 409 and not retry_conflicts):
                        raise err
                    last = str(err)
            except (TimeoutError, aiohttp.ClientError, ConnectionError, OSError) as e:
                API_REQUESTS.labels(method.lower(), "error").inc()
                reason, last = "connection", f"{type(e).__name__}: {e}"
            if attempt + 1 < self.attempts:
                API_RETRIES.labels(reason).inc()
                delay = min(self.max_delay, self.base_delay * 2**attempt) * (0.5 + random.random() / 2)
                log.info("%s %s failed (%s); retry %d in %.2fs", method, path, last, attempt + 1, delay)
                await asyncio.sleep(delay)
        raise TransientError(f"{method} {path}: {last} (gave up after {self.attempts} attempts)")

    # ------------------------------------------------------------------ verbs

    async def apply(self, obj: Obj) -> Obj:
        """Server-side apply (creates or updates) under the operator's field manager. force=true: the
        operator owns these fields, so a hand edit is taken back rather than reported as a conflict."""
        k = kind_of(obj)
        path = k.path(obj["metadata"]["namespace"], obj["metadata"]["name"])
        out = await self.request(
            "PATCH",
            path,
            params={"fieldManager": FIELD_MANAGER, "force": "true"},
            body=obj,
            content_type="application/apply-patch+yaml",
        )
        if out is None:  # 404 on apply: the namespace is gone
            raise ApiError(404, "NotFound", f"{path} (namespace missing?)")
        return out

    async def get(self, kind: Kind, namespace: str, name: str) -> Obj | None:
        return await self.request("GET", kind.path(namespace, name))

    async def list(self, kind: Kind, namespace: str, label_selector: str) -> list[Obj]:
        out = await self.request("GET", kind.path(namespace), params={"labelSelector": label_selector})
        return (out or {}).get("items", [])

    async def delete(self, kind: Kind, namespace: str, name: str) -> None:
        await self.request("DELETE", kind.path(namespace, name), body={"propagationPolicy": "Background"})

    async def get_vg(self, namespace: str, name: str) -> Obj | None:
        return await self.request("GET", vg_path(namespace, name))

    async def patch_status(self, namespace: str, name: str, resource_version: str, status: Obj) -> Obj | None:
        """Merge-patch the status subresource, guarded by resourceVersion: a status computed from an older
        version of the object must not land on a newer one. A 409 is returned to the caller (not retried
        here) because the right retry is to re-read the object and recompute."""
        body = {"metadata": {"resourceVersion": resource_version}, "status": status}
        return await self.request(
            "PATCH",
            vg_path(namespace, name, "status"),
            body=body,
            content_type="application/merge-patch+json",
            retry_conflicts=False,
        )

    async def served(self, kind: Kind, ttl: float = 300.0) -> bool:
        """Whether the cluster serves kind's group/version (discovery, cached). A 1.20 cluster has no
        autoscaling/v2 or policy/v1, for example."""
        gv = f"/apis/{kind.group}/{kind.version}" if kind.group else f"/api/{kind.version}"
        cached = self._served.get(gv)
        if cached is None or time.monotonic() - cached[0] > ttl:
            out = await self.request("GET", gv)
            plurals = {r["name"] for r in (out or {}).get("resources", [])}
            cached = (time.monotonic(), plurals)
            self._served[gv] = cached
        return kind.plural in cached[1]


def _api_error(status: int, text: str) -> ApiError:
    try:
        body = json.loads(text)
        return ApiError(status, body.get("reason", ""), body.get("message", text))
    except ValueError:
        return ApiError(status, "", text[:300])
