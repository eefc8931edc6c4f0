#!/usr/bin/env bash
# Installs the gateway into ./.venv on a fresh Debian 12 / Ubuntu 24.04 machine (README's first command).
# Works as root (no sudo needed) and as a user with sudo; a virtualenv sidesteps PEP 668's
# "externally-managed-environment" refusal of the system Python. The first run compiles llama-cpp-python
# (about 5 minutes on 2 cores; pip caches the wheel for later runs).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    echo "install.sh: installing system packages needs root or sudo: $*" >&2
    exit 1
  fi
}

missing=()
command -v cc >/dev/null 2>&1 || missing+=(build-essential)
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
python3 -c "import ensurepip, venv" >/dev/null 2>&1 || missing+=(python3-venv)
if ((${#missing[@]})); then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check .
echo "installed: $(pwd)/.venv/bin/voice-gateway"
