"""The operator's first hour: the CLI as a user drives it, with real servers.
A restart comes back as the server was started and never takes a working
server down; unknown names, holders, failures and deaths are said in the
operator's words; stopped servers stay listed until forgotten."""

from __future__ import annotations

import json
import os
import pty
import shutil
import signal
import subprocess
import time

import psutil
import pytest
from _helpers import APPS, CLI, cli, free_port, get, gone, listening_here, wait_until
from upsonic_server_manager import ServerManager, StartError


@pytest.fixture
def named(home):
    """Names of servers the test starts through the CLI; stopped afterwards."""
    names: list[str] = []
    yield names
    for n in names:
        m = ServerManager.from_record(n)
        if m is not None:
            m.stop()


def start(home, named, *args: str, cwd: str | None = None) -> subprocess.CompletedProcess:
    name = args[args.index("--name") + 1]
    named.append(name)
    return cli("start", *args, "--redirect-output", home=home, cwd=cwd)


def processes(name: str) -> int:
    st = ServerManager.from_record(name).status()  # type: ignore[union-attr]
    return 1 + len(st.workers)


def test_restart_comes_back_as_started_from_anywhere(home, named, tmp_path):
    app_dir = tmp_path / "project"
    app_dir.mkdir()
    shutil.copy(APPS / "usm_hello.py", app_dir / "opapp.py")
    port = free_port()
    r = start(
        home,
        named,
        "opapp:app",
        "--port",
        str(port),
        "--name",
        "wk",
        "--workers",
        "2",
        "--cwd",
        str(app_dir),
        "--env",
        "USM_MARKER=bar",
    )
    assert r.returncode == 0, r.stderr
    first = get(port)
    assert first["marker"] == "bar"
    assert wait_until(lambda: processes("wk") == 3, 30)
    # From another directory, as `cd / && upsonic-server restart wk`.
    r = cli("restart", "wk", home=home, cwd="/")
    assert r.returncode == 0, r.stderr
    again = get(port)
    assert again["marker"] == "bar"
    assert get(port, "/cwd")["cwd"] == str(app_dir)
    assert wait_until(lambda: processes("wk") == 3, 30), "workers were forgotten"
    status = json.loads(cli("status", "wk", "--json", home=home).stdout)[0]
    assert status["state"] == "running" and status["pid"] != first["pid"]


def test_restart_checks_before_it_stops_a_working_server(home, named, tmp_path):
    app_dir = tmp_path / "project"
    app_dir.mkdir()
    shutil.copy(APPS / "usm_hello.py", app_dir / "gone_soon.py")
    port = free_port()
    # Unwatched: the restart pre-check is the stop-then-start path's (a
    # supervised server is reloaded beside the old one, which keeps serving).
    r = start(
        home, named, "gone_soon:app", "--port", str(port), "--name", "gs", "--cwd", str(app_dir),
        "--no-supervise",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    pid = get(port)["pid"]
    (app_dir / "gone_soon.py").rename(app_dir / "renamed.py")
    r = cli("restart", "gs", home=home)
    assert r.returncode == 1
    assert "not restarted (left running)" in r.stderr
    assert "gone_soon" in r.stderr and str(app_dir) in r.stderr
    assert get(port)["pid"] == pid, "the working server was taken down"


def test_restart_of_a_stopped_server_says_who_holds_its_port(home, named):
    port = free_port()
    assert (
        start(home, named, "usm_hello:app", "--port", str(port), "--name", "held").returncode == 0
    )
    assert cli("stop", "held", home=home).returncode == 0
    with listening_here(port) as sock:
        r = cli("restart", "held", home=home)
        assert r.returncode == 1
        assert "not restarted (not started)" in r.stderr
        assert f"port {port} is held by pid {os.getpid()}" in r.stderr
        assert sock.fileno() >= 0


def test_unknown_names_answer_one_way(home, named):
    port = free_port()
    assert start(home, named, "usm_hello:app", "--port", str(port), "--name", "web").returncode == 0
    r = cli("status", "nope", home=home)
    assert r.returncode == 4
    assert "no server named 'nope' (known: web)" in r.stderr
    assert r.stdout == ""
    for cmd in (
        ["stop", "ghost"],
        ["diagnose", "ghost"],
        ["logs", "ghost"],
        ["restart", "ghost"],
        ["forget", "ghost"],
    ):
        r = cli(*cmd, home=home)
        assert r.returncode == 1, cmd
        assert "no server named 'ghost' (known: web)" in r.stderr, cmd


def test_messages_use_the_options_and_name_our_servers(home, named):
    port = free_port()
    assert (
        start(home, named, "usm_hello:app", "--port", str(port), "--name", "first").returncode == 0
    )
    r = start(
        home, named, "usm_hello:app", "--port", str(port), "--name", "second", "--workers", "2"
    )
    assert r.returncode == 1
    assert "--force" in r.stderr and "force=True" not in r.stderr
    # Every holder is named: the server, and its supervisor that holds the
    # socket (a bare "pid N (python3, ...)" before).
    holders = r.stderr.split("held by ", 1)[1].split("; ")
    assert len(holders) >= 2, r.stderr
    assert all("the managed server 'first'" in h for h in holders), r.stderr


def test_one_line_start_failures_are_said_once(home, named):
    port = free_port()
    r = start(home, named, "no_such_module_here:app", "--port", str(port), "--name", "bad")
    assert r.returncode == 1
    assert r.stderr.count("Could not import module") == 1, r.stderr
    assert "end of its stderr" not in r.stderr
    r = start(home, named, "usm_broken:app", "--port", str(port), "--name", "broken")
    assert r.returncode == 1
    assert "--- the last lines of its stderr ---" in r.stderr
    assert "ModuleNotFoundError" in r.stderr


def test_app_path_form_is_checked_before_anything_launches(home):
    m = ServerManager("myapi", "127.0.0.1", free_port(), "form")
    with pytest.raises(StartError, match="'module:attribute' form"):
        m.start()
    assert m.status().state == "stopped" and m._read_pid() is None


def test_logs_show_both_streams_marked_and_follow_every_server(home, named):
    ports = [free_port(), free_port()]
    for name, port in zip(("t1", "t2"), ports):
        assert (
            start(home, named, "usm_talker:app", "--port", str(port), "--name", name).returncode
            == 0
        )
    r = cli("logs", "t1", home=home)
    assert r.returncode == 0, r.stderr
    assert "out | talker says hello on stdout" in r.stdout
    assert "err | talker says hello on stderr" in r.stdout
    r = cli("logs", "t1", "--stderr", home=home)
    assert "stdout" not in r.stdout and "err | talker says hello on stderr" in r.stdout
    r = cli("logs", home=home)
    assert "t1 out | talker" in r.stdout and "t2 err | talker" in r.stdout
    follower = subprocess.Popen(
        [*CLI, "logs", "-f", "-n", "0"],
        env=dict(os.environ, HOME=str(home)),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.5)
        for name in ("t1", "t2"):
            log = ServerManager.from_record(name).log_files[1]  # type: ignore[union-attr]
            with open(log, "a") as f:
                f.write(f"late line of {name}\n")
        lines = [follower.stdout.readline() for _ in range(2)]  # type: ignore[union-attr]
        assert sorted(lines) == ["t1 err | late line of t1\n", "t2 err | late line of t2\n"]
    finally:
        follower.send_signal(signal.SIGINT)
        follower.wait(10)
        follower.stdout.close()  # type: ignore[union-attr]


def test_a_death_is_recorded_with_its_cause(home, managers):
    port = free_port()
    m = ServerManager("usm_hello:app", "127.0.0.1", port, "victim")
    managers.append(m)
    m.start()
    pid = m.status().pid
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: m.status().state == "dead")
    st = m.status()
    assert (st.exit_code, st.end_reason) == (-9, "killed by SIGKILL")
    m.stop()
    # Kept after the stop, with the time it was seen.
    st = ServerManager.from_record("victim").status()  # type: ignore[union-attr]
    assert (st.state, st.exit_code, st.end_reason) == ("dead", -9, "killed by SIGKILL")
    assert st.ended_at is not None and abs(st.ended_at - time.time()) < 60


def test_run_reports_the_cause(home, tmp_path):
    port = free_port()
    with open(tmp_path / "run.out", "w") as out:
        run = subprocess.Popen(
            [*CLI, "run", "usm_hello:app", "--port", str(port), "--name", "fg"],
            env=dict(os.environ, HOME=str(home)),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            assert wait_until(lambda: "serving on" in (tmp_path / "run.out").read_text(), 30)
            os.kill(get(port)["pid"], signal.SIGKILL)
            assert run.wait(30) == 137
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
    assert "fg: killed by SIGKILL" in (tmp_path / "run.out").read_text()


def test_stopped_servers_stay_listed_until_forgotten(home, named):
    port = free_port()
    assert (
        start(home, named, "usm_hello:app", "--port", str(port), "--name", "kept").returncode == 0
    )
    assert cli("stop", "kept", home=home).returncode == 0
    r = cli("status", home=home)
    header, row = r.stdout.splitlines()
    assert header.split()[-5:] == ["CPU(avg)", "PROCS", "RESTARTS", "HEALTH", "INFO"]
    assert row.split()[:4] == ["kept", "-", f"127.0.0.1:{port}", "stopped"]
    assert " stopped at " in row
    assert cli("status", "kept", home=home).returncode == 3
    # No lock file is left behind by the stop.
    assert not list(home.glob("*.lock"))
    r = cli("forget", "kept", home=home)
    assert r.returncode == 0 and "forgotten" in r.stdout
    assert cli("status", home=home).stdout.startswith("no servers recorded")
    assert not [p for p in home.iterdir() if p.name.startswith(".upsonic_kept")]


def test_status_counts_processes_plainly(home, named):
    ports = [free_port(), free_port()]
    assert (
        start(
            home, named, "usm_hello:app", "--port", str(ports[0]), "--name", "one",
            "--no-supervise",
        ).returncode
        == 0
    )  # fmt: skip
    r = start(
        home, named, "usm_hello:app", "--port", str(ports[1]), "--name", "three", "--workers", "2",
        "--no-supervise",
    )  # fmt: skip
    assert r.returncode == 0
    assert wait_until(lambda: processes("three") == 3, 30)
    rows = {
        line.split()[0]: line.split() for line in cli("status", home=home).stdout.splitlines()[1:]
    }
    # Running rows end with PROCS, RESTARTS and HEALTH (their INFO is empty;
    # unsupervised: no restarts, no health check).
    assert rows["one"][-3:] == ["1", "-", "-"] and rows["three"][-3:] == ["3", "-", "-"]


def test_ctrl_c_during_start_says_what_happened(home, tmp_path):
    port = free_port()
    env = dict(os.environ, HOME=str(home), USM_SLOW_SECONDS="60")
    pid, fd = pty.fork()
    if pid == 0:  # the child: the CLI on a real terminal
        os.execvpe(
            CLI[0],
            [
                *CLI,
                "start",
                "usm_slow:app",
                "--port",
                str(port),
                "--name",
                "slowpoke",
                "--redirect-output",
            ],
            env,
        )
    output = b""
    try:
        deadline = time.monotonic() + 30
        while b"starting slowpoke" not in output and time.monotonic() < deadline:
            output += os.read(fd, 1024)
        assert b"starting slowpoke" in output, output
        os.kill(pid, signal.SIGINT)
        while True:
            try:
                chunk = os.read(fd, 1024)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
    finally:
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 130
    assert b"interrupted; the half-started server was stopped" in output
    assert not alive_with(f"usm_slow:app --host 127.0.0.1 --port {port} ")


def test_help_names_every_option_with_its_default_and_usage_errors_show_usage(home):
    r = cli("start", "--help", home=home)
    assert r.returncode == 0
    for option in (
        "--host",
        "--port",
        "--name",
        "--workers",
        "--log-dir",
        "--cwd",
        "--env",
        "--start-timeout",
        "--stop-timeout",
        "--force",
        "--redirect-output",
    ):
        assert option in r.stdout
    assert "(default: 127.0.0.1)" in r.stdout and "(default: 30.0)" in r.stdout
    r = cli("start", "usm_hello:app", home=home)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert lines[0].startswith("usage: upsonic-server start")
    assert lines[-1].startswith("upsonic-server: error:") and "--port" in lines[-1]


def test_name_defaults_to_the_module(home, named):
    port = free_port()
    named.append("usm_hello")
    r = cli("start", "usm_hello:app", "--port", str(port), "--redirect-output", home=home)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usm_hello: pid")


def test_systemd_unit_keeps_records_where_its_user_can_write(home):
    r = cli(
        "systemd-unit",
        "usm_hello:app",
        "--port",
        "7541",
        "--name",
        "api",
        "--user",
        "nobody",
        home=home,
    )
    assert r.returncode == 0, r.stderr
    assert "RuntimeDirectory=upsonic-api" in r.stdout
    assert "LogsDirectory=upsonic-api" in r.stdout
    assert "--pid-dir /run/upsonic-api run" in r.stdout
    assert "--log-dir /var/log/upsonic-api" in r.stdout


def test_start_timeout_gives_a_never_started_server_a_short_grace(home, monkeypatch):
    monkeypatch.setenv("USM_SLOW_SECONDS", "60")
    monkeypatch.setenv("USM_IGNORE_TERM", "1")
    port = free_port()
    m = ServerManager("usm_slow:app", "127.0.0.1", port, "late", start_timeout=1, stop_timeout=30)
    with pytest.raises(StartError, match=r"it was stopped, with 1.0 s to exit. If it needs"):
        m.start()
    assert m.status().end_reason == "failed to start"
    assert not m.is_running() and not alive_with(f"usm_slow:app --host 127.0.0.1 --port {port} ")


def alive_with(text: str) -> list[psutil.Process]:
    """Live processes whose command line holds ``text`` (a port makes it
    ours: other suites on this machine run the same apps)."""
    return [
        p
        for p in psutil.process_iter(["cmdline"])
        if text in " ".join(p.info["cmdline"] or []) + " " and not gone(p)
    ]
