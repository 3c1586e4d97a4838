"""Port conflicts: whether the port is in use, and what start(), force and the
port helpers do when another program (or another server) listens on it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest
from _helpers import (
    can_bind,
    free_port,
    get,
    gone,
    has_ipv6,
    kill_helper,
    listen_helper,
    listening_here,
    port_in_use,
    running,
    wait_until,
)
from upsonic_server_manager import (
    PortInUseError,
    ServerManager,
    StartError,
    port_holders,
)

# ---- is the port in use? -------------------------------------------------------------------

LISTENERS = [
    ("127.0.0.1", None),
    ("0.0.0.0", None),
    ("::1", 1),
    ("::", 1),  # v6-only wildcard
    ("::", 0),  # dual-stack wildcard
]
BINDS = ["127.0.0.1", "127.0.0.2", "0.0.0.0", "::1", "::"]


@pytest.mark.skipif(not has_ipv6(), reason="no IPv6 loopback here")
@pytest.mark.parametrize("listen_host, v6only", LISTENERS)
def test_is_port_in_use_answers_what_bind_would(home, listen_host, v6only):
    port = free_port("::" if ":" in listen_host else "0.0.0.0")
    holder = listen_helper(listen_host, port, v6only)
    try:
        for bind_host in BINDS:
            expected = not can_bind(bind_host, port)
            m = ServerManager("usm_hello:app", bind_host, port, "probe")
            assert m._is_port_in_use() == expected, (listen_host, v6only, bind_host)
            holders = port_holders(port, bind_host)
            assert [h.pid for h in holders] == ([holder.pid] if expected else [])
    finally:
        kill_helper(holder)


def test_a_holder_that_exits_no_longer_holds_the_port(home):
    # Was test_listen_helper_is_cleaned, which only started and killed the
    # helper. The library must see the holder, then see that it is gone: no
    # answer may outlive the process it was about.
    port = free_port()
    m = ServerManager("usm_hello:app", "127.0.0.1", port, "probe")
    h = listen_helper("127.0.0.1", port)
    try:
        assert m._is_port_in_use() is True
        assert [x.pid for x in m.port_holders()] == [h.pid]
    finally:
        kill_helper(h)
    assert m._is_port_in_use() is False
    assert m.port_holders() == []
    assert port_holders(port, "127.0.0.1") == []


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_kill_process_using_port_false_when_nothing_holds_it(home, host):
    assert ServerManager("dummy", host, free_port(), "temp")._kill_process_using_port() is False


# ---- start() against a holder ----------------------------------------------------------------

PERL_LISTEN = (
    "use IO::Socket::INET; my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', "
    'LocalPort => $ARGV[0], Listen => 5, ReuseAddr => 1) or die; print "ready\\n"; '
    "$| = 1; sleep 600;"
)


def test_non_python_program_on_the_port_is_named_and_untouched(home, managers):
    port = free_port()
    perl = psutil.Popen(
        ["perl", "-e", PERL_LISTEN.replace("print", "$|=1; print"), str(port), "usm-helper"],
        stdout=subprocess.PIPE,
    )
    try:
        assert perl.stdout.readline().strip() == b"ready"
        s = ServerManager("usm_hello:app", "127.0.0.1", port, "perl")
        managers.append(s)
        with pytest.raises(PortInUseError) as ei:
            s.start()
        e = ei.value
        assert e.port == port
        assert [h.pid for h in e.holders] == [perl.pid]
        assert e.holders[0].name == "perl"
        assert "perl" in str(e) and str(perl.pid) in str(e)
        assert perl.is_running()
        assert not s.is_running()
        assert not os.path.exists(s._pid_file)
        # force=True stops a holder owned by the same user.
        s.start(force=True)
        assert perl.wait(10) is not None
        assert get(port)["hello"] == "world"
    finally:
        kill_helper(perl)


def test_stale_instance_of_this_server_is_replaced(home, managers):
    port = free_port()
    uvicorn = [sys.executable, "-m", "uvicorn", "usm_hello:app", "--port", str(port)]
    with running(uvicorn, start_new_session=True, stderr=subprocess.DEVNULL) as old:
        assert wait_until(lambda: port_in_use(port))
        s = ServerManager("usm_hello:app", "127.0.0.1", port, "stale")
        managers.append(s)
        s.start()
        assert old.wait(10) is not None
        assert get(port)["pid"] == s._process.pid


def test_another_managers_server_on_the_port_is_not_replaced(serve, managers):
    first = serve("owner")
    port = first.port
    pid = first._read_pid()
    # Same app, same port, another name: that server belongs to `owner`.
    intruder = ServerManager("usm_hello:app", "127.0.0.1", port, "intruder")
    managers.append(intruder)
    with pytest.raises(PortInUseError) as ei:
        intruder.start()
    assert ei.value.holders[0].pid == pid
    assert get(port)["pid"] == pid and first.is_running()


def test_port_in_use_error_is_a_runtime_error(home):
    port = free_port()
    with listening_here(port):
        m = ServerManager("usm_hello:app", "127.0.0.1", port, "pe")
        with pytest.raises(RuntimeError) as ei:
            m.start()
        assert isinstance(ei.value, PortInUseError)


def test_force_stops_the_holder_not_the_script_that_started_it(home, managers):
    port = free_port()
    listener = (
        f"import socket,time;s=socket.socket();s.bind(('127.0.0.1',{port}));s.listen();"
        "print('ready',flush=True);time.sleep(600)"
    )
    # A script (its own process group, not a holder) that started a listener.
    script = psutil.Popen(
        ["sh", "-c", f'{sys.executable} -c "{listener}" usm-helper & sleep 600'],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert script.stdout.readline().strip() == b"ready"
        (holder,) = [c for c in script.children() if "usm-helper" in c.cmdline()]
        m = ServerManager("usm_hello:app", "127.0.0.1", port, "forcegrp")
        managers.append(m)
        m.start(force=True)
        assert wait_until(lambda: gone(holder), 5)
        assert script.is_running() and not gone(script)  # the script itself lives on
        assert get(port)["hello"] == "world"
    finally:
        os.killpg(script.pid, signal.SIGKILL)
        script.wait()
        script.stdout.close()


def test_port_taken_between_check_and_launch(home, managers, monkeypatch):
    monkeypatch.setenv("USM_SLOW_SECONDS", "1.5")
    port = free_port()
    m = ServerManager("usm_slow:app", "127.0.0.1", port, "race2")
    managers.append(m)
    thief = socket.socket()
    thief.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        import threading

        def steal() -> None:
            time.sleep(0.5)  # after the check, while the app imports
            thief.bind(("127.0.0.1", port))
            thief.listen()

        t = threading.Thread(target=steal)
        t.start()
        with pytest.raises(StartError) as ei:
            m.start(redirect_output=True)
        t.join()
        assert "address already in use" in str(ei.value).lower()
        assert not m.is_running()
    finally:
        thief.close()
