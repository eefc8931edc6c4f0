#!/usr/bin/env bash
# The project itself with its test extras (llama-cpp-python builds once from source; pip's wheel cache keeps it).
set -euo pipefail
python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'
