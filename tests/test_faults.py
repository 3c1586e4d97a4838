"""Reliability campaign: injected faults, hostile input and odd environments.
Each case has a clear outcome, never a hang past the timeouts, and leaves no
server running untracked."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import textwrap
import time

import httpx
import psutil
import pytest
from _helpers import (
    APPS,
    free_port,
    get,
    gone,
    has_ipv6,
    python_script,
    server_procs,
    spawn_helper,
    wait_until,
)
from upsonic_server_manager import (
    ServerManager,
    ServerManagerError,
    StartError,
)

# ---- file-system faults ---------------------------------------------------------------


def test_log_dir_under_a_regular_file(home, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    m = ServerManager("usm_hello:app", "127.0.0.1", free_port(), "badlog", log_dir=blocker / "logs")
    with pytest.raises(ServerManagerError) as ei:
        m.start(redirect_output=True)
    assert str(blocker / "logs") in str(ei.value)
    assert not m.is_running()
    assert server_procs("usm_hello:app") == []
    assert not os.path.exists(m._pid_file)


def test_pid_dir_is_a_file(home, tmp_path):
    f = tmp_path / "pidfile-not-dir"
    f.write_text("")
    m = ServerManager("usm_hello:app", "127.0.0.1", free_port(), "badpid", pid_dir=f)
    with pytest.raises(ServerManagerError) as ei:
        m.start()
    assert str(f) in str(ei.value)
    assert server_procs("usm_hello:app") == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only directories anyway")
def test_pid_dir_not_writable(home, tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    try:
        m = ServerManager("usm_hello:app", "127.0.0.1", free_port(), "ro", pid_dir=d)
        with pytest.raises(ServerManagerError) as ei:
            m.start()
        assert str(d) in str(ei.value)
        assert server_procs("usm_hello:app") == []
    finally:
        d.chmod(0o700)


# ---- hostile PID records ------------------------------------------------------------------

BAD_RECORDS = {
    "empty": b"",
    "garbage": b"\x00\xff\xfegarbage\n",
    "negative": b"-1",
    "zero": b"0",
    "one": b"1",
    "too large": b"99999999999999999999",
    "above pid_max": b"4194305",
    "two numbers": b"123 456",
    "megabytes": b"7" * (4 << 20),
}


@pytest.mark.parametrize("label", list(BAD_RECORDS))
def test_bad_pid_record(home, managers, label):
    port = free_port()
    m = ServerManager("usm_hello:app", "127.0.0.1", port, "badrec")
    managers.append(m)
    with open(m._pid_file, "wb") as f:
        f.write(BAD_RECORDS[label])
    # Our own process group must never be signalled: a stray SIGTERM would
    # end this very test run.
    got = []
    old = signal.signal(signal.SIGTERM, lambda *a: got.append(a))
    try:
        assert m._read_pid() is None
        assert m.is_running() is False
        m.stop()
        assert m.status().state == "stopped"
        m.start()
        assert get(port)["hello"] == "world"
        m.stop()
    finally:
        signal.signal(signal.SIGTERM, old)
    assert got == []


def test_identity_file_garbage_is_ignored(serve):
    m = serve("badid")
    port = m.port
    pid = m._read_pid()
    with open(m._pid_file[:-4] + ".id", "wb") as f:
        f.write(os.urandom(4096))
    # Without a readable identity, the bare-PID rule applies: a uvicorn
    # serving this app on this port is still recognised.
    other = ServerManager("usm_hello:app", "127.0.0.1", port, "badid")
    assert other.is_running()
    other.stop()
    assert wait_until(lambda: not psutil.pid_exists(pid) or gone(psutil.Process(pid)))


# ---- locks ----------------------------------------------------------------------------------

HOLD_LOCK = textwrap.dedent(
    """
    import fcntl, sys, time
    f = open(sys.argv[2], "a")  # argv[1] is the "usm-helper" tag
    fcntl.flock(f, fcntl.LOCK_EX)
    print("locked", flush=True)
    time.sleep(600)
    """
)


def test_lock_left_by_a_process_that_died_holding_it(home, managers):
    port = free_port()
    m = ServerManager("usm_hello:app", "127.0.0.1", port, "deadlock")
    managers.append(m)
    lock = m._pid_file[: -len(".pid")] + ".lock"
    p = spawn_helper(HOLD_LOCK, lock, stdout=subprocess.PIPE)
    assert p.stdout.readline().strip() == b"locked"
    p.send_signal(signal.SIGKILL)
    p.wait()
    p.stdout.close()
    m.start()
    assert get(port)["hello"] == "world"
    # and the lock is really free again afterwards
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)


# ---- the manager dies -------------------------------------------------------------------

KILLED_DURING = textwrap.dedent(
    """
    import sys
    from upsonic_server_manager import ServerManager
    app, port, phase = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    m = ServerManager(app, "127.0.0.1", port, "victim", stop_timeout=30)
    if phase == "start":
        print("starting", flush=True)
        m.start()
    else:
        m.start()
        print("stopping", flush=True)
        m.stop()
    """
)


@pytest.mark.parametrize("phase", ["start", "stop"])
def test_manager_killed_during_start_or_stop(home, managers, monkeypatch, phase):
    port = free_port()
    if phase == "start":
        monkeypatch.setenv("USM_SLOW_SECONDS", "60")
        app = "usm_slow:app"
    else:
        monkeypatch.setenv("USM_IGNORE_TERM", "1")
        app = "usm_stubborn:app"
    with python_script(KILLED_DURING, app, str(port), phase, stdout=subprocess.PIPE) as p:
        assert p.stdout.readline().strip() in ("starting", "stopping")
        assert wait_until(lambda: bool(psutil.Process(p.pid).children()), 30)
        server = psutil.Process(p.pid).children()[0]
        time.sleep(0.5)  # still importing / waiting for the stubborn stop
        p.send_signal(signal.SIGKILL)
        p.wait()
        assert server.is_running()
        m = ServerManager(app, "127.0.0.1", port, "victim", stop_timeout=1)
        managers.append(m)
        assert m.is_running()
        m.stop()
        assert wait_until(lambda: gone(server), 5)
        assert not os.path.exists(m._pid_file)


# ---- escaped descendants ------------------------------------------------------------------


def test_grandchild_that_left_the_group_is_stopped(home, managers, tmp_path, monkeypatch):
    pidfile = tmp_path / "escaped.pid"
    monkeypatch.setenv("USM_ESCAPER_PIDFILE", str(pidfile))
    port = free_port()
    m = ServerManager("usm_escaper:app", "127.0.0.1", port, "esc")
    managers.append(m)
    m.start()
    escaped = psutil.Process(int(pidfile.read_text()))
    assert os.getpgid(escaped.pid) != m._read_pid()
    assert get(port)["escaped"] == escaped.pid
    m.stop()
    assert wait_until(lambda: gone(escaped), 5)


# ---- misbehaving servers ---------------------------------------------------------------------


def test_server_that_stops_listening_but_keeps_running(home, managers):
    port = free_port()
    m = ServerManager("usm_deaf:app", "127.0.0.1", port, "deaf")
    managers.append(m)
    m.start()
    assert httpx.post(f"http://127.0.0.1:{port}/deafen", timeout=10).json()["closed"] >= 1
    assert wait_until(lambda: not m._is_port_in_use(), 5)
    assert m.is_running()  # alive, though not serving
    assert m.status().state == "starting"  # alive, not listening
    pid = m._read_pid()
    m.stop()
    assert not psutil.pid_exists(pid)
    m.start()  # a fresh start works: the port is free
    assert get(port)["deaf"] is False


@pytest.mark.parametrize("attempt", range(4))
def test_server_exiting_at_a_random_moment_during_readiness(home, managers, monkeypatch, attempt):
    monkeypatch.setenv("USM_FLAKY_MAX", "0.5")
    m = ServerManager("usm_flaky:app", "127.0.0.1", free_port(), "flaky", start_timeout=20)
    managers.append(m)
    t0 = time.monotonic()
    with pytest.raises(StartError) as ei:
        m.start(redirect_output=True)
    assert time.monotonic() - t0 < 15
    assert ei.value.exit_code == 3
    assert not m.is_running()
    assert not os.path.exists(m._pid_file)


# ---- environment oddities -------------------------------------------------------------------

HOMELESS = textwrap.dedent(
    """
    import os, pwd, sys
    from upsonic_server_manager import ServerManager
    m = ServerManager("usm_hello:app", "127.0.0.1", 1, "homeless-probe")
    print(m._pid_file)
    """
)


@pytest.mark.parametrize("home_value", [None, "relative/dir", ""])
def test_home_unset_or_relative(home, home_value):
    import pwd

    env = dict(os.environ)
    env.pop("HOME", None)
    if home_value is not None:
        env["HOME"] = home_value
    out = subprocess.run(
        [sys.executable, "-c", HOMELESS], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    expected = os.path.join(pwd.getpwuid(os.getuid()).pw_dir, ".upsonic_homeless-probe_server.pid")
    assert out == expected


def test_cwd_removed_while_the_server_runs(serve, tmp_path):
    d = tmp_path / "doomed"
    d.mkdir()
    m = serve("doomed", cwd=d)
    os.rmdir(d)
    assert m.is_running()
    assert m.status().state == "running"
    m.stop()
    assert not m.is_running()


def test_app_path_with_spaces_and_unicode(home, managers):
    port = free_port()
    m = ServerManager("usm_ünicode:äpp", "127.0.0.1", port, "uni", cwd=APPS / "dir with space ü")
    managers.append(m)
    m.start()
    assert get(port)["hello"] == "ünicode"
    m.stop()


@pytest.mark.parametrize(
    "host, client",
    [
        ("localhost", "127.0.0.1"),
        ("0.0.0.0", "127.0.0.1"),
        pytest.param("::1", "::1", marks=pytest.mark.skipif(not has_ipv6(), reason="no IPv6")),
        pytest.param("::", "::1", marks=pytest.mark.skipif(not has_ipv6(), reason="no IPv6")),
    ],
)
def test_host_forms(home, managers, host, client):
    port = free_port("::" if ":" in host else "0.0.0.0")
    m = ServerManager("usm_hello:app", host, port, "hosts")
    managers.append(m)
    m.start()
    assert get(port, host=client)["hello"] == "world"
    assert m._is_port_in_use()
    assert m.status().state == "running"
    m.stop()
    assert not m._is_port_in_use()


# ---- hostile input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["../../etc/x", "a/../b", "/abs", "x\x00y", "..", ".", "a\nb", "ü", "a b", "-"]
)
def test_names_that_could_escape_are_refused(home, name):
    if name == "-":
        m = ServerManager("usm_hello:app", "127.0.0.1", 8000, name)  # plain and safe
        assert m.name == "-"
        assert m._pid_file == os.path.join(home, ".upsonic_-_server.pid")
        return
    with pytest.raises(ValueError, match="name"):
        ServerManager("usm_hello:app", "127.0.0.1", 8000, name)
    assert os.listdir(home) == []


def test_rust_panic_reaches_python_as_an_exception():
    from upsonic_server_manager import _core

    with pytest.raises(BaseException) as ei:
        _core._panic_for_tests("boom")
    assert "boom" in str(ei.value)
    assert type(ei.value).__name__ == "PanicException"
    # The interpreter is intact and the core still works.
    assert _core.process_info(os.getpid())["pid"] == os.getpid()


def test_missing_cwd_is_named_before_anything_runs(home, tmp_path):
    missing = tmp_path / "no-such-dir"
    m = ServerManager("usm_hello:app", "127.0.0.1", free_port(), "nocwd", cwd=missing)
    with pytest.raises(ServerManagerError) as ei:
        m.start()
    assert str(missing) in str(ei.value)
    assert not m.is_running()
    assert not os.path.exists(m._pid_file)
    assert server_procs("usm_hello:app") == []


@pytest.mark.parametrize("then", ["stop", "start"])
def test_workers_outliving_a_killed_master_are_not_orphaned(serve, managers, then):
    first = serve("orphans", workers=2)
    port = first.port
    master = psutil.Process(first._read_pid())
    assert wait_until(lambda: len(master.children()) >= 2, 30)
    workers = [c for c in master.children() if "spawn_main" in " ".join(c.cmdline())]
    master.send_signal(signal.SIGKILL)
    # uvicorn's workers survive their master and keep serving the port.
    assert wait_until(lambda: gone(master), 5)
    assert all(not gone(w) for w in workers)
    fresh = ServerManager("usm_hello:app", "127.0.0.1", port, "orphans")
    managers.append(fresh)
    assert fresh.is_running() is False
    assert os.path.exists(fresh._pid_file)  # kept: its launch still has processes
    assert fresh.status().state == "dead"
    if then == "stop":
        fresh.stop()
        assert not os.path.exists(fresh._pid_file)
        assert not fresh._is_port_in_use()
    else:
        fresh.start()
        assert get(port)["pid"] == fresh._read_pid()
    assert all(wait_until(lambda w=w: gone(w), 5) for w in workers)


def test_a_hung_lock_holder_is_named_not_waited_for_forever(home):
    port = free_port()
    m = ServerManager(
        "usm_hello:app", "127.0.0.1", port, "hung", start_timeout=0.5, stop_timeout=0.5
    )
    lock = m._pid_file[: -len(".pid")] + ".lock"
    holder = spawn_helper(HOLD_LOCK, lock, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"locked"
        holder.suspend()  # a manager stopped (SIGSTOP) in the middle of a start
        t0 = time.monotonic()
        with pytest.raises(ServerManagerError, match=f"process {holder.pid} has held the lock"):
            m.start()
        # start_timeout + 2 x stop_timeout + 5 s of margin for a real holder
        assert 6 <= time.monotonic() - t0 < 30
        assert server_procs("usm_hello:app") == []
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
