"""Port and process inspection from the kernel: who holds a port, which
holders clash with a host, status and diagnose."""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
import time

import psutil
import pytest
from _helpers import (
    free_port,
    get,
    kill_helper,
    listen_helper,
    other_user_listener,
    spawn_helper,
    wait_until,
)
from upsonic_server_manager import ServerManager, port_holders


def test_holder_fields(home):
    port = free_port()
    holder = listen_helper("127.0.0.1", port)
    try:
        (h,) = port_holders(port, "127.0.0.1")
        assert h.pid == holder.pid
        assert h.name == psutil.Process(holder.pid).name()
        assert h.user == psutil.Process(holder.pid).username()
        assert h.address == f"127.0.0.1:{port}"
        assert h.same_user is True
        assert port_holders(free_port()) == []
    finally:
        kill_helper(holder)


def test_prefork_server_every_worker_is_a_holder(serve):
    m = serve("pre", workers=3)
    port = m.port
    leader = psutil.Process(m._read_pid())
    assert wait_until(lambda: len(leader.children()) >= 3, 30)
    get(port)
    holders = {h.pid for h in m.port_holders()}
    # uvicorn's master binds and every worker inherits the same socket.
    workers = {c.pid for c in leader.children() if "spawn_main" in " ".join(c.cmdline())}
    assert len(workers) == 3
    assert {leader.pid} | workers <= holders
    st = m.status()
    assert set(st.workers) == workers  # the resource tracker is not a worker


ZOMBIE_LEADER = textwrap.dedent(
    """
    import ctypes, socket, sys, threading, time
    s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[2]))); s.listen()
    threading.Thread(target=time.sleep, args=(600,)).start()
    print("ready", flush=True)
    ctypes.CDLL(None).pthread_exit(None)  # the main thread exits: leader is a zombie
    """
)


def test_zombie_leader_still_holding_the_port_is_found(home):
    port = free_port()
    p = spawn_helper(ZOMBIE_LEADER, str(port), stdout=subprocess.PIPE)
    try:
        assert p.stdout.readline().strip() == b"ready"
        assert wait_until(lambda: p.status() == psutil.STATUS_ZOMBIE, 10)
        assert [h.pid for h in port_holders(port, "127.0.0.1")] == [p.pid]
    finally:
        kill_helper(p)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a process as another user")
def test_holder_owned_by_another_user(home):
    port = free_port()
    other = other_user_listener(port)
    try:
        (h,) = port_holders(port, "0.0.0.0")
        assert (h.pid, h.user, h.same_user) == (other.pid, "nobody", False)
    finally:
        kill_helper(other)


def test_status_fields_running_and_after_sigkill(home, managers):
    port = free_port()
    m = ServerManager("usm_hello:app", "127.0.0.1", port, "st")
    managers.append(m)
    before = m.status()
    assert (before.state, before.pid, before.uptime) == ("stopped", None, None)
    m.start(redirect_output=True)
    st = m.status()
    assert st.name == "st" and st.host == "127.0.0.1" and st.port == port
    assert st.state == "running"
    assert st.pid == get(port)["pid"]
    assert st.uptime is not None and 0 <= st.uptime < 60
    assert st.started_at is not None
    assert abs(st.started_at + st.uptime - time.time()) < 5
    assert st.memory_rss is not None and st.memory_rss > 10 * 1024 * 1024
    assert st.cpu_percent is not None and st.cpu_percent >= 0
    assert st.stdout_log and st.stdout_log.endswith("logs/st_server.log")
    assert st.stderr_log and st.stderr_log.endswith("logs/st_server_error.log")
    os.kill(st.pid, signal.SIGKILL)
    assert wait_until(lambda: m.status().state == "dead", 5)
    dead = m.status()
    # The exit status is there once the kernel has finished tearing it down.
    assert wait_until(lambda: m.status().exit_code is not None, 5)
    assert m.status().exit_code == -signal.SIGKILL
    assert dead.state == "dead"
    m.stop()
    # It did not end by a stop: it stays dead, with the cause, until forgotten.
    after = m.status()
    assert (after.state, after.exit_code, after.end_reason) == ("dead", -9, "killed by SIGKILL")
    assert m.forget() and m.status().state == "stopped"


def test_diagnose_keys_and_never_raises(home):
    m = ServerManager("usm_hello:app", "127.0.0.1", free_port(), "dg")
    with open(m._pid_file, "w") as f:
        f.write("garbage")
    d = m.diagnose()
    for key in (
        "is_running",
        "port_available",
        "pid_file_exists",
        "stored_pid",
        "system_info",
        "port_holders",
    ):
        assert key in d
    # is_running is asked first (as in the guide's diagnose_server_issues) and
    # removes a record that names no process, so the file is gone by the time
    # pid_file_exists is asked.
    assert d["stored_pid"] is None and d["pid_file_exists"] is False
    assert d["is_running"] is False and d["port_available"] is True
    assert not os.path.exists(m._pid_file)
    assert set(d["system_info"]) == {"platform", "python_version", "memory_available"}
    assert d["system_info"]["memory_available"] > 0
