"""The ``upsonic-server`` CLI, driven through subprocesses as a user types it."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import socket
import subprocess
import time

import httpx
import psutil
import pytest
from _helpers import (
    CLI,
    cli,
    free_port,
    get,
    gone,
    kill_helper,
    listen_helper,
    port_in_use,
    running,
    wait_until,
)
from upsonic_server_manager import ServerManager


@pytest.fixture
def stop_named(home):
    names: list[str] = []
    yield names
    for n in names:
        m = ServerManager.from_record(n, home)
        if m is not None:
            m.stop()


@pytest.fixture
def cli_start(home, stop_named):
    """``cli_start(name, port, *more)``: ``upsonic-server start`` of the hello app
    with its output redirected (else the server shares, and keeps open, our
    pipe); the server is stopped after the test."""

    def start(name: str, port: int, *more: str) -> subprocess.CompletedProcess:
        stop_named.append(name)
        args = ["--port", str(port), "--name", name, "--redirect-output", *more]
        return cli("start", "usm_hello:app", *args, home=home)

    return start


def test_start_status_logs_restart_stop(home, cli_start):
    port = free_port()
    r = cli_start("web", port)
    assert r.returncode == 0, r.stderr
    assert "web: pid" in r.stdout and f"127.0.0.1:{port}" in r.stdout and "ms" in r.stdout
    pid = get(port)["pid"]

    r = cli("status", "web", home=home)
    assert r.returncode == 0
    header, row = r.stdout.splitlines()
    assert header.split() == [
        "NAME",
        "PID",
        "ADDRESS",
        "STATE",
        "UPTIME",
        "MEM",
        "CPU(avg)",
        "PROCS",
        "RESTARTS",
        "HEALTH",
        "INFO",
    ]
    assert row.split()[:4] == ["web", str(pid), f"127.0.0.1:{port}", "running"]

    r = cli("status", "--json", home=home)
    data = json.loads(r.stdout)
    assert [(d["name"], d["pid"], d["host"], d["port"], d["state"]) for d in data] == [
        ("web", pid, "127.0.0.1", port, "running")
    ]

    r = cli("logs", "web", "--stderr", "-n", "5", home=home)
    assert r.returncode == 0

    r = cli("restart", "web", home=home)
    assert r.returncode == 0, r.stderr
    new_pid = get(port)["pid"]
    assert new_pid != pid

    r = cli("stop", "web", home=home)
    assert r.returncode == 0 and "stopped" in r.stdout
    assert not psutil.pid_exists(new_pid) or gone(psutil.Process(new_pid))
    r = cli("status", "web", home=home)
    assert r.returncode == 3
    r = cli("stop", "web", home=home)
    assert r.returncode == 0 and "not running" in r.stdout


def test_status_of_unknown_name_exits_4(home):
    # LSB: 3 is "not running" (a known server), 4 "status unknown".
    r = cli("status", "nothing-here", home=home)
    assert r.returncode == 4
    assert "no server named 'nothing-here' (no servers recorded in" in r.stderr


def test_status_after_server_killed(home, cli_start):
    port = free_port()
    assert cli_start("k", port).returncode == 0
    pid = get(port)["pid"]
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: gone(psutil.Process(pid)) if psutil.pid_exists(pid) else True)
    r = cli("status", "k", "--json", home=home)
    assert r.returncode == 3
    assert json.loads(r.stdout)[0]["state"] == "dead"


@pytest.mark.parametrize(
    "args, word",
    [
        (["start", "usm_hello:app", "--port", "x", "--name", "a"], "--port"),
        (["start", "usm_hello:app", "--port", "70000", "--name", "a"], "port"),
        (["start", "usm_hello:app", "--port", "8000", "--name", "../a"], "name"),
        (["start", "usm_hello:app", "--name", "a"], "--port"),
        (["logs", "a", "-n", "many"], "-n"),
        (["frobnicate"], "frobnicate"),
    ],
)
def test_bad_arguments_exit_2_with_the_problem(home, args, word):
    r = cli(*args, home=home)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    # The problem on one line, after the usage when the parser found it.
    assert word in lines[-1] and lines[-1].startswith("upsonic-server: error:"), r.stderr
    if len(lines) > 1:
        assert lines[0].startswith("usage: upsonic-server")
        assert not any(line.startswith("upsonic-server") for line in lines[:-1])
    assert "Traceback" not in r.stderr


def test_core_error_exits_1_with_the_message(home):
    port = free_port()
    holder = listen_helper("127.0.0.1", port)
    try:
        r = cli("start", "usm_hello:app", "--port", str(port), "--name", "busy", home=home)
        assert r.returncode == 1
        assert f"Port {port}" in r.stderr and str(holder.pid) in r.stderr
        assert "Traceback" not in r.stderr
        assert holder.is_running()
    finally:
        kill_helper(holder)


def test_demo_end_to_end(home, tmp_path):
    r = cli("demo", home=home, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "started the bundled demo app (FastAPI)" in out
    assert "GET /hello -> 200" in out and "from upsonic-server-manager" in out
    assert "NAME" in out and "running" in out
    assert "is free" in out and "running=False" in out


def test_run_notifies_systemd_and_stops_on_sigterm(home, tmp_path):
    port = free_port()
    sock_path = str(tmp_path / "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(sock_path)
    env = dict(os.environ, HOME=str(home), NOTIFY_SOCKET=sock_path)
    run = [*CLI, "run", "usm_hello:app", "--port", str(port), "--name", "svc"]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    with notify, running(run, env=env, text=True, **pipes) as p:
        notify.settimeout(30)
        msg = notify.recv(4096).decode()
        assert "READY=1" in msg
        assert f"MAINPID={p.pid}" in msg
        server_pid = get(port)["pid"]
        assert psutil.Process(server_pid).ppid() == p.pid
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0
        assert "STOPPING=1" in notify.recv(4096).decode()
        assert not port_in_use(port)
        assert not psutil.pid_exists(server_pid)


def test_run_exits_with_the_server_exit_code(home):
    port = free_port()
    run = [*CLI, "run", "usm_hello:app", "--port", str(port), "--name", "dies"]
    with running(run, stdout=subprocess.PIPE, text=True) as p:
        assert "serving" in p.stdout.readline()
        os.kill(get(port)["pid"], signal.SIGKILL)
        assert p.wait(30) == 128 + signal.SIGKILL


def test_systemd_unit(home):
    r = cli(
        "systemd-unit",
        "usm_hello:app",
        "--host",
        "0.0.0.0",
        "--port",
        "7541",
        "--name",
        "main",
        "--user",
        "upsonic",
        "--env",
        "A=b c",
        home=home,
    )
    assert r.returncode == 0, r.stderr
    unit = r.stdout
    for needle in (
        "Type=notify",
        "Restart=on-failure",
        f"WorkingDirectory={os.getcwd()}",
        "User=upsonic",
        'Environment="A=b c"',
        " run usm_hello:app --name main --host 0.0.0.0 --port 7541",
        "systemctl daemon-reload",
        "[Install]",
    ):
        assert needle in unit, needle


def test_spinner_on_a_real_terminal(home, stop_named):
    port = free_port()
    stop_named.append("tty")
    env = dict(os.environ, HOME=str(home), USM_SLOW_SECONDS="1")
    master, slave = pty.openpty()
    p = subprocess.Popen(
        # The spinner turns only while the server's output goes to files: the
        # server would otherwise write to the same terminal.
        [*CLI, "start", "usm_slow:app", "--port", str(port), "--name", "tty", "--redirect-output"],
        env=env,
        stdin=slave,
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    out = b""
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            r, _, _ = select.select([master], [], [], 0.5)
            if r:
                try:
                    chunk = os.read(master, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
            elif p.poll() is not None:
                break
        assert p.wait(30) == 0
    finally:
        os.close(master)
    text = out.decode(errors="replace")
    assert "\r" in text and "starting tty" in text
    assert any(f"{c} starting tty" in text for c in "|/-\\")
    assert "tty: pid" in text


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a PID namespace (unshare)")
def test_run_as_pid_1_reaps_orphans(home):
    port = free_port()
    new_pid_ns = ["unshare", "--pid", "--fork", "--mount-proc"]
    run = [*new_pid_ns, *CLI, "run", "usm_orphaner:app", "--port", str(port), "--name", "init"]
    with running(run, stdout=subprocess.PIPE, text=True) as p:
        assert "serving" in p.stdout.readline()
        unshare = psutil.Process(p.pid)
        (init,) = unshare.children()  # our `run`, PID 1 inside the namespace
        assert "run" in init.cmdline()
        for _ in range(3):
            httpx.post(f"http://127.0.0.1:{port}/orphan", timeout=10).raise_for_status()
        time.sleep(2.5)  # the orphans exit after 0.3 s; `run` looks once a second

        def zombies() -> list[int]:
            return [c.pid for c in init.children() if c.status() == psutil.STATUS_ZOMBIE]

        assert zombies() == []
        # unshare does not forward signals: send SIGTERM to `run` itself.
        init.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0
        assert not port_in_use(port)


def test_demo_app_without_fastapi_is_plain_asgi(home, managers):
    # The fallback the demo uses when FastAPI is not installed.
    port = free_port()
    m = ServerManager("upsonic_server_manager.demo_app:asgi_app", "127.0.0.1", port, "asgi")
    managers.append(m)
    m.start()
    assert get(port, "/x") == {
        "hello": "from upsonic-server-manager",
        "path": "/x",
        "pid": m._read_pid(),
    }
    m.stop()


def test_logs_follow_prints_new_lines(cli_start, tmp_path):
    port = free_port()
    logs = tmp_path / "logs"
    r = cli_start("tail", port, "--log-dir", str(logs))
    assert r.returncode == 0, r.stderr
    follow = [*CLI, "logs", "tail", "-f", "-n", "0"]
    with running(follow, stdout=subprocess.PIPE, text=True) as p:
        # `-n 0` starts at the end of the file whenever the follower is up
        # (a busy machine takes a while): append numbered lines until it
        # prints one, then it must print the next ones in order.
        import select

        seen, n, deadline = "", 0, time.monotonic() + 60
        with open(logs / "tail_server.log", "a") as f:
            while not seen and time.monotonic() < deadline:
                n += 1
                f.write(f"appended line {n}\n")
                f.flush()
                if select.select([p.stdout], [], [], 0.3)[0]:
                    seen = p.stdout.readline().strip()
            assert seen.startswith("out | appended line "), seen
            first = int(seen.rsplit(" ", 1)[1])
            f.write(f"appended line {n + 1}\n")
            f.flush()
        for k in range(first + 1, n + 2):
            assert p.stdout.readline().strip() == f"out | appended line {k}"
        p.send_signal(signal.SIGINT)
        assert p.wait(10) == 0


def test_systemd_unit_takes_every_start_option_and_uvicorn_args(home):
    r = cli(
        "systemd-unit", "usm_hello:app", "--port", "7541", "--restart", "always",
        "--health-check", "/healthz", "--hold-socket", "--warm", "--max-memory", "512MiB",
        "--", "--log-level", "info", home=home,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    exec_start = next(x for x in r.stdout.splitlines() if x.startswith("ExecStart="))
    for option in ("--restart always", "--health-check /healthz", "--hold-socket", "--warm"):
        assert option in exec_start, (option, exec_start)
    assert exec_start.endswith("-- --log-level info"), exec_start
    assert "ExecReload=/bin/kill -HUP $MAINPID" in r.stdout


def test_only_starting_commands_take_uvicorn_args(home):
    r = cli("status", "--", "--x", home=home)
    assert r.returncode == 2 and "takes no uvicorn arguments" in r.stderr, r.stderr
