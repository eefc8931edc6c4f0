"""A real Prometheus (Debian `prometheus`) on 127.0.0.1 for the dashboard tests, and Grafana's variable
resolution for the dashboards' queries."""

from __future__ import annotations

import json
import math
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.charts.chart_tools import CHART, tool
from tests.support import free_port

DASHBOARDS = sorted((CHART / "dashboards").glob("*.json"))
RATE_INTERVAL = "1m"


def dashboard(stem: str) -> dict[str, Any]:
    return json.loads((CHART / "dashboards" / f"{stem}.json").read_text())


def targets(stem: str) -> list[tuple[str, str]]:
    """(`<dashboard>: <panel> [refId]`, expr) for every query of a dashboard."""
    out = []
    for panel in dashboard(stem)["panels"]:
        for t in panel.get("targets", []):
            out.append((f"{stem}: {panel['title']} [{t['refId']}]", t["expr"]))
    return out


def scrape_job(job: str, port: int, namespace: str, service: str) -> dict[str, Any]:
    """A static scrape job with the labels the chart's ServiceMonitors attach in a cluster
    (`job` is the Service's app.kubernetes.io/component through the ServiceMonitor's jobLabel)."""
    return {
        "job_name": job,
        "static_configs": [
            {
                "targets": [f"127.0.0.1:{port}"],
                "labels": {"namespace": namespace, "service": service, "pod": f"{service}-0"},
            }
        ],
    }


def wait(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise TimeoutError(what)


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = r.json()
        assert r.status_code == 200 and body["status"] == "success", f"{expr}: {body}"
        return body["data"]["result"]

    def value(self, expr: str) -> float:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else 0.0

    def rules(self) -> list[dict[str, Any]]:
        groups = httpx.get(f"{self.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
        return [r for g in groups for r in g["rules"]]

    def label_values(self, label: str, match: str) -> list[str]:
        r = httpx.get(f"{self.url}/api/v1/label/{label}/values", params={"match[]": match}, timeout=10).json()
        assert r["status"] == "success", r
        return list(r["data"])


@contextmanager
def running_prometheus(
    tmp: Path, scrape_configs: list[dict[str, Any]], rule_files: list[Path] | None = None
) -> Iterator[Prometheus]:
    """Prometheus scraping every second (evaluating rules every second), on a free loopback port."""
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(p) for p in rule_files or []],
        "scrape_configs": scrape_configs,
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    with (tmp / "prometheus.log").open("wb") as log:
        args = [
            tool("prometheus"),
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ]
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        try:
            prom = Prometheus(f"http://127.0.0.1:{port}")
            wait(
                lambda: httpx.get(f"{prom.url}/-/ready", timeout=2).status_code == 200, 30, "prometheus ready"
            )
            n = len(scrape_configs)
            wait(lambda: len(prom.query("up == 1")) == n, 30, "first scrape of every target")
            yield prom
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def grafana_regex_escape(value: str) -> str:
    """What Grafana's Prometheus data source does to a multi-value variable: regex metacharacters escaped
    with a backslash that is itself escaped for the PromQL string literal."""
    return re.sub(r"([.*+?^$()\[\]{}|\\])", r"\\\\\1", value)


def resolve_variables(prom: Prometheus, stem: str) -> dict[str, str]:
    """Resolve the dashboard's query variables the way Grafana does (label_values through the label API)."""
    values: dict[str, str] = {}
    for var in dashboard(stem)["templating"]["list"]:
        if var["type"] != "query":
            continue
        q = var["query"]["query"]
        for name, val in values.items():
            q = q.replace(f"${name}", val)
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", q)
        assert m, q
        found = prom.label_values(m.group(2), m.group(1))
        assert found, f"variable {var['name']}: no values for {q}"
        values[var["name"]] = "|".join(grafana_regex_escape(v) for v in found)
    return values


def run_panel_query(prom: Prometheus, stem: str, expr: str) -> list[float]:
    """The query as Grafana sends it (variables resolved, $__rate_interval set); its values, NaN dropped."""
    q = expr.replace("$__rate_interval", RATE_INTERVAL)
    for name, val in resolve_variables(prom, stem).items():
        q = q.replace(f"${name}", val)
    assert "$" not in q, q
    result = prom.query(q)
    assert result, f"no data for {q}"
    values = [float(r["value"][1]) for r in result]
    assert any(not math.isnan(v) for v in values), f"only NaN for {q}"
    return values


def silent_families(families: set[str], exposition: str) -> set[str]:
    """Families a process declares but has no sample of yet (a labelled series is born on first use)."""

    def has_sample(f: str) -> bool:
        return re.search(rf"^{re.escape(f)}(_bucket|_count|_sum|_total)?[{{ ]", exposition, re.M) is not None

    return {f for f in families if not has_sample(f)}
