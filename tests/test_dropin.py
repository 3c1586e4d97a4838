"""A program written for upsonic 0.45.0's ServerManager keeps working: its
attributes are assignable, ``_process`` is a ``subprocess.Popen``, overridden
helpers are called where the original calls them, ``UPSONIC_WORKERS_AMOUNT``
cannot break an import, a clean stop leaves the home directory as the
original does, and a stopped manager can be pickled and copied. Real
servers throughout; upsonic's own server module is run as a program."""

from __future__ import annotations

import copy
import importlib.util
import os
import pickle
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest
from _helpers import free_port, get, gone, port_in_use, spawn_helper, wait_until
from upsonic_server_manager import PortInUseError, ServerManager, ServerManagerError, StartError

HELLO = "usm_hello:app"


def hello(port: int, name: str, **kwargs) -> ServerManager:
    return ServerManager(HELLO, "127.0.0.1", port, name, **kwargs)


# ---- the original's attributes are assignable ----------------------------------------------


def test_port_host_and_app_assigned_while_stopped_take_effect_at_start(home, managers):
    first, second = free_port(), free_port()
    m = ServerManager("usm_slow:app", "localhost", first, "assign")
    managers.append(m)
    m.port = second
    m.host = "127.0.0.1"
    m.app_path = HELLO
    assert (m.port, m.host, m.app_path) == (second, "127.0.0.1", HELLO)
    m.start()
    assert get(second)["pid"] == m._process.pid
    assert not port_in_use(first)
    m.stop()
    assert not port_in_use(second)


def test_assignments_are_checked_as_the_constructor_checks_them(home):
    m = hello(free_port(), "checked")
    with pytest.raises(ValueError, match=r"^port 70000 is outside 1\.\.65535"):
        m.port = 70000
    with pytest.raises(TypeError, match=r"^port must be an int"):
        m.port = "8000"  # type: ignore[assignment]
    with pytest.raises(ValueError, match=r"^name"):
        m.name = "../etc"
    with pytest.raises(ValueError, match=r"^host"):
        m.host = ""
    with pytest.raises(TypeError, match=r"^app_path"):
        m.app_path = 5  # type: ignore[assignment]
    # A refused value changes nothing.
    assert (m.name, m.host, m.app_path) == ("checked", "127.0.0.1", HELLO)


def test_assigning_while_it_runs_says_to_stop_it_first(home, managers):
    port = free_port()
    m = hello(port, "busy")
    managers.append(m)
    m.start()
    pid = m._process.pid
    with pytest.raises(
        ServerManagerError, match=r"Cannot change port of busy while it runs .*stop\(\) it first"
    ):
        m.port = free_port()
    # Another manager of the same server (it runs, found through its record) too.
    other = hello(port, "busy")
    with pytest.raises(ServerManagerError, match=r"stop\(\) it first"):
        other.app_path = "usm_slow:app"
    assert m.port == port and get(port)["pid"] == pid
    m.stop()
    m.port = free_port()


def test_name_and_pid_file_assigned_move_the_record(home, tmp_path, managers):
    m = hello(free_port(), "before")
    managers.append(m)
    m.name = "after"
    assert m._pid_file == str(home / ".upsonic_after_server.pid")
    chosen = tmp_path / "run" / "api.pid"
    chosen.parent.mkdir()
    m._pid_file = chosen
    assert m._pid_file == str(chosen)
    m.start()
    assert chosen.read_text().strip() == str(m._process.pid)
    assert m._read_pid() == m._process.pid
    assert os.listdir(home) == []
    m.stop()
    # The identity and lock files beside it went with it.
    assert os.listdir(chosen.parent) == []
    with pytest.raises(ValueError, match=r"^_pid_file cannot be combined with a restart policy"):
        ServerManager(HELLO, "127.0.0.1", 8000, "sup", restart="always", pid_file=chosen)


# ---- _process is a subprocess.Popen ------------------------------------------------------------


def test_process_is_a_popen_of_the_server(home, managers):
    port = free_port()
    m = hello(port, "popen")
    managers.append(m)
    m.start()
    p = m._process
    assert isinstance(p, subprocess.Popen)
    assert p is m._process
    assert p.pid == get(port)["pid"]
    assert HELLO in p.args and str(port) in p.args
    assert p.poll() is None and p.returncode is None
    with pytest.raises(subprocess.TimeoutExpired):
        p.wait(timeout=0.05)
    with pytest.raises(subprocess.TimeoutExpired):
        p.communicate(timeout=0.05)
    p.send_signal(signal.SIGTERM)
    # uvicorn re-raises the signal that stopped it: -15, as Popen reports.
    assert p.wait(timeout=10) == -signal.SIGTERM
    assert p.returncode == -signal.SIGTERM
    m.stop()
    assert m._process is None
    # Once it ended nothing is signalled any more (its PID may be reused).
    p.kill()
    p.terminate()
    assert p.poll() == -signal.SIGTERM


def test_kill_and_wait_without_timeout(home, managers, monkeypatch):
    monkeypatch.setenv("USM_IGNORE_TERM", "1")
    m = ServerManager("usm_stubborn:app", "127.0.0.1", free_port(), "stubborn", stop_timeout=1)
    managers.append(m)
    m.start()
    p = m._process
    p.terminate()
    with pytest.raises(subprocess.TimeoutExpired):
        p.wait(timeout=0.3)
    p.kill()
    assert p.wait() == -signal.SIGKILL
    m.stop()


def test_process_reset_to_none_keeps_the_server_tracked(home, managers):
    port = free_port()
    m = hello(port, "letgo")
    managers.append(m)
    m.start()
    held = m._process
    pid = held.pid
    m._process = None
    assert m._process is None and m.is_running()
    # The object the program kept still answers, as a Popen would.
    assert held.poll() is None
    proc = psutil.Process(pid)
    m.stop()
    assert wait_until(lambda: gone(proc), 10)
    assert held.wait(timeout=5) == -signal.SIGTERM
    # Reaped by the core: no zombie is left to this process.
    assert [c for c in psutil.Process().children() if c.pid == pid] == []


# ---- a subclass's helpers are called where the original calls them --------------------------


class PidElsewhere(ServerManager):
    """Keeps its own PID file beside the library's, as subclasses of the
    original did, and notes every call of an original helper."""

    where: Path

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[str] = []

    def _write_pid(self) -> None:
        self.calls.append("write")
        self.where.write_text(str(self._process.pid))

    def _read_pid(self):
        self.calls.append("read")
        try:
            return int(self.where.read_text())
        except (OSError, ValueError):
            return None

    def _cleanup_pid(self) -> None:
        self.calls.append("cleanup")
        self.where.unlink(missing_ok=True)


def pid_elsewhere(tmp_path: Path) -> type[PidElsewhere]:
    return type("Mine", (PidElsewhere,), {"where": tmp_path / "mine.pid"})


def test_overridden_pid_helpers_are_written_read_and_cleaned(home, tmp_path, managers):
    cls = pid_elsewhere(tmp_path)
    port = free_port()
    m = cls(HELLO, "127.0.0.1", port, "hooks")
    managers.append(m)
    m.start()
    pid = get(port)["pid"]
    assert cls.where.read_text() == str(pid)
    assert "write" in m.calls
    # Another manager of that class finds it through its _read_pid alone.
    for f in home.iterdir():
        f.unlink()
    fresh = cls(HELLO, "127.0.0.1", port, "hooks")
    assert fresh.is_running() and "read" in fresh.calls
    # Running, by its _read_pid: start() launches nothing, as the original's.
    fresh.start()
    assert fresh._process is None and get(port)["pid"] == pid
    proc = psutil.Process(pid)
    fresh.stop()
    assert wait_until(lambda: gone(proc), 10)
    assert fresh.calls[-1] == "cleanup" and not cls.where.exists()
    m.stop()

    # Its own start and stop leave nothing of ours in the home directory
    # (the name's lock file goes with the stop, as after a plain one).
    again = cls(HELLO, "127.0.0.1", port, "hooks")
    managers.append(again)
    again.start()
    again.stop()
    assert not list(home.iterdir()), sorted(p.name for p in home.iterdir())


def test_a_pid_an_override_reads_is_never_signalled_unless_it_is_our_server(home, tmp_path):
    cls = pid_elsewhere(tmp_path)
    bystander = spawn_helper("import time; time.sleep(60)")
    try:
        cls.where.write_text(str(bystander.pid))
        m = cls(HELLO, "127.0.0.1", free_port(), "careful")
        assert not m.is_running()
        m.stop()
        assert bystander.is_running() and bystander.status() != psutil.STATUS_ZOMBIE
        assert m.calls == ["read", "read", "cleanup"]
        # A PID naming no process is cleaned up by is_running(), as the original does.
        bystander.kill()
        bystander.wait()
        cls.where.write_text(str(bystander.pid))
        m.calls.clear()
        assert not m.is_running()
        assert m.calls == ["read", "cleanup"] and not cls.where.exists()
    finally:
        if bystander.poll() is None:
            bystander.kill()
            bystander.wait()


def test_overridden_port_check_is_asked_before_launching(home, managers):
    calls = []

    class Busy(ServerManager):
        def _is_port_in_use(self, kill_if_used: bool = False) -> bool:
            calls.append(kill_if_used)
            return True

    port = free_port()
    m = Busy(HELLO, "127.0.0.1", port, "busyport")
    managers.append(m)
    with pytest.raises(PortInUseError, match=r"still in use and could not be freed"):
        m.start(force=True)
    assert calls == [True] and m._process is None and not port_in_use(port)


def test_overridden_port_check_gates_readiness(home, managers):
    seen = []

    class Late(ServerManager):
        def _is_port_in_use(self, kill_if_used: bool = False) -> bool:
            seen.append(kill_if_used)
            # Free before the launch; listening only from the third look on.
            return len(seen) >= 3

    m = Late(HELLO, "127.0.0.1", free_port(), "late")
    managers.append(m)
    m.start()
    assert seen == [False, False, False] and m.is_running()
    m.stop()


def test_overridden_force_cleanup_runs_first_and_can_refuse(home, managers):
    class Careful(ServerManager):
        def _force_cleanup_port(self) -> None:
            raise RuntimeError("the port is the operator's")

    m = Careful(HELLO, "127.0.0.1", free_port(), "refuse")
    managers.append(m)
    with pytest.raises(RuntimeError, match="the port is the operator's"):
        m.start()
    assert m._process is None


def test_a_failing_write_pid_stops_the_server_and_says_why(home, managers):
    class ReadOnly(ServerManager):
        def _write_pid(self) -> None:
            raise OSError("read-only file system")

    port = free_port()
    m = ReadOnly(HELLO, "127.0.0.1", port, "rofs")
    managers.append(m)
    with pytest.raises(StartError, match=r"Failed to start rofs server: read-only file system"):
        m.start()
    assert not m.is_running() and not port_in_use(port)


def test_no_helper_is_overridden_on_the_library_class(home):
    assert hello(free_port(), "plain")._overridden_hooks() == ()


# ---- UPSONIC_WORKERS_AMOUNT is read at start() ---------------------------------------------


def test_a_bad_workers_variable_fails_start_not_construction(home, managers, monkeypatch):
    monkeypatch.setenv("UPSONIC_WORKERS_AMOUNT", "abc")
    m = hello(free_port(), "envw")
    managers.append(m)
    with pytest.raises(ValueError, match=r"^UPSONIC_WORKERS_AMOUNT must be a whole number"):
        m.start()
    monkeypatch.setenv("UPSONIC_WORKERS_AMOUNT", "0")
    with pytest.raises(ValueError, match=r"^UPSONIC_WORKERS_AMOUNT must be between 1 and"):
        m.start()
    monkeypatch.setenv("UPSONIC_WORKERS_AMOUNT", "2")
    m.start()
    assert m.workers == 2
    assert wait_until(lambda: len(m.status().workers) == 2, 20)
    m.stop()


def _upsonic_module(name: str) -> str:
    spec = importlib.util.find_spec("upsonic")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("upsonic==0.45.0 is not installed (pip install --no-deps upsonic==0.45.0)")
    path = Path(list(spec.submodule_search_locations)[0], *name.split("."), "__init__.py")
    return path.read_text()


def test_upsonic_tools_server_module_as_a_program(home, tmp_path):
    """upsonic's own tools_server module, with our manager as its
    server_manager (only the app and port changed), imported with the
    variable set wrong, then started, assigned and stopped."""
    port, moved = free_port(), free_port()
    source = _upsonic_module("tools_server")
    assert "port=8086" in source and '"upsonic.tools_server.server.api:app"' in source
    pkg = tmp_path / "ups"
    (pkg / "tools_server").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "server_manager.py").write_text("from upsonic_server_manager import ServerManager\n")
    (pkg / "tools_server" / "__init__.py").write_text(
        source.replace("port=8086", f"port={port}").replace(
            '"upsonic.tools_server.server.api:app"', f'"{HELLO}"'
        )
    )
    program = textwrap.dedent(
        f"""
        import os, subprocess
        import ups.tools_server as t
        print("imported", flush=True)
        try:
            t.run_tools_server()
        except ValueError as e:
            print("start:", e, flush=True)
        os.environ["UPSONIC_WORKERS_AMOUNT"] = "1"
        m = t._server_manager
        m.port = {moved}
        t.run_tools_server()
        assert t.is_tools_server_running()
        assert isinstance(m._process, subprocess.Popen)
        print("serving", m.port, flush=True)
        t.stop_tools_server()
        print("running after stop:", t.is_tools_server_running())
        """
    )
    env = {**os.environ, "UPSONIC_WORKERS_AMOUNT": "abc"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    r = subprocess.run(
        [sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "imported"
    assert lines[1].startswith("start: UPSONIC_WORKERS_AMOUNT must be a whole number")
    assert lines[2:] == [f"serving {moved}", "running after stop: False"]
    assert os.listdir(home) == []


# ---- a clean stop leaves the home directory as the original does ----------------------------


def test_a_clean_stop_leaves_no_file_but_status_remembers(home):
    m = hello(free_port(), "tidy")
    m.start()
    m.stop()
    assert os.listdir(home) == []
    assert m.status().state == "stopped"
    # Asked for (as the CLI does), the history is kept and listed.
    kept = hello(free_port(), "kept", history=True)
    kept.start()
    kept.stop()
    assert os.listdir(home) == [".upsonic_kept_server.last"]
    again = ServerManager.from_record("kept")
    assert again is not None and again.status().state == "stopped"
    assert again.forget() and os.listdir(home) == []


# ---- pickle and deepcopy -------------------------------------------------------------------


def test_a_stopped_manager_pickles_and_copies_to_an_equal_one(home, managers):
    m = ServerManager(
        HELLO,
        "127.0.0.1",
        free_port(),
        "copied",
        workers=2,
        env={"USM_X": "1"},
        stop_timeout=3,
        uvicorn_args=["--log-level", "warning"],
        history=True,
    )
    for twin in (copy.deepcopy(m), pickle.loads(pickle.dumps(m)), copy.copy(m)):
        assert twin._core is not m._core
        assert twin._core.arguments() == m._core.arguments()
    twin = copy.deepcopy(m)
    managers.append(twin)
    twin.start()
    assert get(twin.port)["pid"] in twin.status().workers
    twin.stop()


class Tagged(ServerManager):
    """A subclass with an attribute of its own, as programs write them."""


def test_a_manager_with_its_own_server_running_refuses_to_be_copied(home, managers):
    m = Tagged(HELLO, "127.0.0.1", free_port(), "owner")
    m.tag = "kept"  # type: ignore[attr-defined]
    managers.append(m)
    m.start()
    with pytest.raises(TypeError, match=r"while the server it started runs .*Stop it first"):
        pickle.dumps(m)
    with pytest.raises(TypeError, match=r"cannot pickle or copy"):
        copy.deepcopy(m)
    m.stop()
    twin = pickle.loads(pickle.dumps(m))
    assert type(twin) is Tagged and twin.tag == "kept" and twin.name == "owner"
