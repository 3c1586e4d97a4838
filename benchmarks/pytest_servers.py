"""The pytest plugin under xdist: N tests that each start their own FastAPI
server, run with ``pytest -n W``, once with the plugin's ``uvicorn_server``
fixture and once with the usual recipe (bind a socket to port 0, read the
port, close it, start ``python -m uvicorn`` on it, poll ``connect()`` every
100 ms, terminate and wait at the end), interleaved in one run.

For each run: tests passed, collisions (a test whose GET answered with
another test's token, i.e. it talked to someone else's server, or whose
server could not bind: "address already in use"), processes left alive
3 s after pytest exited, wall time. Goal for the plugin: 0 collisions,
0 leaked.

    python benchmarks/pytest_servers.py [--tests 400] [--workers 4] [--rounds 2]
    python benchmarks/pytest_servers.py --quick      # 40 tests, one round, no doc

Needs the package installed (``maturin develop --release``), uvicorn,
fastapi, httpx, pytest-xdist and psutil (``scripts/test.sh`` installs them).
Writes the table to docs/PYTEST_BENCH.md (``--out``; not with ``--quick``
unless ``--out`` is given).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "PYTEST_BENCH.md"
MARK = "USM_BENCH_RUN"  # in the environment of pytest and of all it starts
COLLISIONS = ("mismatch", "in_use")
RUN_IDS: list[str] = []  # every mark this invocation handed out

APP = """
import os

from fastapi import FastAPI

app = FastAPI()


@app.get("/")
def whoami():
    return {"pid": os.getpid(), "token": os.environ.get("TOKEN", "")}
"""

# Shared by both test files: a unique token per test, and one JSON line per
# test in a file of its xdist worker.
HELPERS = '''
import json
import os
import time
import uuid

RUN = os.environ["USM_BENCH_RUN"]
N = int(os.environ["USM_BENCH_TESTS"])
HERE = os.path.dirname(os.path.abspath(__file__))
_OUT = os.path.join(
    os.environ["USM_BENCH_OUT"], "outcomes-%s.jsonl" % os.environ.get("PYTEST_XDIST_WORKER", "main")
)


def token_for(case):
    return "%s-%d-%s" % (RUN, case, uuid.uuid4().hex[:8])


def record(case, outcome, ready=None, detail=""):
    line = json.dumps(
        {"case": case, "outcome": outcome, "ready": ready, "detail": detail[-500:]}
    )
    with open(_OUT, "a") as f:
        f.write(line + "\\n")


def check(case, token, body, ready):
    """One GET's answer: ours, or another test's server."""
    if body.get("token") == token:
        record(case, "ok", ready)
    else:
        record(case, "mismatch", ready, "expected %s, got %r" % (token, body))
        raise AssertionError("talked to another test's server: %r" % (body,))


def is_in_use(text):
    return "address already in use" in text.lower()
'''

TEST_PLUGIN = """
import time

import pytest

from bench_helpers import HERE, N, check, is_in_use, record, token_for


@pytest.mark.parametrize("case", range(N))
def test_own_server(uvicorn_server, case):
    token = token_for(case)
    t0 = time.perf_counter()
    try:
        srv = uvicorn_server("bench_app:app", env={"TOKEN": token}, cwd=HERE)
    except Exception as e:
        record(case, "in_use" if is_in_use(str(e)) else "start_failed", None, repr(e))
        raise
    try:
        with srv.client(timeout=10) as client:
            body = client.get("/").json()
    except Exception as e:
        record(case, "get_failed", None, repr(e))
        raise
    check(case, token, body, time.perf_counter() - t0)
"""

TEST_RECIPE = """
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from bench_helpers import HERE, N, check, is_in_use, record, token_for


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("case", range(N))
def test_own_server(case, tmp_path):
    token = token_for(case)
    t0 = time.perf_counter()
    port = free_port()
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "bench_app:app", "--host", "127.0.0.1",
             "--port", str(port), "--log-level", "error", "--no-access-log"],
            cwd=HERE, env={**os.environ, "TOKEN": token},
            stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                text = log.read_text(errors="replace")
                record(case, "in_use" if is_in_use(text) else "start_failed", None, text)
                pytest.fail("server exited %s: %s" % (proc.returncode, text[-300:]))
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                pass
            if time.monotonic() > deadline:
                record(case, "timeout", None, log.read_text(errors="replace"))
                pytest.fail("server did not answer within 30 s")
            time.sleep(0.1)
        try:
            body = httpx.get("http://127.0.0.1:%d/" % port, timeout=10).json()
        except Exception as e:
            record(case, "get_failed", None, repr(e))
            raise
        check(case, token, body, time.perf_counter() - t0)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
"""

CONTENDERS = {
    "plugin": ("test_plugin.py", "`uvicorn_server` fixture"),
    "recipe": ("test_recipe.py", "bind-close-start-poll recipe"),
}


@dataclass
class Run:
    contender: str
    round: int
    tests: int
    wall: float = 0.0
    passed: int = 0
    failed: int = 0
    timed_out: bool = False
    outcomes: dict[str, int] = field(default_factory=dict)
    ready: list[float] = field(default_factory=list)
    leaked: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    tail: str = ""

    @property
    def collisions(self) -> int:
        return sum(self.outcomes.get(k, 0) for k in COLLISIONS)

    @property
    def recorded(self) -> int:
        return sum(self.outcomes.values())


def write_project(tmp: Path) -> None:
    (tmp / "pytest.ini").write_text("[pytest]\n")  # rootdir here, no project config
    (tmp / "bench_app.py").write_text(APP.lstrip())
    (tmp / "bench_helpers.py").write_text(HELPERS.lstrip())
    (tmp / "test_plugin.py").write_text(TEST_PLUGIN.lstrip())
    (tmp / "test_recipe.py").write_text(TEST_RECIPE.lstrip())


def marked(run_id: str) -> list[psutil.Process]:
    """Live processes (not zombies) whose environment carries this run's mark."""
    found = []
    for p in psutil.process_iter():
        try:
            if p.pid == os.getpid() or p.status() == psutil.STATUS_ZOMBIE:
                continue
            if p.environ().get(MARK) == run_id:
                found.append(p)
        except (psutil.Error, OSError):
            continue
    return found


def describe(p: psutil.Process) -> str:
    try:
        return f"pid {p.pid}: {' '.join(p.cmdline())[:160]}"
    except psutil.Error:
        return f"pid {p.pid}"


def kill_marked(run_id: str) -> None:
    """SIGKILL what this run left (only processes carrying its mark)."""
    for p in marked(run_id):
        try:
            p.kill()
        except psutil.Error:
            pass


def pytest_argv(file: str, workers: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pytest",
        "-n",
        str(workers),
        "-p",
        "no:cacheprovider",
        "-q",
        file,
    ]


def run_one(tmp: Path, contender: str, rnd: int, tests: int, workers: int, timeout: float) -> Run:
    run = Run(contender, rnd, tests)
    run_id = f"usmb{uuid.uuid4().hex[:10]}"
    RUN_IDS.append(run_id)
    out_dir = tmp / f"out-{contender}-{rnd}"
    out_dir.mkdir()
    env = {
        **os.environ,
        MARK: run_id,
        "USM_BENCH_OUT": str(out_dir),
        "USM_BENCH_TESTS": str(tests),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    env.pop("PYTEST_ADDOPTS", None)
    log_path = tmp / f"pytest-{contender}-{rnd}.log"
    file = CONTENDERS[contender][0]
    print(f"-- {contender} round {rnd}: {tests} tests, -n {workers} ...", flush=True)
    with open(log_path, "wb") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            pytest_argv(file, workers),
            cwd=tmp,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            run.timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        run.wall = time.perf_counter() - t0
    time.sleep(3.0)
    run.leaked = [describe(p) for p in marked(run_id)]
    kill_marked(run_id)

    text = log_path.read_text(errors="replace")
    run.tail = "\n".join(text.strip().splitlines()[-5:])
    summary = text.strip().splitlines()[-1] if text.strip() else ""
    for key, attr in (("passed", "passed"), ("failed", "failed")):
        m = re.search(rf"(\d+) {key}", summary)
        if m:
            setattr(run, attr, int(m.group(1)))
    m = re.search(r"(\d+) errors?", summary)
    if m:
        run.failed += int(m.group(1))
    for path in out_dir.glob("outcomes-*.jsonl"):
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            run.outcomes[rec["outcome"]] = run.outcomes.get(rec["outcome"], 0) + 1
            if rec["ready"] is not None:
                run.ready.append(rec["ready"])
            if rec["outcome"] != "ok" and len(run.details) < 5:
                run.details.append(f"{rec['outcome']}: {rec['detail']}")
    print(
        f"   {run.wall:.1f} s, {run.passed} passed, {run.failed} failed, "
        f"outcomes {run.outcomes}, leaked {len(run.leaked)}",
        flush=True,
    )
    for d in run.details:
        print("   ", d.replace("\n", " | ")[:400])
    for leak in run.leaked:
        print("    leaked", leak)
    if run.failed or run.timed_out or run.recorded != tests:
        print(textwrap.indent(run.tail, "    | "))
    return run


def table(runs: list[Run]) -> str:
    rows = [
        "| contender | round | tests | passed | collisions | leaked | wall time | wall / test "
        "| median start→answer |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        others = {k: v for k, v in r.outcomes.items() if k != "ok" and k not in COLLISIONS}
        passed = f"{r.passed}" + (
            f" ({', '.join(f'{v} {k}' for k, v in others.items())})" if others else ""
        )
        wall = f"{r.wall:.1f} s" + (" (timed out)" if r.timed_out else "")
        ready = f"{statistics.median(r.ready) * 1000:.0f} ms" if r.ready else "-"
        rows.append(
            f"| {CONTENDERS[r.contender][1]} | {r.round} | {r.tests} | {passed} | {r.collisions} "
            f"| {len(r.leaked)} | {wall} | {r.wall / r.tests * 1000:.0f} ms | {ready} |"
        )
    return "\n".join(rows)


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = psutil.virtual_memory().total / 2**30
    return (
        f"{os.cpu_count()} cores ({model}), {mem:.0f} GiB, shared with other work; "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


def versions() -> str:
    from importlib.metadata import version

    names = ("upsonic-server-manager", "pytest", "pytest-xdist", "uvicorn", "fastapi", "httpx")
    out = []
    for name in names:
        try:
            out.append(f"{name} {version(name)}")
        except Exception:
            out.append(f"{name} ?")
    return ", ".join(out)


def write_doc(
    path: Path,
    runs: list[Run],
    command: str,
    args: argparse.Namespace,
    load: tuple[float, float, float],
    note: str,
) -> None:
    plugin = [r for r in runs if r.contender == "plugin"]
    recipe = [r for r in runs if r.contender == "recipe"]
    met = all(r.collisions == 0 and not r.leaked and not r.timed_out for r in plugin)
    verdict = (
        "**Goals met**: the plugin had 0 collisions and 0 leaked processes in every run."
        if met
        else "Goals NOT met for the plugin in every run: see the table."
    )
    rc = sum(r.collisions for r in recipe)
    rl = sum(len(r.leaked) for r in recipe)
    text = f"""## pytest plugin under xdist: one FastAPI server per test

`benchmarks/pytest_servers.py` generates, in a temporary directory, a FastAPI
app (`GET /` answers its pid and `$TOKEN`) and two test files of {args.tests}
parametrized tests each. Every test starts its own server with its own
unique `TOKEN`, does one GET and checks the token:

- **`uvicorn_server` fixture**: `uvicorn_server("bench_app:app", env={{"TOKEN": t}})`.
  The manager binds port 0 and hands the listening socket to uvicorn, so no
  other process can take the port between the choice and the start.
- **bind-close-start-poll recipe**: bind a socket to port 0, read the port,
  close it, `subprocess.Popen([python, "-m", "uvicorn", "bench_app:app",
  "--port", P])`, poll `connect()` every 100 ms (30 s timeout), one GET,
  `terminate()` + `wait()` in a `finally`.

Each file runs as `python -m pytest -n {args.workers} -p no:cacheprovider -q FILE`
in a subprocess, the two interleaved (plugin, recipe, plugin, recipe...).
A **collision** is a test whose GET was answered with another test's token
(it talked to someone else's server) or whose server failed with "address
already in use". **Leaked** counts processes carrying the run's mark in their
environment (pytest is started with it, everything it starts inherits it)
still alive 3 s after pytest exited; the script then kills them. **wall /
test** is the wall time divided by the number of tests; **median
start→answer** is, inside a test, from before the start to the answer of its
GET (for the recipe: choosing the port, spawning, polling, GET).

{verdict} The recipe: {rc} collision(s) and {rl} leaked process(es) in
{len(recipe)} run(s).

{table(runs)}

Command:

    {command}

Machine: {machine()}; load average at start {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}.
{versions()}.
"""
    if note:
        text += f"\n{note}\n"
    text += """
The recipe's race is real but narrow: the port is free only between
`close()` and uvicorn's `bind()`, and Linux picks port-0 ports at random
from the whole ephemeral range, so with 4 workers it takes many tests (or a
busy machine that slows uvicorn's import, widening the window) to hit it. When
it hits, the test either fails with "address already in use" or, worse,
polls the port, finds another test's server answering and tests against it.
The fixture's window is zero by construction: the port is held from the
moment it is chosen. Leaks are rare for both when pytest ends normally (the
recipe's `finally` runs); the fixture's lifeline matters when pytest is
killed, which this benchmark does not do.

Wall time is noisy on a shared 2-core machine; compare the contenders within
one run, not across runs. It also has a bias: the manager starts each server
in a session of its own, and with Linux's autogroup scheduling
(`/proc/sys/kernel/sched_autogroup_enabled`) each session gets its own share
of the CPU, so on a machine busy with other work the fixture's servers get
more of it than the recipe's, which share pytest's session. A faster wall
time for the fixture is not evidence that it starts uvicorn faster.
"""
    path.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tests", type=int, default=None, help="tests per run (default 400)")
    ap.add_argument("--workers", type=int, default=4, help="pytest -n (default 4)")
    ap.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="plugin+recipe pairs, interleaved (default 2; 1 with --quick)",
    )
    ap.add_argument("--quick", action="store_true", help="40 tests, one round, no doc")
    ap.add_argument("--only", choices=sorted(CONTENDERS), help="run one contender only")
    ap.add_argument(
        "--run-timeout",
        type=float,
        default=900.0,
        help="kill a pytest run after this many seconds (default 900)",
    )
    ap.add_argument("--out", type=Path, default=None, help=f"markdown output (default {DOC})")
    ap.add_argument("--note", default="", help="a line to add to the doc")
    args = ap.parse_args()
    if args.tests is None:
        args.tests = 40 if args.quick else 400
    if args.rounds is None:
        args.rounds = 1 if args.quick else 2
    out = args.out if args.out is not None else (None if args.quick else DOC)

    command = "python " + " ".join(
        shlex.quote(a) for a in [os.path.relpath(__file__, ROOT), *sys.argv[1:]]
    )
    load = os.getloadavg()
    order = [args.only] if args.only else ["plugin", "recipe"]
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="usm-pytest-bench-") as d:
        tmp = Path(d)
        write_project(tmp)
        try:
            for rnd in range(1, args.rounds + 1):
                for contender in order:
                    runs.append(
                        run_one(tmp, contender, rnd, args.tests, args.workers, args.run_timeout)
                    )
        finally:
            # Anything still carrying one of this invocation's marks (there
            # should be none: each run already killed its own).
            for run_id in RUN_IDS:
                for p in marked(run_id):
                    print("killing leftover", describe(p))
                    try:
                        p.kill()
                    except psutil.Error:
                        pass
    print()
    print(table(runs))
    if out is not None:
        write_doc(out, runs, command, args, load, args.note)
        print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
