#!/usr/bin/env bash
# The main job, from a fresh machine: install the package (and FastAPI, for
# the demo app) into a private virtual environment, then start the bundled
# FastAPI demo app, request it, show its status and stop it.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh
venv="${USM_VENV:-.venv}"
echo "==> preparing the virtual environment in $venv"
usm_venv "$venv"
echo "==> building and installing upsonic-server-manager with FastAPI (the Rust build takes a few minutes the first time)"
python -m pip install -q . "fastapi>=0.110"
echo "==> running the demo: start a server, request it, show its status, stop it"
upsonic-server demo
