"""The values that cross the Rust/Python boundary: typed port holders and
statuses, errors that keep their errno, configuration read from the core,
and the one uvicorn command-line parser, each against real processes."""

from __future__ import annotations

import errno
import os
import pickle
import subprocess
import sys

import pytest
from _helpers import free_port, get, kill_helper, listen_helper, wait_until
from upsonic_server_manager import (
    PortHolder,
    ServerManager,
    ServerManagerError,
    ServerStatus,
    log_files,
    port_holders,
)


def test_port_holder_reads_like_the_tuple_it_replaces(home):
    port = free_port()
    holder = listen_helper("127.0.0.1", port)
    try:
        (h,) = port_holders(port, "127.0.0.1")
        assert isinstance(h, PortHolder)
        pid, name, user, address, same_user, uid = h
        assert (pid, address, same_user, uid) == (
            holder.pid,
            f"127.0.0.1:{port}",
            True,
            os.geteuid(),
        )
        assert h[0] == h.pid and h[-1] == h.uid and h[1:3] == (h.name, h.user)
        assert len(h) == 6 and h == tuple(h) and hash(h) == hash(tuple(h))
        assert h._fields == ("pid", "name", "user", "address", "same_user", "uid")
        assert h._asdict() == dict(zip(h._fields, h))
        assert pickle.loads(pickle.dumps(h)) == h
        assert repr(h).startswith(f"PortHolder(pid={holder.pid}, name=")
        with pytest.raises(AttributeError):
            h.pid = 1  # type: ignore[misc]
    finally:
        kill_helper(holder)


def test_status_is_a_frozen_typed_value(home, managers):
    port = free_port()
    m = ServerManager("usm_hello:app", "127.0.0.1", port, "typed")
    managers.append(m)
    m.start()
    st = m.status()
    assert isinstance(st, ServerStatus)
    assert (st.name, st.host, st.port, st.state, st.pid) == (
        "typed",
        "127.0.0.1",
        port,
        "running",
        m._read_pid(),
    )
    assert set(st.as_dict()) >= {"name", "pid", "state", "memory_rss", "workers", "stderr_log"}
    with pytest.raises(AttributeError):
        st.state = "stopped"  # type: ignore[misc]
    m.stop()
    assert m.status().state == "stopped"


def test_an_os_error_keeps_its_errno(home):
    # The log directory's parent is a file: creating it fails with ENOTDIR.
    blocker = home / "not-a-dir"
    blocker.write_text("")
    m = ServerManager("usm_hello:app", "127.0.0.1", free_port(), "errno", log_dir=blocker / "logs")
    with pytest.raises(ServerManagerError) as ei:
        m.start(redirect_output=True)
    assert ei.value.errno == errno.ENOTDIR
    assert isinstance(ei.value.__cause__, OSError)
    assert ei.value.__cause__.errno == errno.ENOTDIR
    assert "cannot create the log directory" in str(ei.value)
    assert not m.is_running()


def test_configuration_is_read_from_the_core(home, monkeypatch):
    monkeypatch.setenv("UPSONIC_WORKERS_AMOUNT", "3")
    m = ServerManager("usm_hello:app", "127.0.0.1", 8123, "cfg", log_dir="here")
    assert (m.app_path, m.host, m.port, m.name, m.workers) == (
        "usm_hello:app",
        "127.0.0.1",
        8123,
        "cfg",
        3,
    )
    # A shadow copy would ignore this silently; the core's value is read-only.
    with pytest.raises(AttributeError):
        m.workers = 4  # type: ignore[misc]
    assert m.log_files == log_files("cfg", os.path.abspath("here"))
    assert m.redirect_output is False
    monkeypatch.setenv("UPSONIC_WORKERS_AMOUNT", "many")
    # Read at start(), not here: upsonic 0.45.0 never reads it, and its
    # importers build managers at import time (tests/test_dropin.py).
    bad = ServerManager("usm_hello:app", "127.0.0.1", 8123, "cfg")
    with pytest.raises(ValueError, match="UPSONIC_WORKERS_AMOUNT must be a whole number"):
        bad.start()


@pytest.mark.parametrize(
    ("kwargs", "exc", "word"),
    [
        ({"env": {"A=B": "x"}}, ValueError, "env has an invalid entry"),
        ({"env": {"A": "x\0y"}}, ValueError, "env has an invalid entry"),
        ({"workers": 0}, ValueError, "workers must be between 1 and 4096"),
        ({"workers": True}, TypeError, "workers must be an int or None, got bool"),
        ({"stop_timeout": float("inf")}, ValueError, "stop_timeout must be a positive"),
        ({"start_timeout": "5"}, TypeError, "start_timeout must be a number of seconds"),
        ({"uvicorn_args": "--reload"}, TypeError, "not one string"),
        ({"uvicorn_args": ["--x", 1]}, TypeError, "each uvicorn_args item must be a string"),
        ({"log_max_bytes": 10}, ValueError, "log_max_bytes 10 is under 1 KiB"),
        ({"log_max_bytes": "lots"}, ValueError, "log_max_bytes .* is not a size"),
        ({"log_max_bytes": 1.5}, TypeError, "log_max_bytes must be an int of bytes"),
        ({"log_backup_count": -1}, ValueError, "log_backup_count -1 must be 0 or more"),
        ({"supervise": "yes"}, TypeError, "supervise must be True or False"),
        ({"log_timestamps": 1}, TypeError, "log_timestamps must be True or False"),
    ],
)
def test_one_validation_names_the_argument(home, kwargs, exc, word):
    with pytest.raises(exc, match=word):
        ServerManager("usm_hello:app", "127.0.0.1", 8123, "v", **kwargs)


def test_from_record_reads_an_originals_command_line_with_options_first(home, managers):
    # upsonic's original writes a bare PID file; its command line may put
    # options before the app. A parser that takes the first bare word as the
    # app reads `2` here.
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--workers", "2", "usm_hello:app", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert wait_until(lambda: _serves(port), 30)
        (home / ".upsonic_orig_server.pid").write_text(str(proc.pid))
        m = ServerManager.from_record("orig")
        assert m is not None
        managers.append(m)
        assert (m.app_path, m.port) == ("usm_hello:app", port)
        assert m.is_running()
        m.stop()
        assert proc.wait(10) is not None
        assert not (home / ".upsonic_orig_server.pid").exists()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()


def _serves(port: int) -> bool:
    try:
        get(port)
        return True
    except Exception:  # noqa: BLE001 - not serving yet, whatever the client says
        return False


def test_stop_with_a_missing_pid_dir_is_quiet(home):
    m = ServerManager("usm_hello:app", "127.0.0.1", 8123, "nodir", pid_dir=home / "missing")
    m.stop()  # nothing runs, nothing recorded: no error
    assert not m.is_running() and not (home / "missing").exists()
