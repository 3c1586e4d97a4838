"""Reloads under load (the zero-downtime reload issue): 64 concurrent clients
while a FastAPI server is replaced again and again, side by side in one run:

- ``reload()`` on a held socket: new generation first, then the old one stops;
- ``restart()`` on a held socket: stop then start, the socket stays open;
- ``restart()`` without a held socket (a fixed port): stop then start;
- uvicorn's own reload: SIGHUP to ``uvicorn --workers 2`` (worker by worker).

Half the clients open a new connection for every request, half keep one
connection alive (httpx, retries off). Every request is classed as ok,
non-2xx, refused, reset or timeout; latencies of the ok ones are compared
between a steady phase (no reloads) and the requests that overlapped a
reload. Prints a markdown table and whether the goals were met.

    python benchmarks/reload.py            # 100 reloads (1 worker), 20 (2 workers)
    python benchmarks/reload.py --quick    # 20 and 5: a quick look (~5 min)

restart() runs 20 and 5 times (5 and 2 with --quick): its outcome is the same
every time. Resets are compared per operation, so the counts need not match.

Needs the package installed (``maturin develop --release``), fastapi, httpx
and uvicorn. Every server it starts is stopped at the end, errors included.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import platform
import random
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import httpx
from upsonic_server_manager import ServerManager

APP_MODULE = "usm_reload_app"
APP_SOURCE = '''"""The FastAPI hello app every contender serves."""

from fastapi import FastAPI

app = FastAPI()


@app.get("/")
async def root() -> dict:
    return {"hello": "world"}
'''
HOST = "127.0.0.1"
# After an operation, the new generation warms up (first requests, keep-alive
# clients reconnecting) for this long before requests count as steady again.
SETTLE = 0.1
OUTCOMES = ("ok", "non2xx", "refused", "reset", "timeout", "other")
KINDS = ("new", "keepalive")


# -- the clients ------------------------------------------------------------------


def classify(exc: BaseException) -> str:
    """An outcome class for a failed request."""
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    codes: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:  # httpx -> httpcore -> OSError, and anyio's groups of attempts
        seen = todo.pop()
        if isinstance(seen, OSError) and seen.errno:
            codes.add(seen.errno)
        todo += getattr(seen, "exceptions", ())
        if seen.__cause__ or seen.__context__:
            todo.append(seen.__cause__ or seen.__context__)  # type: ignore[arg-type]
    if errno.ECONNREFUSED in codes:
        return "refused"
    if errno.ECONNRESET in codes or errno.EPIPE in codes:
        return "reset"
    if isinstance(exc, (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)):
        return "reset"  # the server closed the connection without an answer
    if isinstance(exc, httpx.ConnectError) and "refused" in str(exc).lower():
        return "refused"
    return "other"


@dataclass
class Sample:
    kind: str
    t0: float
    t1: float
    outcome: str
    detail: str = ""


async def client(
    kind: str, url: str, stop: asyncio.Event, out: list[Sample], think: float, seed: int
) -> None:
    """One client: a request, a pause of about ``think`` seconds, again."""
    rng = random.Random(seed)
    if kind == "new":
        # No connection is kept: every request connects anew.
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=0)
    else:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    transport = httpx.AsyncHTTPTransport(retries=0, limits=limits)
    async with httpx.AsyncClient(transport=transport, timeout=10.0) as c:
        await asyncio.sleep(rng.random() * think)
        while not stop.is_set():
            t0 = time.perf_counter()
            detail = ""
            try:
                r = await c.get(url)
                outcome = "ok" if 200 <= r.status_code < 300 else "non2xx"
            except httpx.HTTPError as e:
                outcome = classify(e)
                detail = f"{type(e).__name__}: {e}"[:80]
            out.append(Sample(kind, t0, time.perf_counter(), outcome, detail))
            await asyncio.sleep(think * (0.5 + rng.random()))


# -- the contenders ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Contender:
    """A server and the one operation repeated on it."""

    label = ""
    op_name = ""

    def start(self) -> str:  # returns the URL
        raise NotImplementedError

    def op(self) -> Optional[float]:
        """One reload; returns when the old generation exited, if known."""
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class Managed(Contender):
    def __init__(self, op: str, workers: int, held: bool, tmp: str, n: int) -> None:
        self.op_name = f"{op}()"
        self.label = f"{op}(), {'held socket' if held else 'no held socket'}"
        port = 0 if held else free_port()
        self.m = ServerManager(
            f"{APP_MODULE}:app",
            HOST,
            port,
            f"reload{n}",
            workers=workers if workers > 1 else None,
            pid_dir=tmp,
            log_dir=os.path.join(tmp, "logs"),
            hold_socket=held,
        )
        self.do = self.m.reload if op == "reload" else self.m.restart

    def start(self) -> str:
        self.m.start(redirect_output=True)
        return self.m.url + "/"

    def op(self) -> Optional[float]:
        pid = self.m._read_pid()
        if not pid:
            self.do()
            return None
        fd = os.pidfd_open(pid)
        exited: list[float] = []

        def watch() -> None:  # when the old generation's leader exits
            select.select([fd], [], [], 60)
            exited.append(time.perf_counter())

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            self.do()
        finally:
            watcher.join()
            os.close(fd)
        return exited[0]

    def stop(self) -> None:
        self.m.stop()


def children(pid: int) -> set[int]:
    """uvicorn's worker processes (multiprocessing spawn children)."""
    found: set[int] = set()
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(k) for k in f.read().split()]
    except OSError:
        return found
    for k in kids:
        try:
            with open(f"/proc/{k}/cmdline", "rb") as f:
                if b"spawn_main" in f.read():
                    found.add(k)
        except OSError:
            pass
    return found


class UvicornHup(Contender):
    """``python -m uvicorn --workers 2`` in its own session, reloaded with
    SIGHUP; a reload is over once the set of worker PIDs has fully changed."""

    op_name = "SIGHUP"
    label = "uvicorn --workers 2, SIGHUP"

    def __init__(self, workers: int, tmp: str, app_dir: str) -> None:
        self.workers = workers
        self.tmp = tmp
        self.app_dir = app_dir
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.log = ""

    def start(self) -> str:
        port = free_port()
        self.log = os.path.join(self.tmp, "uvicorn.log")
        log = open(self.log, "ab")
        cmd = [sys.executable, "-m", "uvicorn", f"{APP_MODULE}:app", "--host", HOST]
        cmd += ["--port", str(port), "--workers", str(self.workers)]
        # The manager waits up to start_timeout (30 s) for a new generation;
        # uvicorn's default 5 s gives up on a busy machine.
        cmd += ["--timeout-worker-healthcheck", "30", "--log-level", "error", "--no-access-log"]
        self.proc = subprocess.Popen(
            cmd, cwd=self.app_dir, stdout=log, stderr=log, start_new_session=True
        )
        log.close()
        url = f"http://{HOST}:{port}/"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"uvicorn exited: {self.proc.returncode}")
            if len(children(self.proc.pid)) == self.workers:
                try:
                    if httpx.get(url, timeout=1).status_code == 200:
                        time.sleep(1.0)  # the other worker's startup
                        return url
                except httpx.HTTPError:
                    pass
            time.sleep(0.05)
        raise RuntimeError("uvicorn did not start")

    def op(self) -> Optional[float]:
        assert self.proc is not None
        old = children(self.proc.pid)
        logged = os.path.getsize(self.log)
        os.kill(self.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            now = children(self.proc.pid)
            if len(now) == self.workers and not now & old:
                return time.perf_counter()
            with open(self.log, "rb") as f:
                f.seek(logged)
                if b"aborting the restart" in f.read():
                    raise RuntimeError("uvicorn aborted the reload: a new worker was not ready")
            time.sleep(0.01)
        raise RuntimeError("uvicorn's reload did not finish within 90 s")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


# -- one run ------------------------------------------------------------------------


@dataclass
class Result:
    label: str
    workers: int
    ops: int
    op_seconds: list[float] = field(default_factory=list)
    steady: list[Sample] = field(default_factory=list)
    during: list[Sample] = field(default_factory=list)  # overlapping an op
    phase: list[Sample] = field(default_factory=list)  # the whole reload phase
    windows: list[tuple[float, float, Optional[float]]] = field(default_factory=list)
    failed_ops: list[str] = field(default_factory=list)
    load: float = 0.0  # the machine's 1-minute load average at the end


async def run_one(
    contender: Contender,
    workers: int,
    ops: int,
    clients: int,
    think: float,
    steady_s: float,
    gap: float,
) -> Result:
    res = Result(contender.label, workers, ops)
    samples: list[Sample] = []
    stop = asyncio.Event()
    url = await asyncio.to_thread(contender.start)
    tasks = [
        asyncio.create_task(client(KINDS[i % 2], url, stop, samples, think, i))
        for i in range(clients)
    ]
    try:
        await asyncio.sleep(1.0)  # warm-up, not counted
        s0 = time.perf_counter()
        await asyncio.sleep(steady_s)
        s1 = time.perf_counter()
        for _ in range(ops):
            t0 = time.perf_counter()
            try:
                exited = await asyncio.to_thread(contender.op)
            except Exception as e:  # noqa: BLE001 - a failed operation is a result
                exited = None
                res.failed_ops.append(f"{type(e).__name__}: {e}")
            t1 = time.perf_counter()
            res.windows.append((t0, t1, exited))
            res.op_seconds.append(t1 - t0)
            await asyncio.sleep(gap)
        p1 = time.perf_counter()
    finally:
        stop.set()
        await asyncio.wait(tasks, timeout=15)
        for t in tasks:
            t.cancel()
        await asyncio.to_thread(contender.stop)
    # Steady: the steady phase, and the pauses between operations from
    # SETTLE after one ends to the start of the next, so that steady and
    # during are sampled over the same minutes of a shared machine.
    quiet = [(s0, s1)]
    for (_, end, _), (start, _, _) in zip(res.windows, res.windows[1:] + [(p1, p1, None)]):
        quiet.append((end + SETTLE, start))
    res.steady = [s for s in samples if any(a <= s.t0 and s.t1 <= b for a, b in quiet)]
    res.phase = [s for s in samples if s1 <= s.t0 < p1]
    res.during = [s for s in res.phase if any(s.t0 < b and s.t1 > a for a, b, _ in res.windows)]
    return res


# -- the report -------------------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(p / 100 * len(v)))]


def lat(samples: list[Sample], kind: str) -> list[float]:
    return [(s.t1 - s.t0) * 1000 for s in samples if s.kind == kind and s.outcome == "ok"]


def row(r: Result, kind: str) -> dict[str, object]:
    counts = {o: 0 for o in OUTCOMES}
    for s in r.phase:
        if s.kind == kind:
            counts[s.outcome] += 1
    st, du = lat(r.steady, kind), lat(r.during, kind)
    return {
        "counts": counts,
        "p50s": pct(st, 50),
        "p99s": pct(st, 99),
        "p50d": pct(du, 50),
        "p99d": pct(du, 99),
        "steady_bad": sum(1 for s in r.steady if s.kind == kind and s.outcome != "ok"),
    }


def table(results: list[Result]) -> str:
    head = (
        "| server, operation | workers | ops | op s (median / max) | clients | requests "
        "| ok | non-2xx | refused | reset | timeout | other | resets / op "
        "| p50 steady | p99 steady | p50 during | p99 during |"
    )
    lines = [head, "|" + "---|" * 17]
    for r in results:
        for kind in KINDS:
            d = row(r, kind)
            c = d["counts"]
            assert isinstance(c, dict)
            cells = [
                r.label,
                str(r.workers),
                f"{r.ops} ({len(r.failed_ops)} failed)" if r.failed_ops else str(r.ops),
                f"{statistics.median(r.op_seconds):.2f} / {max(r.op_seconds):.2f}",
                "new conn." if kind == "new" else "keep-alive",
                str(sum(c.values())),
                *(str(c[o]) for o in OUTCOMES),
                f"{c['reset'] / r.ops:.2f}" if r.ops else "-",
                *(f"{d[k]:.1f} ms" for k in ("p50s", "p99s", "p50d", "p99d")),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def failures(r: Result, kind: str) -> str:
    """The failed requests of the reload phase in one line: how many of each
    error, in how many operations, and when they ended relative to the old
    generation's exit (negative: after it)."""
    errors: dict[str, int] = {}
    offsets: list[float] = []
    ops: set[int] = set()
    between = 0
    for s in r.phase:
        if s.kind != kind or s.outcome == "ok":
            continue
        key = f"{s.outcome} {s.detail.split(':')[0]}"
        errors[key] = errors.get(key, 0) + 1
        for i, (a, b, exited) in enumerate(r.windows):
            if s.t0 < b and s.t1 > a:
                ops.add(i)
                if exited is not None:
                    offsets.append((exited - s.t1) * 1000)
                break
        else:
            between += 1
    if not errors:
        return ""
    text = ", ".join(f"{k} x{n}" for k, n in sorted(errors.items()))
    text += f"; in {len(ops)} of {r.ops} ops"
    if between:
        text += f", {between} between ops"
    if offsets:
        text += (
            f"; ended {min(offsets):+.0f} / {statistics.median(offsets):+.0f} / "
            f"{max(offsets):+.0f} ms (min/median/max) before the old generation exited"
        )
    return text


def goals(results: list[Result]) -> list[str]:
    by = {(r.label, r.workers): r for r in results}
    hup = next((r for r in results if r.label.startswith("uvicorn")), None)
    hup_rate = None
    if hup is not None and hup.ops:
        hup_rate = row(hup, "keepalive")["counts"]["reset"] / hup.ops  # type: ignore[index]
    lines = []
    for (label, workers), r in by.items():
        if not label.startswith("reload()"):
            continue
        new, ka = row(r, "new"), row(r, "keepalive")
        nc, kc = new["counts"], ka["counts"]
        assert isinstance(nc, dict) and isinstance(kc, dict)
        ok_new = nc["refused"] == 0 and nc["reset"] == 0
        rate = kc["reset"] / r.ops
        ok_ka = hup_rate is None or rate <= hup_rate
        p99 = [(row(r, k)["p99d"], row(r, k)["p99s"]) for k in KINDS]
        ok_p99 = all(d <= 2 * s for d, s in p99)  # type: ignore[operator]
        lines.append(
            f"- reload(), {workers} worker(s): new-connection refused+reset = "
            f"{nc['refused'] + nc['reset']} ({'met' if ok_new else 'NOT met'}); "
            f"keep-alive resets {rate:.2f}/reload vs uvicorn SIGHUP "
            f"{'-' if hup_rate is None else f'{hup_rate:.2f}'}/reload "
            f"({'met' if ok_ka else 'NOT met'}); p99 during/steady = "
            + ", ".join(f"{d / s:.2f}" for d, s in p99)  # type: ignore[operator]
            + f" ({'met' if ok_p99 else 'NOT met'})"
        )
    return lines


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import fastapi
    import uvicorn

    return (
        f"{platform.machine()}, {cpu}, {os.cpu_count()} cores, Linux {platform.release()}, "
        f"Python {platform.python_version()}, uvicorn {uvicorn.__version__}, "
        f"fastapi {fastapi.__version__}, httpx {httpx.__version__}"
    )


async def main_async(args: argparse.Namespace, tmp: str, app_dir: str) -> list[Result]:
    n = [0]

    def managed(op: str, held: bool, workers: int) -> Callable[[], Contender]:
        def make() -> Contender:
            n[0] += 1
            return Managed(op, workers, held, tmp, n[0])

        return make

    plan: list[tuple[Callable[[], Contender], int, int]] = []
    for workers, ops, restarts in (
        (1, args.reloads, args.restarts),
        (2, args.reloads_2w, args.restarts_2w),
    ):
        plan += [
            (managed("reload", True, workers), workers, ops),
            (managed("restart", True, workers), workers, restarts),
            (managed("restart", False, workers), workers, restarts),
        ]
    plan.append((lambda: UvicornHup(2, tmp, app_dir), 2, args.reloads_2w))
    results = []
    for make, workers, ops in plan:
        contender = make()
        print(f"... {contender.label}, {workers} worker(s), {ops} ops", file=sys.stderr)
        try:
            r = await run_one(
                contender, workers, ops, args.clients, args.think, args.steady, args.gap
            )
        except Exception as e:  # noqa: BLE001 - keep the other contenders' results
            print(f"    {contender.label} failed: {type(e).__name__}: {e}", file=sys.stderr)
            continue
        r.load = os.getloadavg()[0]
        results.append(r)
        # As it goes, so that an interrupted run still shows what it measured.
        print("\n".join(table([r]).splitlines()[2:]), file=sys.stderr)
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="20 and 5 reloads instead of 100 and 20")
    ap.add_argument("--reloads", type=int, default=None, help="ops on the one-worker server")
    ap.add_argument("--reloads-2w", type=int, default=None, help="ops on the two-worker one")
    ap.add_argument("--restarts", type=int, default=None, help="restart() ops, one worker")
    ap.add_argument("--restarts-2w", type=int, default=None, help="restart() ops, two workers")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--think", type=float, default=0.25, help="mean pause between requests (s)")
    ap.add_argument("--steady", type=float, default=5.0, help="steady phase before (s)")
    ap.add_argument("--gap", type=float, default=0.6, help="pause between operations (s)")
    args = ap.parse_args()
    if args.reloads is None:
        args.reloads = 20 if args.quick else 100
    if args.reloads_2w is None:
        args.reloads_2w = 5 if args.quick else 20
    # restart() is the baseline whose outcome shows at once (every restart
    # refuses or delays the same way): fewer of them keep the run short.
    if args.restarts is None:
        args.restarts = 5 if args.quick else 20
    if args.restarts_2w is None:
        args.restarts_2w = 2 if args.quick else 5
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="usm-reload-") as tmp:
        app_dir = os.path.join(tmp, "app")
        os.mkdir(app_dir)
        Path(app_dir, APP_MODULE + ".py").write_text(APP_SOURCE)
        # Servers inherit the environment: they import the app from here.
        os.environ["PYTHONPATH"] = app_dir + os.pathsep + os.environ.get("PYTHONPATH", "")
        results = asyncio.run(main_async(args, tmp, app_dir))
    print(f"Machine: {machine()}")
    print(f"Command: python benchmarks/reload.py {' '.join(sys.argv[1:])}".rstrip())
    print(
        f"{args.clients} clients (half new connection per request, half keep-alive), "
        f"pause {args.think * 1000:.0f} ms on average; {time.monotonic() - started:.0f} s in all"
    )
    loads = ", ".join(f"{r.load:.1f}" for r in results)
    print(f"Load average (1 min) after each contender, in table order: {loads}\n")
    print(table(results))
    print("\nGoals:")
    print("\n".join(goals(results)))
    for r in results:
        bad = [f"steady-phase failures: {row(r, k)['steady_bad']} ({k})" for k in KINDS]
        bad = [b for b in bad if not b.startswith("steady-phase failures: 0 ")]
        bad += [f"failed operation: {f}" for f in r.failed_ops[:5]]
        lines = [(k, failures(r, k)) for k in KINDS]
        if bad or any(text for _, text in lines):
            print(f"\n{r.label}, {r.workers} worker(s):")
            for line in bad:
                print(f"  {line}")
            for k, text in lines:
                if text:
                    print(f"  {'new conn.' if k == 'new' else 'keep-alive'}: {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
