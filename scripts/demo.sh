#!/usr/bin/env bash
# The main job, from a fresh machine: install the package (and FastAPI, for
# the demo app) into a private virtual environment, then start the bundled
# FastAPI demo app, request it, show its status and stop it. Each step says
# how long the demo has been running, and a long one (pip, the first Rust
# build: a few minutes) prints what it is doing every 10 seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh
venv="${USM_VENV:-.venv}"
SECONDS=0
step() { echo "==> [$SECONDS s] $*"; }

step "preparing the virtual environment in $venv"
usm_venv "$venv"
step "building and installing upsonic-server-manager with FastAPI (the Rust build takes a few minutes the first time)"
usm_ticking "installing" python -m pip install -v . "fastapi>=0.110"
step "running the demo: start a server, request it, show its status, stop it"
upsonic-server demo
step "done"
