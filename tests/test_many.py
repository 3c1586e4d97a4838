"""Many servers at once: concurrent group stop (and its one-by-one order),
stop waves, failures, Ctrl-C, the exit hooks, and the public names as type
checkers see them.

Speed is never asserted; orderings are. Each server notes when it got SIGTERM
and when its graceful shutdown finished (tests/apps/usm_termlog.py, on the
machine-wide monotonic clock), and exits are watched from here through
pidfds: a concurrent stop sends every SIGTERM before any server has exited,
a one-by-one stop sends each only after the previous server is gone."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import upsonic_server_manager
from _helpers import free_port, get, gone, kill_helper, spawn_helper, wait_until
from upsonic_server_manager import ServerGroup, ServerManager, ServerManagerError
from upsonic_server_manager._group import stop_all

APP = "usm_termlog:app"


def termlog_env(d: Path, shutdown: float = 0.0, ignore_term: bool = False) -> dict[str, str]:
    env = {"USM_TERMLOG_DIR": str(d), "USM_SHUTDOWN_SECONDS": str(shutdown)}
    if ignore_term:
        env["USM_IGNORE_TERM"] = "1"
    return env


def server(name: str, env: dict[str, str], **kw) -> ServerManager:
    return ServerManager(APP, "127.0.0.1", free_port(), name, env=env, **kw)


def notes(d: Path, pid: int) -> dict[str, float]:
    """The first time of each event the server with ``pid`` noted."""
    out: dict[str, float] = {}
    path = d / str(pid)
    if path.exists():
        for line in path.read_text().splitlines():
            event, t = line.split()
            out.setdefault(event, float(t))
    return out


class ExitWatch:
    """Notes, from outside, the monotonic time at which each process exits."""

    def __init__(self, pids: list[int]) -> None:
        self.fds = {os.pidfd_open(p): p for p in pids}
        self.exits: dict[int, float] = {}
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        poller = select.poll()
        for fd in self.fds:
            poller.register(fd, select.POLLIN)
        while len(self.exits) < len(self.fds):
            for fd, _ in poller.poll(50):
                self.exits.setdefault(self.fds[fd], time.monotonic())
                poller.unregister(fd)

    def result(self, timeout: float = 30) -> dict[int, float]:
        self.thread.join(timeout)
        for fd in self.fds:
            os.close(fd)
        return dict(self.exits)


def assert_all_stopped(ms: list[ServerManager], pids: list[int]) -> None:
    import psutil

    assert not any(m.is_running() for m in ms)
    assert not any(m._is_port_in_use() for m in ms)
    for pid in pids:
        try:
            assert gone(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass


def start_all(ms: list[ServerManager]) -> list[int]:
    ServerGroup(ms).start()
    for m in ms:
        assert get(m.port)["hello"] == "world"
    pids = [m._read_pid() for m in ms]
    assert all(pids)
    return pids


# ---- concurrent and one-by-one stop ----------------------------------------------------


def test_group_stop_sends_every_sigterm_before_any_server_exits(home, managers, tmp_path):
    # Each server takes 0.5 s to shut down: a one-by-one stop could not send
    # the next SIGTERM before the previous server had exited.
    ms = [server(f"par{i}", termlog_env(tmp_path, 0.5)) for i in range(6)]
    managers.extend(ms)
    pids = start_all(ms)
    group = ServerGroup(ms)
    assert group.order == "parallel"
    watch = ExitWatch(pids)
    group.stop()
    exits = watch.result()
    assert_all_stopped(ms, pids)
    terms = [notes(tmp_path, p)["term"] for p in pids]
    graceful = [notes(tmp_path, p)["exit"] for p in pids]
    assert max(terms) < min(graceful) <= min(exits.values())


def test_reverse_order_stops_one_after_another_last_first(home, managers, tmp_path):
    ms = [server(f"rev{i}", termlog_env(tmp_path, 0.2)) for i in range(4)]
    managers.extend(ms)
    pids = start_all(ms)
    ServerGroup(ms, order="reverse").stop()
    assert_all_stopped(ms, pids)
    # Last first: each server got its SIGTERM only after the one before it
    # (in stop order) had finished its shutdown.
    in_stop_order = pids[::-1]
    for before, after in zip(in_stop_order, in_stop_order[1:]):
        assert notes(tmp_path, before)["exit"] < notes(tmp_path, after)["term"]


def test_stop_order_can_be_chosen_per_call(home, managers, tmp_path):
    ms = [server(f"call{i}", termlog_env(tmp_path, 0.3)) for i in range(3)]
    managers.extend(ms)
    pids = start_all(ms)
    ServerGroup(ms, order="reverse").stop(order="parallel")
    assert_all_stopped(ms, pids)
    terms = [notes(tmp_path, p)["term"] for p in pids]
    assert max(terms) < min(notes(tmp_path, p)["exit"] for p in pids)


def test_each_server_is_killed_at_its_own_stop_timeout(home, managers, tmp_path):
    # Two servers that ignore SIGTERM (killed at 1 s and at 3 s) beside two
    # that stop at once. Concurrently, the quick ones are gone before the
    # first deaf one is killed, and that one before the second. One by one,
    # last first, "deaf_fast" would be killed before anything else.
    slow = server("deaf_slow", termlog_env(tmp_path, ignore_term=True), stop_timeout=3)
    quick = [server(f"quick{i}", termlog_env(tmp_path)) for i in range(2)]
    fast = server("deaf_fast", termlog_env(tmp_path, ignore_term=True), stop_timeout=1)
    ms = [slow, *quick, fast]
    managers.extend(ms)
    pids = start_all(ms)
    p_slow, p_q0, p_q1, p_fast = pids
    watch = ExitWatch(pids)
    stop_all(ms)  # what ServerGroup.stop() and `upsonic-server stop --all` use
    exits = watch.result()
    assert_all_stopped(ms, pids)
    assert max(exits[p_q0], exits[p_q1]) < exits[p_fast] < exits[p_slow]
    # The quick ones shut down gracefully; the deaf ones got SIGTERM and
    # never finished a shutdown: SIGKILL ended them.
    assert all("exit" in notes(tmp_path, p) for p in (p_q0, p_q1))
    for p in (p_slow, p_fast):
        assert "term" in notes(tmp_path, p) and "exit" not in notes(tmp_path, p)


LOCK_HOLDER = """
import fcntl, sys, time
files = [open(p, "a") for p in sys.argv[2:]]
for f in files:
    fcntl.flock(f, fcntl.LOCK_EX)
print("ready", flush=True)
time.sleep(600)
"""


def test_failed_stops_are_all_named_after_every_server_was_attempted(home, managers, tmp_path):
    # A hung manager in another process holds the lock of two servers: their
    # stop fails (after start_timeout + 2 * stop_timeout + 5 s); the other
    # two are stopped regardless, and the error names both failures.
    env = termlog_env(tmp_path)
    ms = [server(f"ok{i}", env) for i in range(2)] + [server(f"held{i}", env) for i in range(2)]
    managers.extend(ms)
    pids = start_all(ms)
    ok, held = ms[:2], ms[2:]
    # Managers of the same servers with short timeouts, so the wait is short.
    short = {"start_timeout": 0.1, "stop_timeout": 0.1}
    impatient = [ServerManager(APP, "127.0.0.1", m.port, m.name, env=env, **short) for m in held]
    locks = [str(m._core.lock_file) for m in held]
    holder = spawn_helper(LOCK_HOLDER, *locks, stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == b"ready"
        with pytest.raises(ServerManagerError) as ei:
            ServerGroup([ok[0], impatient[0], ok[1], impatient[1]]).stop()
        message = str(ei.value)
        assert "held0: " in message and "held1: " in message
        assert "ok0" not in message and "ok1" not in message
        assert isinstance(ei.value.__cause__, ServerManagerError)
        assert "held0" in str(ei.value.__cause__)
        assert_all_stopped(ok, pids[:2])
        assert all(m.is_running() for m in held)
    finally:
        kill_helper(holder)
    ServerGroup(held).stop()
    assert_all_stopped(held, pids[2:])


def test_nested_groups_stop_in_waves(home, managers, tmp_path):
    env = termlog_env(tmp_path, 0.3)
    backends = ServerGroup([server(f"back{i}", env) for i in range(2)])
    frontends = ServerGroup([server(f"front{i}", env) for i in range(2)])
    managers.extend([*backends, *frontends])
    both = ServerGroup([backends, frontends], order="reverse")
    assert [m.name for m in both] == ["back0", "back1", "front0", "front1"]
    assert len(both) == 4
    with both:
        assert both.is_running()
        assert list(both.status()) == ["back0", "back1", "front0", "front1"]
        back = [m._read_pid() for m in backends]
        front = [m._read_pid() for m in frontends]
    assert_all_stopped(list(both), back + front)
    n = {p: notes(tmp_path, p) for p in back + front}
    # Frontends together, then backends together.
    assert max(n[p]["term"] for p in front) < min(n[p]["exit"] for p in front)
    assert max(n[p]["exit"] for p in front) < min(n[p]["term"] for p in back)
    assert max(n[p]["term"] for p in back) < min(n[p]["exit"] for p in back)


def test_order_is_validated_and_named(home):
    m = ServerManager(APP, "127.0.0.1", free_port(), "v")
    with pytest.raises(ValueError, match="'sideways'"):
        ServerGroup([m], order="sideways")
    with pytest.raises(ValueError, match="'backwards'"):
        ServerGroup([m]).stop(order="backwards")
    with pytest.raises(ValueError, match="'later'"):
        upsonic_server_manager.stop_on_exit(m, order="later")
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(ValueError, match="'never'"):
        upsonic_server_manager.install_signal_handlers(m, order="never")
    assert signal.getsignal(signal.SIGTERM) is before


# ---- Ctrl-C and the exit hooks (real child programs) ------------------------------------

CHILD = textwrap.dedent(
    """
    import json, os, signal, sys, time
    from upsonic_server_manager import (
        ServerGroup, ServerManager, install_signal_handlers, stop_on_exit)
    mode, order, ports = sys.argv[1], sys.argv[2], [int(p) for p in sys.argv[3:]]
    ms = [ServerManager("usm_termlog:app", "127.0.0.1", p, f"child{i}")
          for i, p in enumerate(ports)]
    single, group = ms[0], ServerGroup(ms[1:], order=order)
    if mode == "atexit":
        stop_on_exit(single, group)
    elif mode == "signal":
        install_signal_handlers(single, group, exit_code=7)
    # Output to log files: the servers must not hold the test's pipe open.
    single.start(redirect_output=True); group.start(redirect_output=True)
    print(json.dumps([m._read_pid() for m in ms]), flush=True)
    if mode == "atexit":
        sys.stdin.readline()
    elif mode == "signal":
        signal.pause()
    else:
        sys.stdin.readline()
        try:
            ServerGroup(ms, order=order).stop()
        except KeyboardInterrupt:
            print("interrupted", time.monotonic(), flush=True)
            raise
    """
)


def run_child(home: Path, tmp_path: Path, mode: str, n: int, shutdown: float, order="parallel"):
    ports = [free_port() for _ in range(n)]
    env = dict(os.environ, HOME=str(home), **termlog_env(tmp_path, shutdown))
    p = subprocess.Popen(
        [sys.executable, "-c", CHILD, mode, order, *map(str, ports)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    import json

    assert p.stdout is not None
    pids = json.loads(p.stdout.readline())
    return p, ports, pids


def finish_child(p: subprocess.Popen) -> None:
    p.kill()
    p.wait()
    for f in (p.stdout, p.stdin):
        if f and not f.closed:
            f.close()


def probes(ports: list[int]) -> list[ServerManager]:
    return [ServerManager(APP, "127.0.0.1", port, f"probe{i}") for i, port in enumerate(ports)]


@pytest.mark.parametrize("mode", ["atexit", "signal"])
def test_exit_hooks_stop_every_server_concurrently(home, tmp_path, mode):
    p, ports, pids = run_child(home, tmp_path, mode, 5, shutdown=0.5)
    try:
        for port in ports:
            get(port)
        if mode == "atexit":
            assert p.stdin is not None
            p.stdin.close()
            assert p.wait(30) == 0
        else:
            p.send_signal(signal.SIGTERM)
            assert p.wait(30) == 7
        assert_all_stopped(probes(ports), pids)
        n = [notes(tmp_path, pid) for pid in pids]
        assert max(x["term"] for x in n) < min(x["exit"] for x in n)
    finally:
        finish_child(p)


def test_ctrl_c_during_a_concurrent_stop_waits_for_every_server(home, tmp_path):
    # Ctrl-C while the servers shut down (1 s each): none is left running and
    # none is cut short; the KeyboardInterrupt comes once all have stopped.
    p, ports, pids = run_child(home, tmp_path, "ctrl-c", 4, shutdown=1.0)
    try:
        assert p.stdin is not None
        p.stdin.write("\n")
        p.stdin.flush()
        assert wait_until(lambda: all("term" in notes(tmp_path, pid) for pid in pids))
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=30)
        assert p.returncode != 0
        interrupted = float(out.split("interrupted")[1])
        assert_all_stopped(probes(ports), pids)
        n = [notes(tmp_path, pid) for pid in pids]
        assert all("exit" in x for x in n)  # every shutdown ran to its end
        assert max(x["exit"] for x in n) < interrupted
    finally:
        finish_child(p)


def test_ctrl_c_during_a_one_by_one_stop_stops_the_rest_at_once(home, tmp_path):
    # With order="reverse", Ctrl-C cuts the current server's stop short (as
    # ServerManager.stop() does) and the rest stop concurrently.
    p, ports, pids = run_child(home, tmp_path, "ctrl-c", 4, shutdown=1.0, order="reverse")
    try:
        assert p.stdin is not None
        p.stdin.write("\n")
        p.stdin.flush()
        # The group inside stops one by one, last first: pids[3] first.
        assert wait_until(lambda: "term" in notes(tmp_path, pids[3]))
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=30)
        assert "interrupted" in out
        assert_all_stopped(probes(ports), pids)
        rest = [notes(tmp_path, pid) for pid in pids[:3]]
        assert max(x["term"] for x in rest) < min(x["exit"] for x in rest)
    finally:
        finish_child(p)


# ---- what type checkers see -------------------------------------------------------------

TYPED_PROGRAM = """
from upsonic_server_manager import (
    DEFAULT_UVICORN_ARGS,
    PortHolder,
    PortInUseError,
    ServerGroup,
    ServerManager,
    ServerManagerError,
    ServerStatus,
    StartError,
    StartTimeoutError,
    install_signal_handlers,
    list_records,
    log_files,
    port_holders,
    stop_on_exit,
)


def main() -> int:
    args: tuple[str, ...] = DEFAULT_UVICORN_ARGS
    m = ServerManager("app:app", "127.0.0.1", 8000, "web", uvicorn_args=args)
    group = ServerGroup([m], order="reverse")
    waves = ServerGroup([group, ServerManager("app:app", "127.0.0.1", 8001, "api")])
    stop_on_exit(m, group, order="parallel")
    install_signal_handlers(waves, exit_code=3, order="reverse")
    try:
        group.start(redirect_output=True)
    except PortInUseError as e:
        holders: list[PortHolder] = e.holders
        return holders[0].pid
    except StartTimeoutError as e:
        return 1 if e.stderr_tail is None else 2
    except StartError as e:
        return e.exit_code or 1
    except ServerManagerError:
        return 1
    status: dict[str, ServerStatus] = waves.status()
    names: list[str] = list_records(stopped=True)
    out, err = log_files("web")
    zero = ServerManager("app:app", "127.0.0.1", 0, "zero", hold_socket=True)
    zero.reload()
    url: str = zero.url
    found: list[PortHolder] = port_holders(8000)
    first: ServerManager = next(iter(waves))
    group.stop(order="parallel")
    return len(status) + len(names) + len(found) + first.port + len(out + err + url)
"""


def test_every_public_name_type_checks_under_mypy_strict(tmp_path):
    missing = [n for n in upsonic_server_manager.__all__ if n not in TYPED_PROGRAM]
    assert not missing, f"the typed program does not use {missing}"
    prog = tmp_path / "prog.py"
    prog.write_text(TYPED_PROGRAM)
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(prog)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=110,
    )
    assert r.returncode == 0, r.stdout + r.stderr
