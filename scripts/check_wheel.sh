#!/usr/bin/env bash
# Installs a built wheel into a fresh virtual environment of each given
# CPython (default: the oldest and newest this machine has, 3.9 and 3.13)
# with no Rust toolchain on PATH, and runs scripts/smoke.py there: a real
# FastAPI server started, requested and stopped by ServerManager. An abi3 or
# requires-python mistake makes pip refuse the wheel here.
#
#   bash scripts/check_wheel.sh dist/upsonic_server_manager-*.whl [PYTHON...]
#
# Used by scripts/release.sh, .ci/run and .github/workflows/release.yml.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

wheel="${1:?usage: check_wheel.sh WHEEL [PYTHON...]}"
shift
[ -f "$wheel" ] || { echo "check_wheel: no wheel at $wheel" >&2; exit 2; }
wheel="$(cd "$(dirname "$wheel")" && pwd)/$(basename "$wheel")"

# The newest installed patch release of CPython X.Y under pyenv.
pyenv_python() {
    local found
    found="$(ls -d /root/.pyenv/versions/"$1".*/bin/python 2>/dev/null | sort -V | tail -n 1)"
    if [ -z "$found" ]; then
        echo "check_wheel: CPython $1 not found under /root/.pyenv/versions; pass interpreters as arguments" >&2
        exit 2
    fi
    echo "$found"
}

if [ "$#" -eq 0 ]; then
    set -- "$(pyenv_python 3.9)" "$(pyenv_python 3.13)"
fi

# PATH without any directory that holds cargo or rustc.
no_rust_path() {
    local out="" dir
    local IFS=:
    for dir in $PATH; do
        [ -n "$dir" ] || continue
        if [ -x "$dir/cargo" ] || [ -x "$dir/rustc" ]; then
            continue
        fi
        out="${out:+$out:}$dir"
    done
    echo "$out"
}
clean_path="$(no_rust_path)"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for python in "$@"; do
    version="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    venv="$work/py$version"
    echo "== wheel on CPython $version ($python), no cargo on PATH"
    "$python" -m venv "$venv"
    # Run from outside the source tree so that only the installed package can be imported.
    (
        cd "$work"
        export PATH="$venv/bin:$clean_path"
        unset PYTHONPATH VIRTUAL_ENV CARGO_HOME RUSTUP_HOME
        python -m pip install -q --disable-pip-version-check "$wheel" "fastapi>=0.110"
        python -I "$root/scripts/smoke.py" --no-rust
    )
done
