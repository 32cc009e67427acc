#!/usr/bin/env bash
# Install BYORn Studio into ./.venv (idempotent).
#   bash scripts/install.sh          runtime: the library, the CLI and the app
#   bash scripts/install.sh --dev    + test tools and Debian chromium for the browser tests
# torch is installed first and pinned (constraints.txt): an unpinned torch would
# pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip 2>/dev/null || true
$PIP install -q torch==2.13.0
$PIP install -q -c constraints.txt -r requirements.txt
$PIP install -q -c constraints.txt --no-deps -e .
if [ "${1:-}" = "--dev" ]; then
    $PIP install -q -c constraints.txt -r requirements-dev.txt
    bash scripts/setup_browser.sh
fi
echo "installed into .venv"
