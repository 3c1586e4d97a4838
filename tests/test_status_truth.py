"""`status` tells the truth, and `--json` says what the table says (promise 4
of docs/PROMISES.md): orphaned workers of a dead master are reported, a stop
of a dead server keeps how it ended, a name left behind by killed processes
can be stopped and forgotten, a replacement is counted before it serves,
port holders name their managed server everywhere, and a stop that needed
SIGKILL says so. Real servers, real signals."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Callable, Iterator

import psutil
import pytest
from _helpers import cli, free_port, get, gone, wait_until
from upsonic_server_manager import ServerManager, list_records, port_holders


def _json_status(home: Path, name: str) -> dict:
    r = cli("status", "--json", home=home)
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    return rows[name]


def test_orphaned_workers_of_a_killed_master_are_reported_stopped_and_kept(home: Path) -> None:
    port = free_port()
    # Unwatched: a watcher (the CLI's default) would stop the orphans itself.
    r = cli(
        "start", "usm_hello:app", "--port", str(port), "--workers", "2", "--name", "w2",
        "--redirect-output", "--no-supervise", home=home,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    master = psutil.Process(_json_status(home, "w2")["pid"])
    workers = master.children()
    try:
        master.send_signal(signal.SIGKILL)
        assert wait_until(lambda: gone(master))
        # The workers keep serving: status must not read "nothing runs".
        assert get(port)["hello"] == "world"
        row = _json_status(home, "w2")
        assert row["state"] == "dead"
        serving = [w.pid for w in workers if "resource_tracker" not in " ".join(w.cmdline())]
        assert sorted(row["workers"]) == sorted(serving) and len(serving) == 2, row
        assert "still run" in row["end_reason"] and "died" in row["end_reason"], row
        table = cli("status", home=home).stdout
        assert "still run" in table, table
        # stop says what it ended, and how the run ended stays listed.
        r = cli("stop", "w2", home=home)
        assert r.returncode == 0, r.stderr
        assert "orphaned" in r.stdout and "not running" not in r.stdout, r.stdout
        assert all(wait_until(lambda w=w: gone(w)) for w in workers)
        assert "w2" in list_records(str(home), stopped=True)
        row = _json_status(home, "w2")
        assert row["state"] == "dead" and row["end_reason"].startswith("died"), row
        assert cli("forget", "w2", home=home).returncode == 0
        assert "w2" not in list_records(str(home), stopped=True)
    finally:
        for p in [master, *workers]:
            if not gone(p):
                p.kill()


@pytest.fixture
def killed_supervised(home: Path) -> Iterator[Callable[[str], None]]:
    """``kill(name)``: a CLI-started supervised server whose supervisor and
    server are then both SIGKILLed (and reaped: a zombie's group would still
    count as alive). Anything left is killed after the test."""
    victims: list[psutil.Process] = []

    def kill(name: str) -> None:
        r = cli(
            "start", "usm_hello:app", "--port", str(free_port()), "--restart", "always",
            "--name", name, "--redirect-output", home=home,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        row = _json_status(home, name)
        victims.extend([psutil.Process(row["supervisor_pid"]), psutil.Process(row["pid"])])
        for p in victims:
            p.send_signal(signal.SIGKILL)
        assert wait_until(lambda: not any(psutil.pid_exists(p.pid) for p in victims))

    yield kill
    for p in victims:
        if not gone(p):
            p.kill()


def test_a_supervised_name_whose_processes_were_killed_can_be_stopped_and_forgotten(
    home: Path, killed_supervised
) -> None:
    killed_supervised("sv")
    r = cli("stop", "sv", home=home)
    assert r.returncode == 0, r.stderr
    row = _json_status(home, "sv")
    # Not a bare "stopped" row with no PID: how it ended is kept.
    assert row["state"] == "dead" and row["end_reason"].startswith("died"), row
    assert not (home / ".upsonic_sv_server.sup").exists()
    r = cli("forget", "--all", home=home)
    assert "forgot 1 " in r.stdout, r.stdout
    assert not [f for f in os.listdir(home) if "_sv_" in f]


def test_forget_clears_a_name_left_only_by_a_dead_supervisor(home: Path, killed_supervised) -> None:
    killed_supervised("sv2")
    # No stop: the record, the dead supervisor's state and nothing else.
    r = cli("forget", "sv2", home=home)
    assert r.returncode == 0, r.stderr
    assert not [f for f in os.listdir(home) if "_sv2_" in f], os.listdir(home)


def test_a_health_replacement_is_counted_before_it_serves(home: Path, managers: list) -> None:
    sick = home / "sick"
    m = ServerManager(
        "usm_supervised:app", "127.0.0.1", free_port(), "counted",
        env={"USM_SICK_FILE": str(sick)}, restart="on-failure", restart_delay=0.05,
        stable_after=60.0, health_check="/healthz", health_interval=0.2, health_timeout=1.0,
        health_failures=2,
    )  # fmt: skip
    managers.append(m)
    m.start()
    first = m.status().pid
    sick.touch()
    seen: list = []

    def replaced() -> bool:
        st = m.status()
        if st.pid not in (None, first) and st.state == "running":
            seen.append(st)
            return True
        return False

    assert wait_until(replaced, 20, step=0.005), m.status()
    sick.unlink()
    assert seen[0].restarts >= 1, seen[0]


def test_port_holders_name_their_managed_server_everywhere(serve) -> None:
    a = serve("holder")
    b = ServerManager("usm_hello:app", "127.0.0.1", a.port, "other")
    assert [h.server for h in b.port_holders()] == ["holder"]
    assert [h.server for h in port_holders(a.port, "127.0.0.1")] == ["holder"]
    holders = b.diagnose()["port_holders"]
    assert holders and holders[0]["server"] == "holder", holders


def test_uptime_is_given_to_the_millisecond(serve) -> None:
    m = serve("upt")
    up = m.status().uptime
    assert up is not None and up == round(up, 3)


def test_a_stop_that_needed_sigkill_says_so(home: Path) -> None:
    port = free_port()
    r = cli(
        "start", "usm_stubborn:app", "--port", str(port), "--name", "stub", "--redirect-output",
        "--stop-timeout", "0.5", "--env", "USM_IGNORE_TERM=1", home=home,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert cli("stop", "stub", home=home).returncode == 0
    row = _json_status(home, "stub")
    assert row["state"] == "stopped", row
    assert row["end_reason"].startswith("stopped with SIGKILL"), row
    cli("forget", "stub", home=home)


@pytest.mark.parametrize("kw", [{}, {"restart": "on-failure"}], ids=["held", "supervised"])
def test_a_port_0_manager_of_a_running_server_says_where_it_serves(
    home: Path, managers: list, kw: dict
) -> None:
    first = ServerManager("usm_hello:app", "127.0.0.1", 0, "p0", **kw)
    managers.append(first)
    first.start()
    # Another program's manager (or a later one): start() is a no-op, and
    # port, url and status say where the server answers, not port 0.
    again = ServerManager("usm_hello:app", "127.0.0.1", 0, "p0", **kw)
    again.start()
    assert again.port == first.port != 0, (again.port, first.port)
    assert again.url == first.url
    st = ServerManager("usm_hello:app", "127.0.0.1", 0, "p0", **kw).status()
    assert st.state == "running" and st.port == first.port, st


def _start_ticks(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def test_files_the_release_before_wrote_still_read(home: Path) -> None:
    # A server that ended, or was supervised, before an upgrade stays
    # visible: .last and .sup in the key=value form of the release before
    # (literal files), read by status(), stopped by stop().
    port = free_port()
    (home / ".upsonic_ended_server.last").write_text(
        "format=1\npid=4242\nstart_ticks=99\nboot_id=b\nlaunch_id=l\nhost=127.0.0.1\n"
        f"port={port}\napp_path=m:app\nstarted_ms=17\nlog_dir=\nrecord=2\nworkers=1\ncwd=\n"
        "redirect=0\nstart_timeout_ms=30000\nstop_timeout_ms=5000\npython=/usr/bin/python3\n"
        "hold_socket=0\nend=exited -9\nended_ms=1700000000000\nrestarts=2\n"
    )
    st = ServerManager("m:app", "127.0.0.1", port, "ended").status()
    assert (st.state, st.end_reason, st.restarts, st.ended_at) == (
        "dead",
        "killed by SIGKILL",
        2,
        1700000000.0,
    )
    # A supervisor between two runs (backoff): a process of ours stands in.
    stand_in = psutil.Popen(["sleep", "60"])
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        (home / ".upsonic_sv_server.sup").write_text(
            f"supervisor=1\npid={stand_in.pid}\nstart_ticks={_start_ticks(stand_in.pid)}\n"
            f"boot_id={boot}\nphase=backoff\nrestarts=3\nlast_exit=1\nhealth=\n"
            "reason=exited with code 1\\tagain\nserver_pid=0\nreplaced=0\nreplace_error=\n"
        )
        m = ServerManager("m:app", "127.0.0.1", port, "sv")
        st = m.status()
        assert (st.state, st.supervisor_pid, st.restarts, st.last_exit) == (
            "backoff",
            stand_in.pid,
            3,
            1,
        ), st
        m.stop()
        # SIGTERM ended it (stop() reaps it: it is our child, as a
        # supervisor is its starter's).
        assert stand_in.wait(10) in (None, -signal.SIGTERM)
        assert not psutil.pid_exists(stand_in.pid)
        assert not (home / ".upsonic_sv_server.sup").exists()
    finally:
        if stand_in.poll() is None:
            stand_in.kill()
            stand_in.wait()
