"""PID files are interchangeable with upsonic 0.45.0's ServerManager.

Needs ``pip install --no-deps upsonic==0.45.0 psutil`` (``scripts/test.sh``
does it); without it these tests fail rather than skip, so that a run that
never met the original cannot pass as one that did. upsonic's package
``__init__`` imports its whole client stack, so the ``server_manager`` module
is loaded from its file directly.
"""

from __future__ import annotations

import importlib.util
import os
from contextlib import contextmanager

import pytest
from _helpers import free_port, get, gone, port_in_use, wait_until
from upsonic_server_manager import ServerManager


def _load_original():
    spec = importlib.util.find_spec("upsonic")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("upsonic==0.45.0 is not installed (pip install --no-deps upsonic==0.45.0)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "server_manager.py")
    mod_spec = importlib.util.spec_from_file_location("_upsonic_original_server_manager", path)
    assert mod_spec and mod_spec.loader
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module.ServerManager


@pytest.fixture
def Original():
    return _load_original()


@contextmanager
def started_by_original(Original, port: int, name: str):
    """A hello server started by upsonic's original, stopped by it at the end."""
    orig = Original("usm_hello:app", "127.0.0.1", port, name)
    orig.start()
    try:
        yield orig
    finally:
        orig.stop()


def test_we_read_and_stop_a_server_started_by_the_original(home, Original):
    import psutil

    port = free_port()
    with started_by_original(Original, port, "compat") as orig:
        pid = orig._read_pid()
        assert get(port)["pid"] == pid
        ours = ServerManager("usm_hello:app", "127.0.0.1", port, "compat")
        assert ours._pid_file == orig._pid_file
        assert ours._read_pid() == pid
        assert ours.is_running()
        # A second start() is a no-op: the original's server is adopted, not killed.
        ours.start()
        assert get(port)["pid"] == pid
        proc = psutil.Process(pid)
        ours.stop()
        assert wait_until(lambda: gone(proc), 5)
        assert not os.path.exists(ours._pid_file)
        assert not ours._is_port_in_use()


def test_original_pid_file_for_a_different_app_is_not_ours(home, Original):
    port = free_port()
    with started_by_original(Original, port, "compat2") as orig:
        pid = orig._read_pid()
        other_app = ServerManager("usm_slow:app", "127.0.0.1", port, "compat2")
        assert other_app.is_running() is False
        other_app.stop()
        # Neither the server nor the original's record of it was touched.
        assert get(port)["pid"] == pid
        assert orig._read_pid() == pid
    assert not port_in_use(port)


def test_original_reads_and_stops_a_server_we_started(home, serve, Original):
    ours = serve("compat3")
    port = ours.port
    pid = ours._read_pid()
    orig = Original("usm_hello:app", "127.0.0.1", port, "compat3")
    assert orig._read_pid() == pid
    assert orig.is_running()
    orig.stop()
    assert not os.path.exists(orig._pid_file)
    assert wait_until(lambda: not ours.is_running(), 10)
    # Our identity file left beside it is recognised as stale and cleaned.
    ours.stop()
    # Nothing stays, as after the original's own stop: no PID, identity,
    # lock or last-run file (it ended cleanly, by the original's SIGTERM).
    assert os.listdir(home) == []
