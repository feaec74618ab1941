#!/usr/bin/env bash
# Installs Debian's Chromium for the web-demo browser test when it is missing.
# Never fatal: without a browser the browser tests skip.
set -u
if command -v chromium >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "chromium not installed and cannot install it here (need root + apt-get)"; exit 1
fi
export DEBIAN_FRONTEND=noninteractive
timeout 600 apt-get update -qq >/dev/null 2>&1 || true
timeout 900 apt-get install -y -qq chromium >/dev/null 2>&1
command -v chromium >/dev/null 2>&1
