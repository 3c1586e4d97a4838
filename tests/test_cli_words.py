"""The CLI's messages: the library's keyword names rewritten as options
(pure; no server), and the one rule for relative log directories."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from _helpers import cli, free_port
from upsonic_server_manager import ServerManager
from upsonic_server_manager._cli_output import for_the_shell


@pytest.mark.parametrize(
    ("library", "shell"),
    [
        ("create it with hold_socket=True (a server", "create it with --hold-socket (a server"),
        ("raise start_timeout", "raise --start-timeout"),
        ("restart_max_delay must not be below restart_delay",
         "--restart-max-delay must not be below --restart-delay"),
        ("use start(force=True)", "use --force"),
        ('needs restart="on-failure" or "always"', "needs --restart on-failure or always"),
        # One-word keywords are plain English too: left alone.
        ("restart 3, next wait 0.8 s", "restart 3, next wait 0.8 s"),
        ("a warm start", "a warm start"),
    ],
)  # fmt: skip
def test_library_words_become_options(library: str, shell: str) -> None:
    assert for_the_shell(library) == shell


def test_every_keyword_with_an_underscore_is_an_option_of_start() -> None:
    """Derived from the signature: no keyword is left in Python spelling.
    `pid_dir` is the CLI's global --pid-dir; `uvicorn_args` go after `--`."""
    params = inspect.signature(ServerManager.__init__).parameters.values()
    names = [p.name for p in params if p.kind is p.KEYWORD_ONLY and "_" in p.name]
    assert names
    for name in names:
        # uvicorn's own arguments are no option: they follow `--`.
        option = "the uvicorn arguments after --" if name == "uvicorn_args" else None
        assert for_the_shell(f"x {name} y") == f"x {option or '--' + name.replace('_', '-')} y"


def test_a_relative_log_dir_is_under_the_servers_working_directory(
    home: Path, tmp_path: Path, managers: list
) -> None:
    """The same rule from the library and the CLI: --cwd D --log-dir L logs
    to D/L, whatever directory the command was typed in."""
    site = tmp_path / "site"
    site.mkdir()
    m = ServerManager("usm_hello:app", "127.0.0.1", free_port(), "lib", cwd=site, log_dir="L")
    assert m.log_files[0] == str(site / "L" / "lib_server.log")
    port = free_port()
    r = cli(
        "start", "usm_hello:app", "--port", str(port), "--name", "cl", "--cwd", str(site),
        "--log-dir", "L", "--redirect-output", home=home, cwd=str(tmp_path),
    )  # fmt: skip
    try:
        assert r.returncode == 0, r.stderr
        rebuilt = ServerManager.from_record("cl")
        assert rebuilt is not None
        assert rebuilt.log_files[0] == str(site / "L" / "cl_server.log")
        assert (site / "L" / "cl_server.log").exists()
    finally:
        cli("stop", "cl", home=home)
