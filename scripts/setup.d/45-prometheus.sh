#!/usr/bin/env bash
# Debian's prometheus + promtool for the alert-rule unit tests and the dashboard-query test (tests/charts).
# Idempotent: nothing to do when both binaries are already on PATH.
set -euo pipefail
if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
if ! ${SUDO} apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends prometheus >/dev/null 2>&1; then
  ${SUDO} apt-get -o DPkg::Lock::Timeout=900 update -qq >/dev/null
  ${SUDO} apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends prometheus >/dev/null
fi
# The Debian package starts a system service on install where an init system runs; the tests run their own
# Prometheus on a free loopback port, so a service left running does no harm, but stop it to free :9090.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
  ${SUDO} systemctl stop prometheus || true
fi
command -v promtool >/dev/null
