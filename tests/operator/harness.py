"""Test harness for the integration tests: the local control plane (scripts/k8s), an admin API client,
a ServiceAccount bound to exactly the operator's RBAC rules, a fault-injecting API proxy, the operator
subprocess, and KWOK-style pod readiness (bind Pending pods to a fake Node, patch their status Ready)."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import httpx
import yaml
from aiohttp import web
from voice_operator import rbac
from voice_operator.crd import build_crd
from voice_operator.kube import vg_path

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts" / "k8s"
K8S_CACHE = Path(os.environ.get("K8S_CACHE", Path.home() / ".cache" / "local-k8s"))
K8S_BIN = Path(os.environ.get("K8S_BIN", K8S_CACHE / "bin"))
Obj = dict[str, Any]
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(fn: Callable[[], T], timeout: float = 20.0, interval: float = 0.1, desc: str = "condition") -> T:
    """Poll fn until it returns something truthy; fail with the last value/exception otherwise."""
    end = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = fn()
            if last:
                return last
        except (AssertionError, KeyError, TypeError, IndexError, StopIteration) as e:
            last = e  # not there yet (e.g. no status written so far)
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {desc}; last: {last!r}")
        time.sleep(interval)


# ---------------------------------------------------------------- control plane


class Plane:
    """A control plane from scripts/k8s on free ports in its own state dir."""

    def __init__(self, state: Path):
        self.state = state
        self.crd_file = state.parent / "crd.yaml"

    def ensure_binaries(self) -> None:
        missing = [
            b for b in ("kube-apiserver", "kube-controller-manager", "kubectl") if not (K8S_BIN / b).exists()
        ]
        if missing or not shutil.which("etcd"):
            # Build them (4-7 min, once). A failure here fails the tests: CI builds them in setup.d/50-k8s.sh.
            r = subprocess.run(["bash", str(SCRIPTS / "build.sh")], capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"cannot build the control plane:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")

    def up(self) -> None:
        self.crd_file.write_text(yaml.safe_dump(build_crd()))
        r = subprocess.run(
            ["bash", str(SCRIPTS / "up.sh"), "--state", str(self.state), "--crds", str(self.crd_file)],
            capture_output=True,
            text=True,
            timeout=240,
        )
        if r.returncode != 0:
            raise RuntimeError(f"up.sh failed:\n{r.stdout}\n{r.stderr}")

    def restart_apiserver(self, down_seconds: float = 2.0, proxy: ConflictProxy | None = None) -> None:
        """Stop the apiserver (clients get connection errors meanwhile), start it again. With a proxy, the
        clients' requests are held while it starts, until RBAC answers: a 1.20 apiserver refuses every
        RBAC-authorized request for a moment after /readyz, which is not what the audit looks for."""
        subprocess.run(
            ["bash", str(SCRIPTS / "down.sh"), "--state", str(self.state), "--only", "kube-apiserver"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        time.sleep(down_seconds)
        if proxy is not None:
            proxy.hold()
        try:
            r = subprocess.run(
                ["bash", str(SCRIPTS / "up.sh"), "--state", str(self.state)],
                capture_output=True,
                text=True,
                timeout=240,
            )
        finally:
            if proxy is not None:
                proxy.release()
        if r.returncode != 0:
            raise RuntimeError(f"up.sh (restart) failed:\n{r.stdout}\n{r.stderr}")

    def down(self) -> None:
        subprocess.run(
            ["bash", str(SCRIPTS / "down.sh"), "--state", str(self.state), "--wipe"],
            capture_output=True,
            timeout=120,
        )

    @property
    def api_url(self) -> str:
        ports = dict(line.split("=", 1) for line in (self.state / "ports.env").read_text().split())
        return f"https://127.0.0.1:{ports['API_PORT']}"

    @property
    def ca(self) -> str:
        return str(self.state / "pki" / "ca.crt")

    def admin(self) -> Api:
        token = (self.state / "pki" / "admin.token").read_text().strip()
        return Api(self.api_url, token, self.ca)


class Api:
    """A small synchronous admin client (the tests' kubectl)."""

    def __init__(self, base: str, token: str, ca: str):
        self.base, self.token, self.ca = base, token, ca
        self.http = httpx.Client(
            base_url=base,
            verify=ssl.create_default_context(cafile=ca),
            timeout=30,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
        )

    def req(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        for attempt in range(50):  # ride out an apiserver restart
            try:
                return self.http.request(
                    method, path, json=body, params=params, headers={"Content-Type": content_type}
                )
            except httpx.TransportError:
                if attempt == 49:
                    raise
                time.sleep(0.2)
        raise AssertionError("unreachable")

    def get(self, path: str) -> Obj | None:
        r = self.req("GET", path)
        if r.status_code == 404:
            return None
        r.raise_for_status()
        return r.json()

    def create(self, path: str, obj: Obj) -> Obj:
        r = self.req("POST", path, obj)
        if r.status_code >= 300:
            raise AssertionError(f"POST {path}: {r.status_code} {r.text}")
        return r.json()

    def merge_patch(self, path: str, patch: Obj, **params: str) -> Obj:
        r = self.req("PATCH", path, patch, "application/merge-patch+json", params=params or None)
        if r.status_code >= 300:
            raise AssertionError(f"PATCH {path}: {r.status_code} {r.text}")
        return r.json()

    def apply(self, path: str, obj: Obj, manager: str = "tests") -> httpx.Response:
        return self.req(
            "PATCH",
            path,
            obj,
            "application/apply-patch+yaml",
            params={"fieldManager": manager, "force": "true"},
        )

    def delete(self, path: str) -> int:
        return self.req("DELETE", path, {"propagationPolicy": "Background"}).status_code

    def list(self, path: str, selector: str = "") -> list[Obj]:
        r = self.req("GET", path, params={"labelSelector": selector} if selector else None)
        r.raise_for_status()
        return r.json()["items"]

    # convenience
    def ns(self, name: str) -> None:
        r = self.req(
            "POST",
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
        )
        assert r.status_code in (201, 409), r.text

    def vg(self, ns: str, name: str) -> Obj | None:
        return self.get(vg_path(ns, name))

    def create_vg(self, ns: str, name: str, spec: Obj) -> Obj:
        obj = {
            "apiVersion": "voice.aetherpro.ai/v1alpha1",
            "kind": "VoiceGateway",
            "metadata": {"name": name, "namespace": ns},
            "spec": spec,
        }
        return self.create(f"/apis/voice.aetherpro.ai/v1alpha1/namespaces/{ns}/voicegateways", obj)


# ---------------------------------------------------------------- service account with the operator's rules


def _bind(
    api: Api,
    role_kind: str,
    role_name: str,
    rules: list[Obj],
    sa_ns: str,
    sa: str,
    namespace: str | None = None,
) -> None:
    """A (Cluster)Role with exactly `rules` and its binding to the ServiceAccount."""
    binding_kind = f"{role_kind}Binding"
    base = "/apis/rbac.authorization.k8s.io/v1"
    scope = f"/namespaces/{namespace}" if namespace else ""
    meta: Obj = {"name": role_name, **({"namespace": namespace} if namespace else {})}
    api.apply(
        f"{base}{scope}/{role_kind.lower()}s/{role_name}",
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": role_kind, "metadata": meta, "rules": rules},
    ).raise_for_status()
    api.apply(
        f"{base}{scope}/{binding_kind.lower()}s/{role_name}",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": binding_kind,
            "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role_name},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": sa_ns}],
        },
    ).raise_for_status()


def operator_kubeconfig(
    api: Api,
    server: str,
    path: Path,
    watch_namespaces: list[str] | None = None,
    name: str = "voice-gateway-operator",
) -> Path:
    """A ServiceAccount bound to exactly the operator's rules, as the chart binds them, and a kubeconfig with
    its token pointing at `server`. Cluster-wide: one ClusterRole with rbac.cluster_rules(). Namespaced: a
    ClusterRole with rbac.cluster_scoped_rules() plus a Role with rbac.namespaced_rules() per namespace."""
    ns = "voice-operator-system"
    api.ns(ns)
    api.apply(
        f"/api/v1/namespaces/{ns}/serviceaccounts/{name}",
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": ns}},
    ).raise_for_status()
    if watch_namespaces:
        _bind(api, "ClusterRole", name, rbac.cluster_scoped_rules(), ns, name)
        for wn in watch_namespaces:
            api.ns(wn)
            _bind(api, "Role", name, rbac.namespaced_rules(), ns, name, namespace=wn)
    else:
        _bind(api, "ClusterRole", name, rbac.cluster_rules(), ns, name)

    def token() -> str | None:
        sa = api.get(f"/api/v1/namespaces/{ns}/serviceaccounts/{name}") or {}
        for ref in sa.get("secrets") or []:  # 1.20's token controller makes a token Secret per account
            secret = api.get(f"/api/v1/namespaces/{ns}/secrets/{ref['name']}") or {}
            data = secret.get("data") or {}
            if data.get("token"):
                return base64.b64decode(data["token"]).decode()
        return None

    tok = wait_for(token, 30, 0.2, "service-account token")
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "op",
        "clusters": [{"name": "c", "cluster": {"server": server, "certificate-authority": api.ca}}],
        "users": [{"name": "op", "user": {"token": tok}}],
        "contexts": [{"name": "op", "context": {"cluster": "c", "user": "op", "namespace": ns}}],
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


# ---------------------------------------------------------------- fault-injecting proxy


class ConflictProxy:
    """A transparent HTTP proxy in front of the apiserver (the operator's kubeconfig points here).
    `arm_conflict(ns, name)` makes the next status write to that VoiceGateway race a REAL concurrent
    writer: just before forwarding it, the proxy has the admin patch the object, so the apiserver itself
    answers 409 to the operator's resourceVersion-guarded write."""

    def __init__(self, upstream: str, ca: str, admin: Api):
        self.upstream, self.ca, self.admin = upstream, ca, admin
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.armed: set[tuple[str, str]] = set()
        self.conflicts_injected = 0
        self.requests: list[tuple[str, str, int]] = []
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._started.wait(10)

    def stop(self) -> None:
        async def shutdown() -> None:
            await self._runner.cleanup()
            await self._session.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def hold(self) -> None:
        """New requests wait (streams already open are unaffected) until release()."""
        self._loop.call_soon_threadsafe(self._gate.clear)

    def release(self) -> None:
        self._loop.call_soon_threadsafe(self._gate.set)

    def arm_conflict(self, ns: str, name: str) -> None:
        self.armed.add((ns, name))

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        ctx = ssl.create_default_context(cafile=self.ca)

        async def handle(request: web.Request) -> web.StreamResponse:
            await self._gate.wait()
            session = self._session
            path = request.rel_url.path
            if request.method == "PATCH" and path.endswith("/status") and "/voicegateways/" in path:
                parts = path.split("/")
                key = (parts[parts.index("namespaces") + 1], parts[parts.index("voicegateways") + 1])
                if key in self.armed:
                    self.armed.discard(key)
                    await asyncio.to_thread(
                        self.admin.merge_patch,
                        vg_path(*key),
                        {"metadata": {"annotations": {"tests/concurrent-writer": "was-here"}}},
                    )
                    self.conflicts_injected += 1
            headers = {
                k: v
                for k, v in request.headers.items()
                if k.lower()
                not in ("host", "content-length", "transfer-encoding", "connection", "accept-encoding")
            }
            body = await request.read()
            try:
                up = await session.request(
                    request.method,
                    self.upstream + str(request.rel_url),
                    headers=headers,
                    data=body or None,
                    ssl=ctx,
                    timeout=aiohttp.ClientTimeout(total=None),
                )
            except (aiohttp.ClientError, OSError) as e:
                self.requests.append((request.method, path, 502))
                return web.Response(status=502, text=f"proxy: upstream unreachable: {e}")
            self.requests.append((request.method, path, up.status))
            resp = web.StreamResponse(status=up.status)
            for k, v in up.headers.items():
                if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                    resp.headers[k] = v
            await resp.prepare(request)
            try:
                async for chunk in up.content.iter_any():
                    await resp.write(chunk)
            except (aiohttp.ClientError, OSError, asyncio.CancelledError):
                pass  # upstream died mid-stream (apiserver restart): end the downstream stream too
            finally:
                up.release()
            return resp

        async def main() -> None:
            self._gate = asyncio.Event()
            self._gate.set()
            self._session = aiohttp.ClientSession()  # decompresses; Content-Encoding is dropped below
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", handle)
            self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
            self._started.set()

        self._loop.run_until_complete(main())
        self._loop.run_forever()


# ---------------------------------------------------------------- the operator process


class OperatorProcess:
    def __init__(self, kubeconfig: Path, log: Path, resync: float = 3.0, namespaces: list[str] | None = None):
        self.liveness_port, self.metrics_port = free_port(), free_port()
        self.log = log
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"}
        self._fh = log.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "voice_operator",
                "run",
                *([f"--namespace={n}" for n in namespaces] if namespaces else ["--all-namespaces"]),
                "--liveness",
                f"http://127.0.0.1:{self.liveness_port}/healthz",
                "--metrics-port",
                str(self.metrics_port),
                "--resync-seconds",
                str(resync),
            ],
            env=env,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )

    def wait_ready(self, timeout: float = 30) -> None:
        def live() -> bool:
            assert self.proc.poll() is None, f"operator exited:\n{self.tail()}"
            try:
                return (
                    httpx.get(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=1).status_code == 200
                )
            except httpx.TransportError:
                return False

        wait_for(live, timeout, 0.2, "operator liveness endpoint")

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text

    def metric(self, name: str, **labels: str) -> float:
        total = 0.0
        for line in self.metrics().splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def forbidden_lines(self) -> list[str]:
        """Log lines that show a missing permission. A create refused in a namespace that is being deleted
        (NamespaceLifecycle admission, also a 403) is not one."""
        text = self.log.read_text(errors="replace")
        return [
            line
            for line in text.splitlines()
            if ("forbidden" in line.lower() or "Not enough permissions" in line)
            and "because it is being terminated" not in line
        ]

    def tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._fh.close()


# ---------------------------------------------------------------- KWOK-style readiness


def make_node(api: Api, name: str = "kwok-node") -> None:
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
    }
    r = api.req("POST", "/api/v1/nodes", node)
    assert r.status_code in (201, 409), r.text
    heartbeat_node(api, name)


def heartbeat_node(api: Api, name: str = "kwok-node") -> None:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    cap = {"cpu": "64", "memory": "512Gi", "pods": "110", "nvidia.com/gpu": "4"}
    api.req(
        "PATCH",
        f"/api/v1/nodes/{name}/status",
        {
            "status": {
                "capacity": cap,
                "allocatable": cap,
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": "kwok",
                        "lastHeartbeatTime": now,
                        "lastTransitionTime": now,
                    }
                ],
            }
        },
        "application/merge-patch+json",
    ).raise_for_status()


def make_pods_ready(api: Api, ns: str, selector: str, node: str = "kwok-node") -> int:
    """Bind every Pending pod matching selector to the node and mark it Running and Ready."""
    done = 0
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for pod in api.list(f"/api/v1/namespaces/{ns}/pods", selector):
        name = pod["metadata"]["name"]
        if not pod["spec"].get("nodeName"):
            r = api.req(
                "POST",
                f"/api/v1/namespaces/{ns}/pods/{name}/binding",
                {
                    "apiVersion": "v1",
                    "kind": "Binding",
                    "metadata": {"name": name},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": node},
                },
            )
            if r.status_code == 404:
                continue  # deleted meanwhile (old ReplicaSet)
            assert r.status_code in (201, 409), r.text
        conds = [
            {"type": t, "status": "True", "lastTransitionTime": now}
            for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
        ]
        statuses = [
            {
                "name": c["name"],
                "image": c["image"],
                "imageID": "",
                "ready": True,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": now}},
            }
            for c in pod["spec"]["containers"]
        ]
        r = api.req(
            "PATCH",
            f"/api/v1/namespaces/{ns}/pods/{name}/status",
            {
                "status": {
                    "phase": "Running",
                    "conditions": conds,
                    "containerStatuses": statuses,
                    "podIP": "10.244.0.10",
                    "hostIP": "10.0.0.1",
                    "startTime": now,
                }
            },
            "application/merge-patch+json",
        )
        if r.status_code < 300:
            done += 1
    return done
