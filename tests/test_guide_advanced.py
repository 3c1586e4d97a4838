"""guide.md, "Advanced Usage": port management, process groups, logging."""

from __future__ import annotations

import os

import psutil
import pytest
from _helpers import free_port, get, kill_helper, listen_helper
from upsonic_server_manager import ServerManager


# Creating a custom server manager with port conflict handling
def create_safe_server(app_path, port_range_start, name):
    # Try ports in range until finding an available one
    for port in range(port_range_start, port_range_start + 10):
        server = ServerManager(app_path, "localhost", port, name)
        # Check if port is in use without killing processes
        if not server._is_port_in_use():
            return server

    raise RuntimeError(f"No available ports in range {port_range_start}-{port_range_start + 10}")


def test_create_safe_server_skips_a_held_port(home, managers):
    base = free_port()
    holder = listen_helper("127.0.0.1", base)
    try:
        server = create_safe_server("usm_hello:app", base, "safe")
        managers.append(server)
        assert server.port != base
        server.start()
        assert get(server.port)["hello"] == "world"
        # The holder was only looked at, never touched.
        assert holder.is_running()
    finally:
        kill_helper(holder)


def start_server_cluster(server_configs):
    """Start multiple coordinated servers."""
    servers = []

    for config in server_configs:
        server = ServerManager(
            app_path=config["app_path"],
            host=config["host"],
            port=config["port"],
            name=config["name"],
        )

        try:
            server.start(redirect_output=True)
            servers.append(server)
        except Exception as e:
            # If any server fails to start, stop all started servers
            for started_server in servers:
                started_server.stop()
            raise RuntimeError(f"Failed to start server cluster: {e}") from e

    return servers


def test_start_server_cluster(home, managers):
    configs = [
        {"app_path": "usm_hello:app", "host": "127.0.0.1", "port": free_port(), "name": f"c{i}"}
        for i in range(3)
    ]
    servers = start_server_cluster(configs)
    managers.extend(servers)
    for c in configs:
        assert get(c["port"])["hello"] == "world"
    # Each server is its own process group and session.
    for s in servers:
        pid = s._read_pid()
        assert os.getpgid(pid) == pid
        assert os.getsid(pid) == pid
    for s in servers:
        s.stop()
    assert not any(s.is_running() for s in servers)


def test_start_server_cluster_rolls_back(home, managers):
    good = {"app_path": "usm_hello:app", "host": "127.0.0.1", "port": free_port(), "name": "g"}
    bad = {"app_path": "usm_broken:app", "host": "127.0.0.1", "port": free_port(), "name": "b"}
    probe = ServerManager(**good)
    managers.append(probe)
    with pytest.raises(
        RuntimeError, match="Failed to start server cluster.*No module named .usm_this_module"
    ):
        start_server_cluster([good, bad])
    assert not probe.is_running()
    assert not probe._is_port_in_use()


def test_development_and_production_logging(home, managers, capfd):
    app_path, host = "usm_hello:app", "127.0.0.1"
    port = free_port()
    # Development mode with console output
    dev_server = ServerManager(app_path, host, port, "dev", uvicorn_args=("--log-level", "info"))
    managers.append(dev_server)
    dev_server.start(redirect_output=False)
    dev_server.stop()
    out, err = capfd.readouterr()
    assert "Uvicorn running" in out + err

    # Production mode with logs
    port2 = free_port()
    prod_server = ServerManager(app_path, host, port2, "prod", uvicorn_args=("--log-level", "info"))
    managers.append(prod_server)
    prod_server.start(redirect_output=True)
    get(port2)
    prod_server.stop()
    out, err = capfd.readouterr()
    assert "Uvicorn running" not in out + err
    with open(os.path.join("logs", "prod_server_error.log")) as f:
        assert "Uvicorn running" in f.read()
    # The caller keeps no descriptor on the log files.
    open_paths = [f.path for f in psutil.Process().open_files()]
    assert not any(p.endswith("_server.log") or p.endswith("_error.log") for p in open_paths)
