"""The warm preloader visible (issue 20): ``upsonic-server warm`` lists each
preloader with its PID, socket and servers forked, ``warm stop`` ends an idle
one (never one serving a live server without --force), and ``stop --all``
says that one stays. Real preloaders, real servers, each test with its own
preloader directory (the ``warm_dir`` fixture kills what is left)."""

from __future__ import annotations

import json
import os

import psutil
from _helpers import PRELOAD, cli, free_port, get, gone, wait_until
from upsonic_server_manager import ServerManager, _core


def warm(name: str) -> ServerManager:
    return ServerManager("usm_hello:app", "127.0.0.1", free_port(), name, warm=True)


def parent_preloader(pid: int) -> psutil.Process:
    parent = psutil.Process(pid).parent()
    assert parent is not None and PRELOAD in parent.cmdline(), "not forked warm"
    return parent


def test_warm_lists_the_preloader_with_its_pid_dir_and_counts(warm_dir, home, managers):
    a, b = warm("wa"), warm("wb")
    managers += [a, b]
    a.start()
    b.start()
    preloader = parent_preloader(a.status().pid)
    assert parent_preloader(b.status().pid).pid == preloader.pid
    b.stop()

    [p] = _core.preloaders()
    assert p.answering and p.pid == preloader.pid
    assert os.path.dirname(p.socket) == warm_dir
    assert (p.live, p.forked) == (1, 2)
    assert "uvicorn" in p.modules and p.idle_limit == 120.0

    r = cli("warm", home=home)
    assert r.returncode == 0, r.stderr
    row = next(line for line in r.stdout.splitlines() if line.startswith(str(preloader.pid)))
    assert "1 live / 2" in row and p.socket in row
    assert "uvicorn" in r.stdout

    r = cli("warm", "--json", home=home)
    assert r.returncode == 0, r.stderr
    [j] = json.loads(r.stdout)
    assert (j["pid"], j["socket"], j["live"], j["forked"]) == (preloader.pid, p.socket, 1, 2)


def test_warm_stop_leaves_a_busy_preloader_then_ends_an_idle_one(warm_dir, home, managers):
    m = warm("wstop")
    managers.append(m)
    m.start()
    preloader = parent_preloader(m.status().pid)

    # Serving a live server: left running, and said so.
    r = cli("warm", "stop", home=home)
    assert r.returncode == 1 and "left running" in r.stdout and "1 live server" in r.stdout
    assert preloader.is_running() and get(m.port)["hello"] == "world"

    m.stop()
    r = cli("warm", "stop", "--pid", str(preloader.pid), home=home)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "stopped" in r.stdout
    assert wait_until(lambda: gone(preloader))
    assert _core.preloaders() == []
    assert cli("warm", home=home).stdout.startswith("no warm-start preloader")

    # The next warm start starts a new preloader.
    m.start()
    assert parent_preloader(m.status().pid).pid != preloader.pid
    assert get(m.port)["hello"] == "world"


def test_warm_stop_force_ends_a_busy_preloader_and_its_server_runs_on(warm_dir, home, managers):
    m = warm("wforce")
    managers.append(m)
    m.start()
    server = m.status().pid
    preloader = parent_preloader(server)
    r = cli("warm", "stop", "--force", home=home)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "its 1 server runs on" in r.stdout
    assert wait_until(lambda: gone(preloader))
    assert m.status().state == "running" and get(m.port)["pid"] == server
    m.stop()
    assert wait_until(lambda: not psutil.pid_exists(server) or gone(psutil.Process(server)))


def test_stop_all_mentions_the_preloader_that_stays(warm_dir, home):
    port = free_port()
    args = ("--port", str(port), "--name", "wall", "--warm", "--redirect-output")
    r = cli("start", "usm_hello:app", *args, home=home)
    assert r.returncode == 0, r.stderr
    preloader = parent_preloader(get(port)["pid"])
    r = cli("stop", "--all", home=home)
    assert r.returncode == 0, r.stderr
    assert f"preloader stays (PID {preloader.pid}" in r.stdout
    assert "upsonic-server warm stop" in r.stdout


def test_a_preloader_that_does_not_answer_is_reported_not_waited_for(warm_dir, home):
    import socket

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(os.path.join(warm_dir, "hung.sock"))
    s.listen(1)  # never accepts: a hung preloader
    try:
        [p] = _core.preloaders(timeout=0.2)
        assert not p.answering and p.pid == os.getpid() and p.error
        r = cli("warm", "stop", home=home)
        assert r.returncode == 1 and "did not answer" in r.stdout
    finally:
        s.close()
