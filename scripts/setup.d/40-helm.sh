#!/usr/bin/env bash
# A real helm binary for the chart tests (tests/charts). Cached in ~/.cache/voice-gateway-tools/bin.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/get-helm.sh >/dev/null
