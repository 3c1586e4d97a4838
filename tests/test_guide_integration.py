"""guide.md, "System Integration": lifecycle hooks, Docker signals, systemd."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
from _helpers import free_port, get, wait_until
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
    proc = subprocess.Popen(
        [sys.executable, "-c", CONTROLLER, str(p1), str(p2)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == '{"main": true, "tools": true}'
        assert get(p1)["hello"] == get(p2)["hello"] == "world"
        proc.stdin.close()
        assert proc.wait(30) == 0
        probe = ServerManager("usm_hello:app", "0.0.0.0", p1, "main")
        assert not probe.is_running()
        assert not probe._is_port_in_use()
        assert not ServerManager("usm_hello:app", "0.0.0.0", p2, "tools")._is_port_in_use()
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


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
    proc = subprocess.Popen(
        [sys.executable, "-c", DOCKER], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        line = proc.stdout.readline().split()
        assert line[0] == "started"
        server_pid = int(line[1])
        assert get(port)["pid"] == server_pid
        proc.send_signal(sig)
        assert proc.wait(30) == 0
        assert wait_until(lambda: not os.path.exists(f"/proc/{server_pid}"), 5)
        assert not ServerManager("usm_hello:app", "127.0.0.1", port, "x")._is_port_in_use()
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_systemd_service_example_is_not_run_here():
    pytest.skip(
        "the guide's setup_systemd_service writes /etc/systemd/system and runs systemctl; "
        "no systemd runs in this sandbox"
    )
