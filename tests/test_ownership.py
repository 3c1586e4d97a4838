"""Ownership and safety: whose process is this, and what may be signalled.
PID records and their identity, symlinks, reused PIDs, stale records, and the
processes that are never signalled (another user's, the caller itself)."""

from __future__ import annotations

import os
import subprocess
import sys

import psutil
import pytest
from _helpers import (
    free_port,
    get,
    kill_helper,
    listening_here,
    other_user_listener,
    spawn_helper,
    wait_until,
)
from upsonic_server_manager import (
    PortInUseError,
    ServerManager,
    ServerManagerError,
)

# ---- the PID record ------------------------------------------------------------------------


def test_pid_record_is_atomic_private_and_has_identity(serve):
    s = serve("rec")
    st = os.stat(s._pid_file)
    assert st.st_mode & 0o777 == 0o600
    with open(s._pid_file) as f:
        assert f.read() == str(s._process.pid)
    idfile = s._pid_file[: -len(".pid")] + ".id"
    with open(idfile) as f:
        text = f.read()
    with open(f"/proc/{s._process.pid}/stat") as f:
        ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    assert f"start_ticks={ticks}\n" in text
    assert f"pid={s._process.pid}\n" in text


def test_symlink_planted_at_pid_path_is_replaced_not_followed(home, managers, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("do not touch")
    port = free_port()
    s = ServerManager("usm_hello:app", "127.0.0.1", port, "sym")
    managers.append(s)
    os.symlink(victim, s._pid_file)
    assert s._read_pid() is None
    s.start()
    assert victim.read_text() == "do not touch"
    assert not os.path.islink(s._pid_file)
    assert s._read_pid() == get(port)["pid"]


# ---- is this record ours? ------------------------------------------------------------------

SLEEPER = "import time; time.sleep(600)"


def test_reused_pid_of_unrelated_python_process_is_never_ours(serve):
    s = serve("reuse")
    port = s.port
    s.stop()
    stranger = spawn_helper(SLEEPER)
    try:
        # Simulate PID reuse: our old record now names the stranger.
        idfile = s._pid_file[: -len(".pid")] + ".id"
        with open(s._pid_file, "w") as f:
            f.write(str(stranger.pid))
        with open(idfile, "w") as f:
            f.write(f"format=1\npid={stranger.pid}\nstart_ticks=1\n")
        other = ServerManager("usm_hello:app", "127.0.0.1", port, "reuse")
        assert other.is_running() is False
        other.stop()
        assert stranger.is_running() and stranger.status() != psutil.STATUS_ZOMBIE
        # A bare PID file (the original's format) naming a non-uvicorn process
        # is not accepted either.
        with open(s._pid_file, "w") as f:
            f.write(str(stranger.pid))
        assert other.is_running() is False
        other.stop()
        assert stranger.is_running()
        assert not os.path.exists(s._pid_file)
    finally:
        kill_helper(stranger)


def test_is_running_removes_a_stale_record(home):
    s = ServerManager("usm_hello:app", "127.0.0.1", free_port(), "stale2")
    gone = psutil.Popen(["true"])
    gone.wait()
    with open(s._pid_file, "w") as f:
        f.write(str(gone.pid))
    assert s.is_running() is False
    assert not os.path.exists(s._pid_file)


def test_zombie_is_not_running(home):
    # A child of ours that exited and was not reaped is a zombie: not running.
    zombie = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "usm_broken:app", "--port", "1"],
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_until(lambda: psutil.Process(zombie.pid).status() == psutil.STATUS_ZOMBIE)
        s = ServerManager("usm_broken:app", "127.0.0.1", 1, "zombie")
        with open(s._pid_file, "w") as f:
            f.write(str(zombie.pid))
        assert s.is_running() is False
    finally:
        zombie.wait()


def test_same_name_other_port_is_not_ours_and_not_overwritten(home, managers):
    p1, p2 = free_port(), free_port()
    first = ServerManager("usm_hello:app", "127.0.0.1", p1, "shared")
    managers.append(first)
    first.start()
    pid = first._read_pid()
    second = ServerManager("usm_hello:app", "127.0.0.1", p2, "shared")
    assert second.is_running() is False
    with pytest.raises(ServerManagerError, match=f"taken by a running server .pid {pid}"):
        second.start()
    second.stop()  # not its server: nothing happens
    assert get(p1)["pid"] == pid
    assert first._read_pid() == pid and first.is_running()


# ---- never signalled ------------------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a process as another user")
def test_other_users_program_is_never_signalled_even_as_root(home, managers):
    port = free_port()
    other = other_user_listener(port)
    try:
        s = ServerManager("usm_hello:app", "127.0.0.1", port, "otheruser")
        managers.append(s)
        for call in (
            lambda: s.start(force=True),
            s._kill_process_using_port,
            s._force_cleanup_port,
        ):
            with pytest.raises(PortInUseError) as ei:
                call()
            assert ei.value.holders[0].user == "nobody"
            assert ei.value.holders[0].same_user is False
            assert "nobody" in str(ei.value)
        assert other.is_running()
    finally:
        kill_helper(other)


def test_kill_helpers_never_signal_the_caller(home):
    port = free_port()
    with listening_here(port):
        s = ServerManager("usm_hello:app", "127.0.0.1", port, "self")
        assert s._is_port_in_use()
        with pytest.raises(PortInUseError) as ei:
            s._kill_process_using_port()
        assert ei.value.holders[0].pid == os.getpid()
        with pytest.raises(PortInUseError):
            s.start(force=True)
