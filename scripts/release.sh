#!/usr/bin/env bash
# Builds what a release publishes, here and from a clean clone, then checks it:
#   1. dist/: an sdist and an abi3 wheel for x86_64 tagged manylinux2014
#      (manylinux_2_17), cross-linked against glibc 2.17 by zig (PyPI's
#      `ziglang`), since no manylinux container runs on this machine;
#   2. `auditwheel show` must accept the wheel as manylinux_2_17_x86_64;
#   3. the wheel installs into fresh CPython 3.9 and 3.13 environments with
#      no cargo on PATH, and scripts/smoke.py serves through it on each;
#   4. the sdist builds into a wheel (pip, isolated, cargo available), which
#      installs, imports and passes the same smoke test.
# .github/workflows/release.yml runs the same steps for every platform.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/_venv.sh
tools="$(mktemp -d)"
trap 'rm -rf "$tools"' EXIT

echo "== 0. build tools (maturin, ziglang, auditwheel) in a private environment"
usm_venv "$tools/venv"
python -m pip install -q "maturin>=1.9,<2" "ziglang>=0.13,<0.18" "auditwheel>=6.1"

echo "== 1. sdist and manylinux2014 abi3 wheel into dist/"
rm -rf dist
maturin sdist --out dist
maturin build --release --zig --compatibility manylinux2014 --target x86_64-unknown-linux-gnu \
    --out dist
sdist="$(ls dist/*.tar.gz)"
wheel="$(ls dist/*.whl)"
case "$wheel" in
*-cp39-abi3-manylinux2014_x86_64.manylinux_2_17_x86_64.whl) ;;
*)
    echo "release: unexpected wheel tag: $wheel (want cp39-abi3 manylinux2014/manylinux_2_17 x86_64)" >&2
    exit 1
    ;;
esac

echo "== 2. auditwheel show"
auditwheel show "$wheel" | tee "$tools/audit.txt"
if ! grep -q '"manylinux_2_17_x86_64"' "$tools/audit.txt"; then
    echo "release: auditwheel does not accept $wheel as manylinux_2_17_x86_64" >&2
    exit 1
fi

echo "== 3. the wheel on CPython 3.9 and 3.13, no cargo on PATH"
bash scripts/check_wheel.sh "$wheel"

echo "== 4. the sdist builds (pip wheel, isolated build) and the result installs and serves"
# pip unpacks the sdist into a fresh directory and builds it with the maturin
# that pyproject.toml asks for; the project's target directory only lends the
# compiled dependencies of an earlier run (the crate itself is rebuilt).
CARGO_TARGET_DIR="$PWD/target" python -m pip wheel -q --no-deps -w "$tools/from-sdist" "$sdist"
bash scripts/check_wheel.sh "$(ls "$tools"/from-sdist/*.whl)" "$(python -c 'import sys; print(sys._base_executable)')"

echo "== release: OK"
ls -l dist/
