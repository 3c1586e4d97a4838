"""`upsonic-server stop --all` and `restart --all`, driven as a user types them."""

from __future__ import annotations

import psutil
from _helpers import cli, free_port, get, gone
from upsonic_server_manager import ServerManager, list_records


def test_stop_all_and_restart_all(home, managers):
    ports = [free_port() for _ in range(3)]
    names = ["a1", "a2", "a3"]
    for name, port in zip(names, ports):
        m = ServerManager("usm_hello:app", "127.0.0.1", port, name)
        managers.append(m)
        if name == "a3":
            # The CLI's start always redirects (docs/OWNER.md): a record
            # without redirection comes from the library.
            m.start()
            continue
        with open(home / f"{name}.out", "w") as out:
            args = ["start", "usm_hello:app", "--port", str(port), "--name", name]
            r = cli(*args, home=home, out=out)
        assert r.returncode == 0, (home / f"{name}.out").read_text()
    pids = [get(p)["pid"] for p in ports]

    with open(home / "restart.out", "w") as out:
        r = cli("restart", "--all", home=home, out=out)
    text = (home / "restart.out").read_text()
    assert r.returncode == 0, text
    assert "stopped 3 running servers (a1, a2, a3)" in text
    assert "started 3 servers again" in text
    assert all(gone(psutil.Process(p)) if psutil.pid_exists(p) else True for p in pids)
    new = [get(p)["pid"] for p in ports]
    assert set(new).isdisjoint(pids)
    # Each came back with its recorded output mode.
    assert ServerManager.from_record("a1").redirect_output is True
    assert ServerManager.from_record("a3").redirect_output is False

    r = cli("stop", "--all", home=home)
    assert r.returncode == 0, r.stderr
    assert "stopped 3 running servers (a1, a2, a3)" in r.stdout
    assert list_records() == []
    for p in new:
        assert not psutil.pid_exists(p) or gone(psutil.Process(p))


def test_stop_needs_a_name_or_all(home):
    for args in (["stop"], ["stop", "x", "--all"], ["restart"]):
        r = cli(*args, home=home)
        assert r.returncode == 2
        assert "give a NAME or --all" in r.stderr
