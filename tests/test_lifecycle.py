"""One server's life: launch, concurrent starts, readiness, stop, restart, and
the arguments it accepts. Each test would fail without the behaviour it names."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from contextlib import ExitStack

import psutil
import pytest
from _helpers import (
    APPS,
    free_port,
    get,
    gone,
    python_script,
    wait_until,
)
from upsonic_server_manager import (
    ServerManager,
    ServerManagerError,
    StartError,
    StartTimeoutError,
)

# ---- launch ----------------------------------------------------------------------------


def test_launch_new_session_cwd_env_and_logs(home, managers, tmp_path):
    port = free_port()
    s = ServerManager(
        "usm_hello:app",
        "127.0.0.1",
        port,
        "launch",
        cwd=APPS,
        env={"USM_MARKER": "hello-env"},
        log_dir=tmp_path / "mylogs",
    )
    managers.append(s)
    s.start(redirect_output=True)
    body = get(port)
    pid = body["pid"]
    assert body["marker"] == "hello-env"
    assert get(port, "/cwd")["cwd"] == str(APPS)
    assert os.getsid(pid) == pid and os.getpgid(pid) == pid
    assert os.getsid(pid) != os.getsid(0)
    cmd = psutil.Process(pid).cmdline()
    assert cmd[:4] == [sys.executable, "-m", "uvicorn", "usm_hello:app"]
    assert cmd[4:8] == ["--host", "127.0.0.1", "--port", str(port)]
    assert "--no-access-log" in cmd
    assert (tmp_path / "mylogs" / "launch_server.log").exists()
    assert (tmp_path / "mylogs" / "launch_server_error.log").exists()
    mine = [f.path for f in psutil.Process().open_files()]
    assert not any("mylogs" in p for p in mine)
    st = s.status()
    assert st.stderr_log == str(tmp_path / "mylogs" / "launch_server_error.log")


def test_workers_from_environment(home, managers, monkeypatch):
    monkeypatch.setenv("UPSONIC_WORKERS_AMOUNT", "2")
    port = free_port()
    s = ServerManager("usm_hello:app", "127.0.0.1", port, "envw")
    managers.append(s)
    assert s.workers == 2
    s.start()
    cmd = psutil.Process(s._read_pid()).cmdline()
    assert cmd[cmd.index("--workers") + 1] == "2"


# ---- concurrent starts: the per-name lock ---------------------------------------------

CONCURRENT = textwrap.dedent(
    """
    import sys, time
    from upsonic_server_manager import ServerManager
    s = ServerManager("usm_hello:app", "127.0.0.1", int(sys.argv[1]), "race")
    sys.stdin.readline()
    s.start()
    print(s._read_pid(), s._process is not None, flush=True)
    """
)


def test_four_concurrent_starts_launch_exactly_one_server(home, managers):
    port = free_port()
    m = ServerManager("usm_hello:app", "127.0.0.1", port, "race")
    managers.append(m)
    with ExitStack() as stack:
        pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE}
        procs = [
            stack.enter_context(python_script(CONCURRENT, str(port), **pipes)) for _ in range(4)
        ]
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        # readline, not communicate: the server inherits the launcher's stdout.
        outs = [p.stdout.readline().split() for p in procs]
        assert all(p.wait(60) == 0 for p in procs)
        pids = {o[0] for o in outs}
        assert len(pids) == 1
        assert sum(o[1] == "True" for o in outs) == 1
        # The launcher exited; its orphaned server is still ours and serving.
        assert get(port)["pid"] == int(pids.pop())
        assert m.is_running()


def test_second_start_is_a_noop_not_a_restart(serve):
    s = serve("noop")
    port = s.port
    pid = get(port)["pid"]
    ServerManager("usm_hello:app", "127.0.0.1", port, "noop").start()
    s.start()
    assert get(port)["pid"] == pid


# ---- readiness -------------------------------------------------------------------------


def test_start_returns_only_when_our_group_listens(serve):
    s = serve("ready")
    port = s.port
    # No retry: the very first request after start() is served.
    assert get(port)["hello"] == "world"
    assert s.status().state == "running"


def test_app_that_fails_to_import_says_why(home, managers):
    port = free_port()
    s = ServerManager("usm_broken:app", "127.0.0.1", port, "broken")
    managers.append(s)
    t0 = time.monotonic()
    with pytest.raises(StartError) as ei:
        s.start(redirect_output=True)
    assert time.monotonic() - t0 < s_start_budget()
    e = ei.value
    assert isinstance(e, RuntimeError) and isinstance(e, ServerManagerError)
    assert e.exit_code == 1
    assert "No module named 'usm_this_module_does_not_exist'" in str(e)
    assert "No module named" in e.stderr_tail
    assert not os.path.exists(s._pid_file)
    assert not s.is_running()


def s_start_budget() -> float:
    # Far below the 30 s start_timeout: the failure is noticed when the
    # process exits, not when the timeout runs out.
    return 20.0


def test_start_timeout_stops_the_whole_group(home, managers, monkeypatch):
    monkeypatch.setenv("USM_SLOW_SECONDS", "60")
    port = free_port()
    s = ServerManager("usm_slow:app", "127.0.0.1", port, "slow", start_timeout=1.5)
    managers.append(s)
    with pytest.raises(StartTimeoutError) as ei:
        s.start()
    assert isinstance(ei.value, TimeoutError) and isinstance(ei.value, StartError)
    assert not s.is_running()
    assert not os.path.exists(s._pid_file)


CTRL_C = textwrap.dedent(
    """
    import sys, time
    from upsonic_server_manager import ServerManager
    s = ServerManager("usm_slow:app", "127.0.0.1", int(sys.argv[1]), "ctrlc")
    print("starting", flush=True)
    try:
        s.start()
    except KeyboardInterrupt:
        t = time.monotonic()
        print("interrupted", s._pid_file, flush=True)
        sys.exit(42)
    """
)


@pytest.mark.parametrize("ignore_term", ["0", "1"])
def test_ctrl_c_during_slow_start(home, ignore_term):
    port = free_port()
    # With SIGTERM ignored, only an immediate SIGKILL can meet the deadline:
    # a half-started server gets no grace period (stop_timeout is 5 s).
    env = dict(os.environ, USM_SLOW_SECONDS="60", USM_IGNORE_TERM=ignore_term)
    with python_script(CTRL_C, str(port), env=env, stdout=subprocess.PIPE) as p:
        assert p.stdout.readline().strip() == "starting"
        # Wait until the server process exists, then press Ctrl-C.
        assert wait_until(lambda: bool(psutil.Process(p.pid).children()), 10)
        server = psutil.Process(p.pid).children()[0]
        time.sleep(0.3)
        t0 = time.monotonic()
        p.send_signal(signal.SIGINT)
        line = p.stdout.readline().split()
        elapsed = time.monotonic() - t0
        assert line[0] == "interrupted"
        assert p.wait(10) == 42
        assert not os.path.exists(line[1])
        assert not server.is_running() or server.status() == psutil.STATUS_ZOMBIE
        # Generous bound for a loaded CI box (the benchmark measures the real
        # latency), yet below the 5 s a graceful stop would take.
        assert elapsed < 3


# ---- stop --------------------------------------------------------------------------------


def test_stop_ends_every_worker(serve):
    s = serve("w3", workers=3)
    port = s.port
    leader = psutil.Process(s._read_pid())
    assert wait_until(lambda: len(leader.children()) >= 3, 30)
    group = [leader] + leader.children(recursive=True)
    get(port)
    s.stop()
    for p in group:
        assert gone(p)
    assert not s._is_port_in_use()


@pytest.mark.parametrize("ignore_term", ["0", "1"])
def test_stop_a_server_whose_shutdown_never_finishes(home, managers, monkeypatch, ignore_term):
    monkeypatch.setenv("USM_IGNORE_TERM", ignore_term)
    port = free_port()
    s = ServerManager("usm_stubborn:app", "127.0.0.1", port, "stub", stop_timeout=1.0)
    managers.append(s)
    s.start()
    pid = s._read_pid()
    t0 = time.monotonic()
    s.stop()
    took = time.monotonic() - t0
    assert took >= 0.9  # it waited for the graceful window
    assert not psutil.pid_exists(pid)
    assert s._process is None
    assert not s._is_port_in_use()


def test_server_killed_with_sigkill(serve):
    s = serve("k9")
    port = s.port
    pid = s._read_pid()
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not s.is_running(), 5)
    # The manager that launched it still holds its exit status until stop().
    assert s.status().state == "dead"
    s.stop()
    assert not os.path.exists(s._pid_file)
    assert not psutil.pid_exists(pid)  # reaped: no zombie left behind
    s.start()
    assert get(port)["hello"] == "world"


MANAGER = textwrap.dedent(
    """
    import sys
    from upsonic_server_manager import ServerManager
    s = ServerManager("usm_hello:app", "127.0.0.1", int(sys.argv[1]), "orphan", workers=2)
    s.start()
    print(s._read_pid(), flush=True)
    sys.stdin.readline()
    """
)


def test_manager_killed_with_sigkill_a_new_manager_stops_its_server(home, managers):
    port = free_port()
    m = ServerManager("usm_hello:app", "127.0.0.1", port, "orphan")
    managers.append(m)
    with python_script(MANAGER, str(port), stdin=subprocess.PIPE, stdout=subprocess.PIPE) as p:
        pid = int(p.stdout.readline())
        leader = psutil.Process(pid)
        assert wait_until(lambda: len(leader.children()) >= 2, 30)
        group = [leader] + leader.children(recursive=True)
        p.kill()
        p.wait()
        assert m.is_running()
        assert get(port)["hello"] == "world"
        m.stop()
        for proc in group:
            assert gone(proc)
        assert not m._is_port_in_use()
        assert not os.path.exists(m._pid_file)


# ---- restart, context manager, subclass ---------------------------------------------------


def test_restart_gives_a_new_server_with_the_same_output_mode(home, managers):
    port = free_port()
    m = ServerManager("usm_hello:app", "127.0.0.1", port, "rs")
    managers.append(m)
    m.start(redirect_output=True)
    first = get(port)["pid"]
    m.restart()
    second = get(port)["pid"]
    assert second != first and m.is_running()
    assert not psutil.pid_exists(first)
    assert m.status().stderr_log is not None  # still redirected


def test_context_manager_leaves_nothing_when_start_fails(home):
    port = free_port()
    with pytest.raises(StartError):
        with ServerManager("usm_broken:app", "127.0.0.1", port, "cmfail"):
            pytest.fail("the body must not run")
    probe = ServerManager("usm_broken:app", "127.0.0.1", port, "cmfail")
    assert not probe.is_running()
    assert not os.path.exists(probe._pid_file)


def test_subclassing_works(home, managers):
    class Mine(ServerManager):
        def start(self, redirect_output=False, force=False):
            self.started = True
            super().start(redirect_output, force)

    port = free_port()
    m = Mine("usm_hello:app", "127.0.0.1", port, "sub")
    managers.append(m)
    with m:
        assert m.started and get(port)["hello"] == "world"
    assert not m.is_running()


# ---- waiting releases the GIL; no leaks ----------------------------------------------------


def test_gil_is_released_while_starting(home, managers, monkeypatch):
    monkeypatch.setenv("USM_SLOW_SECONDS", "1")
    port = free_port()
    s = ServerManager("usm_slow:app", "127.0.0.1", port, "gil")
    managers.append(s)
    ticks = 0
    stop = threading.Event()

    def spin():
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            time.sleep(0.001)

    t = threading.Thread(target=spin)
    t.start()
    try:
        s.start()
    finally:
        stop.set()
        t.join()
    assert ticks > 100  # the other thread ran throughout the ~1 s start


def test_no_descriptor_thread_or_zombie_growth_over_cycles(home, managers):
    port = free_port()
    s = ServerManager("usm_hello:app", "127.0.0.1", port, "cycles")
    managers.append(s)
    me = psutil.Process()
    s.start(redirect_output=True)
    s.stop()
    fds, threads = me.num_fds(), me.num_threads()
    for _ in range(8):
        s.start(redirect_output=True)
        get(port)
        s.stop()
    assert me.num_fds() == fds
    assert me.num_threads() == threads
    assert [c for c in me.children() if c.status() == psutil.STATUS_ZOMBIE] == []


# ---- argument validation -------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, exc, word",
    [
        ({"name": "../evil"}, ValueError, "name"),
        ({"name": ".."}, ValueError, "name"),
        ({"name": "a/b"}, ValueError, "name"),
        ({"name": ""}, ValueError, "name"),
        ({"app_path": ""}, ValueError, "app_path"),
        ({"port": 70000}, ValueError, "port"),
        ({"port": "80"}, TypeError, "port"),
        ({"host": "no-such-host.invalid"}, ValueError, "host"),
        ({"workers": 0}, ValueError, "workers"),
        ({"start_timeout": -1}, ValueError, "start_timeout"),
    ],
)
def test_bad_arguments_fail_fast_naming_the_argument(home, kwargs, exc, word):
    args = {"app_path": "usm_hello:app", "host": "127.0.0.1", "port": 8000, "name": "ok"}
    args.update(kwargs)
    app_path, host, port, name = (args.pop(k) for k in ("app_path", "host", "port", "name"))
    t0 = time.monotonic()
    with pytest.raises(exc, match=word):
        ServerManager(app_path, host, port, name, **args)
    assert time.monotonic() - t0 < 5
    assert os.listdir(home) == []


# Port 0 is valid since the manager can hold the socket (tests/test_socket.py).
@pytest.mark.parametrize("bad", [65536, -1, 70000])
def test_bad_port_is_rejected(home, bad):
    with pytest.raises(ValueError, match="port"):
        ServerManager("usm_hello:app", "127.0.0.1", bad, "x")
