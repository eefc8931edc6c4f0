"""Defaults shared by the CRD schema and the renderer (one place, so they cannot drift apart)."""

from voice_operator import __version__

OMNI_MODEL = "cyankiwi/Qwen3-Omni-30B-A3B-Instruct-AWQ-4bit"
TTS_MODEL = "Qwen/Qwen3-TTS-12Hz-0.6B-Base"
GATEWAY_IMAGE = f"ghcr.io/aetherpro/voice-gateway:{__version__}"
OPERATOR_IMAGE = f"ghcr.io/aetherpro/voice-gateway-operator:{__version__}"
VLLM_OMNI_IMAGE = f"ghcr.io/aetherpro/vllm-omni:{__version__}"
OMNI_PORT = 8000  # the seed's omni-service port
TTS_PORT = 8001  # the seed's tts-service port
GATEWAY_PORT = 8004
ENGINE_METRICS_PATH = "/metrics"
OMNI_GPU_MEMORY = 0.65  # the seed: both models share one L40S, 65 % + 10 %
TTS_GPU_MEMORY = 0.10
GPU_RESOURCE = "nvidia.com/gpu"
SAMPLE_RATE = 24000
HF_HOME = "/models/hf"
CACHE_SIZE = "100Gi"
# A first download of the 26 GB Omni checkpoint plus the load can take up to an hour (seed: 30-60 min).
STARTUP_BUDGET_SECONDS = 3600
MODEL_PROGRESS_DEADLINE = 4200  # > startup budget, so a slow first load is not reported as stuck
GATEWAY_PROGRESS_DEADLINE = 600
ENGINES = ("vllm-omni", "embedded")
# Autoscaling on open conversations: gateway/metrics.py's gauge of open WebSockets and streams.
SESSIONS_METRIC = "voice_gateway_active_streams"
TARGET_SESSIONS_PER_POD = 16  # a quarter of the gateway's MAX_STREAMS default (64): headroom for bursts
PROMETHEUS_ADDRESS = "http://prometheus-operated.monitoring.svc:9090"
# Scale-down must not cut a conversation: preStop waits this long for sessions to end, then SIGTERM gives
# in-flight HTTP the gateway's SHUTDOWN_GRACE_SECONDS (gateway/settings.py default 100).
GATEWAY_DRAIN_SECONDS = 300
GATEWAY_SHUTDOWN_GRACE_SECONDS = 100
