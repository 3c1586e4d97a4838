"""Warm starts (issue 13): servers forked from a preloader, each test with a
private preloader directory whose preloaders are killed afterwards.

Every test that expects a warm server checks that it really was forked
(its parent is a preloader), so a silent cold fallback fails loudly."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import psutil
import pytest
from _helpers import (
    PRELOAD,
    can_bind,
    cli,
    free_port,
    get,
    gone,
    preloaders,
    python_script,
    server_procs,
    wait_until,
)
from upsonic_server_manager import PortInUseError, ServerManager, StartError, _core

pytest_plugins = ["pytester"]


def forked_by_preloader(pid: int, d: str) -> psutil.Process:
    """The preloader that forked server `pid`; fails if it was spawned cold."""
    parent = psutil.Process(pid).parent()
    assert parent is not None
    assert PRELOAD in parent.cmdline(), f"server {pid} was not forked: parent {parent.cmdline()}"
    assert any(a.startswith(d) for a in parent.cmdline())
    return parent


def warm(name: str, app: str = "usm_hello:app", port: int | None = None, **kw) -> ServerManager:
    port = free_port() if port is None else port
    return ServerManager(app, "127.0.0.1", port, name, warm=True, **kw)


def test_an_edit_is_served_by_the_next_warm_start(warm_dir, managers, tmp_path):
    src = tmp_path / "work" / "usm_edited.py"
    body = (
        "from fastapi import FastAPI\napp = FastAPI()\n"
        "@app.get('/')\ndef r():\n    return {{'v': {}}}\n"
    )
    src.write_text(body.format(1))
    m = warm("edited", "usm_edited:app")
    managers.append(m)
    m.start()
    forked_by_preloader(m.status().pid, warm_dir)
    assert get(m.port)["v"] == 1
    m.stop()
    src.write_text(body.format(2))
    m.start()
    forked_by_preloader(m.status().pid, warm_dir)
    assert get(m.port)["v"] == 2


def test_env_cwd_and_output_are_the_managers(warm_dir, managers, tmp_path, monkeypatch):
    first = warm("first")
    managers.append(first)
    first.start()
    preloader = forked_by_preloader(first.status().pid, warm_dir)
    first.stop()
    # Set after the preloader started: only the manager has it.
    monkeypatch.setenv("USM_MARKER", "set-later")
    where = tmp_path / "elsewhere"
    where.mkdir()
    m = warm("envcwd", cwd=where, log_dir=tmp_path / "logs", uvicorn_args=["--log-level", "info"])
    managers.append(m)
    m.start(redirect_output=True)
    assert forked_by_preloader(m.status().pid, warm_dir).pid == preloader.pid
    assert get(m.port)["marker"] == "set-later"
    assert get(m.port, "/cwd")["cwd"] == str(where)
    m2 = warm("envkw", env={"USM_MARKER": "from-env"})
    managers.append(m2)
    m2.start()
    assert get(m2.port)["marker"] == "from-env"
    m.stop()
    # uvicorn's own log lines went to the manager's log file, not the preloader's.
    assert "Uvicorn running" in Path(m.log_files[1]).read_text()


def test_stop_status_and_port_holders_of_a_warm_server_with_workers(warm_dir, managers):
    m = warm("w2", workers=2)
    managers.append(m)
    m.start()
    st = m.status()
    forked_by_preloader(st.pid, warm_dir)
    assert st.state == "running" and len(st.workers) == 2
    # The kernel-visible marker and command line are the server's own.
    leader = psutil.Process(st.pid)
    assert "usm_hello:app" in leader.cmdline() and PRELOAD not in leader.cmdline()
    assert server_procs("usm_hello:app")
    # Another manager of the same name recognises it through the record.
    other = ServerManager("usm_hello:app", "127.0.0.1", m.port, "w2")
    assert other.is_running()
    # A manager of another name is refused the port, with the holders named.
    with pytest.raises(PortInUseError) as e:
        ServerManager("usm_hello:app", "127.0.0.1", m.port, "probe").start()
    assert e.value.holders and {h.server for h in e.value.holders} == {"w2"}
    procs = [leader, *leader.children(recursive=True)]
    other.stop()
    assert all(wait_until(lambda p=p: gone(p)) for p in procs)
    assert can_bind("127.0.0.1", m.port)
    assert not m.is_running()


def test_workers_of_a_killed_warm_leader_are_swept(warm_dir, managers):
    m = warm("sweep", workers=2)
    managers.append(m)
    m.start()
    leader = psutil.Process(m.status().pid)
    forked_by_preloader(leader.pid, warm_dir)
    workers = leader.children()
    assert len(workers) >= 2
    leader.kill()
    assert wait_until(lambda: gone(leader))
    # The workers carry the launch marker; stop finds them by it.
    m.stop()
    assert all(wait_until(lambda p=p: gone(p)) for p in workers)


def test_exit_code_and_stderr_of_a_failed_warm_start(warm_dir, managers, tmp_path):
    ok = warm("ok")
    managers.append(ok)
    ok.start()
    forked_by_preloader(ok.status().pid, warm_dir)
    m = warm("broken", "usm_broken:app", log_dir=tmp_path / "logs")
    managers.append(m)
    with pytest.raises(StartError) as e:
        m.start(redirect_output=True)
    assert e.value.exit_code == 1
    assert "usm_this_module_does_not_exist" in (e.value.stderr_tail or "")
    # A warm server's exit status reaches the manager through the preloader.
    pid = ok.status().pid
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: ok._core.child_poll() is not None)
    assert ok._core.child_poll() == -signal.SIGKILL


def test_held_socket_and_reload_stay_warm(warm_dir, managers):
    m = warm("held", port=0)
    managers.append(m)
    m.start()
    first = m.status().pid
    forked_by_preloader(first, warm_dir)
    assert get(m.port)["pid"] == first
    m.reload()
    second = m.status().pid
    assert second != first
    forked_by_preloader(second, warm_dir)
    assert get(m.port)["pid"] == second


THREADED = """
import threading, time
threading.Thread(target=time.sleep, args=(3600,), daemon=True, name="usm-import-thread").start()
"""


def test_a_preloaded_module_that_starts_a_thread_disables_preloading(
    warm_dir, managers, tmp_path, caplog
):
    (tmp_path / "work" / "usm_threaded.py").write_text(THREADED)
    caplog.set_level(logging.INFO, logger="upsonic_server_manager")
    m = warm("threaded", preload=["usm_threaded"])
    managers.append(m)
    m.start()
    pid = m.status().pid
    # Cold: our own child, and the reason logged.
    assert psutil.Process(pid).ppid() == os.getpid()
    assert get(m.port)["pid"] == pid
    reasons = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("usm_threaded" in r and "thread" in r for r in reasons), reasons
    assert not preloaders(warm_dir)


def test_fallback_to_cold_when_the_directory_is_not_private(home, managers, caplog, monkeypatch):
    d = tempfile.mkdtemp(prefix="usmw")
    os.chmod(d, 0o755)
    monkeypatch.setenv("UPSONIC_WARM_DIR", d)
    caplog.set_level(logging.INFO, logger="upsonic_server_manager")
    try:
        m = warm("public")
        managers.append(m)
        m.start()
        assert psutil.Process(m.status().pid).ppid() == os.getpid()
        assert get(m.port)["hello"] == "world"
        assert any("not a private directory" in r.getMessage() for r in caplog.records)
    finally:
        os.rmdir(d)


def test_a_killed_preloader_leaves_its_server_manageable_and_is_replaced(
    warm_dir, managers, caplog
):
    caplog.set_level(logging.INFO, logger="upsonic_server_manager")
    m = warm("orphan")
    managers.append(m)
    m.start()
    preloader = forked_by_preloader(m.status().pid, warm_dir)
    preloader.kill()
    preloader.wait(10)
    # The server runs on, still ours: status and stop work.
    assert m.status().state == "running"
    assert get(m.port)["hello"] == "world"
    server = psutil.Process(m.status().pid)
    m.stop()
    assert wait_until(lambda: gone(server))
    caplog.clear()
    m.start()
    assert forked_by_preloader(m.status().pid, warm_dir).pid != preloader.pid
    assert any("starting a preloader" in r.getMessage() for r in caplog.records)


def test_the_preloader_exits_when_idle_after_its_servers(warm_dir, managers, monkeypatch):
    monkeypatch.setenv("UPSONIC_WARM_IDLE", "0.5")
    m = warm("idle")
    managers.append(m)
    m.start()
    preloader = forked_by_preloader(m.status().pid, warm_dir)
    # Idle, it stops taking requests (its socket goes) but stays the parent
    # of its running server, to report its exit...
    assert wait_until(lambda: not any(f.endswith(".sock") for f in os.listdir(warm_dir)))
    assert preloader.is_running()
    m.stop()
    # ...and exits once that server has.
    assert wait_until(lambda: gone(preloader))


CTRL_C = textwrap.dedent(
    """
    import sys
    from upsonic_server_manager import ServerManager
    warm = ServerManager("usm_hello:app", "127.0.0.1", int(sys.argv[2]), "pre", warm=True)
    warm.start()
    warm.stop()
    s = ServerManager("usm_slow:app", "127.0.0.1", int(sys.argv[1]), "slow", warm=True)
    print("starting", flush=True)
    try:
        s.start()
    except KeyboardInterrupt:
        print("interrupted", s._pid_file, flush=True)
        sys.exit(42)
    """
)


def test_ctrl_c_during_a_warm_start(warm_dir):
    env = dict(os.environ, USM_SLOW_SECONDS="60")
    with python_script(
        CTRL_C, str(free_port()), str(free_port()), env=env, stdout=subprocess.PIPE
    ) as p:
        assert p.stdout.readline().strip() == "starting"
        assert wait_until(lambda: bool(server_procs("usm_slow:app")))
        server = server_procs("usm_slow:app")[0]
        forked_by_preloader(server.pid, warm_dir)
        p.send_signal(signal.SIGINT)
        line = p.stdout.readline().split()
        assert line[0] == "interrupted"
        assert p.wait(10) == 42
        assert not os.path.exists(line[1])
        assert wait_until(lambda: gone(server))


def test_warm_is_recorded_for_restart_and_from_record(warm_dir, managers):
    m = warm("rec", preload=["json"])
    managers.append(m)
    m.start()
    again = ServerManager.from_record("rec")
    assert again is not None and again.warm and again._core.preload == ["json"]
    again.restart()
    forked_by_preloader(again.status().pid, warm_dir)
    assert get(again.port)["hello"] == "world"


def test_preload_must_be_module_names(home):
    with pytest.raises(ValueError, match="preload"):
        ServerManager(
            "usm_hello:app", "127.0.0.1", free_port(), "x", warm=True, preload=["no-dash"]
        )
    with pytest.raises(TypeError):
        ServerManager("usm_hello:app", "127.0.0.1", free_port(), "x", warm=True, preload="json")


if sys.platform != "linux":  # pragma: no cover
    pytestmark = pytest.mark.skip("warm starts need Linux")


def test_cli_start_warm_then_stop(warm_dir, home):
    port = free_port()
    args = ("--port", str(port), "--name", "cliwarm", "--warm", "--redirect-output")
    r = cli("start", "usm_hello:app", *args, home=home)
    assert r.returncode == 0, r.stderr
    pid = get(port)["pid"]
    forked_by_preloader(pid, warm_dir)
    r = cli("status", "cliwarm", home=home)
    assert r.returncode == 0 and str(pid) in r.stdout
    assert cli("stop", "cliwarm", home=home).returncode == 0
    assert wait_until(lambda: can_bind("127.0.0.1", port))


def test_pytest_fixture_factory_takes_warm(warm_dir, pytester):
    pytester.makepyfile(
        """
        import os, psutil

        def test_warm(uvicorn_server):
            srv = uvicorn_server("usm_hello:app", warm=True)
            with srv.client() as client:
                pid = client.get("/").json()["pid"]
            parent = psutil.Process(pid).parent()
            assert "upsonic_server_manager._preload" in parent.cmdline()
        """
    )
    result = pytester.runpytest_subprocess(
        str(pytester.path), "-p", "no:cacheprovider", timeout=300
    )
    result.assert_outcomes(passed=1)


def test_installing_a_package_replaces_the_preloader(warm_dir, managers, tmp_path, monkeypatch):
    site = tmp_path / "site-packages"
    site.mkdir()
    monkeypatch.setenv("PYTHONPATH", f"{os.environ['PYTHONPATH']}{os.pathsep}{site}")
    m = warm("stale")
    managers.append(m)
    m.start()
    first = forked_by_preloader(m.status().pid, warm_dir)
    m.stop()
    # A package appears where packages are installed: the next start gets a
    # preloader that can import it (the old one retires, reaping its own).
    (site / "usm_new_package.py").write_text("X = 1\n")
    m.start()
    second = forked_by_preloader(m.status().pid, warm_dir)
    assert second.pid != first.pid
    assert wait_until(lambda: gone(first))


CTRL_C_PRELOADER = textwrap.dedent(
    """
    import sys
    from upsonic_server_manager import ServerManager
    s = ServerManager("usm_hello:app", "127.0.0.1", int(sys.argv[1]), "slowpre", warm=True,
                      preload=["usm_slow"])
    print("starting", flush=True)
    try:
        s.start()
    except KeyboardInterrupt:
        print("interrupted", s._pid_file, flush=True)
        sys.exit(42)
    """
)


def test_ctrl_c_while_the_preloader_starts(warm_dir):
    # The preloader's import of usm_slow takes a minute: Ctrl-C must not wait for it.
    env = dict(os.environ, USM_SLOW_SECONDS="60")
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    with python_script(CTRL_C_PRELOADER, str(free_port()), env=env, **pipes) as p:
        assert p.stdout.readline().strip() == "starting"
        assert wait_until(lambda: bool(preloaders(warm_dir)))
        p.send_signal(signal.SIGINT)
        line = p.stdout.readline().split()
        assert line[0] == "interrupted"
        assert p.wait(10) == 42
        assert not os.path.exists(line[1])
        assert not server_procs("usm_hello:app")
        # Interrupted while waiting for the preloader, not after giving up on
        # it (a cold fallback logs a warning, which goes to stderr here).
        assert "starting cold" not in p.stderr.read()


def test_a_server_the_manager_did_not_pin_never_runs(warm_dir, managers, home):
    # A preloader to talk to, started the usual way.
    m = warm("first")
    managers.append(m)
    m.start()
    forked_by_preloader(m.status().pid, warm_dir)
    (sock,) = [os.path.join(warm_dir, f) for f in os.listdir(warm_dir) if f.endswith(".sock")]
    # A manager that asks for a server, then goes away before pinning it
    # (as one that timed out and started cold would).
    port = free_port()
    line = _core.warm_encode_ask(
        _core.WARM_FORK,
        cwd=os.getcwd().encode(),
        fd_names=["stdout", "stderr"],
        python=sys.executable.encode(),
        argv=["-m", "uvicorn", "usm_hello:app", "--port", str(port)],
        env=list(os.environb.items()),
    )
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
        c.connect(sock)
        socket.send_fds(c, [line], [1, 2])
        kind, pid = _core.warm_decode_reply(c.makefile("rb").readline())
        assert kind == "pid"
        server = psutil.Process(pid)
    assert wait_until(lambda: gone(server))
    assert can_bind("127.0.0.1", port)
    # The preloader still serves the next manager.
    m.restart()
    forked_by_preloader(m.status().pid, warm_dir)


def test_a_warm_server_is_supervised_like_a_cold_one(warm_dir, managers):
    """The supervisor launches through the same warm path: each run is
    forked by the preloader, and its exit status reaches the supervisor."""
    m = warm("warm-sup", restart="on-failure", restart_delay=0.05)
    managers.append(m)
    m.start()
    st = m.status()
    assert st.supervisor_pid is not None
    forked_by_preloader(st.pid, warm_dir)
    os.kill(st.pid, signal.SIGKILL)
    assert wait_until(
        lambda: m.status().pid not in (None, st.pid) and m.status().state == "running"
    )
    after = m.status()
    assert (after.restarts, after.last_exit, after.supervisor_pid) == (1, -9, st.supervisor_pid)
    forked_by_preloader(after.pid, warm_dir)
    assert get(m.port)["pid"] == after.pid
    m.stop()
    assert m.status().state == "stopped"


def test_warm_must_be_a_bool(home):
    with pytest.raises(TypeError, match="warm must be True or False, got str"):
        ServerManager("usm_hello:app", "127.0.0.1", 8000, "w", warm="yes")
