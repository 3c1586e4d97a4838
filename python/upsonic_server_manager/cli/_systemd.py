"""`systemd-unit`: a unit file that runs one server with `run`, and
quoting a word as systemd reads it (also used by `export systemd`)."""

from __future__ import annotations

import argparse
import os
import sys

from .. import _cli_sets
from .._cli_output import fmt_address
from .._spec import K
from ._common import EXIT_OK
from ._parser import _manager_from_args, _manager_kwargs, _name_of

TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import TextIO


def _systemd_quote(word: str, dollars: bool = True) -> str:
    """One word as systemd reads it in a unit file (not as a shell would):
    specifiers (%) and, in ExecStart=, variables ($) doubled; backslashes and
    quotes escaped; quoted when it holds anything but plain characters."""
    text = word.replace("%", "%%")
    if dollars:
        text = text.replace("$", "$$")
    if text and all(c.isalnum() or c in "-_./:=@+," for c in text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def cmd_systemd_unit(args: argparse.Namespace, out: TextIO) -> int:
    name = _name_of(args)
    m = _manager_from_args(args)  # validates every argument
    import pwd

    user = args.user or pwd.getpwuid(os.getuid()).pw_name
    cwd = os.path.abspath(args.cwd or os.getcwd())
    # Records and logs in directories systemd creates for the service, owned
    # by its user, unless given: the user's home may not be writable (or exist).
    directories = ""
    if args.pid_dir:
        pid_dir = os.path.abspath(args.pid_dir)
    else:
        pid_dir = f"/run/upsonic-{name}"
        directories += f"RuntimeDirectory=upsonic-{name}\n"
    if args.log_dir:
        log_dir = os.path.join(cwd, args.log_dir)
    else:
        log_dir = f"/var/log/upsonic-{name}"
        directories += f"LogsDirectory=upsonic-{name}\n"
    # Every option given reaches `run`, spelled as `run` spells it (derived
    # from the parser, as `export systemd` does for a file's servers).
    from types import SimpleNamespace

    kw = {
        k: v
        for k, v in _manager_kwargs(args).items()
        if k not in (K.pid_dir, K.log_dir, K.cwd, K.env)  # the unit's own lines
    }
    spec = SimpleNamespace(
        name=name,
        origin={},
        kwargs={K.app_path: args.app, K.host: args.host, K.port: args.port, **kw},
    )
    run = [sys.executable, "-m", "upsonic_server_manager", "--pid-dir", pid_dir, "run"]
    extra = ["--log-dir", log_dir, "--redirect-output"] + (["--force"] if args.force else [])
    run += _cli_sets.run_arguments(spec, extra)
    env_lines = "".join(
        f"Environment={_systemd_quote(f'{k}={v}', dollars=False)}\n"
        for k, v in [("PYTHONUNBUFFERED", "1")] + args.env
    )
    exec_start = " ".join(_systemd_quote(a) for a in run)
    # `run` reloads on SIGHUP when the server holds its socket (as a
    # supervised or port-0 server does by default).
    reload_line = "ExecReload=/bin/kill -HUP $MAINPID\n" if m.hold_socket else ""
    unit = f"""\
# systemd unit for upsonic server {name!r}.
# Install it with:
#   sudo tee /etc/systemd/system/upsonic-{name}.service < this-file
#   sudo systemctl daemon-reload && sudo systemctl enable --now upsonic-{name}
# `run` reports READY=1 once the server listens and stops it on SIGTERM.
[Unit]
Description=upsonic server {name} ({args.app} on {fmt_address(args.host, args.port)})
After=network.target

[Service]
Type=notify
NotifyAccess=main
User={user}
WorkingDirectory={cwd.replace("%", "%%")}
{directories}{env_lines}ExecStart={exec_start}
{reload_line}Restart=on-failure
RestartSec=2s
KillMode=mixed
TimeoutStopSec={int(args.stop_timeout) + 10}

[Install]
WantedBy=multi-user.target
"""
    out.write(unit)
    return EXIT_OK
