#!/usr/bin/env bash
# Install the browser the real-browser tests drive: Debian's chromium package.
#
# Playwright is used only as a driver (python package `playwright`); it is
# pointed at /usr/bin/chromium and never downloads a browser of its own
# (do not run `playwright install`).
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    echo "chromium already installed: $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends chromium fonts-dejavu-core
/usr/bin/chromium --version || true
