#!/usr/bin/env bash
# Every check, from a fresh machine: builds the extension into a private
# virtual environment, then runs the Rust tests and lints, the Python lints,
# the stub check, the built wheel's smoke test on CPython 3.9 and 3.13, the
# strict docs build and the pytest suite (real uvicorn servers).
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/_venv.sh
usm_venv "${USM_VENV:-.venv}"
python -m pip install -q "maturin>=1.9,<2"
# Runtime + test dependencies, then upsonic 0.45.0 itself (for the
# compatibility tests; --no-deps because only its server_manager is used).
python -m pip install -q "uvicorn>=0.29" "fastapi>=0.110" "httpx>=0.27" "pytest>=8" \
    "pytest-timeout>=2.3" "pytest-xdist>=3.5" "psutil>=5.9" "ruff>=0.6" "mypy>=1.10" \
    "cryptography>=42"
python -m pip install -q --no-deps "upsonic==0.45.0"
maturin develop --release -q

echo "== cargo fmt / clippy / test"
cargo fmt --check
cargo clippy -q --all-targets -- -D warnings
cargo clippy -q --all-targets --no-default-features -- -D warnings
cargo test -q --no-default-features

echo "== ruff / stubtest"
ruff check python tests benchmarks
ruff format --check python tests benchmarks
python -m mypy.stubtest upsonic_server_manager._core

echo "== the wheel on CPython 3.9 and 3.13, no cargo on PATH (abi3, requires-python)"
# Reuses the release build above; scripts/release.sh builds the manylinux2014 one.
wheels="$(mktemp -d)"
maturin build --release -q --out "$wheels"
bash scripts/check_wheel.sh "$wheels"/*.whl
rm -rf "$wheels"

echo "== docs (mkdocs --strict)"
site="$(mktemp -d)"
bash scripts/docs.sh "$site/site"
rm -rf "$site"

echo "== pytest"
python -m pytest "$@"
