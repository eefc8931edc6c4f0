#!/usr/bin/env bash
# The project itself with its test extras (llama-cpp-python builds once from source; pip's wheel cache keeps it),
# and the [ja] extra: the Japanese voice tests (tests/engines/test_kokoro_ja.py) need it installed.
set -euo pipefail
# PEP 668: Debian's and Ubuntu's own python3 refuses pip ("externally-managed-environment"). The tests run on
# that python3 (README command 2), so install beside Debian's packages: /usr/local as root, ~/.local otherwise.
pep668=()
if python3 -c 'import pathlib, sys, sysconfig
managed = pathlib.Path(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED").exists()
sys.exit(0 if managed and sys.prefix == sys.base_prefix else 1)'; then
  pep668=(--break-system-packages)
fi
python3 -m pip install --quiet --disable-pip-version-check "${pep668[@]}" -e '.[test,ja]'
