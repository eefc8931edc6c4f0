"""Error paths of the API layer against a small in-process HTTP server that plays the apiserver's
failure modes (fast; the real-apiserver scenarios live in test_integration.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import kopf
import pytest
from aiohttp import web
from voice_operator.kinds import BY_KIND
from voice_operator.kube import ApiError, Kube, NamespaceTerminating, TransientError
from voice_operator.metrics import API_RETRIES

CM: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "x", "namespace": "ns"},
    "data": {"a": "b"},
}


class FakeApi:
    def __init__(self) -> None:
        self.script: list[tuple[int, dict[str, Any]]] = []  # responses to hand out, in order
        self.seen: list[web.Request] = []
        self.bodies: list[Any] = []
        self.tokens: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append(request)
        self.tokens.append(request.headers.get("Authorization", ""))
        raw = await request.read()
        self.bodies.append(json.loads(raw) if raw else None)
        status, body = self.script.pop(0) if self.script else (200, {"ok": True})
        return web.json_response(body, status=status)


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeApi, str]]:
    api = FakeApi()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", api.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield api, f"http://127.0.0.1:{port}"
    await runner.cleanup()


def kube(server: str, tokens: list[str] | None = None) -> Kube:
    toks = iter(tokens or ["t1", "t2", "t3"])
    return Kube(lambda: kopf.ConnectionInfo(server=server, token=next(toks)), attempts=4, base_delay=0.01)


def retries(reason: str) -> float:
    return API_RETRIES.labels(reason)._value.get()


async def test_apply_is_server_side_apply_under_one_field_manager(fake: tuple[FakeApi, str]) -> None:
    api, url = fake
    k = kube(url)
    await k.apply(CM)
    (req,) = api.seen
    assert req.method == "PATCH" and req.path == "/api/v1/namespaces/ns/configmaps/x"
    assert req.headers["Content-Type"] == "application/apply-patch+yaml"
    assert req.query["fieldManager"] == "voice-gateway-operator" and req.query["force"] == "true"
    assert api.bodies[0] == CM
    await k.close()


@pytest.mark.parametrize(("status", "reason"), [(409, "conflict"), (503, "server"), (429, "throttled")])
async def test_retryable_statuses_are_retried_with_backoff(
    fake: tuple[FakeApi, str], status: int, reason: str
) -> None:
    api, url = fake
    api.script = [(status, {"reason": "x", "message": "try again"})] * 2
    before = retries(reason)
    k = kube(url)
    assert await k.apply(CM) == {"ok": True}
    assert len(api.seen) == 3 and retries(reason) == before + 2
    await k.close()


async def test_gives_up_with_transient_error(fake: tuple[FakeApi, str]) -> None:
    api, url = fake
    api.script = [(500, {"message": "etcd down"})] * 10
    k = kube(url)
    with pytest.raises(TransientError, match="etcd down"):
        await k.apply(CM)
    assert len(api.seen) == 4
    await k.close()


async def test_client_errors_are_not_retried(fake: tuple[FakeApi, str]) -> None:
    api, url = fake
    api.script = [(422, {"reason": "Invalid", "message": "spec.replicas: Invalid value"})]
    k = kube(url)
    with pytest.raises(ApiError) as e:
        await k.apply(CM)
    assert e.value.status == 422 and "spec.replicas" in e.value.message and len(api.seen) == 1
    await k.close()


async def test_namespace_terminating_is_its_own_error(fake: tuple[FakeApi, str]) -> None:
    api, url = fake
    api.script = [
        (
            403,
            {
                "reason": "Forbidden",
                "message": 'configmaps "x" is forbidden: unable to create new '
                "content in namespace ns because it is being terminated",
            },
        )
    ]
    k = kube(url)
    with pytest.raises(NamespaceTerminating):
        await k.apply(CM)
    await k.close()


async def test_401_logs_in_again_with_a_fresh_token(fake: tuple[FakeApi, str]) -> None:
    api, url = fake
    api.script = [(401, {"message": "Unauthorized"})]
    k = kube(url, ["old", "new"])
    await k.apply(CM)
    assert api.tokens == ["Bearer old", "Bearer new"]
    await k.close()


async def test_connection_refused_is_transient() -> None:
    k = Kube(lambda: kopf.ConnectionInfo(server="http://127.0.0.1:1"), attempts=3, base_delay=0.01)
    with pytest.raises(TransientError, match="gave up after 3 attempts"):
        await k.get(BY_KIND[("v1", "ConfigMap")], "ns", "x")
    await k.close()


async def test_status_conflict_is_returned_for_a_fresh_read(fake: tuple[FakeApi, str]) -> None:
    api, url = fake
    api.script = [(409, {"reason": "Conflict", "message": "the object has been modified"})]
    k = kube(url)
    with pytest.raises(ApiError) as e:
        await k.patch_status("ns", "vg", "41", {"phase": "Ready"})
    assert e.value.status == 409 and len(api.seen) == 1  # not blindly re-sent: the caller re-reads
    assert api.bodies[0] == {"metadata": {"resourceVersion": "41"}, "status": {"phase": "Ready"}}
    assert api.seen[0].headers["Content-Type"] == "application/merge-patch+json"
    await k.close()


async def test_served_kinds_from_discovery(fake: tuple[FakeApi, str]) -> None:
    api, url = fake
    api.script = [(200, {"resources": [{"name": "horizontalpodautoscalers"}]}), (404, {})]
    k = kube(url)
    assert await k.served(BY_KIND[("autoscaling/v2", "HorizontalPodAutoscaler")])
    assert not await k.served(BY_KIND[("policy/v1", "PodDisruptionBudget")])
    assert await k.served(BY_KIND[("autoscaling/v2", "HorizontalPodAutoscaler")])  # cached
    assert [r.path for r in api.seen] == ["/apis/autoscaling/v2", "/apis/policy/v1"]
    await k.close()


async def test_untyped_object_500_is_not_retried(fake: tuple[FakeApi, str]) -> None:
    api, url = fake
    api.script = [(500, {"message": "failed to create typed patch object: .spec.x: expected string, got 1"})]
    k = kube(url)
    with pytest.raises(ApiError) as e:
        await k.apply(CM)
    assert e.value.status == 500 and len(api.seen) == 1
    await k.close()
