#!/usr/bin/env python3
"""Build the Grafana dashboards shipped by the chart (charts/voice-gateway/dashboards/*.json).

The JSON files are generated from this one description so that every panel follows the same conventions
(datasource variable, `namespace` / `instance` variables, `$__rate_interval`). tests/charts checks that the
committed JSON equals this script's output and that every query returns data from a real Prometheus scraping a
real gateway.

    python3 monitoring/build_dashboards.py          # rewrite the JSON files
    python3 monitoring/build_dashboards.py --check  # exit 1 when they are stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "charts" / "voice-gateway" / "dashboards"

DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'namespace=~"$namespace", instance=~"$instance"'
RI = "$__rate_interval"
S5XX = 'status=~"5.."'
SERR = 'status=~"4..|5.."'
READY = 'phase="Ready"'
RESULT_OK = 'result="ok"'


def _target(expr: str, legend: str, ref: str, instant: bool = False) -> dict[str, Any]:
    t: dict[str, Any] = {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref}
    if instant:
        t["instant"] = True
    else:
        t["range"] = True
    return t


class Layout:
    """Places panels left to right on Grafana's 24-column grid."""

    def __init__(self) -> None:
        self.y = 0
        self.x = 0
        self.row_h = 0
        self.next_id = 1
        self.panels: list[dict[str, Any]] = []

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append(
            {
                "type": "row",
                "title": title,
                "id": self._id(),
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
                "panels": [],
            }
        )
        self.y += 1

    def _id(self) -> int:
        i = self.next_id
        self.next_id += 1
        return i

    def _newline(self) -> None:
        if self.x:
            self.y += self.row_h
            self.x = 0
            self.row_h = 0

    def add(self, panel: dict[str, Any], w: int, h: int) -> None:
        if self.x + w > 24:
            self._newline()
        panel["id"] = self._id()
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        panel["datasource"] = DS
        self.panels.append(panel)
        self.x += w
        self.row_h = max(self.row_h, h)


def stat(
    title: str, expr: str, unit: str, desc: str, thresholds: list[tuple[str, float | None]]
) -> dict[str, Any]:
    return {
        "type": "stat",
        "title": title,
        "description": desc,
        "targets": [_target(expr, "", "A", instant=True)],
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
            "textMode": "auto",
        },
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "thresholds": {
                    "mode": "absolute",
                    "steps": [{"color": c, "value": v} for c, v in thresholds],
                },
            },
            "overrides": [],
        },
    }


def series(
    title: str, targets: list[tuple[str, str]], unit: str, desc: str, stack: bool = False
) -> dict[str, Any]:
    return {
        "type": "timeseries",
        "title": title,
        "description": desc,
        "targets": [_target(e, lg, chr(ord("A") + i)) for i, (e, lg) in enumerate(targets)],
        "options": {
            "legend": {
                "displayMode": "table",
                "placement": "bottom",
                "calcs": ["mean", "max", "lastNotNull"],
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "custom": {
                    "drawStyle": "line",
                    "lineWidth": 1,
                    "fillOpacity": 10,
                    "showPoints": "never",
                    "stacking": {"mode": "normal" if stack else "none", "group": "A"},
                },
            },
            "overrides": [],
        },
    }


def q(metric: str, extra: str = "") -> str:
    sel = SEL + (", " + extra if extra else "")
    return f"{metric}{{{sel}}}"


def hq(quantile: float, metric: str, by: str, extra: str = "") -> str:
    return f"histogram_quantile({quantile}, sum by ({by}, le) (rate({q(metric + '_bucket', extra)}[{RI}])))"


# NVIDIA dcgm-exporter series of the model servers' GPUs, for a cluster where the gateway pod has no GPU:
# its pod mapping, scraped with honorLabels false (the exporter charts' default), puts the GPU user's
# namespace and pod in exported_namespace / exported_pod. The panels show whichever source exists
# (NVML `or` DCGM).
DCGM_SEL = 'exported_namespace=~"$namespace", exported_pod=~".+-(omni|tts)-.+"'


def dcgm(metric: str) -> str:
    """A DCGM series with the GPU user's pod as `instance`, so it reads like the gateway's NVML gauges."""
    return f'label_join({metric}{{{DCGM_SEL}}}, "instance", "", "exported_pod")'


# voice_gateway_turn_latency_seconds stages that follow one another inside a reply: stacked, they show where
# the time to first audio goes (llm_first_token lies inside llm_first_sentence and is drawn on its own).
TURN_SEQUENCE = 'stage=~"asr|llm_first_sentence|tts_first_chunk"'


def gateway_dashboard() -> dict[str, Any]:
    L = Layout()
    req = "voice_gateway_requests_total"
    lat = "voice_gateway_request_latency_seconds"
    gen = "voice_gateway_audio_generation_latency_seconds"

    L.row("Overview")
    L.add(
        stat(
            "Requests / s",
            f"sum(rate({q(req)}[{RI}]))",
            "reqps",
            "HTTP and WebSocket requests per second, all routes.",
            [("green", None)],
        ),
        6,
        4,
    )
    L.add(
        stat(
            "5xx ratio",
            f"(sum(rate({q(req, S5XX)}[{RI}])) or vector(0)) / sum(rate({q(req)}[{RI}]))",
            "percentunit",
            "Share of requests answered with a 5xx status (alert: VoiceGatewayHigh5xxRatio).",
            [("green", None), ("orange", 0.01), ("red", 0.05)],
        ),
        6,
        4,
    )
    L.add(
        stat(
            "Active streams",
            f"sum({q('voice_gateway_active_streams')})",
            "short",
            "Open WebSocket sessions (read_stream, voice, realtime).",
            [("green", None)],
        ),
        6,
        4,
    )
    L.add(
        stat(
            "Backends up",
            f"sum({q('voice_gateway_backend_up')}) / count({q('voice_gateway_backend_up')})",
            "percentunit",
            "Share of model-server backends the gateway sees as up (alert: VoiceGatewayNoActiveBackends).",
            [("red", None), ("orange", 0.5), ("green", 1)],
        ),
        6,
        4,
    )

    L.row("Requests")
    L.add(
        series(
            "Request rate by endpoint",
            [(f"sum by (endpoint, status) (rate({q(req)}[{RI}]))", "{{endpoint}} {{status}}")],
            "reqps",
            "Requests per second by route template and status code.",
            stack=True,
        ),
        12,
        8,
    )
    L.add(
        series(
            "Errors by endpoint (4xx / 5xx)",
            [(f"sum by (endpoint, status) (rate({q(req, SERR)}[{RI}]))", "{{endpoint}} {{status}}")],
            "reqps",
            "Client (4xx) and server (5xx) errors per second by route.",
            stack=True,
        ),
        12,
        8,
    )

    L.row("Latency")
    L.add(
        series(
            "Request latency quantiles",
            [
                (hq(0.5, lat, "endpoint"), "p50 {{endpoint}}"),
                (hq(0.95, lat, "endpoint"), "p95 {{endpoint}}"),
                (hq(0.99, lat, "endpoint"), "p99 {{endpoint}}"),
            ],
            "s",
            "p50 / p95 / p99 of request latency by route (alert: VoiceGatewayHighRequestLatencyP95).",
        ),
        12,
        8,
    )
    L.add(
        series(
            "Mean request latency",
            [
                (
                    f"sum by (endpoint) (rate({q(lat + '_sum')}[{RI}]))"
                    f" / sum by (endpoint) (rate({q(lat + '_count')}[{RI}]))",
                    "{{endpoint}}",
                )
            ],
            "s",
            "Average latency by route.",
        ),
        12,
        8,
    )
    L.add(
        series(
            "Audio generation latency",
            [
                (hq(0.5, gen, "engine, kind"), "p50 {{engine}} {{kind}}"),
                (hq(0.95, gen, "engine, kind"), "p95 {{engine}} {{kind}}"),
            ],
            "s",
            "Time to generate audio by engine and kind (alert: VoiceGatewayAudioGenerationSlow).",
        ),
        12,
        8,
    )
    L.add(
        series(
            "Audio generations / s",
            [(f"sum by (engine, kind) (rate({q(gen + '_count')}[{RI}]))", "{{engine}} {{kind}}")],
            "ops",
            "Audio generations per second by engine and kind.",
            stack=True,
        ),
        12,
        8,
    )

    turn = "voice_gateway_turn_latency_seconds"
    L.row("Voice turns (/voice and /v1/realtime)")
    for quantile, name in ((0.5, "p50"), (0.95, "p95")):
        L.add(
            series(
                f"Turn stages {name} (stacked)",
                [(hq(quantile, turn, "stage", TURN_SEQUENCE), "{{stage}}")],
                "s",
                f"{name} of each stage of a voice turn, stacked in the order they happen after the commit: "
                "ASR wait, model time to its first speakable sentence, TTS time to its first audio chunk. "
                "Their sum approximates the time to first audio.",
                stack=True,
            ),
            12,
            8,
        )
    first_audio = 'stage="first_audio"'
    L.add(
        series(
            "Time to first reply audio (SLO)",
            [
                (hq(0.5, turn, "protocol", first_audio), "p50 {{protocol}}"),
                (hq(0.95, turn, "protocol", first_audio), "p95 {{protocol}}"),
            ],
            "s",
            "End of the user's turn (server VAD's or the client's commit) to the first reply audio sent, by "
            "protocol (alert: VoiceGatewayFirstAudioSlow, p95 over monitoring.alerts.firstAudio.p95Seconds).",
        ),
        12,
        8,
    )
    L.add(
        series(
            "Turn stage quantiles by engine",
            [
                (hq(0.5, turn, "stage, engine", 'stage!="barge_in_stop"'), "p50 {{stage}} {{engine}}"),
                (hq(0.95, turn, "stage, engine", 'stage!="barge_in_stop"'), "p95 {{stage}} {{engine}}"),
            ],
            "s",
            "Every stage on its own, by the engine doing it: asr, llm_first_token, llm_first_sentence, "
            "tts_first_chunk, first_audio.",
        ),
        12,
        8,
    )
    barge_in = 'stage="barge_in_stop"'
    L.add(
        series(
            "Barge-in: interruption to audio stopped",
            [
                (hq(0.5, turn, "protocol", barge_in), "p50 {{protocol}}"),
                (hq(0.95, turn, "protocol", barge_in), "p95 {{protocol}}"),
            ],
            "s",
            "From the interruption (speech heard over the reply, a client interrupt / response.cancel, or a "
            "new commit) until the reply's generation, synthesis and audio have stopped.",
        ),
        12,
        8,
    )
    L.add(
        series(
            "Voice turns / s",
            [
                (
                    f"sum by (protocol) (rate({q(turn + '_count', first_audio)}[{RI}]))",
                    "replies {{protocol}}",
                ),
                (
                    f"sum by (protocol) (rate({q(turn + '_count', barge_in)}[{RI}]))",
                    "interrupted {{protocol}}",
                ),
            ],
            "ops",
            "Spoken replies (those that reached first audio) and interruptions per second, by protocol.",
        ),
        12,
        8,
    )

    L.row("Streams and throughput")
    L.add(
        series(
            "Active streams by kind",
            [(f"sum by (kind) ({q('voice_gateway_active_streams')})", "{{kind}}")],
            "short",
            "Open WebSocket sessions by kind.",
            stack=True,
        ),
        12,
        8,
    )
    L.add(
        series(
            "Tokens per second",
            [(f"avg by (engine) ({q('voice_gateway_tokens_per_second')})", "{{engine}}")],
            "short",
            "Generation throughput reported by each engine.",
        ),
        12,
        8,
    )

    L.row("GPU")
    used = q("voice_gateway_gpu_memory_used_mb")
    total = q("voice_gateway_gpu_memory_total_mb")
    d_used, d_free = dcgm("DCGM_FI_DEV_FB_USED"), dcgm("DCGM_FI_DEV_FB_FREE")
    sources = (
        " Single host: the gateway's NVML gauges (instance = the gateway); in a cluster, where the gateway "
        "pod has no GPU: NVIDIA dcgm-exporter's series of the model servers' GPUs (instance = the pod)."
    )
    L.add(
        series(
            "GPU utilization",
            [
                (
                    f"max by (instance, gpu) ({q('voice_gateway_gpu_utilization_percent')})"
                    f" or max by (instance, gpu) ({dcgm('DCGM_FI_DEV_GPU_UTIL')})",
                    "{{instance}} gpu {{gpu}}",
                )
            ],
            "percent",
            "GPU utilization." + sources,
        ),
        8,
        8,
    )
    L.add(
        series(
            "GPU memory used and total",
            [
                (
                    f"max by (instance, gpu) ({used}) or max by (instance, gpu) ({d_used})",
                    "used {{instance}} gpu {{gpu}}",
                ),
                (
                    f"max by (instance, gpu) ({total}) or max by (instance, gpu) ({d_used} + {d_free})",
                    "total {{instance}} gpu {{gpu}}",
                ),
            ],
            "decmbytes",
            "GPU memory in use and the card's memory (DCGM: used + free)." + sources,
        ),
        8,
        8,
    )
    L.add(
        series(
            "GPU memory share of the card",
            [
                (
                    f"max by (instance, gpu) ({used} / ({total} > 0))"
                    f" or max by (instance, gpu) ({d_used} / ({d_used} + {d_free}))",
                    "{{instance}} gpu {{gpu}}",
                )
            ],
            "percentunit",
            "Memory used over the card's memory (alert: VoiceGatewayGPUMemoryHigh above 95 %). vLLM "
            "preallocates its share (gpu.memoryUtilization): this sits near the sum of the servers' shares."
            + sources,
        ),
        8,
        8,
    )

    L.row("Model servers")
    L.add(
        series(
            "Model-server health (gateway view)",
            [(f"min by (backend) ({q('voice_gateway_backend_up')})", "{{backend}}")],
            "short",
            "1 when the gateway's probe of the backend succeeds, 0 when it is down or loading "
            "(alerts: VoiceGatewayBackendDown, VoiceGatewayNoActiveBackends).",
        ),
        24,
        7,
    )

    return _dashboard(
        uid="voice-gateway-overview",
        title="Voice Gateway / Overview",
        description=(
            "AetherPro Omni Voice Gateway: traffic, errors, latency, audio generation, streams, GPU "
            "and model-server health."
        ),
        variable_metric="voice_gateway_requests_total",
        panels=L.panels,
    )


def _var(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "definition": query,
        "query": {"query": query, "refId": f"{name}-var"},
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }


def _dashboard(
    uid: str, title: str, description: str, variable_metric: str, panels: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["voice-gateway", "aetherpro", "tts", "asr"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "annotations": {"list": []},
        "links": [
            {
                "title": "Voice Gateway dashboards",
                "type": "dashboards",
                "tags": ["voice-gateway"],
                "asDropdown": True,
                "includeVars": True,
                "keepTime": True,
            }
        ],
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                },
                _var("namespace", "Namespace", f"label_values({variable_metric}, namespace)"),
                _var(
                    "instance",
                    "Instance",
                    f'label_values({variable_metric}{{namespace=~"$namespace"}}, instance)',
                ),
            ]
        },
        "panels": panels,
    }


# The model servers' families as vLLM-Omni 0.30.0 exposes them (metrics/prometheus.py, modality.py: the
# `vllm_omni:` pipeline families, labelled `model_name`; per-stage ones and upstream vLLM's `vllm:` add
# `stage` and `replica`); `voice-gateway engine-server` exports the same names in cpu mode. The names are
# checked against a real server by tests/real_vllm_omni/test_metrics_names.py. `job` is the Service's
# app.kubernetes.io/component (omni / tts), via the ServiceMonitor.
MODEL_JOBS = 'job=~"omni|tts"'


def model_servers_dashboard() -> dict[str, Any]:
    L = Layout()
    run_ = "vllm_omni:num_requests_running"
    ok = "vllm_omni:requests_success_total"
    e2e = "vllm_omni:e2e_request_latency_s"
    ttfp = "vllm_omni:audio_ttfp_s"

    L.row("Health")
    L.add(
        stat(
            "Model servers up",
            f"sum({q('up', MODEL_JOBS)}) / count({q('up', MODEL_JOBS)})",
            "percentunit",
            "Share of model-server targets Prometheus can scrape (alert: VoiceGatewayModelServerScrapeDown).",
            [("red", None), ("orange", 0.5), ("green", 1)],
        ),
        6,
        4,
    )
    L.add(
        stat(
            "Requests running",
            f"sum({q(run_)})",
            "short",
            "Requests being processed by the model servers right now.",
            [("green", None)],
        ),
        6,
        4,
    )
    L.add(
        stat(
            "Finished requests / s",
            f"sum(rate({q(ok)}[{RI}]))",
            "reqps",
            "Requests the model servers finished per second.",
            [("green", None)],
        ),
        6,
        4,
    )
    L.add(
        stat(
            "Audio first packet p95",
            hq(0.95, ttfp, "job").replace("sum by (job, le)", "sum by (le)"),
            "s",
            "95th percentile of the time to the first audio packet, all servers.",
            [("green", None), ("orange", 1), ("red", 2.5)],
        ),
        6,
        4,
    )
    L.add(
        series(
            "Scrape health by server",
            [(f"max by (job, instance) ({q('up', MODEL_JOBS)})", "{{job}} {{instance}}")],
            "short",
            "1 when Prometheus scrapes the server; vLLM-Omni refuses connections while it loads its stages.",
        ),
        24,
        6,
    )

    L.row("Load and latency")
    L.add(
        series(
            "Requests running by server",
            [(f"sum by (job) ({q(run_)})", "{{job}}")],
            "short",
            "vllm_omni:num_requests_running by model server.",
            stack=True,
        ),
        6,
        8,
    )
    L.add(
        series(
            "Requests waiting by server",
            [(f"sum by (job) ({q('vllm_omni:num_requests_waiting')})", "{{job}}")],
            "short",
            "vllm_omni:num_requests_waiting: the queue in front of the model (saturation; the CPU "
            "engine-server has no queue: always 0).",
            stack=True,
        ),
        6,
        8,
    )
    L.add(
        series(
            "Finished requests by reason",
            [(f"sum by (job, finished_reason) (rate({q(ok)}[{RI}]))", "{{job}} {{finished_reason}}")],
            "reqps",
            "vllm_omni:requests_success_total rate by server and finish reason.",
            stack=True,
        ),
        12,
        8,
    )
    L.add(
        series(
            "End-to-end request latency",
            [
                (hq(0.5, e2e, "job"), "p50 {{job}}"),
                (hq(0.95, e2e, "job"), "p95 {{job}}"),
            ],
            "s",
            "vllm_omni:e2e_request_latency_s quantiles by server.",
        ),
        12,
        8,
    )
    L.add(
        series(
            "Time to first audio packet",
            [
                (hq(0.5, ttfp, "job"), "p50 {{job}}"),
                (hq(0.95, ttfp, "job"), "p95 {{job}}"),
            ],
            "s",
            "vllm_omni:audio_ttfp_s quantiles by server: what a listener waits before hearing anything.",
        ),
        12,
        8,
    )

    L.add(
        series(
            "KV cache usage",
            [
                (
                    f"max by (job) ({q('vllm:kv_cache_usage_perc')})"
                    f" or max by (job) ({q('vllm:gpu_cache_usage_perc')})",
                    "{{job}}",
                )
            ],
            "percentunit",
            "The model servers' own KV-cache use (1 = full: new requests wait), as vLLM exports it: "
            "vllm:kv_cache_usage_perc (vLLM 0.30, the one vLLM-Omni 0.30 serves; one series per stage and "
            "replica, the fullest shown) or vllm:gpu_cache_usage_perc (older vLLM). The CPU engine-server "
            "has no KV cache.",
        ),
        24,
        7,
    )

    L.row("Tokens")
    L.add(
        series(
            "Token throughput",
            [
                (f"sum by (job) (rate({q('vllm_omni:generation_tokens_total')}[{RI}]))", "generated {{job}}"),
                (f"sum by (job) (rate({q('vllm_omni:prompt_tokens_total')}[{RI}]))", "prompt {{job}}"),
            ],
            "short",
            "Prompt and generated tokens per second, summed over every pipeline stage "
            "(vllm_omni:prompt_tokens_total, vllm_omni:generation_tokens_total).",
        ),
        24,
        8,
    )

    return _dashboard(
        uid="voice-gateway-model-servers",
        title="Voice Gateway / Model servers",
        description="The Qwen3-Omni and Qwen3-TTS model servers (vLLM-Omni, or the CPU engine-server): "
        "health, load, latency, time to first audio and token throughput.",
        variable_metric="vllm_omni:num_requests_running",
        panels=L.panels,
    )


def operator_dashboard() -> dict[str, Any]:
    L = Layout()
    rec = "voice_operator_reconciles_total"
    dur = "voice_operator_reconcile_duration_seconds"

    L.row("Resources")
    L.add(
        stat(
            "VoiceGateways managed",
            f"sum({q('voice_operator_managed_resources')})",
            "short",
            "VoiceGateway resources the operator knows.",
            [("green", None)],
        ),
        6,
        4,
    )
    L.add(
        stat(
            "Ready",
            f"sum({q('voice_operator_resources_by_phase', READY)})",
            "short",
            "VoiceGateway resources in phase Ready.",
            [("green", None)],
        ),
        6,
        4,
    )
    L.add(
        stat(
            "Reconcile failure ratio",
            f"1 - sum(rate({q(rec, RESULT_OK)}[{RI}])) / sum(rate({q(rec)}[{RI}]))",
            "percentunit",
            "Share of reconciles that did not end ok (failed apply, invalid resource, error).",
            [("green", None), ("orange", 0.01), ("red", 0.1)],
        ),
        6,
        4,
    )
    L.add(
        stat(
            "Reconcile p95",
            f"histogram_quantile(0.95, sum by (le) (rate({q(dur + '_bucket')}[{RI}])))",
            "s",
            "95th percentile of reconcile duration.",
            [("green", None), ("orange", 1), ("red", 5)],
        ),
        6,
        4,
    )
    L.add(
        series(
            "Resources by phase",
            [(f"sum by (phase) ({q('voice_operator_resources_by_phase')})", "{{phase}}")],
            "short",
            "Pending, Progressing, Ready, Degraded, Invalid.",
            stack=True,
        ),
        24,
        7,
    )

    L.row("Reconciles and API")
    L.add(
        series(
            "Reconciles by trigger and result",
            [(f"sum by (trigger, result) (rate({q(rec)}[{RI}]))", "{{trigger}} {{result}}")],
            "ops",
            "Create/update/resume/timer/child-event reconciles and how they ended.",
            stack=True,
        ),
        12,
        8,
    )
    L.add(
        series(
            "Reconcile duration",
            [
                (
                    f"histogram_quantile(0.5, sum by (trigger, le) (rate({q(dur + '_bucket')}[{RI}])))",
                    "p50 {{trigger}}",
                ),
                (
                    f"histogram_quantile(0.95, sum by (trigger, le) (rate({q(dur + '_bucket')}[{RI}])))",
                    "p95 {{trigger}}",
                ),
            ],
            "s",
            "Reconcile duration quantiles by trigger.",
        ),
        12,
        8,
    )
    L.add(
        series(
            "Kubernetes API requests",
            [
                (
                    f"sum by (verb, code) (rate({q('voice_operator_api_requests_total')}[{RI}]))",
                    "{{verb}} {{code}}",
                )
            ],
            "reqps",
            "The operator's API calls by verb and status code (403 means its RBAC lacks a permission).",
            stack=True,
        ),
        12,
        8,
    )
    L.add(
        series(
            "Reconcile errors and API retries",
            [
                (f"sum by (kind) (rate({q('voice_operator_errors_total')}[{RI}]))", "error {{kind}}"),
                (
                    f"sum by (reason) (rate({q('voice_operator_api_retries_total')}[{RI}]))",
                    "retry {{reason}}",
                ),
            ],
            "ops",
            "Errors by kind (invalid_spec, apply) and retried API calls by reason (conflict, 5xx, timeout).",
        ),
        12,
        8,
    )

    return _dashboard(
        uid="voice-gateway-operator",
        title="Voice Gateway / Operator",
        description="The VoiceGateway operator: phases, reconciles, durations, API calls, errors.",
        variable_metric="voice_operator_managed_resources",
        panels=L.panels,
    )


DASHBOARDS = {
    "voice-gateway.json": gateway_dashboard,
    "model-servers.json": model_servers_dashboard,
    "operator.json": operator_dashboard,
}


def render() -> dict[Path, str]:
    return {OUT / name: json.dumps(fn(), indent=2, sort_keys=False) + "\n" for name, fn in DASHBOARDS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    stale = [p for p, text in render().items() if not p.exists() or p.read_text() != text]
    if args.check:
        for p in stale:
            print(f"stale: {p.relative_to(ROOT)}", file=sys.stderr)
        return 1 if stale else 0
    OUT.mkdir(parents=True, exist_ok=True)
    for p, text in render().items():
        p.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
