#!/usr/bin/env bash
# Debian's Chromium + driver for the web page tests (a browser download by a test tool cannot work offline).
set -euo pipefail
SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi
