#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian 12 machine with Python 3.11.
# Idempotent and cached: a second run takes seconds. Each piece lives in scripts/setup.d/ (run in order).
set -euo pipefail
cd "$(dirname "$0")/.."
for step in scripts/setup.d/*.sh; do
  echo "[setup] $step"
  bash "$step"
done
