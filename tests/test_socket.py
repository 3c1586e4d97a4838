"""The listening socket held on the manager's side: port 0 without races,
reload() and restart() that refuse no connection, TCP_NODELAY, every host
family and workers > 1; real servers, real requests, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest
from _helpers import APPS, CLI, has_ipv6, wait_until
from upsonic_server_manager import ServerGroup, ServerManager, ServerManagerError, StartError

APP_V1 = """
import os
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": f"VERSION {os.getpid()}".encode()})
"""


def pid_of(m: ServerManager) -> int:
    return int(httpx.get(m.url, timeout=10).text.split()[-1])


class Hammer:
    """Requests on new connections, one after another, from a thread, until
    stopped; every outcome is kept."""

    def __init__(self, url: str) -> None:
        self.url, self.outcomes, self.pids = url, [], set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                r = httpx.get(self.url, timeout=10)  # a new connection each time
                self.outcomes.append(r.status_code)
                self.pids.add(r.text.split()[-1])
            except httpx.HTTPError as e:
                self.outcomes.append(type(e).__name__)

    def __enter__(self) -> Hammer:
        self._thread.start()
        while not self.outcomes:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    d = tmp_path / "app"
    d.mkdir()
    (d / "versioned.py").write_text(APP_V1)
    return d


def test_port_zero_serves_on_the_reported_port(home, managers):
    m = ServerManager("usm_hello:app", "127.0.0.1", 0, "zero")
    managers.append(m)
    assert m.hold_socket is True
    m.start()
    assert m.port > 0 and m.url == f"http://127.0.0.1:{m.port}"
    assert httpx.get(m.url).json()["hello"] == "world"
    assert m.status().port == m.port
    # Another manager for port 0 under this name knows it is running.
    assert ServerManager("usm_hello:app", "127.0.0.1", 0, "zero").is_running()
    m.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(m.url)


def test_eight_port_zero_servers_started_together_never_collide(home, managers):
    ms = [
        ServerManager("usm_hello:app", "127.0.0.1", 0, f"z{i}", env={"USM_MARKER": f"server-{i}"})
        for i in range(8)
    ]
    managers.extend(ms)
    ServerGroup(ms).start()
    assert len({m.port for m in ms}) == 8
    for i, m in enumerate(ms):
        assert httpx.get(m.url).json()["marker"] == f"server-{i}"
    ServerGroup(ms).stop()


def test_reload_refuses_nothing_and_changes_the_serving_pid(home, managers, app_dir):
    m = ServerManager("versioned:app", "127.0.0.1", 0, "rl", cwd=app_dir)
    managers.append(m)
    m.start()
    first = pid_of(m)
    with Hammer(m.url) as h:
        for _ in range(3):
            m.reload()
        time.sleep(0.2)
    assert set(h.outcomes) == {200}, {x: h.outcomes.count(x) for x in set(h.outcomes)}
    assert pid_of(m) != first and len(h.pids) >= 2
    assert m.status().pid == pid_of(m)
    assert not wait_until(lambda: False, 0.01)


def test_a_failing_reload_keeps_the_old_generation_serving(home, managers, app_dir):
    m = ServerManager("versioned:app", "127.0.0.1", 0, "rf", cwd=app_dir)
    managers.append(m)
    m.start(redirect_output=True)
    first = pid_of(m)
    (app_dir / "versioned.py").write_text("import no_such_module_for_reload\n")
    with pytest.raises(StartError, match="no_such_module_for_reload"):
        m.reload()
    assert pid_of(m) == first and m.status().pid == first
    # Fixed again: the edit is served by the next generation.
    (app_dir / "versioned.py").write_text(APP_V1.replace("VERSION", "EDITED"))
    m.reload()
    assert httpx.get(m.url).text.startswith("EDITED")


def test_restart_with_a_held_socket_refuses_no_connection(home, managers, app_dir):
    m = ServerManager("versioned:app", "127.0.0.1", 0, "rs", cwd=app_dir)
    managers.append(m)
    m.start()
    port = m.port
    with Hammer(m.url) as h:
        m.restart()
        time.sleep(0.2)
    assert set(h.outcomes) == {200}, {x: h.outcomes.count(x) for x in set(h.outcomes)}
    assert m.port == port


def test_restart_without_a_held_socket_is_what_it_always_was(home, managers, app_dir):
    # The contrast, so that the test above can fail: connections are refused.
    from _helpers import free_port

    m = ServerManager("versioned:app", "127.0.0.1", free_port(), "plain", cwd=app_dir)
    managers.append(m)
    m.start()
    assert m.hold_socket is False
    # Exactly the original's command line (read from /proc: ps cuts it).
    cmd = " ".join(psutil.Process(m.status().pid).cmdline())
    assert " -m uvicorn versioned:app --host 127.0.0.1 --port " in cmd
    with Hammer(m.url) as h:
        m.restart()
        time.sleep(0.2)
    assert "ConnectError" in h.outcomes
    with pytest.raises(ServerManagerError, match="hold_socket=True"):
        m.reload()


def test_tcp_nodelay_is_set_on_accepted_connections(home, managers):
    m = ServerManager("usm_nodelay:app", "127.0.0.1", 0, "nd")
    managers.append(m)
    m.start()
    with httpx.Client() as c:
        flags = c.get(m.url).text.split(" ", 1)[1]
    assert flags.strip("[]") and set(flags.strip("[]").split(", ")) == {"1"}, flags


@pytest.mark.parametrize("host", ["0.0.0.0", "::1"])
def test_hosts(home, managers, host):
    if ":" in host and not has_ipv6():
        pytest.skip("no IPv6 on this machine")
    m = ServerManager("usm_hello:app", host, 0, "h")
    managers.append(m)
    m.start()
    target = "127.0.0.1" if host == "0.0.0.0" else "[::1]"
    assert httpx.get(f"http://{target}:{m.port}/").json()["hello"] == "world"
    if ":" in host:
        assert m.url == f"http://[::1]:{m.port}"
    m.reload()
    assert httpx.get(f"http://{target}:{m.port}/").json()["hello"] == "world"


def test_workers_reload_as_a_whole_generation(home, managers, app_dir):
    m = ServerManager("versioned:app", "127.0.0.1", 0, "wk", cwd=app_dir, workers=2)
    managers.append(m)
    m.start()
    before = set(m.status().workers)
    assert len(before) >= 2
    with Hammer(m.url) as h:
        m.reload()
        time.sleep(0.2)
    assert set(h.outcomes) == {200}
    after = set(m.status().workers)
    assert len(after) >= 2 and not before & after


def test_port_zero_needs_a_held_socket(home):
    with pytest.raises(ValueError, match="port 0 needs hold_socket=True"):
        ServerManager("usm_hello:app", "127.0.0.1", 0, "x", hold_socket=False)


def test_cli_reload_from_another_process_and_run_reloads_on_sighup(home, tmp_path, app_dir):
    env = dict(os.environ, HOME=str(home), PYTHONPATH=f"{app_dir}:{APPS}")
    r = subprocess.run(
        [*CLI, "start", "versioned:app", "--port", "0", "--name", "cl", "--redirect-output"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    m = ServerManager.from_record("cl")
    assert m is not None and f"http://127.0.0.1:{m.port}" in r.stdout
    try:
        first = pid_of(m)
        r = subprocess.run(
            [*CLI, "reload", "cl"], env=env, capture_output=True, text=True, timeout=60
        )
        assert r.returncode == 0, r.stderr
        assert pid_of(m) != first
    finally:
        m.stop()
    # `run`: SIGHUP reloads, and run's own PID (systemd's MAINPID) stays.
    with open(tmp_path / "run.out", "w") as out:
        run = subprocess.Popen(
            [*CLI, "run", "versioned:app", "--port", "0", "--name", "fg"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            assert wait_until(lambda: "serving on" in (tmp_path / "run.out").read_text(), 30)
            fg = ServerManager.from_record("fg")
            assert fg is not None
            first = pid_of(fg)
            run.send_signal(signal.SIGHUP)
            assert wait_until(lambda: "reloaded" in (tmp_path / "run.out").read_text(), 30)
            assert pid_of(fg) != first and run.poll() is None
            run.send_signal(signal.SIGTERM)
            assert run.wait(30) == 0
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
