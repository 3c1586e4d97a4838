#!/usr/bin/env bash
# The main job, from a fresh machine: install the package (and FastAPI, for
# the demo app) into a private virtual environment, then start the bundled
# FastAPI demo app, request it, show its status and stop it.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh
usm_venv "${USM_VENV:-.venv}"
python -m pip install -q . "fastapi>=0.110"
upsonic-server demo
