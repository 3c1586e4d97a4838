#!/usr/bin/env bash
# Before and after a change, on this machine, in one run: builds COMMIT (the
# "before") in a temporary worktree with its own venv, then runs the
# benchmarks with each build in turn, A B then B A (so that drift on a shared
# machine hits both alike), and keeps every table.
#
#   bash benchmarks/before_after.sh COMMIT [OUT_DIR]
#
# A is COMMIT, B is the working tree's installed build (`maturin develop
# --release` first; PYTHON names its interpreter, default python3). The
# scripts are this tree's, run by each build's interpreter; supervise.py
# without its `start` part (supervise=True, which a build before issue 20
# lacks) and with its --quick counts (5 crashes, 30 chaos rounds). Nothing
# under docs/ is written. Each side's build is named at the top of the run. Compare the medians of
# each side; one run of one benchmark is not a result. About 20 minutes;
# QUICK=1: a smoke run of the script itself (a few minutes, numbers of no use).
set -euo pipefail

base=${1:?usage: before_after.sh COMMIT [OUT_DIR]}
out=${2:-$(mktemp -d -t usm-before-after-XXXXXX)}
here=$(cd "$(dirname "$0")/.." && pwd)
py_b=${PYTHON:-python3}
wt=$(mktemp -d -t usm-before-XXXXXX)
trap 'git -C "$here" worktree remove --force "$wt" >/dev/null 2>&1 || true; rm -rf "$wt"' EXIT

mkdir -p "$out"
git -C "$here" worktree add --detach -q "$wt" "$base"
echo "building $base in $wt (venv, maturin develop --release) ..." >&2
"$py_b" -m venv "$wt/.venv"
"$wt/.venv/bin/pip" install -q --upgrade pip
"$wt/.venv/bin/pip" install -q "maturin>=1.9,<2" "uvicorn>=0.29,<0.55" "fastapi>=0.110" \
    "httpx>=0.27" "psutil>=5.9" mirakuru
"$wt/.venv/bin/pip" install -q --no-deps "upsonic==0.45.0"
(cd "$wt" && VIRTUAL_ENV="$wt/.venv" PATH="$wt/.venv/bin:$PATH" maturin develop --release -q)
# B must be this tree's build: say which one each side imports.
for side in A B; do
    py=$wt/.venv/bin/python
    [ "$side" = B ] && py=$py_b
    where=$("$py" -c 'import os, upsonic_server_manager._core as c; print(c.__file__, int(os.path.getmtime(c.__file__)))')
    echo "$side: $where" | tee -a "$out/builds" >&2
done
echo "A: $(git -C "$wt" describe --always --dirty), B: $(git -C "$here" describe --always --dirty)" \
    | tee -a "$out/builds" >&2

run() { # tag python script args...
    local tag=$1 py=$2
    shift 2
    local t0=$SECONDS
    (cd "$here" && "$py" "$@") > "$out/$tag" 2>&1 || echo "$tag failed: see $out/$tag" >&2
    echo "$tag: $((SECONDS - t0)) s" >&2
}

if [ "${QUICK:-0}" = 1 ]; then
    b_args=(--quick --idle 50) m_args=(--sizes 3 --rounds 1 --cli-runs 2) w_args=(--runs 2)
    s_args=(--quick --only crash,idle --crashes 1 --idle 1)
else
    b_args=(--runs 11 --idle 500) m_args=(--sizes 10,30 --rounds 3) w_args=(--runs 15)
    s_args=(--quick --only crash,hung,memory,idle,chaos)
fi

for round in 1 2; do
    order="A B"
    [ "$round" = 2 ] && order="B A"
    for side in $order; do
        py=$wt/.venv/bin/python
        [ "$side" = B ] && py=$py_b
        run "bench.$side$round" "$py" benchmarks/bench.py "${b_args[@]}" --print-only
        run "many.$side$round" "$py" benchmarks/many.py "${m_args[@]}"
        run "warm.$side$round" "$py" benchmarks/warm.py "${w_args[@]}"
        run "supervise.$side$round" "$py" benchmarks/supervise.py "${s_args[@]}"
    done
done
echo "tables in $out (A: $base, B: this tree)" >&2
