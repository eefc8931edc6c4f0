"""The model-server metric names and labels the chart reads (Grafana dashboards, alert rules) against what
the REAL vLLM-Omni 0.30.0 servers of this package expose after real traffic; and `voice-gateway engine-server`
(the CPU stand-in) against the real servers for every family it imitates. When they disagree, the real server
wins.

vLLM-Omni's own families are `vllm_omni:*` (metrics/definitions.py); upstream vLLM's are `vllm:*`, relabelled
from `engine` to `stage` + `replica` (metrics/stat_logger.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.engine_server.models import DEFAULT_OMNI_NAME, DEFAULT_TTS_NAME
from tests.charts.chart_tools import CHART
from tests.charts.test_chart_alerts import rendered_groups
from tests.engine_server.test_wire_fidelity import OMNI_CASES, SPEECH_CASES, WireServer, run
from tests.real_vllm_omni.conftest import RealServers
from tests.support import ServerProcess

MODEL_METRIC = re.compile(r"\bvllm(?:_omni)?:[a-z0-9_:]*[a-z0-9_]")
# Labels Prometheus attaches to every scraped series (target labels) and the histogram bucket label.
TARGET_LABELS = {"job", "namespace", "instance", "service", "pod", "endpoint", "container", "le"}
# Referenced families the real 0.30.0 servers do not expose, and why the chart still names them.
NOT_ON_THIS_SERVER = {
    # older vLLM's name for the KV-cache gauge: the dashboard reads it only as the `or` fallback of
    # vllm:kv_cache_usage_perc, which 0.30.0 exports (vllm/v1/metrics/loggers.py no longer defines it)
    "vllm:gpu_cache_usage_perc": "older vLLM releases only",
}
# One request to each server: a streamed speech request (fills the TTS first-packet histogram) and a
# streamed chat with audio (thinker, talker and code2wav all run).
SPEECH_CASE = next(c for c in SPEECH_CASES if c.id == "stream-is-sse")
CHAT_CASE = next(c for c in OMNI_CASES if c.id == "chat-stream-text-then-audio")


@dataclass
class Exposed:
    """What a /metrics answer holds: per sample name, its family's type and the label names and values."""

    types: dict[str, str] = field(default_factory=dict)
    labels: dict[str, dict[str, set[str]]] = field(default_factory=dict)
    totals: dict[str, float] = field(default_factory=dict)  # the sum of a sample name's values

    def add(self, text: str, model_name: str | None = None) -> Exposed:
        for family in text_string_to_metric_families(text):
            if not MODEL_METRIC.fullmatch(family.name):
                continue
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue  # prometheus_client's creation timestamps, not part of the family's contract
                if model_name is not None and sample.labels.get("model_name") != model_name:
                    continue
                self.types[sample.name] = family.type
                self.totals[sample.name] = self.totals.get(sample.name, 0.0) + sample.value
                seen = self.labels.setdefault(sample.name, {})
                for label, value in sample.labels.items():
                    seen.setdefault(label, set()).add(value)
        return self

    def has(self, name: str) -> bool:
        """A sample name, or a histogram's family name (as runbooks and panel descriptions write it)."""
        return name in self.labels or (
            name + "_bucket" in self.labels and self.types[name + "_bucket"] == "histogram"
        )

    def label_names(self, name: str) -> set[str]:
        return set(self.labels[name]) - {"le"}

    def merge(self, other: Exposed) -> Exposed:
        for name, labels in other.labels.items():
            self.types[name] = other.types[name]
            self.totals[name] = self.totals.get(name, 0.0) + other.totals[name]
            for label, values in labels.items():
                self.labels.setdefault(name, {}).setdefault(label, set()).update(values)
        return self


def scrape(url: str, model_name: str | None = None) -> Exposed:
    answer = httpx.get(url + "/metrics", timeout=30)
    assert answer.status_code == 200, answer.text[:500]
    return Exposed().add(answer.text, model_name)


def _promql_labels(expr: str) -> set[str]:
    """Label names an expression filters on (`{name=...}`) or groups by (`by (...)`, `without (...)`)."""
    names: set[str] = set()
    for selector in re.findall(r"\{([^{}]*)\}", expr):
        names.update(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", selector))
    for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        names.update(n.strip() for n in group.split(",") if n.strip())
    return names - TARGET_LABELS


def chart_references() -> tuple[set[str], list[tuple[str, str]]]:
    """(every model-server metric name the dashboards and alert rules mention, (where, expr) of every query
    that reads one). Runbook text counts for names: an operator types what it says."""
    names: set[str] = set()
    queries: list[tuple[str, str]] = []
    for path in sorted((CHART / "dashboards").glob("*.json")):
        names.update(MODEL_METRIC.findall(path.read_text()))
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                queries.append((f"{path.stem}: {panel['title']}", target["expr"]))
    rules = CHART / "files" / "alerts.rules.yaml"
    names.update(MODEL_METRIC.findall(rules.read_text()))
    for group in rendered_groups():
        for rule in group["rules"]:
            queries.append((f"alert {rule.get('alert', rule.get('record'))}", rule["expr"]))
    return names, [(where, expr) for where, expr in queries if MODEL_METRIC.search(expr)]


@pytest.fixture(scope="module")
def real_exposed(real_servers: RealServers) -> dict[str, Exposed]:
    run(WireServer(real_servers.tts.url, real_servers.tts.model), SPEECH_CASE)
    run(WireServer(real_servers.omni.url, real_servers.omni.model), CHAT_CASE)
    return {"tts": scrape(real_servers.tts.url), "omni": scrape(real_servers.omni.url)}


@pytest.fixture(scope="module")
def engine_server() -> Iterator[ServerProcess]:
    server = ServerProcess("engine-server")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def test_the_chart_reads_what_the_real_servers_expose(real_exposed: dict[str, Exposed]) -> None:
    names, queries = chart_references()
    assert "vllm_omni:audio_ttfp_s" in names and queries, "the chart reads no model-server family"
    either = Exposed()
    for exposed in real_exposed.values():
        either.merge(exposed)
    missing = {n for n in names if not either.has(n)} - set(NOT_ON_THIS_SERVER)
    assert not missing, f"the chart names families the real servers do not expose: {sorted(missing)}"
    for where, expr in queries:
        used = {n for n in MODEL_METRIC.findall(expr) if n not in NOT_ON_THIS_SERVER}
        wanted = _promql_labels(expr)
        for name in used:
            assert wanted <= either.label_names(name), (
                f"{where}: {name} has {sorted(either.label_names(name))}, the query uses {sorted(wanted)}"
            )
            if name.endswith("_bucket"):
                assert either.types[name] == "histogram", f"{where}: {name} is a {either.types[name]}"


def test_one_request_fills_what_the_panels_read(real_exposed: dict[str, Exposed]) -> None:
    """Each server observed its request in the families the panels read (a family that exists but is only
    filled by other paths would leave a panel empty)."""
    for role, exposed in real_exposed.items():
        for name in (
            "vllm_omni:audio_ttfp_s_count",
            "vllm_omni:e2e_request_latency_s_count",
            "vllm_omni:requests_success_total",
            "vllm_omni:generation_tokens_total",
        ):
            assert exposed.totals.get(name, 0.0) >= 1, f"{role}: {name} = {exposed.totals.get(name)}"


def test_the_engine_server_imitates_the_real_names_and_labels(
    real_exposed: dict[str, Exposed], engine_server: ServerProcess
) -> None:
    run(WireServer(engine_server.url, DEFAULT_TTS_NAME), SPEECH_CASE)
    run(WireServer(engine_server.url, DEFAULT_OMNI_NAME), CHAT_CASE)
    imitations = {
        "tts": scrape(engine_server.url, DEFAULT_TTS_NAME),
        "omni": scrape(engine_server.url, DEFAULT_OMNI_NAME),
    }
    for role, imitation in imitations.items():
        real = real_exposed[role]
        assert imitation.labels, f"the engine server exports no vLLM-Omni family for {role}"
        for name, labels in imitation.labels.items():
            assert name in real.labels, f"{role}: the engine server invents {name}"
            assert imitation.types[name] == real.types[name], (
                f"{role}: {name} is a {imitation.types[name]} here, a {real.types[name]} on the real server"
            )
            assert set(labels) == set(real.labels[name]), (
                f"{role}: {name} labels {sorted(labels)}, the real server's {sorted(real.labels[name])}"
            )
            for label in ("stage", "replica", "finished_reason"):
                if label in labels:
                    assert labels[label] <= real.labels[name][label], (
                        f"{role}: {name}{{{label}}} {sorted(labels[label])}, "
                        f"real {sorted(real.labels[name][label])}"
                    )
        # what the dashboards read from a model server, the imitation has too
        names, _ = chart_references()
        for name in names - set(NOT_ON_THIS_SERVER) - {"vllm:kv_cache_usage_perc"}:  # no KV cache here
            assert imitation.has(name), f"{role}: the engine server does not export {name}"


def test_the_scanners_find_names_and_labels() -> None:
    """The name and label scanners see what they are meant to (a scanner that found nothing would pass
    every check above)."""
    expr = (
        "sum by (job, finished_reason) "
        '(rate(vllm_omni:requests_success_total{namespace=~"$ns", stage="0"}[1m]))'
    )
    assert MODEL_METRIC.findall(expr) == ["vllm_omni:requests_success_total"]
    assert _promql_labels(expr) == {"finished_reason", "stage"}
    exposed = Exposed().add(
        '# TYPE vllm:x_total counter\nvllm:x_total{model_name="m",stage="0",replica="0"} 1.0\n'
    )
    assert exposed.types == {"vllm:x_total": "counter"} and exposed.label_names("vllm:x_total") == {
        "model_name",
        "stage",
        "replica",
    }
