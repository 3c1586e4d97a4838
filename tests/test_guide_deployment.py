"""guide.md, "Advanced Deployment": per-environment servers, high availability."""

from __future__ import annotations

import socket

import pytest
from _helpers import free_port, get
from upsonic_server_manager import PortInUseError, ServerManager


def create_environment_server(environment, ports):
    """Create server configuration for specific environment"""
    env_configs = {
        "development": {
            "app_path": "usm_hello:app",
            "host": "localhost",
            "port": ports[0],
            "debug": True,
            "redirect_output": False,
        },
        "testing": {
            "app_path": "usm_hello:app",
            "host": "0.0.0.0",
            "port": ports[1],
            "debug": True,
            "redirect_output": True,
        },
        "production": {
            "app_path": "usm_hello:app",
            "host": "0.0.0.0",
            "port": ports[0],
            "debug": False,
            "redirect_output": True,
        },
    }

    config = env_configs.get(environment)
    if not config:
        raise ValueError(f"Unknown environment: {environment}")

    server = ServerManager(
        app_path=config["app_path"],
        host=config["host"],
        port=config["port"],
        name=f"{environment}_server",
    )

    return server, config


@pytest.mark.parametrize("environment", ["development", "testing", "production"])
def test_environment_servers(home, managers, environment):
    ports = (free_port(), free_port())
    server, config = create_environment_server(environment, ports)
    managers.append(server)
    assert server.name == f"{environment}_server"
    server.start(redirect_output=config["redirect_output"])
    assert get(config["port"])["hello"] == "world"
    server.stop()
    assert not server.is_running()


def test_unknown_environment(home, managers):
    ports = (free_port(), free_port())
    with pytest.raises(ValueError, match="Unknown environment: staging"):
        create_environment_server("staging", ports)
    # The guide's table gives development and production the same port: the
    # second to start is refused, naming the first, which keeps serving.
    dev, dev_config = create_environment_server("development", ports)
    prod, prod_config = create_environment_server("production", ports)
    managers.extend([dev, prod])
    assert dev_config["port"] == prod_config["port"]
    dev.start(redirect_output=dev_config["redirect_output"])
    pid = dev._read_pid()
    with pytest.raises(PortInUseError) as ei:
        prod.start(redirect_output=prod_config["redirect_output"])
    assert [h.pid for h in ei.value.holders] == [pid]
    assert not prod.is_running()
    assert get(ports[0])["pid"] == pid and dev.is_running()


class HighAvailabilityController:
    def __init__(self, app_path, port_range_start, port_range_end):
        self.app_path = app_path
        self.port_range = range(port_range_start, port_range_end)
        self.servers = []

    def start_cluster(self, server_count=2):
        """Start multiple server instances for redundancy"""
        available_ports = []

        # Find available ports
        for port in self.port_range:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind(("0.0.0.0", port))
                available_ports.append(port)
                if len(available_ports) >= server_count:
                    break
            except OSError:
                continue
            finally:
                s.close()

        if len(available_ports) < server_count:
            raise RuntimeError(
                f"Not enough available ports. Found {len(available_ports)}, need {server_count}"
            )

        # Start servers on available ports
        for i, port in enumerate(available_ports):
            server = ServerManager(
                app_path=self.app_path, host="0.0.0.0", port=port, name=f"ha_server_{i}"
            )
            server.start(redirect_output=True)
            self.servers.append(server)

        return [s.port for s in self.servers]

    def stop_cluster(self):
        """Stop all servers in the cluster"""
        for server in self.servers:
            server.stop()
        self.servers = []


def test_high_availability_cluster(home, managers):
    base = free_port()
    ha = HighAvailabilityController("usm_hello:app", base, base + 40)
    try:
        ports = ha.start_cluster(server_count=2)
        managers.extend(ha.servers)
        assert len(ports) == 2
        pids = {get(p)["pid"] for p in ports}
        assert len(pids) == 2
        ha.stop_cluster()
        assert ha.servers == []
        for p in ports:
            assert not ServerManager("usm_hello:app", "0.0.0.0", p, "probe")._is_port_in_use()
    finally:
        ha.stop_cluster()
