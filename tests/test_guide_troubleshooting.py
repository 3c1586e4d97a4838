"""guide.md, "Troubleshooting": diagnosis and recovery."""

from __future__ import annotations

import os
import sys

import psutil
from _helpers import free_port, get, kill_helper, listen_helper
from upsonic_server_manager import ServerManager


def diagnose_server_issues(server_manager):
    """Diagnose common server issues"""
    results = {
        "is_running": server_manager.is_running(),
        "port_available": not server_manager._is_port_in_use(),
        "pid_file_exists": os.path.exists(server_manager._pid_file),
        "stored_pid": server_manager._read_pid(),
        "system_info": {
            "platform": sys.platform,
            "python_version": sys.version,
            "memory_available": psutil.virtual_memory().available / (1024 * 1024),
        },
    }

    # Check if PID from file is actually running
    pid = server_manager._read_pid()
    if pid:
        try:
            process = psutil.Process(pid)
            results["pid_running"] = process.is_running()
            results["process_name"] = process.name()
            results["process_cmdline"] = process.cmdline()
        except psutil.NoSuchProcess:
            results["pid_running"] = False

    return results


def test_diagnose_running_and_stopped(home, managers):
    port = free_port()
    s = ServerManager("usm_hello:app", "127.0.0.1", port, "diag")
    managers.append(s)
    before = diagnose_server_issues(s)
    assert before["is_running"] is False
    assert before["port_available"] is True
    assert before["pid_file_exists"] is False
    assert before["stored_pid"] is None
    s.start()
    during = diagnose_server_issues(s)
    assert during["is_running"] is True
    assert during["port_available"] is False
    assert during["pid_file_exists"] is True
    assert during["stored_pid"] == get(port)["pid"]
    assert during["pid_running"] is True
    assert "uvicorn" in during["process_cmdline"]
    # Our own diagnose() gives the same keys, plus port_holders, and agrees.
    ours = s.diagnose()
    for key in during:
        assert key in ours, key
    assert ours["stored_pid"] == during["stored_pid"]
    assert ours["process_cmdline"] == during["process_cmdline"]
    assert [h["pid"] for h in ours["port_holders"]] == [during["stored_pid"]]
    assert set(ours["system_info"]) == {"platform", "python_version", "memory_available"}


def recover_server(server_manager):
    """Attempt to recover server from failure state"""
    # Stop any potentially running instance
    try:
        server_manager.stop()
    except Exception as e:
        print(f"Warning: Error during stop phase: {e}")

    # Clean up PID file
    server_manager._cleanup_pid()

    # Force cleanup port
    try:
        server_manager._force_cleanup_port()
    except Exception as e:
        print(f"Warning: Error cleaning up port: {e}")

    # Try to start server with forced mode
    try:
        server_manager.start(force=True)
        return True
    except Exception as e:
        print(f"Recovery failed: {e}")
        return False


def test_recover_from_a_stale_pid_file_and_a_squatter(home, managers, capsys):
    port = free_port()
    s = ServerManager("usm_hello:app", "127.0.0.1", port, "rec")
    managers.append(s)
    with open(s._pid_file, "w") as f:
        f.write("999999999")  # garbage left behind
    squatter = listen_helper("127.0.0.1", port)
    try:
        assert recover_server(s) is True
        assert squatter.wait(10) is not None
        assert get(port)["hello"] == "world"
        assert s.is_running()
    finally:
        kill_helper(squatter)
    assert capsys.readouterr().out == ""
