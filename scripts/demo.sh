#!/usr/bin/env bash
# Sets up .venv with the package and the file backend, then runs the demo (no server needed).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[files]"
exec .venv/bin/python -m aiocache_secure demo "$@"
