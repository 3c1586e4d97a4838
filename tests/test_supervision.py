"""Supervision (restart policies, health checks, memory limit): real
servers, real signals, real HTTP. A supervised server outlives the program
that started it, comes back after crashes with growing waits, gives up
after too many failed runs in a row, and never comes back after a stop."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from _helpers import cli, free_port, get, gone, port_in_use, python_script, wait_until
from upsonic_server_manager import PortInUseError, ServerManager, port_holders

APP = "usm_supervised:app"


@pytest.fixture
def supervised(home: Path, managers: list):
    """``supervised(name, **kw)``: a manager of the supervised app with a
    restart policy (on-failure, short waits), stopped after the test."""

    def make(name: str, **kw: Any) -> ServerManager:
        kw.setdefault("restart", "on-failure")
        kw.setdefault("restart_delay", 0.05)
        kw.setdefault("stable_after", 60.0)
        m = ServerManager(APP, "127.0.0.1", kw.pop("port", free_port()), name, **kw)
        managers.append(m)
        return m

    return make


def serving_pid(m: ServerManager) -> int:
    return get(m.port)["pid"]


def new_pid_serves(m: ServerManager, old: int, timeout: float = 15) -> int:
    """Waits until a process other than ``old`` serves; its PID."""
    seen: list[int] = []

    def probe() -> bool:
        try:
            pid = serving_pid(m)
        except (OSError, httpx.HTTPError):
            return False
        seen.append(pid)
        return pid != old

    assert wait_until(probe, timeout), f"no new server after {old} died (saw {seen[-3:]})"
    return seen[-1]


def supervisor(m: ServerManager) -> psutil.Process:
    pid = m.status().supervisor_pid
    assert pid is not None, m.status()
    return psutil.Process(pid)


def test_restart_after_sigkill_with_growing_waits(supervised, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="upsonic_server_manager")
    m = supervised("crashes", restart_delay=0.1)
    m.start(redirect_output=True)
    sup = supervisor(m)
    assert sup.ppid() == os.getpid() and sup.pid != m.status().pid
    pid = serving_pid(m)
    for n in (1, 2, 3):
        os.kill(pid, signal.SIGKILL)
        pid = new_pid_serves(m, pid)
        st = m.status()
        assert (st.state, st.restarts, st.last_exit, st.pid) == ("running", n, -9, pid)
        assert st.supervisor_pid == sup.pid
    # The waits doubled (with jitter) and the reasons were logged, here and
    # in the supervisor log.
    log = Path("logs/crashes_supervisor.log").read_text()
    waits = [float(w) for w in re.findall(r"next wait ([0-9.]+) s", log)]
    assert len(waits) == 3 and waits[0] < waits[1] < waits[2], log
    assert "killed by SIGKILL: restarting (restart 1" in log
    assert any("restarting (restart 3" in r.getMessage() for r in caplog.records)
    m.stop()
    assert not m.is_running() and not port_in_use(m.port)
    assert wait_until(lambda: not sup.is_running() or sup.status() == psutil.STATUS_ZOMBIE)
    assert m.status().state == "stopped"


def test_restart_limit_reached_leaves_nothing_and_says_failed(supervised, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="upsonic_server_manager")
    m = supervised("gives-up", restart_limit=3, env={"USM_CRASH_AFTER": "0.3"})
    m.start()
    sup = supervisor(m)
    assert wait_until(lambda: m.status().state == "failed", 30), m.status()
    st = m.status()
    assert (st.restarts, st.last_exit, st.supervisor_pid, st.pid) == (2, 1, None, None)
    assert "gave up" in st.end_reason
    assert wait_until(lambda: not sup.is_running() or sup.status() == psutil.STATUS_ZOMBIE)
    assert not port_in_use(m.port)
    assert not m.is_running()
    assert wait_until(lambda: any("giving up" in r.getMessage() for r in caplog.records))
    # A new start begins afresh.
    m.start()
    assert m.status().state == "running" and m.status().restarts == 0


def test_supervisor_messages_arrive_unchanged(supervised, caplog, tmp_path: Path) -> None:
    # A restart that fails at start-up tells the caller's logger why, in the
    # server's own words: a tab, quotes, a backslash and non-ASCII text come
    # through the events pipe as the server raised them.
    caplog.set_level(logging.WARNING, logger="upsonic_server_manager")
    words = 'boom\tafter a tab, "quoted" \\ back, né 日本'
    fail = tmp_path / "fail"
    m = supervised("talks", env={"USM_FAIL_FILE": str(fail)})
    m.start(redirect_output=True)
    fail.write_text(words, encoding="utf-8")
    os.kill(serving_pid(m), signal.SIGKILL)

    def said() -> list[str]:
        return [r.getMessage() for r in caplog.records if "failed to start" in r.getMessage()]

    assert wait_until(said, 30), [r.getMessage() for r in caplog.records]
    assert f"RuntimeError: {words}" in said()[0], said()
    fail.unlink()
    assert wait_until(lambda: m.status().state == "running", 30), m.status()


def test_stable_runs_reset_the_failure_count(supervised) -> None:
    # Each run crashes after 0.6 s but counts as stable after 0.3 s: the
    # limit of 2 failures in a row is never reached.
    m = supervised("steady", restart_limit=2, stable_after=0.3, env={"USM_CRASH_AFTER": "0.6"})
    m.start()
    assert wait_until(lambda: m.status().restarts >= 4, 30), m.status()
    assert m.status().state != "failed"


def test_clean_exit_is_restarted_only_under_always(supervised) -> None:
    on_failure = supervised("clean-1")
    always = supervised("clean-2", restart="always")
    for m in (on_failure, always):
        m.start()
    for m in (on_failure, always):
        os.kill(serving_pid(m), signal.SIGTERM)  # uvicorn exits 0
    old = always.status().pid
    new_pid_serves(always, old)
    # uvicorn re-raises SIGTERM after its graceful shutdown: a clean end, as
    # systemd counts it, which "on-failure" leaves alone.
    assert wait_until(lambda: on_failure.status().supervisor_pid is None), on_failure.status()
    st = on_failure.status()
    assert (st.state, st.end_reason, st.restarts, st.pid) == ("dead", "killed by SIGTERM", 0, None)
    assert not port_in_use(on_failure.port)


def test_failing_health_check_replaces_the_server(supervised, tmp_path: Path) -> None:
    sick = tmp_path / "sick"
    m = supervised(
        "unhealthy",
        env={"USM_SICK_FILE": str(sick)},
        health_check="/healthz",
        health_interval=0.2,
        health_timeout=1.0,
        health_failures=2,
    )
    m.start()
    pid = serving_pid(m)
    assert wait_until(lambda: m.status().health == "ok"), m.status()
    sick.touch()
    assert wait_until(lambda: m.status().health == "failing"), m.status()
    assert wait_until(lambda: m.status().restarts >= 1), m.status()
    sick.unlink()
    new_pid_serves(m, pid)
    assert wait_until(lambda: m.status().health == "ok")
    assert wait_until(lambda: not psutil.pid_exists(pid), 15)


def test_a_check_that_answers_again_drops_the_replacement(supervised, tmp_path: Path) -> None:
    """One failed check of the two needed starts the next generation beside
    the server (held socket); the next check answers, so the new one is
    stopped and the server keeps serving, nothing counted."""
    once = tmp_path / "sick-once"
    m = supervised(
        "flicker",
        env={"USM_SICK_ONCE_FILE": str(once)},
        health_check="/healthz",
        health_interval=0.2,
        health_timeout=1.0,
        health_failures=2,
    )
    m.start()
    pid = serving_pid(m)
    assert wait_until(lambda: m.status().health == "ok"), m.status()
    once.touch()
    log = Path("logs/flicker_supervisor.log")
    said = "answers its health check again: not replaced"
    assert wait_until(lambda: log.exists() and said in log.read_text(), 60), (
        log.read_text() if log.exists() else "no supervisor log"
    )
    assert not once.exists()
    st = m.status()
    assert (st.pid, st.restarts, st.health) == (pid, 0, "ok"), st
    assert serving_pid(m) == pid
    # The new generation is gone: the supervisor's only child is the server.
    sup = psutil.Process(st.supervisor_pid)
    assert [c.pid for c in sup.children()] == [pid]


def test_hung_event_loop_is_replaced(supervised) -> None:
    m = supervised(
        "hung", health_check="/healthz", health_interval=0.2, health_timeout=0.3, health_failures=2
    )
    m.start()
    pid = serving_pid(m)
    with pytest.raises(OSError):
        _fire_and_forget(m.port, "/hang")
    # The new generation serves beside the hung one, which then goes.
    new_pid_serves(m, pid)
    assert wait_until(lambda: not psutil.pid_exists(pid), 15)
    assert m.status().restarts == 1


def _fire_and_forget(port: int, path: str) -> None:
    """Sends a request without waiting for the answer (which never comes)."""
    import socket

    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    s.settimeout(0.5)
    try:
        s.recv(1)
    finally:
        s.close()


def test_memory_over_the_limit_replaces_the_server(supervised) -> None:
    m = supervised("hog", max_memory="200MiB")
    m.start()
    pid = serving_pid(m)
    assert m.status().memory_rss < 200 * 1024 * 1024
    try:
        get(m.port, "/grow?mb=300")
    except (OSError, httpx.HTTPError):
        pass  # replaced before it could answer
    new_pid_serves(m, pid, timeout=5)
    st = m.status()
    assert st.restarts == 1 and st.last_exit in (-signal.SIGTERM, -signal.SIGKILL), st


def test_stop_from_another_process_is_never_a_crash(supervised) -> None:
    m = supervised("stopped-elsewhere")
    m.start()
    sup = supervisor(m)
    code = textwrap.dedent(
        """
        import sys
        from upsonic_server_manager import ServerManager
        # A plain manager (no restart policy) of the same server stops it too.
        app, port = "usm_supervised:app", int(sys.argv[1])
        ServerManager(app, "127.0.0.1", port, "stopped-elsewhere").stop()
        """
    )
    with python_script(code, str(m.port)) as p:
        assert p.wait(60) == 0
    assert wait_until(lambda: not sup.is_running() or sup.status() == psutil.STATUS_ZOMBIE)
    assert not port_in_use(m.port) and not m.is_running()
    assert m.status().state == "stopped"


def test_stop_from_the_cli_is_never_a_crash(supervised, home: Path) -> None:
    m = supervised("stopped-by-cli")
    m.start(redirect_output=True)
    sup = supervisor(m)
    r = cli("stop", "stopped-by-cli", home=home)
    assert r.returncode == 0, r.stderr
    assert wait_until(lambda: not sup.is_running() or sup.status() == psutil.STATUS_ZOMBIE)
    assert not port_in_use(m.port)
    assert m.status().state == "stopped"


def test_the_server_is_restarted_after_its_starter_exits(supervised) -> None:
    m = supervised("orphan-proof")
    code = textwrap.dedent(
        """
        import sys
        from upsonic_server_manager import ServerManager
        m = ServerManager("usm_supervised:app", "127.0.0.1", int(sys.argv[1]), "orphan-proof",
                          restart="on-failure", restart_delay=0.05)
        m.start(redirect_output=True)
        print(m.status().supervisor_pid, flush=True)
        """
    )
    with python_script(code, str(m.port), stdout=subprocess.PIPE) as p:
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0
    sup = psutil.Process(int(out.strip()))
    assert sup.ppid() == 1 or sup.ppid() != os.getpid()
    pid = serving_pid(m)
    os.kill(pid, signal.SIGKILL)
    new_pid_serves(m, pid)
    assert m.status().restarts == 1
    m.stop()
    assert wait_until(lambda: not sup.is_running() or sup.status() == psutil.STATUS_ZOMBIE)


def test_a_killed_supervisor_leaves_the_server_serving_and_start_reattaches(supervised) -> None:
    m = supervised("reattach")
    m.start()
    sup = supervisor(m)
    first = serving_pid(m)
    os.kill(first, signal.SIGKILL)
    new_pid_serves(m, first)
    assert m.status().restarts == 1
    pid = serving_pid(m)
    sup.kill()
    sup.wait(5)
    assert serving_pid(m) == pid
    st = m.status()
    assert (st.state, st.supervisor_pid, st.unsupervised) == ("running", None, True)
    assert st.restarts == 1, st  # what the killed supervisor counted
    # The next start with a restart policy attaches a new supervisor to the
    # running server instead of replacing it.
    again = supervised("reattach", port=m.port)
    again.start()
    st = again.status()
    assert st.pid == pid and st.supervisor_pid not in (None, sup.pid) and not st.unsupervised
    # The count goes on where the killed supervisor left it.
    assert st.restarts == 1, st
    os.kill(pid, signal.SIGKILL)
    new_pid_serves(m, pid)
    assert again.status().restarts == 2


def test_after_a_reattach_every_holder_is_found_and_force_stops_it_whole(supervised) -> None:
    """A supervisor attached to a running server took its socket from it
    (neither is the other's relative): the port's holders are all found and
    all named, and `force` stops the supervisor first, so the server is not
    brought back to hold the port against the new one (a trial finding)."""
    m = supervised("held", workers=2, restart="always")
    m.start()
    sup = supervisor(m)
    sup.kill()
    sup.wait(5)
    again = supervised("held", port=m.port, workers=2, restart="always")
    again.start()
    st = again.status()
    group = {st.pid, *st.workers}
    assert st.supervisor_pid not in (None, sup.pid), st
    holders = port_holders(m.port, "127.0.0.1")
    pids = {h.pid for h in holders}
    assert {st.supervisor_pid, *group} <= pids, (holders, st)
    assert all(h.server == "held" for h in holders), holders
    with pytest.raises(PortInUseError) as e:
        supervised("other", port=m.port).start()
    assert str(e.value).count("the managed server 'held'") == len(holders), e.value
    other = supervised("other", port=m.port)
    other.start(force=True)
    assert get(m.port)["pid"] == other.status().pid
    assert not again.is_running()
    assert all(gone(psutil.Process(p)) for p in group if psutil.pid_exists(p))


def test_workers_are_supervised_as_a_whole(supervised) -> None:
    m = supervised("pair", workers=2)
    m.start()
    leader = m.status().pid
    workers = set(m.status().workers)
    assert len(workers) >= 2
    os.kill(leader, signal.SIGKILL)  # the workers are orphaned
    assert wait_until(
        lambda: m.status().pid not in (None, leader) and len(m.status().workers) >= 2, 20
    )
    # Nothing of the old generation is left serving beside the new one.
    assert wait_until(
        lambda: all(not psutil.pid_exists(w) or gone(psutil.Process(w)) for w in workers), 10
    )
    assert wait_until(lambda: m.status().state == "running")
    assert m.status().restarts == 1


def test_the_default_policy_is_the_original_behaviour(home: Path, managers: list) -> None:
    m = ServerManager(APP, "127.0.0.1", free_port(), "plain")
    managers.append(m)
    m.start()
    st = m.status()
    server = psutil.Process(st.pid)
    assert server.ppid() == os.getpid()
    assert server.cmdline()[1:3] == ["-m", "uvicorn"]
    assert (st.restart, st.supervisor_pid, st.restarts, st.unsupervised) == ("no", None, 0, False)
    assert not (home / ".upsonic_plain_server.sup").exists()
    assert sorted(p.name for p in home.iterdir()) == [
        ".upsonic_plain_server.id",
        ".upsonic_plain_server.lock",
        ".upsonic_plain_server.pid",
    ]
    os.kill(st.pid, signal.SIGKILL)
    assert wait_until(lambda: m.status().state == "dead")
    assert not m.is_running()


def test_a_first_start_that_fails_raises_and_leaves_nothing(home: Path, managers: list) -> None:
    from upsonic_server_manager import StartError

    m = ServerManager("usm_flaky:app", "127.0.0.1", free_port(), "flaky", restart="always")
    managers.append(m)
    with pytest.raises(StartError) as e:
        m.start(redirect_output=True)
    assert e.value.exit_code == 3
    assert m.status().supervisor_pid is None
    assert not (home / ".upsonic_flaky_server.sup").exists()


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"restart": "sometimes"}, "restart"),
        ({"restart": "no", "health_check": "/h"}, "health_check"),
        ({"restart": "always", "health_check": "healthz"}, "health_check"),
        ({"restart": "always", "max_memory": "lots"}, "max_memory"),
        ({"restart": "always", "max_memory": 100}, "max_memory"),
        ({"restart": "always", "restart_limit": 0}, "restart_limit"),
        ({"restart": "always", "health_check": "/h", "health_failures": 0}, "health_failures"),
        ({"restart": "always", "restart_delay": 5, "restart_max_delay": 1}, "restart_max_delay"),
    ],
)
def test_bad_supervision_settings_name_the_argument(kw: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        ServerManager(APP, "127.0.0.1", 8000, "bad", **kw)


def test_memory_sizes() -> None:
    from upsonic_server_manager import _core

    assert _core.memory_size("512MiB") == 512 * 1024 * 1024
    assert _core.memory_size("1GiB") == 1024**3
    assert _core.memory_size(1000) == 1000
    assert _core.memory_size("300MB") == 300_000_000
    with pytest.raises(TypeError):
        _core.memory_size(1.5)


if sys.platform != "linux":  # pragma: no cover
    pytestmark = pytest.mark.skip("supervision is implemented for Linux")


def test_restart_and_reload_go_through_the_supervisor(supervised) -> None:
    m = supervised("reloaded", port=0)
    m.start()
    sup = supervisor(m)
    port, pid = m.port, serving_pid(m)
    assert port != 0
    for call in (m.restart, m.reload):
        call()
        st = m.status()
        assert st.supervisor_pid == sup.pid and st.pid != pid and m.port == port
        pid = serving_pid(m)
        assert pid == st.pid
    # Asked for, not failures: they do not count as restarts.
    assert m.status().restarts == 0


def test_cli_start_status_and_stop_of_a_supervised_server(home: Path) -> None:
    port = free_port()
    args = ["start", APP, "--port", str(port), "--name", "cli-sup", "--restart", "always"]
    args += ["--health-check", "/healthz", "--health-interval", "0.2", "--max-memory", "1GiB"]
    try:
        r = cli(*args, "--redirect-output", home=home)
        assert r.returncode == 0, r.stderr
        pid = get(port)["pid"]
        os.kill(pid, signal.SIGKILL)
        m = ServerManager.from_record("cli-sup")
        assert m is not None and m.restart_policy == "always"
        new_pid_serves(m, pid)
        assert wait_until(lambda: m.status().health == "ok")
        header, row = cli("status", "cli-sup", home=home).stdout.splitlines()
        assert header.split()[-3:] == ["RESTARTS", "HEALTH", "INFO"]
        assert re.search(r"\s1\s+ok\s+supervised by \d+ \(restart=always\)$", row), row
        data = json.loads(cli("status", "--json", home=home).stdout)[0]
        assert (data["restart"], data["restarts"], data["last_exit"]) == ("always", 1, -9)
        assert data["unsupervised"] is False
        # `restart` asks the supervisor: same supervisor, same port, new run.
        sup = data["supervisor_pid"]
        r = cli("restart", "cli-sup", home=home)
        assert r.returncode == 0 and "restarted by its supervisor" in r.stdout, r.stderr
        assert m.status().supervisor_pid == sup and get(port)["pid"] == m.status().pid
        # restart --all: the port its supervisor holds does not count as taken.
        r = cli("restart", "--all", home=home)
        assert r.returncode == 0, r.stderr
        assert m.status().supervisor_pid not in (None, sup) and get(port)["pid"] == m.status().pid
        bad = cli(
            "start", APP, "--port", str(port), "--name", "x", "--health-check", "/h", home=home
        )
        assert bad.returncode == 2 and "--health-check" in bad.stderr and "--restart" in bad.stderr
    finally:
        assert cli("stop", "cli-sup", home=home).returncode == 0
    assert not port_in_use(port)


def test_cli_run_supervises_in_the_foreground(home: Path, tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "run.out"
    argv = [sys.executable, "-m", "upsonic_server_manager", "run", APP, "--port", str(port)]
    argv += ["--name", "fg", "--restart", "on-failure", "--restart-delay", "0.05"]
    with open(out, "w") as f, _running(argv, f) as p:
        assert wait_until(lambda: "serving on" in out.read_text(), 30), out.read_text()
        m = ServerManager.from_record("fg")
        assert m is not None and m.status().supervisor_pid == p.pid
        pid = serving_pid(m)
        os.kill(pid, signal.SIGKILL)
        new_pid_serves(m, pid)
        assert "restarting (restart 1" in out.read_text()
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0
    assert "fg: stopped" in out.read_text()
    assert not port_in_use(port) and m.status().state == "stopped"


def _running(argv: list[str], out):
    from _helpers import running

    return running(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
