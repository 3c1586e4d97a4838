"""The restart pre-check (``_restartable.why_not_restartable``): what would
make a restart fail is found before anything is stopped: an app that is not
in module:attribute form, a working directory that is gone, an app that does
not import from the recorded directory and environment, a port held by
someone else. Real imports in a real interpreter, a real socket."""

from __future__ import annotations

import socket

from _helpers import APPS, free_port
from upsonic_server_manager import ServerManager
from upsonic_server_manager._restartable import why_not_restartable


def manager(app: str, port: int, **kw) -> ServerManager:
    return ServerManager(app, "127.0.0.1", port, "pre", cwd=str(APPS), **kw)


def test_an_app_that_imports_and_a_free_port_may_restart(home):
    assert why_not_restartable(manager("usm_hello:app", free_port())) is None


def test_not_module_colon_attribute(home):
    why = why_not_restartable(manager("usm_hello", free_port()))
    assert why is not None and "module:attribute" in why


def test_a_working_directory_that_is_gone(home, tmp_path):
    gone = tmp_path / "gone"
    m = ServerManager("usm_hello:app", "127.0.0.1", free_port(), "pre", cwd=str(gone))
    why = why_not_restartable(m)
    assert why is not None and "does not exist" in why


def test_an_app_that_does_not_import_names_the_error(home):
    why = why_not_restartable(manager("usm_no_such_module:app", free_port()))
    assert why is not None and "ModuleNotFoundError" in why
    why = why_not_restartable(manager("usm_hello:no_such_attribute", free_port()))
    assert why is not None and "AttributeError" in why


def test_the_recorded_environment_is_the_one_imported_with(home, tmp_path):
    (tmp_path / "usm_needs_env.py").write_text(
        "import os\n"
        "if os.environ.get('USM_PRE') != 'yes':\n"
        "    raise RuntimeError('no env')\n"
        "app = 1\n"
    )
    m = ServerManager("usm_needs_env:app", "127.0.0.1", free_port(), "pre", cwd=str(tmp_path))
    assert "no env" in (why_not_restartable(m) or "")
    m = ServerManager(
        "usm_needs_env:app",
        "127.0.0.1",
        free_port(),
        "pre",
        cwd=str(tmp_path),
        env={"USM_PRE": "yes"},
    )
    assert why_not_restartable(m) is None


def test_a_port_held_by_another_program(home):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        why = why_not_restartable(manager("usm_hello:app", port))
    assert why is not None and f"port {port} is held by pid" in why
