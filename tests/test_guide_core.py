"""guide.md, "Core Functionality": every example, as a user would copy it."""

from __future__ import annotations

import os

import psutil
from _helpers import get
from upsonic_server_manager import ServerManager


def test_initialization_parameters_and_attributes(home, port):
    # Initialize a server manager for main application
    main_server = ServerManager(
        app_path="usm_hello:app",  # Path to FastAPI app
        host="0.0.0.0",  # Listen on all interfaces
        port=port,  # Port to use
        name="main",  # Server identifier
    )
    assert main_server.app_path == "usm_hello:app"
    assert main_server.host == "0.0.0.0"
    assert main_server.port == port
    assert main_server.name == "main"
    assert main_server._pid_file == os.path.join(str(home), ".upsonic_main_server.pid")
    assert main_server._process is None
    # Positional, as in the original.
    positional = ServerManager("usm_hello:app", "0.0.0.0", port, "main")
    assert (positional.app_path, positional.host, positional.port, positional.name) == (
        "usm_hello:app",
        "0.0.0.0",
        port,
        "main",
    )


def test_start_default_then_redirected_then_forced(home, port, managers):
    main_server = ServerManager("usm_hello:app", "127.0.0.1", port, "main")
    managers.append(main_server)

    # Start server with default settings
    main_server.start()
    assert get(port)["hello"] == "world"
    pid = main_server._read_pid()
    assert pid == main_server._process.pid
    main_server.stop()

    # Start with redirected output (for production)
    main_server.start(redirect_output=True)
    assert get(port)["hello"] == "world"
    assert os.path.isdir("logs")
    assert os.path.exists(os.path.join("logs", "main_server.log"))
    assert os.path.exists(os.path.join("logs", "main_server_error.log"))
    main_server.stop()

    # Force start (kill any existing processes on the port)
    main_server.start(force=True)
    assert get(port)["hello"] == "world"
    main_server.stop()


def test_start_tracks_process_and_writes_bare_pid(home, port, managers):
    s = ServerManager("usm_hello:app", "127.0.0.1", port, "tracked")
    managers.append(s)
    s.start()
    # 4. Tracks the process ID for later management
    with open(s._pid_file) as f:
        text = f.read()
    assert text.strip() == str(s._process.pid)
    assert int(text) == get(port)["pid"]
    assert s._process.poll() is None
    assert s._process.returncode is None


def test_stop_gracefully(home, port, managers):
    main_server = ServerManager("usm_hello:app", "127.0.0.1", port, "main")
    managers.append(main_server)
    main_server.start()
    pid = main_server._read_pid()
    # Gracefully stop the server
    main_server.stop()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not os.path.exists(main_server._pid_file)
    assert not main_server.is_running()
    assert main_server._process is None
    assert not main_server._is_port_in_use()
    # Quiet and idempotent when nothing runs.
    main_server.stop()
    main_server.stop()


def test_is_running_example(home, port, managers, capsys):
    main_server = ServerManager("usm_hello:app", "127.0.0.1", port, "main")
    managers.append(main_server)

    # Check if the server is running
    if main_server.is_running():
        print("Server is running")
    else:
        print("Server is not running")
        main_server.start()

    assert capsys.readouterr().out == "Server is not running\n"
    assert main_server.is_running()
    assert get(port)["hello"] == "world"


def test_is_running_sees_externally_started_server(home, port, managers):
    # 2. Checks PID files for externally started servers
    first = ServerManager("usm_hello:app", "127.0.0.1", port, "ext")
    managers.append(first)
    first.start()
    other = ServerManager("usm_hello:app", "127.0.0.1", port, "ext")
    assert other.is_running()
    assert other._process is None
    other.stop()
    assert not first.is_running()
    assert not other._is_port_in_use()
