#!/usr/bin/env bash
# Build tools for llama-cpp-python (compiled from source once; pip caches the wheel), espeak-ng, and pip for a
# system Python that comes without it (Debian's python3). Root runs apt-get itself; another user through sudo.
set -euo pipefail
SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
missing=()
command -v cc >/dev/null 2>&1 || missing+=(build-essential)
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
# A second, robotic voice in many languages for the multilingual ASR tests and bench/quality_bench.py.
command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
if ((${#missing[@]})); then
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
