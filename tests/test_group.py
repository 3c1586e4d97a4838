"""ServerGroup, stop_on_exit and install_signal_handlers."""

from __future__ import annotations

import signal
import subprocess
import textwrap

import pytest
from _helpers import free_port, get, port_in_use, python_script
from upsonic_server_manager import (
    ServerGroup,
    ServerManager,
    ServerManagerError,
)


def test_group_starts_in_parallel_and_stops_in_reverse(home, managers):
    ms = [ServerManager("usm_hello:app", "127.0.0.1", free_port(), f"g{i}") for i in range(3)]
    managers.extend(ms)
    group = ServerGroup(ms)
    assert group.managers == ms
    with group:
        assert group.is_running()
        st = group.status()
        assert list(st) == ["g0", "g1", "g2"]
        assert all(s.state == "running" for s in st.values())
        for m in ms:
            assert get(m.port)["hello"] == "world"
    assert not any(m.is_running() for m in ms)
    assert not group.is_running()


def test_group_rolls_back_when_one_fails(home, managers):
    good = [ServerManager("usm_hello:app", "127.0.0.1", free_port(), f"ok{i}") for i in range(2)]
    bad = ServerManager("usm_broken:app", "127.0.0.1", free_port(), "bad")
    managers.extend(good + [bad])
    with pytest.raises(ServerManagerError, match="bad: .*No module named") as ei:
        ServerGroup([*good, bad]).start(redirect_output=True)
    assert isinstance(ei.value, RuntimeError)
    assert not any(m.is_running() for m in good)
    assert not any(m._is_port_in_use() for m in good)


def test_group_rejects_duplicate_names(home):
    a = ServerManager("usm_hello:app", "127.0.0.1", free_port(), "same")
    b = ServerManager("usm_hello:app", "127.0.0.1", free_port(), "same")
    with pytest.raises(ValueError, match="same"):
        ServerGroup([a, b])


HOOKS = textwrap.dedent(
    """
    import signal, sys
    from upsonic_server_manager import (
        ServerGroup, ServerManager, install_signal_handlers, stop_on_exit)
    mode, p1, p2 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    a = ServerManager("usm_hello:app", "127.0.0.1", p1, "hook_a")
    g = ServerGroup([ServerManager("usm_hello:app", "127.0.0.1", p2, "hook_b")])
    if mode == "atexit":
        stop_on_exit(a, g)
    else:
        install_signal_handlers(a, g, exit_code=7)
    a.start(); g.start()
    print("up", flush=True)
    if mode == "atexit":
        sys.stdin.readline()
    else:
        signal.pause()
    """
)


@pytest.mark.parametrize("mode", ["atexit", "signal"])
def test_exit_hooks_stop_servers(home, mode):
    p1, p2 = free_port(), free_port()
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE}
    with python_script(HOOKS, mode, str(p1), str(p2), **pipes) as p:
        assert p.stdout.readline().strip() == "up"
        get(p1)
        get(p2)
        if mode == "atexit":
            p.stdin.close()
            assert p.wait(30) == 0
        else:
            p.send_signal(signal.SIGTERM)
            assert p.wait(30) == 7
        for port in (p1, p2):
            assert not port_in_use(port)
