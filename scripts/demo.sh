#!/usr/bin/env bash
# The main job, from a fresh machine: install the package into a private
# virtual environment, then start the bundled demo app, request it, show
# its status and stop it.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${USM_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
python -m pip install -q --upgrade pip
python -m pip install -q .
upsonic-server demo
