#!/usr/bin/env bash
# Side-by-side benchmark: ours, upsonic 0.45.0, mirakuru and bare uvicorn
# (then warm starts against cold ones, benchmarks/warm.py),
# in one private environment, one run. Prints a table, writes docs/benchmark.md
# and docs/benchmark.png.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh
usm_venv "${USM_BENCH_VENV:-benchmarks/.env}"
python -m pip install -q . "fastapi>=0.110" "mirakuru>=2.5" "psutil>=5.9" "matplotlib>=3.7"
python -m pip install -q --no-deps "upsonic==0.45.0"
python benchmarks/bench.py "$@"
python benchmarks/warm.py
