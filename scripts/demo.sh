#!/usr/bin/env bash
# The main job, from a fresh machine: install the package into a private
# virtual environment, then start the bundled demo app, request it, show
# its status and stop it.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh
usm_venv "${USM_VENV:-.venv}"
python -m pip install -q .
upsonic-server demo
