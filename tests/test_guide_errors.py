"""guide.md, "Error Handling": port conflict resolution, process termination."""

from __future__ import annotations

import socket

import psutil
from _helpers import free_port, get, kill_helper, listen_helper
from upsonic_server_manager import ServerManager


def ensure_available_port(host, desired_port, max_attempts=5):
    """Find an available port, starting with desired_port"""
    current_port = desired_port

    for _attempt in range(max_attempts):
        # Try creating a socket
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((host, current_port))
            s.close()
            # If we reach here, port is available
            return current_port
        except OSError:
            # Port is in use, try killing the process
            manager = ServerManager("dummy", host, current_port, "temp")
            if manager._kill_process_using_port():
                # Process killed, port should be free now
                return current_port

            # Try next port
            current_port += 1
        finally:
            s.close()

    raise RuntimeError(f"Could not find available port after {max_attempts} attempts")


def test_ensure_available_port_on_a_free_port(home, managers):
    port = free_port()
    assert ensure_available_port("127.0.0.1", port) == port
    # The port it hands back is one the library agrees is free and can serve on.
    server = ServerManager("usm_hello:app", "127.0.0.1", port, "main")
    managers.append(server)
    assert server._is_port_in_use() is False
    server.start()
    assert get(port)["pid"] == server._read_pid()


def test_ensure_available_port_frees_a_port_held_by_our_own_program(home):
    port = free_port()
    holder = listen_helper("127.0.0.1", port)
    try:
        assert ensure_available_port("127.0.0.1", port) == port
        assert holder.wait(10) is not None
    finally:
        kill_helper(holder)


def force_terminate_process(pid, timeout=5):
    """Forcefully terminate a process with proper cleanup"""
    try:
        process = psutil.Process(pid)

        # Check if process is a Python process to avoid terminating wrong process
        if not process.name().startswith("python"):
            return False

        # Try graceful termination first
        process.terminate()

        try:
            # Wait for termination
            process.wait(timeout=timeout)
            return True
        except psutil.TimeoutExpired:
            # Force kill if graceful termination fails
            process.kill()
            process.wait(timeout=1)
            return True

    except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
        # Process already gone or can't be accessed
        return False


def test_force_terminate_a_managed_server_then_manager_notices(serve):
    s = serve("ft")
    port = s.port
    pid = s._read_pid()
    assert get(port)["pid"] == pid
    assert force_terminate_process(pid) is True
    assert not s.is_running()
    assert s._process.returncode is not None
    # A new start works after the crash, and the stale record is replaced.
    s.start()
    assert s._read_pid() != pid
    assert get(port)["hello"] == "world"


def test_force_terminate_unknown_pid_is_false(serve):
    # A PID the manager has stopped is unknown to the system: stop() ended the
    # server and reaped it, so the guide's helper finds nothing to terminate.
    s = serve("ft")
    port = s.port
    pid = s._read_pid()
    assert get(port)["pid"] == pid
    s.stop()
    assert force_terminate_process(pid) is False
    assert not psutil.pid_exists(pid)
