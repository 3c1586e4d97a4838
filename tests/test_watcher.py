"""`supervise=True`, the watcher (issue 20): the CLI's `start` supervises by
default, so a server that outlives the command has a parent that knows how
each run ended. `kill -9` the server: `status` says "killed by SIGKILL" and
when, the watcher exits (restart "no": nothing comes back), and the row
stays through `stop` until `forget`. `--no-supervise` and the library's
plain `ServerManager(app, host, port, name)` keep the original's behaviour:
no supervisor process, uvicorn's own command line. Real servers, real
signals."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Iterator

import psutil
import pytest
from _helpers import cli, free_port, get, gone, wait_until
from upsonic_server_manager import ServerManager, list_records


def _row(home: Path, name: str) -> dict:
    r = cli("status", "--json", home=home)
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    return rows[name]


def _sup_file(home: Path, name: str) -> Path:
    return home / f".upsonic_{name}_server.sup"


def _start(home: Path, name: str, app: str, *args: str) -> dict:
    """CLI start (supervised: the default); the status row, with the watcher."""
    r = cli("start", app, "--port", str(free_port()), "--name", name, *args, home=home)
    assert r.returncode == 0, r.stderr
    row = _row(home, name)
    # (psutil.Process(None) would be this very process.)
    assert row["supervisor_pid"] is not None, row
    return row


@pytest.fixture
def names(home: Path) -> Iterator[list[str]]:
    """Names to stop and forget whatever the test's outcome."""
    started: list[str] = []
    yield started
    for name in started:
        cli("stop", name, home=home)
        cli("forget", name, home=home)


def test_a_killed_server_of_a_cli_start_says_killed_by_sigkill_and_when(
    home: Path, names: list[str]
) -> None:
    names.append("wk")
    row = _start(home, "wk", "usm_hello:app")
    server = psutil.Process(row["pid"])
    watcher = psutil.Process(row["supervisor_pid"])
    assert server.ppid() == watcher.pid, "the watcher is the server's parent"
    assert row["restart"] == "no" and row["state"] == "running", row
    assert get(row["port"])["hello"] == "world"
    server.send_signal(signal.SIGKILL)
    # Restart "no": the watcher records the end and exits.
    assert wait_until(lambda: gone(watcher))
    assert not _sup_file(home, "wk").exists()
    row = _row(home, "wk")
    assert row["state"] == "dead" and row["exit_code"] == -9, row
    assert row["end_reason"] == "killed by SIGKILL", row
    assert row["ended_at"] is not None, row
    table = cli("status", "wk", home=home).stdout
    assert "killed by SIGKILL at " in table, table
    # stop has nothing to stop; the row stays until forget.
    assert cli("stop", "wk", home=home).returncode == 0
    assert _row(home, "wk")["end_reason"] == "killed by SIGKILL"
    assert "wk" in list_records(str(home), stopped=True)
    assert cli("forget", "wk", home=home).returncode == 0
    assert "wk" not in list_records(str(home), stopped=True)


@pytest.mark.parametrize("code", [0, 3])
def test_a_run_that_exits_on_its_own_keeps_its_exit_code(
    home: Path, names: list[str], code: int
) -> None:
    names.append("we")
    env = ["--env", "USM_CRASH_AFTER=1", "--env", f"USM_EXIT_CODE={code}"]
    row = _start(home, "we", "usm_supervised:app", *env)
    watcher = psutil.Process(row["supervisor_pid"])
    assert wait_until(lambda: gone(watcher), timeout=30)
    row = _row(home, "we")
    assert row["exit_code"] == code and row["last_exit"] == code, row
    assert row["end_reason"] == f"exited with code {code}", row
    assert row["ended_at"] is not None and row["supervisor_pid"] is None, row
    assert "we" in list_records(str(home), stopped=True)


def test_a_stopped_watched_server_stays_listed_until_forget(home: Path, names: list[str]) -> None:
    names.append("ws")
    row = _start(home, "ws", "usm_hello:app")
    watcher = psutil.Process(row["supervisor_pid"])
    r = cli("stop", "ws", home=home)
    assert r.returncode == 0, r.stderr
    assert wait_until(lambda: gone(watcher))
    row = _row(home, "ws")
    assert row["state"] == "stopped" and row["end_reason"] == "stopped", row
    assert cli("forget", "ws", home=home).returncode == 0
    assert "ws" not in list_records(str(home), stopped=True)


def test_a_killed_watcher_is_reported_unsupervised(home: Path, names: list[str]) -> None:
    names.append("wu")
    row = _start(home, "wu", "usm_hello:app")
    watcher = psutil.Process(row["supervisor_pid"])
    watcher.kill()
    assert wait_until(lambda: gone(watcher), 10)
    # The server serves on, but nobody watches it: status says so.
    assert get(row["port"])["hello"] == "world"
    after = _row(home, "wu")
    assert after["state"] == "running" and after["supervisor_pid"] is None, after
    assert after["unsupervised"] is True, after
    table = cli("status", home=home).stdout
    assert "unsupervised" in table, table


def test_a_watched_name_with_another_app_or_port_is_taken(home: Path, managers: list) -> None:
    from upsonic_server_manager import ServerManagerError

    a = ServerManager("usm_hello:app", "127.0.0.1", free_port(), "wt", supervise=True)
    managers.append(a)
    a.start()
    # Not "started" (nothing would serve there): the name is another server's.
    b = ServerManager("usm_hello:app", "127.0.0.1", free_port(), "wt", supervise=True)
    with pytest.raises(ServerManagerError, match='the name "wt" is taken by a running server'):
        b.start()
    same = ServerManager("usm_hello:app", "127.0.0.1", a.port, "wt", supervise=True)
    same.start()  # the same server: already running, nothing to do
    assert same.is_running()


def test_no_supervise_runs_the_server_alone_as_the_original(home: Path) -> None:
    port = free_port()
    r = cli(
        "start", "usm_hello:app", "--port", str(port), "--name", "wn", "--no-supervise",
        "--redirect-output", "--log-dir", str(home / "logs"), home=home,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    row = _row(home, "wn")
    try:
        assert row["supervisor_pid"] is None, row
        assert not _sup_file(home, "wn").exists()
        server = psutil.Process(row["pid"])
        argv = server.cmdline()
        # The original's command line: uvicorn itself, its own port.
        assert argv[1:3] == ["-m", "uvicorn"] and "--port" in argv, argv
        assert "supervisor_main" not in " ".join(psutil.Process(server.ppid()).cmdline())
        assert (home / "logs" / "wn_server.log").exists()
    finally:
        assert cli("stop", "wn", home=home).returncode == 0
        cli("forget", "wn", home=home)


def test_the_library_default_has_no_supervisor(home: Path, managers: list) -> None:
    m = ServerManager("usm_hello:app", "127.0.0.1", free_port(), "wl", pid_dir=str(home))
    managers.append(m)
    m.start(redirect_output=True)
    st = m.status()
    assert st.supervisor_pid is None and not _sup_file(home, "wl").exists(), st
    server = psutil.Process(st.pid)
    assert server.ppid() == os.getpid(), "the caller is the server's parent"
    assert server.cmdline()[1:3] == ["-m", "uvicorn"], server.cmdline()
    m.stop()


@pytest.mark.parametrize("flag", ["--supervise", "--no-supervise"])
def test_systemd_unit_carries_the_choice_to_run(home: Path, flag: str) -> None:
    args = [] if flag == "--supervise" else [flag]  # supervised: the CLI's default
    r = cli("systemd-unit", "usm_hello:app", "--port", "7542", *args, home=home)
    assert r.returncode == 0, r.stderr
    exec_start = next(x for x in r.stdout.splitlines() if x.startswith("ExecStart="))
    assert " run usm_hello:app " in exec_start and f" {flag} " in exec_start, exec_start


def test_a_server_whose_watcher_was_killed_still_prints(home: Path, names: list[str]) -> None:
    # Its output went through the watcher's pipes: with the watcher gone, a
    # route that prints must not fail (BrokenPipeError), and what it prints
    # lands in the log file.
    names.append("wp")
    row = _start(home, "wp", "usm_printer:app", "--log-dir", str(home / "logs"))
    watcher = psutil.Process(row["supervisor_pid"])
    watcher.kill()
    assert wait_until(lambda: gone(watcher), 10)
    assert get(row["port"], "/print?start=7000&n=3")
    log = home / "logs" / "wp_server.log"
    assert wait_until(lambda: "out 0007002" in log.read_text(), 10), log.read_text()[-500:]
