"""The Grafana dashboards against a real Prometheus (Debian `prometheus`) scraping a real gateway.

A gateway (`python -m gateway serve`, embedded CPU engine) runs on 127.0.0.1 with a simulated NVML so its
GPU code path exports the GPU gauges; Prometheus scrapes it every second and evaluates the chart's alert
rules; the test sends real traffic, then runs every dashboard query (variables resolved as Grafana would)
and requires data.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.charts.chart_tools import (
    CHART,
    MONITORING_APIS,
    REPO,
    gateway_metric_families,
    metric_names,
    one,
    template,
    tool,
)
from tests.support import ServerProcess, free_port

DASHBOARDS = sorted((CHART / "dashboards").glob("*.json"))
FAKE_NVML = Path(__file__).resolve().parent / "fake_nvml"
RATE_INTERVAL = "1m"


def _targets(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for panel in dashboard["panels"]:
        for t in panel.get("targets", []):
            out.append((f"{panel['title']} [{t['refId']}]", t["expr"]))
    return out


ALL_TARGETS = [
    (f"{p.stem}: {title}", expr) for p in DASHBOARDS for title, expr in _targets(json.loads(p.read_text()))
]


# ---- static checks ----------------------------------------------------------------------------------------
def test_dashboards_are_generated_and_well_formed() -> None:
    proc = subprocess.run(
        [sys.executable, "monitoring/build_dashboards.py", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, (
        "dashboards are stale: run python3 monitoring/build_dashboards.py\n" + proc.stderr
    )
    uids = set()
    for path in DASHBOARDS:
        d = json.loads(path.read_text())
        assert d["uid"] not in uids
        uids.add(d["uid"])
        names = [v["name"] for v in d["templating"]["list"]]
        assert names == ["datasource", "namespace", "instance"]
        ids = [p["id"] for p in d["panels"]]
        assert len(ids) == len(set(ids))
        cells: set[tuple[int, int]] = set()
        for p in d["panels"]:
            g = p["gridPos"]
            assert g["x"] + g["w"] <= 24
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    assert (x, y) not in cells, f"panel {p['title']} overlaps another"
                    cells.add((x, y))
            if p["type"] != "row":
                assert p["datasource"]["uid"] == "${datasource}"
                for t in p["targets"]:
                    assert 'namespace=~"$namespace"' in t["expr"] and 'instance=~"$instance"' in t["expr"]


def test_dashboard_covers_the_issue_panels() -> None:
    titles = " | ".join(t for t, _ in ALL_TARGETS).lower()
    for needle in (
        "request rate by endpoint",
        "errors by endpoint",
        "latency quantiles",
        "audio generation latency",
        "active streams",
        "tokens per second",
        "gpu utilization",
        "gpu memory",
        "model-server health",
    ):
        assert needle in titles, needle  # fmt: skip


@pytest.mark.parametrize(("title", "expr"), ALL_TARGETS, ids=[t for t, _ in ALL_TARGETS])
def test_queries_use_only_metrics_the_gateway_exports(title: str, expr: str) -> None:
    used = metric_names(expr)
    assert used and used <= gateway_metric_families(), f"{title}: {used - gateway_metric_families()}"


# ---- the live stack ---------------------------------------------------------------------------------------
@dataclass
class Stack:
    gateway: ServerProcess
    prometheus_url: str
    namespace: str

    def query(self, expr: str) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.prometheus_url}/api/v1/query", params={"query": expr}, timeout=10)
        body = r.json()
        assert r.status_code == 200 and body["status"] == "success", f"{expr}: {body}"
        return body["data"]["result"]


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise TimeoutError(what)


def _traffic(url: str) -> int:
    """Real requests: reads (audio generation), client errors, the informational routes.
    Returns how many /read requests were sent."""
    reads = 0
    with httpx.Client(base_url=url, timeout=60) as c:
        for path in ("/health", "/models", "/config", "/languages"):
            assert c.get(path).status_code == 200, path
        for text in ("Metrics make the invisible visible.", "A second sentence. And a third one, longer.",
                     "Prometheus scrapes the gateway every second."):  # fmt: skip
            r = c.post("/read", json={"text": text})
            assert r.status_code == 200, r.text
            reads += 1
        for bad in ({"text": ""}, {"nope": 1}):
            assert 400 <= c.post("/read", json=bad).status_code < 500
            reads += 1
        assert c.get("/no-such-route").status_code == 404
    return reads


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus = tool("prometheus")
    tmp = tmp_path_factory.mktemp("prometheus")
    env_path = os.pathsep.join(p for p in (str(FAKE_NVML), os.environ.get("PYTHONPATH", "")) if p)
    gateway = ServerProcess("serve", env={"PYTHONPATH": env_path})
    prom: subprocess.Popen[bytes] | None = None
    log = (tmp / "prometheus.log").open("wb")
    try:
        gateway.wait_ready()
        namespace = "voice-test"
        rules = one(template(*MONITORING_APIS), "PrometheusRule")["spec"]
        (tmp / "rules.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(tmp / "rules.yaml")],
            "scrape_configs": [
                {
                    "job_name": "gateway",  # what the ServiceMonitor's jobLabel gives
                    "static_configs": [
                        {
                            "targets": [f"127.0.0.1:{gateway.port}"],
                            # the target labels the ServiceMonitor attaches in a cluster
                            "labels": {
                                "namespace": namespace,
                                "service": "vg-gateway",
                                "pod": "vg-gateway-0",
                            },
                        }
                    ],
                }
            ],
        }
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        prom = subprocess.Popen(
            [prometheus, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        s = Stack(gateway, f"http://127.0.0.1:{port}", namespace)
        _wait(
            lambda: httpx.get(f"{s.prometheus_url}/-/ready", timeout=2).status_code == 200,
            30,
            "prometheus ready",
        )
        _wait(lambda: s.query("up == 1"), 30, "first scrape")
        time.sleep(2)  # a few samples before the traffic, so rate() sees the increase
        reads = _traffic(gateway.url)
        _wait(
            lambda: (
                sum(float(r["value"][1]) for r in s.query('voice_gateway_requests_total{endpoint="/read"}'))
                >= reads
            ),
            30,
            "traffic scraped",
        )
        time.sleep(3)
        yield s
    finally:
        if prom is not None:
            prom.terminate()
            try:
                prom.wait(timeout=15)
            except subprocess.TimeoutExpired:
                prom.kill()
                prom.wait()
        log.close()
        gateway.stop()


def _grafana_regex_escape(value: str) -> str:
    """What Grafana's Prometheus data source does to a multi-value variable: regex metacharacters escaped with
    a backslash that is itself escaped for the PromQL string literal."""
    return re.sub(r"([.*+?^$()\[\]{}|\\])", r"\\\\\1", value)


def _resolve_variables(stack: Stack, dashboard: dict[str, Any]) -> dict[str, str]:
    """Resolve the dashboard's query variables the way Grafana does (label_values through the label API)."""
    values: dict[str, str] = {}
    for var in dashboard["templating"]["list"]:
        if var["type"] != "query":
            continue
        q = var["query"]["query"]
        for name, val in values.items():
            q = q.replace(f"${name}", val)
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", q)
        assert m, q
        r = httpx.get(
            f"{stack.prometheus_url}/api/v1/label/{m.group(2)}/values",
            params={"match[]": m.group(1)},
            timeout=10,
        ).json()
        assert r["status"] == "success" and r["data"], f"variable {var['name']}: no values for {q}"
        values[var["name"]] = "|".join(_grafana_regex_escape(v) for v in r["data"])
    return values


def test_dashboard_variables_resolve(stack: Stack) -> None:
    for path in DASHBOARDS:
        values = _resolve_variables(stack, json.loads(path.read_text()))
        assert values["namespace"] == stack.namespace
        assert _grafana_regex_escape(f"127.0.0.1:{stack.gateway.port}") in values["instance"]


@pytest.mark.parametrize(("title", "expr"), ALL_TARGETS, ids=[t for t, _ in ALL_TARGETS])
def test_every_dashboard_query_returns_data(stack: Stack, title: str, expr: str) -> None:
    dashboard = json.loads(next(p for p in DASHBOARDS if title.startswith(p.stem + ":")).read_text())
    q = expr.replace("$__rate_interval", RATE_INTERVAL)
    for name, val in _resolve_variables(stack, dashboard).items():
        q = q.replace(f"${name}", val)
    assert "$" not in q, q
    exposition = httpx.get(stack.gateway.url + "/metrics", timeout=10).text
    families = {m for m in metric_names(expr) if m != "up"}
    silent = {f for f in families if not re.search(rf"^{f}(_bucket|_count|_sum|_total)?{{", exposition, re.M)}
    if silent:
        # the gateway declares the family but no code path has set it yet (e.g. tokens/s before LLM replies)
        pytest.xfail(f"the gateway exports no sample of {sorted(silent)} yet")
    result = stack.query(q)
    assert result, f"{title}: no data for {q}"
    numbers = [float(r["value"][1]) for r in result]
    assert any(not math.isnan(v) for v in numbers), f"{title}: only NaN for {q}"


def test_chart_alert_rules_evaluate_cleanly_on_real_data(stack: Stack) -> None:
    def loaded() -> bool:
        groups = httpx.get(f"{stack.prometheus_url}/api/v1/rules", timeout=10).json()["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return len(rules) == 8 and all(r.get("lastEvaluation", "").startswith("2") and
                                       not r["lastEvaluation"].startswith("0001") for r in rules)  # fmt: skip

    _wait(loaded, 20, "rules evaluated")
    groups = httpx.get(f"{stack.prometheus_url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    for rule in (r for g in groups for r in g["rules"]):
        assert rule["health"] == "ok", f"{rule['name']}: {rule.get('lastError')}"
    # a healthy gateway with traffic fires nothing (GPU memory is 75 % of the simulated card)
    firing = [a for g in groups for r in g["rules"] for a in r.get("alerts", []) if a["state"] == "firing"]
    assert not firing, firing
    # and the GPU gauges went through the gateway's real NVML code path
    used = stack.query(f'voice_gateway_gpu_memory_used_mb{{namespace="{stack.namespace}"}}')
    assert used and math.isclose(float(used[0]["value"][1]), 46068 * 0.75, rel_tol=0.01)
