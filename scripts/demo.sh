#!/usr/bin/env bash
# The main job, from a fresh machine: install the package (and FastAPI, for
# the demo app) into a private virtual environment, then start the bundled
# FastAPI demo app, request it, show its status and stop it. Each step says
# how long the demo has been running; the first build (a few minutes of
# Rust) prints what it is doing every 10 seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh
venv="${USM_VENV:-.venv}"
started=$SECONDS
step() { echo "==> [$((SECONDS - started)) s] $*"; }

step "preparing the virtual environment in $venv"
usm_venv "$venv"

step "building and installing upsonic-server-manager with FastAPI (the Rust build takes a few minutes the first time)"
log="$(mktemp "${TMPDIR:-/tmp}/usm-demo-pip.XXXXXX")"
python -m pip install -v . "fastapi>=0.110" >"$log" 2>&1 &
pip_pid=$!
trap 'kill "$pip_pid" 2>/dev/null || true' INT TERM
ticks=0
while kill -0 "$pip_pid" 2>/dev/null; do
    sleep 1
    ticks=$((ticks + 1))
    if [ $((ticks % 10)) -eq 0 ] && kill -0 "$pip_pid" 2>/dev/null; then
        # The last thing pip or cargo said it is doing (Compiling pyo3 ...).
        doing="$(grep -aoE '(Compiling|Collecting|Downloading|Building|Installing|Finished|Built|Processing) [^ ]+( v[0-9][^ ]*)?' "$log" | tail -n 1 || true)"
        echo "    ... $((SECONDS - started)) s: ${doing:-working}"
    fi
done
trap - INT TERM
if ! wait "$pip_pid"; then
    tail -n 40 "$log" >&2
    echo "==> the install failed after $((SECONDS - started)) s; the whole log: $log" >&2
    exit 1
fi
rm -f "$log"

step "running the demo: start a server, request it, show its status, stop it"
upsonic-server demo
step "done"
