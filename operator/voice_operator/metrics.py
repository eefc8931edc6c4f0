"""Prometheus metrics of the operator (served on --metrics-port, default 9090, path /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter(
    "voice_operator_reconciles_total", "Reconciles by trigger and result", ["trigger", "result"]
)
RECONCILE_SECONDS = Histogram(
    "voice_operator_reconcile_duration_seconds",
    "Reconcile duration",
    ["trigger"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
API_REQUESTS = Counter(
    "voice_operator_api_requests_total", "Kubernetes API requests by verb and status code", ["verb", "code"]
)
API_RETRIES = Counter(
    "voice_operator_api_retries_total", "Retried Kubernetes API requests by reason", ["reason"]
)
ERRORS = Counter("voice_operator_errors_total", "Reconcile errors by kind", ["kind"])
MANAGED = Gauge("voice_operator_managed_resources", "VoiceGateway resources known to this operator")
PHASES = Gauge("voice_operator_resources_by_phase", "VoiceGateway resources by status phase", ["phase"])
