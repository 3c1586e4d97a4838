"""guide.md, "System Integration": lifecycle hooks, Docker signals, systemd."""

from __future__ import annotations

import os
import pwd
import shlex
import signal
import socket
import subprocess
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from _helpers import (
    APPS,
    SESSION_ENV,
    SESSION_ID,
    cli,
    free_port,
    get,
    gone,
    port_in_use,
    python_script,
    wait_until,
)
from upsonic_server_manager import ServerManager

CONTROLLER = textwrap.dedent(
    """
    import atexit, json, sys
    from upsonic_server_manager import ServerManager

    MAIN_PORT, TOOLS_PORT = int(sys.argv[1]), int(sys.argv[2])

    class ServerController:
        def __init__(self):
            self.main_server = ServerManager("usm_hello:app", "0.0.0.0", MAIN_PORT, "main")
            self.tools_server = ServerManager("usm_hello:app", "0.0.0.0", TOOLS_PORT, "tools")
            # Register shutdown handler
            atexit.register(self.shutdown_all)

        def start_all(self, redirect_output=True):
            self.main_server.start(redirect_output=redirect_output)
            self.tools_server.start(redirect_output=redirect_output)

        def shutdown_all(self):
            # Stop servers in reverse order
            if self.tools_server.is_running():
                self.tools_server.stop()
            if self.main_server.is_running():
                self.main_server.stop()

        def check_status(self):
            return {"main": self.main_server.is_running(), "tools": self.tools_server.is_running()}

    c = ServerController()
    c.start_all()
    print(json.dumps(c.check_status()), flush=True)
    sys.stdin.readline()
    """
)


def test_server_controller_stops_everything_at_exit(home):
    p1, p2 = free_port(), free_port()
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE}
    with python_script(CONTROLLER, str(p1), str(p2), **pipes) as proc:
        assert proc.stdout.readline().strip() == '{"main": true, "tools": true}'
        assert get(p1)["hello"] == get(p2)["hello"] == "world"
        proc.stdin.close()
        assert proc.wait(30) == 0
        probe = ServerManager("usm_hello:app", "0.0.0.0", p1, "main")
        assert not probe.is_running()
        assert not probe._is_port_in_use()
        assert not ServerManager("usm_hello:app", "0.0.0.0", p2, "tools")._is_port_in_use()


DOCKER = textwrap.dedent(
    """
    import os, signal, sys
    from upsonic_server_manager import ServerManager

    def configure_docker_server():
        host = os.environ.get("SERVER_HOST", "0.0.0.0")
        port = int(os.environ.get("SERVER_PORT", "7541"))
        server = ServerManager(app_path="usm_hello:app", host=host, port=port, name="docker_server")

        def handle_sigterm(signum, frame):
            server.stop()
            sys.exit(0)

        signal.signal(signal.SIGTERM, handle_sigterm)
        signal.signal(signal.SIGINT, handle_sigterm)
        return server

    server = configure_docker_server()
    server.start(redirect_output=True)
    print("started", server._read_pid(), flush=True)
    signal.pause()
    """
)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_docker_signal_handlers_stop_the_server(home, sig):
    port = free_port()
    env = dict(os.environ, SERVER_HOST="127.0.0.1", SERVER_PORT=str(port))
    with python_script(DOCKER, env=env, stdout=subprocess.PIPE) as proc:
        line = proc.stdout.readline().split()
        assert line[0] == "started"
        server_pid = int(line[1])
        assert get(port)["pid"] == server_pid
        proc.send_signal(sig)
        assert proc.wait(30) == 0
        assert wait_until(lambda: not os.path.exists(f"/proc/{server_pid}"), 5)
        assert not port_in_use(port)


def setup_systemd_service(unit_path, service_content, systemctl):
    """Create configuration for systemd service"""
    # The guide's function with its two host-wide effects made local: the unit
    # is written to unit_path instead of /etc/systemd/system/upsonic.service,
    # and systemctl is LocalSystemctl instead of the real one.

    # Write service file
    with open(unit_path, "w") as f:
        f.write(service_content)

    # Enable and start service
    systemctl("daemon-reload")
    systemctl("enable", "upsonic")
    systemctl("start", "upsonic")


class LocalService:
    """One unit's [Service], run the way systemd runs it: a clean environment
    plus Environment=, WorkingDirectory=, Type=notify readiness on
    NOTIFY_SOCKET, Restart=on-failure, and stop as KillMode=mixed (SIGTERM to
    the main process, then waiting up to TimeoutStopSec)."""

    def __init__(self, path: Path, home: Path, run_dir: Path) -> None:
        section, self.conf, self.env = None, {}, {}
        for line in path.read_text().splitlines():
            line = line.strip()
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1]
            elif section == "Service" and "=" in line and not line.startswith("#"):
                key, value = line.split("=", 1)
                if key == "Environment":
                    self.env.update(w.split("=", 1) for w in shlex.split(value))
                else:
                    self.conf[key] = value
        user = pwd.getpwuid(os.getuid()).pw_name
        # systemd switches to User=; here the unit must name the user we are.
        assert self.conf["User"] == user
        self.base_env = {
            "PATH": os.environ["PATH"],
            "HOME": str(home),
            "USER": user,
            "LOGNAME": user,
            # Not systemd's: the leak guard's marker, so a leftover is caught.
            SESSION_ENV: SESSION_ID,
        }
        self.run_dir = run_dir
        self.notify_path = str(run_dir / "notify")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(self.notify_path)
        self.main: psutil.Popen | None = None
        self.tree: list[psutil.Process] = []  # every process the service ran
        self.messages: list[str] = []

    def start(self) -> None:
        assert self.conf.get("Type") == "notify"
        env = dict(self.base_env, NOTIFY_SOCKET=self.notify_path, **self.env)
        # systemd creates RuntimeDirectory= under /run and LogsDirectory=
        # under /var/log for the service's user; here they go in the test's
        # own directory, and ExecStart names them there.
        command = self.conf["ExecStart"]
        for key, base in (("RuntimeDirectory", "/run"), ("LogsDirectory", "/var/log")):
            if key in self.conf:
                made = self.run_dir / key / self.conf[key]
                made.mkdir(parents=True, exist_ok=True)
                command = command.replace(f"{base}/{self.conf[key]}", str(made))
        self.main = psutil.Popen(
            shlex.split(command),
            cwd=self.conf["WorkingDirectory"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        self.notify.settimeout(60)
        while True:
            msg = self.notify.recv(4096).decode()
            self.messages.append(msg)
            if "READY=1" in msg.split("\n"):
                assert f"MAINPID={self.main.pid}" in msg
                self.tree += [self.main, *self.main.children(recursive=True)]
                return

    def wait_and_restart(self) -> int:
        """Waits for the main process to exit; restarts it on failure as
        Restart=on-failure does. Returns its exit status (128+N for signal N)."""
        assert self.main is not None
        code = self.main.wait(60)
        code = 128 - code if code < 0 else code
        if code != 0 and self.conf.get("Restart") == "on-failure":
            time.sleep(float(self.conf.get("RestartSec", "0.1").rstrip("s")))
            self.start()
        return code

    def stop(self) -> int:
        assert self.main is not None and self.conf.get("KillMode") == "mixed"
        self.main.send_signal(signal.SIGTERM)
        code = self.main.wait(float(self.conf["TimeoutStopSec"]))
        self.messages.append(self.notify.recv(4096).decode())
        return code

    def close(self) -> None:
        # What systemd's final SIGKILL to the cgroup would do.
        for p in [*self.tree, *([self.main] if self.main else [])]:
            try:
                p.kill()
            except psutil.Error:
                pass
        if self.main is not None:
            self.main.wait()
        self.notify.close()


class LocalSystemctl:
    """`systemctl` for units in one directory, run by LocalService."""

    def __init__(self, unit_dir: Path, home: Path, run_dir: Path) -> None:
        self.unit_dir, self.home, self.run_dir = unit_dir, home, run_dir
        self.units: dict[str, Path] = {}
        self.enabled: set[str] = set()
        self.services: dict[str, LocalService] = {}

    def __call__(self, verb: str, name: str = "") -> int:
        if verb == "daemon-reload":
            self.units = {p.stem: p for p in self.unit_dir.glob("*.service")}
            return 0
        if verb == "enable":
            assert name in self.units
            self.enabled.add(name)
            return 0
        if verb == "start":
            svc = LocalService(self.units[name], self.home, self.run_dir)
            self.services[name] = svc
            svc.start()
            return 0
        if verb == "stop":
            return self.services[name].stop()
        raise ValueError(verb)

    def close(self) -> None:
        for svc in self.services.values():
            svc.close()


def test_systemd_service_runs_restarts_on_failure_and_stops(home, tmp_path):
    # Was skipped always (no systemd here). The unit is now the one
    # `upsonic-server systemd-unit` writes (the guide's ExecStart, upsonic.server,
    # does not exist), and it runs under LocalSystemctl: real processes, a real
    # notify socket, real HTTP.
    port = free_port()
    unit = cli(
        "systemd-unit",
        "usm_hello:app",
        "--port",
        str(port),
        "--name",
        "upsonic",
        "--env",
        f"PYTHONPATH={APPS}",
        home=home,
    )
    assert unit.returncode == 0, unit.stderr
    unit_dir = tmp_path / "etc-systemd-system"
    unit_dir.mkdir()
    systemctl = LocalSystemctl(unit_dir, home, tmp_path)
    try:
        setup_systemd_service(unit_dir / "upsonic.service", unit.stdout, systemctl)
        svc = systemctl.services["upsonic"]
        first = get(port)["pid"]
        assert psutil.Process(first).ppid() == svc.main.pid
        # The unit keeps its records in its RuntimeDirectory (made here).
        recorded = ServerManager.from_record(
            "upsonic", tmp_path / "RuntimeDirectory" / "upsonic-upsonic"
        )
        assert recorded is not None and recorded.is_running()

        # Restart=on-failure: the server dies, `run` exits with its status,
        # which is a failure, and the service comes back with a new server.
        os.kill(first, signal.SIGKILL)
        assert svc.wait_and_restart() == 128 + signal.SIGKILL
        second = get(port)["pid"]
        assert second != first

        # systemctl stop: SIGTERM to the main process only; it must take its
        # server with it, leaving nothing for systemd's final SIGKILL.
        assert systemctl("stop", "upsonic") == 0
        assert "STOPPING=1" in svc.messages[-1]
        assert all(wait_until(lambda p=p: gone(p), 5) for p in svc.tree)
        assert not port_in_use(port)
        assert not ServerManager("usm_hello:app", "127.0.0.1", port, "upsonic").is_running()
    finally:
        systemctl.close()
