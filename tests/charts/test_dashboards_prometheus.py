"""The Grafana dashboards against a real Prometheus (Debian `prometheus`) scraping real processes.

A model server (`voice-gateway engine-server`, vLLM-Omni's API on the CPU engines) and a gateway in front of
it (`voice-gateway serve`, vLLM-Omni engine) run on 127.0.0.1, the gateway with a simulated NVML so its GPU
code path exports the GPU gauges, beside a stand-in for NVIDIA's dcgm-exporter (tests/charts/fake_dcgm.py:
the cluster's GPU source, with DCGM's exact names and labels); Prometheus scrapes them every second and
evaluates the chart's alert rules; the test sends real traffic (HTTP requests, spoken /voice and
/v1/realtime turns, an interrupted reply), then runs every dashboard query (variables resolved as Grafana
would) and requires data. The operator dashboard runs against the real
operator in test_chart_on_control_plane.py.
"""

from __future__ import annotations

import base64
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from websockets.sync.client import ClientConnection, connect

from gateway.audio.pcm import read_wav
from tests.charts.chart_tools import (
    DCGM_FAMILIES,
    MONITORING_APIS,
    REPO,
    VLLM_OMNI_ONLY,
    engine_server_metric_families,
    gateway_metric_families,
    metric_names,
    one,
    operator_metric_families,
    template,
)
from tests.charts.fake_dcgm import Gpu, fake_dcgm_exporter
from tests.charts.prom import (
    DASHBOARDS,
    Prometheus,
    grafana_regex_escape,
    resolve_variables,
    run_panel_query,
    running_prometheus,
    scrape_job,
    silent_families,
    targets,
    wait,
)
from tests.support import ServerProcess

FAKE_NVML = Path(__file__).resolve().parent / "fake_nvml"
ALL_TARGETS = [t for p in DASHBOARDS for t in targets(p.stem)]
LIVE_TARGETS = [t for t in ALL_TARGETS if not t[0].startswith("operator:")]


# ---- static checks ----------------------------------------------------------------------------------------
def test_dashboards_are_generated_and_well_formed() -> None:
    import json

    proc = subprocess.run(
        [sys.executable, "monitoring/build_dashboards.py", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, (
        "dashboards are stale: run python3 monitoring/build_dashboards.py\n" + proc.stderr
    )
    assert {p.stem for p in DASHBOARDS} == {"voice-gateway", "model-servers", "operator"}
    uids = set()
    for path in DASHBOARDS:
        d = json.loads(path.read_text())
        assert d["uid"] not in uids
        uids.add(d["uid"])
        assert [v["name"] for v in d["templating"]["list"]] == ["datasource", "namespace", "instance"]
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
        "time to first audio packet",
        "requests waiting",
        "reconciles by trigger",
        "turn stages p50 (stacked)",
        "turn stages p95 (stacked)",
        "time to first reply audio",
        "barge-in",
        "kv cache usage",
    ):
        assert needle in titles, needle  # fmt: skip


def _exported(title: str) -> set[str]:
    """What the process behind a dashboard exports; `up` comes from Prometheus itself."""
    if title.startswith("model-servers:"):
        return engine_server_metric_families() | VLLM_OMNI_ONLY | {"up"}
    if title.startswith("operator:"):
        return operator_metric_families()
    return gateway_metric_families() | DCGM_FAMILIES


@pytest.mark.parametrize(("title", "expr"), ALL_TARGETS, ids=[t for t, _ in ALL_TARGETS])
def test_queries_use_only_metrics_that_are_exported(title: str, expr: str) -> None:
    used = metric_names(expr)
    assert used and used <= _exported(title), f"{title}: {used - _exported(title)}"


# ---- the live stack ---------------------------------------------------------------------------------------
@dataclass
class Stack:
    gateway: ServerProcess
    engine_server: ServerProcess
    prom: Prometheus
    namespace: str


def _traffic(url: str) -> int:
    """Real requests: reads (audio generation), client errors, the informational routes, twice, a scrape
    apart (a labelled series is born on its first observation; rate() needs a later increase).
    Returns how many /read requests were sent."""
    reads = 0
    texts = ("Metrics make the invisible visible.", "A second sentence. And a third one, longer.")
    with httpx.Client(base_url=url, timeout=60) as c:
        for _ in range(2):
            for path in ("/health", "/models", "/config", "/languages"):
                assert c.get(path).status_code == 200, path
            for text in texts:
                r = c.post("/read", json={"text": text})
                assert r.status_code == 200, r.text
                reads += 1
            for bad in ({"text": ""}, {"nope": 1}):
                assert 400 <= c.post("/read", json=bad).status_code < 500
                reads += 1
            assert c.get("/no-such-route").status_code == 404
            time.sleep(1.5)
    return reads


def _voice_turn(gateway: ServerProcess) -> None:
    """One spoken turn on WS /voice (docs/voice.md), as a client commits it: the gateway's own speech of a
    question (POST /read) as binary PCM, then `audio.commit`; the reply's usage sets the tokens/s gauge."""
    r = httpx.post(gateway.url + "/read", json={"text": "What is the capital of France?"}, timeout=60)
    assert r.status_code == 200, r.text
    pcm = read_wav(r.content).pcm
    with connect(gateway.ws_url + "/voice", max_size=None, open_timeout=30) as ws:
        _until(ws, "session.created")
        # a short reply keeps the turn quick on a loaded machine; commits are the client's (no server VAD)
        update = {"turn_detection": None, "max_response_tokens": 24}
        ws.send(json.dumps({"type": "session.update", "session": update}))
        _until(ws, "session.updated")
        time.sleep(1.5)  # a scrape sees the session's turn series at zero, so rate() counts its first turn
        for i in range(0, len(pcm), 960):  # 20 ms frames
            ws.send(pcm[i : i + 960])
        ws.send(json.dumps({"type": "audio.commit"}))
        done = _until(ws, "response.done")
    assert done["status"] == "completed", done
    usage = done["usage"]
    assert isinstance(usage, dict) and usage["tokens_per_second"] > 0, done
    # the per-turn histograms: the same question on /v1/realtime, and a /voice reply cut short
    _realtime_turn(gateway, pcm)
    _interrupted_turn(gateway, pcm)


def _until(ws: ClientConnection, kind: str) -> dict[str, object]:
    """The next JSON event of type `kind`; an `error` event on the way fails the test."""
    while True:
        message = ws.recv(timeout=120)
        if isinstance(message, str) and (event := json.loads(message))["type"] in (kind, "error"):
            assert event["type"] == kind, event
            return dict(event)


def _realtime_turn(gateway: ServerProcess, pcm: bytes) -> None:
    """One spoken turn on WS /v1/realtime (docs/realtime.md), committed by the client, then answered."""
    with connect(gateway.ws_url + "/v1/realtime?model=gpt-realtime", max_size=None, open_timeout=30) as ws:
        _until(ws, "session.created")
        session = {"type": "realtime", "max_output_tokens": 24, "audio": {"input": {"turn_detection": None}}}
        ws.send(json.dumps({"type": "session.update", "session": session}))
        _until(ws, "session.updated")
        time.sleep(1.5)  # a scrape sees the session's turn series at zero, so rate() counts its first turn
        for i in range(0, len(pcm), 4800):  # 100 ms per append
            chunk = base64.b64encode(pcm[i : i + 4800]).decode()
            ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        ws.send(json.dumps({"type": "response.create"}))
        done = _until(ws, "response.done")
    response = done["response"]
    assert isinstance(response, dict) and response["status"] in ("completed", "incomplete"), done


def _interrupted_turn(gateway: ServerProcess, pcm: bytes) -> None:
    """A /voice reply the client interrupts as soon as it starts (a long answer is asked for)."""
    with connect(gateway.ws_url + "/voice", max_size=None, open_timeout=30) as ws:
        _until(ws, "session.created")
        update = {"turn_detection": None, "max_response_tokens": 160}
        ws.send(json.dumps({"type": "session.update", "session": update}))
        _until(ws, "session.updated")
        time.sleep(1.5)  # a scrape sees the session's turn series at zero, so rate() counts its first turn
        for i in range(0, len(pcm), 960):
            ws.send(pcm[i : i + 960])
        ws.send(json.dumps({"type": "audio.commit"}))
        _until(ws, "response.started")
        ws.send(json.dumps({"type": "interrupt"}))
        interrupted = _until(ws, "interrupted")
        done = _until(ws, "response.done")
    assert interrupted["reason"] == "client" and done["status"] == "interrupted", done


def _model_server_traffic(url: str) -> int:
    """vLLM-Omni API calls on the engine-server: speech (whole and streamed) and a short text chat turn,
    twice, a scrape apart. Returns how many requests finished."""
    finished = 0
    with httpx.Client(base_url=url, timeout=120) as c:
        for round_ in range(2):
            r = c.post("/v1/audio/speech", json={"input": f"The model server answers, round {round_}."})
            assert r.status_code == 200, r.text
            stream = {
                "input": "Streaming speech. Two sentences.",
                "stream": True,
                "response_format": "pcm",
                "stream_format": "audio",  # raw PCM, as vLLM-Omni 0.30.0 streams it when asked
            }
            with c.stream("POST", "/v1/audio/speech", json=stream) as r:
                assert r.status_code == 200
                assert sum(len(b) for b in r.iter_bytes()) > 0
            chat = {
                "messages": [{"role": "user", "content": "Say hello."}],
                "modalities": ["text"],
                "max_tokens": 4,
            }
            r = c.post("/v1/chat/completions", json=chat)
            assert r.status_code == 200, r.text
            finished += 3
            time.sleep(1.5)
    return finished


NAMESPACE = "voice-test"
# What NVIDIA's dcgm-exporter reports on a GPU node: the Omni server's GPU (75 % of an L40S, as vLLM's
# preallocated shares leave it) and another workload's full GPU, which no panel or alert of this chart shows.
DCGM_GPUS = (
    Gpu(0, NAMESPACE, "vg-omni-7d9f5c-x2k4q", "server", util_percent=63, used_mib=34551, free_mib=11517),
    Gpu(1, "ml", "train-0", "trainer", util_percent=100, used_mib=46000, free_mib=68),
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("prometheus")
    env_path = os.pathsep.join(p for p in (str(FAKE_NVML), os.environ.get("PYTHONPATH", "")) if p)
    # The cpu-mode topology the operator deploys: `voice-gateway engine-server` as the Omni and TTS model
    # server, the gateway in front of it through its vLLM-Omni engine.
    engine = ServerProcess("engine-server")
    gateway: ServerProcess | None = None
    try:
        engine.wait_ready()
        gateway = ServerProcess(
            "serve",
            env={
                "PYTHONPATH": env_path,
                "VOICE_ENGINE": "vllm-omni",
                "OMNI_SERVICE_URL": engine.url,
                "OMNI_WS_URL": engine.ws_url,
                "TTS_SERVICE_URL": engine.url,
                # reply audio unpaced: the /voice turn waits for generation, not for real-time playout
                "VOICE_AUDIO_LEAD_MS": "60000",
            },
        )
        gateway.wait_ready()
        namespace = NAMESPACE
        rules = tmp / "rules.yaml"
        rules.write_text(
            yaml.safe_dump(one(template(*MONITORING_APIS), "PrometheusRule")["spec"], sort_keys=False)
        )
        jobs = [
            scrape_job("gateway", gateway.port, namespace, "vg-gateway"),
            # one engine-server plays both model servers (in a cluster: two Deployments)
            scrape_job("omni", engine.port, namespace, "vg-omni"),
            scrape_job("tts", engine.port, namespace, "vg-tts"),
        ]
        with (
            fake_dcgm_exporter(DCGM_GPUS) as dcgm_port,
            running_prometheus(
                tmp,
                # the exporter's own namespace and pod as target labels (as its ServiceMonitor attaches
                # them): the GPU user's namespace/pod become exported_namespace/exported_pod
                [
                    *jobs,
                    scrape_job("nvidia-dcgm-exporter", dcgm_port, "gpu-operator", "nvidia-dcgm-exporter"),
                ],
                [rules],
            ) as prom,
        ):
            time.sleep(2)  # a few samples before the traffic, so rate() sees the increase
            reads = _traffic(gateway.url)
            _voice_turn(gateway)
            reads += 1  # the question's audio
            finished = _model_server_traffic(engine.url)

            def scraped() -> bool:
                return (
                    prom.value('sum(voice_gateway_requests_total{endpoint="/read"})') >= reads
                    and prom.value('sum(vllm_omni:requests_success_total{job="omni"})') >= finished
                    and prom.value("count(voice_gateway_tokens_per_second)") >= 1
                    and prom.value(
                        'sum(voice_gateway_turn_latency_seconds_count{stage=~"first_audio|barge_in_stop"})'
                    )
                    >= 3
                )

            wait(scraped, 30, "traffic scraped")
            time.sleep(3)
            yield Stack(gateway, engine, prom, namespace)
    finally:
        if gateway is not None:
            gateway.stop()
        engine.stop()


def test_dashboard_variables_resolve(stack: Stack) -> None:
    for stem, process in (("voice-gateway", stack.gateway), ("model-servers", stack.engine_server)):
        values = resolve_variables(stack.prom, stem)
        assert values["namespace"] == stack.namespace
        assert values["instance"] == grafana_regex_escape(f"127.0.0.1:{process.port}")


@pytest.mark.parametrize(("title", "expr"), LIVE_TARGETS, ids=[t for t, _ in LIVE_TARGETS])
def test_every_dashboard_query_returns_data(stack: Stack, title: str, expr: str) -> None:
    stem = title.split(":", 1)[0]
    process = stack.engine_server if stem == "model-servers" else stack.gateway
    exposition = httpx.get(process.url + "/metrics", timeout=10).text
    # `up` comes from Prometheus, DCGM_* from the dcgm-exporter stand-in (checked by test_gpu_panels_*)
    own = {m for m in metric_names(expr) if m != "up" and m not in DCGM_FAMILIES}
    silent = silent_families(own, exposition)
    if silent and silent <= VLLM_OMNI_ONLY:
        pytest.xfail(
            f"only a real vLLM-Omni exports {sorted(silent)} (the CPU engine-server has no KV cache)"
        )
    assert not silent, f"the traffic never set {sorted(silent)}: {process.url} exports no sample"
    run_panel_query(stack.prom, stem, expr)


def test_chart_alert_rules_evaluate_cleanly_on_real_data(stack: Stack) -> None:
    def evaluated() -> bool:
        rules = stack.prom.rules()
        return len(rules) == 9 and all(not r.get("lastEvaluation", "0001").startswith("0001") for r in rules)

    wait(evaluated, 20, "rules evaluated")
    rules = stack.prom.rules()
    for rule in rules:
        assert rule["health"] == "ok", f"{rule['name']}: {rule.get('lastError')}"
    # a healthy stack with traffic fires nothing (GPU memory is 75 % of the simulated card)
    firing = [a for r in rules for a in r.get("alerts", []) if a["state"] == "firing"]
    assert not firing, firing
    # and the GPU gauges went through the gateway's real NVML code path
    used = stack.prom.value(f'voice_gateway_gpu_memory_used_mb{{namespace="{stack.namespace}"}}')
    assert math.isclose(used, 46068 * 0.75, rel_tol=0.01)
    total = stack.prom.value(f'voice_gateway_gpu_memory_total_mb{{namespace="{stack.namespace}"}}')
    assert math.isclose(total, 46068, rel_tol=0.001)


GPU_PANELS = [t for t in LIVE_TARGETS if t[0].startswith("voice-gateway: GPU ")]


@pytest.mark.parametrize(("title", "expr"), GPU_PANELS, ids=[t for t, _ in GPU_PANELS])
def test_gpu_panels_show_nvml_and_dcgm_whichever_exists(stack: Stack, title: str, expr: str) -> None:
    """Each GPU query returns the gateway's NVML series (single host) and, beside it, the model server's GPU
    from DCGM (a cluster) — not the other workload's GPU on the same node."""
    q = expr.replace("$__rate_interval", "1m")
    for name, val in resolve_variables(stack.prom, "voice-gateway").items():
        q = q.replace(f"${name}", val)
    series = {
        (r["metric"]["instance"], r["metric"]["gpu"]): float(r["value"][1]) for r in stack.prom.query(q)
    }
    omni = DCGM_GPUS[0]
    assert {i for i, _ in series} == {f"127.0.0.1:{stack.gateway.port}", omni.pod}, series
    dcgm_value = series[(omni.pod, str(omni.index))]
    total = omni.used_mib + omni.free_mib
    expected = {
        "used": omni.used_mib,
        "total": total,
        "share": omni.used_mib / total,
        "util": omni.util_percent,
    }
    if "utilization" in title:
        assert dcgm_value == expected["util"]
    elif "share" in title:
        assert math.isclose(dcgm_value, expected["share"], rel_tol=1e-9)
    else:
        assert dcgm_value == (expected["total"] if "[B]" in title else expected["used"]), (title, series)


def test_gpu_memory_alert_reads_dcgm_in_a_cluster(stack: Stack) -> None:
    """The alert's DCGM branch ("auto" source) evaluates on the exporter's real series shape: the model
    server's GPU under its namespace/pod, the other workload's full GPU left out."""
    (rule,) = [r for r in stack.prom.rules() if r["name"] == "VoiceGatewayGPUMemoryHigh"]
    expr = rule["query"].rsplit(">", 1)[0]
    found = {
        (r["metric"]["namespace"], r["metric"]["service"]): float(r["value"][1])
        for r in stack.prom.query(expr)
    }
    omni = DCGM_GPUS[0]
    assert math.isclose(found[(NAMESPACE, omni.pod)], omni.used_mib / (omni.used_mib + omni.free_mib))
    assert math.isclose(found[(NAMESPACE, "vg-gateway")], 0.75, rel_tol=0.01)  # the gateway's NVML view
    assert set(found) == {(NAMESPACE, omni.pod), (NAMESPACE, "vg-gateway")}, found
