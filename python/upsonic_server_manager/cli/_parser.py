"""The command line's parser, built from the spec's table (``_core.OPTIONS``:
every option's flag, default, help, metavar and group) and the CLI table
``_CLI`` (how a shell word becomes the option's value): `start`, `run` and
`systemd-unit` accept the same options with the same names and defaults.
This is the CLI's one place that names configuration keys."""

from __future__ import annotations

import argparse

from .. import ServerManager, _cli_sets, _cli_warm, _core
from ._common import UsageError

TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Any, Optional


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default, unless it has none or the text says it."""

    def _get_help_string(self, action: argparse.Action) -> Optional[str]:
        text = action.help or ""
        if action.default is None or action.default is False or "(default" in text:
            return text
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message, self.format_usage().strip())


def _env_pair(text: str) -> tuple[str, str]:
    if "=" not in text or text.startswith("="):
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    return k, v


def _positive(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return v


def _add_server_args(p: argparse.ArgumentParser, log_dir: Optional[str] = "logs") -> None:
    """APP, then every option of the spec that has a flag (``_core.OPTIONS``:
    its flag, default, help, metavar and group), read as ``_CLI`` says:
    `start`, `run` and `systemd-unit` accept the same options."""
    p.add_argument("app", metavar="APP", help="the ASGI app as module:attribute, e.g. myapi:app")
    groups: dict[str, Any] = {}
    for o in _core.OPTIONS:
        if o["flag"] is None:
            continue
        how = dict(_CLI.get(o["name"], {}))
        if o["name"] == "log_dir":
            how["default"] = log_dir
        title = o["group"]
        where = groups.setdefault(title, p.add_argument_group(title) if title else p)
        if o["metavar"] and "action" not in how or how.get("action") == "append":
            how.setdefault("metavar", o["metavar"])
        how.setdefault("default", o["default"])
        how.setdefault("help", o["help"])
        where.add_argument(o["flag"], dest=o["name"], **how)


def _seconds_or_zero(text: str) -> float:
    return 0.0 if text.strip() in ("0", "0.0") else _positive(text)


def _limit(text: str) -> Optional[int]:
    if text.lower() in ("none", "never", "0"):
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from None


def _bytes(text: str) -> object:
    """A size: bytes as an int, else the text ("512MiB") for the core."""
    return int(text) if text.isdigit() else text


_DEFAULT_LOG_DIR: str = next(o["default"] for o in _core.OPTIONS if o["name"] == "log_dir")


# How the command line reads the spec's options (the CLI table): a type,
# an action or a default of its own where a shell word differs from a
# Python value; the names, flags, help and other defaults are the spec's.
_CLI: dict[str, dict[str, Any]] = {
    "host": {"default": "127.0.0.1"},
    "port": {"type": int, "required": True},
    "name": {
        "default": None,
        "help": "server name, used for its PID record and log files (default: APP's module)",
    },
    "workers": {"type": int},
    "env": {"type": _env_pair, "action": "append", "default": []},
    "start_timeout": {"type": _positive},
    "stop_timeout": {"type": _positive},
    "hold_socket": {"action": "store_true", "default": None},
    "restart": {"choices": ("no", "on-failure", "always")},
    "restart_delay": {"type": _seconds_or_zero},
    "restart_max_delay": {"type": _positive},
    "restart_limit": {"type": _limit},
    "stable_after": {"type": _seconds_or_zero},
    "health_interval": {"type": _positive},
    "health_timeout": {"type": _positive},
    "health_failures": {"type": int},
    "max_memory": {"type": _bytes},
    # The CLI supervises by default (issue 20): a server that outlives the
    # command has a parent that knows how it ended. The library's default
    # stays the original's (no supervisor).
    "supervise": {
        "action": argparse.BooleanOptionalAction,
        "default": True,
        "help": "run the per-server supervisor even without --restart: it records how each "
        "run ended and writes the logs (default: on; --no-supervise: the server alone, as "
        "the original starts it)",
    },
    "log_max_bytes": {"type": _bytes},
    "log_backup_count": {"type": int},
    "log_timestamps": {"action": "store_true"},
    "warm": {"action": "store_true"},
    "preload": {"action": "append", "default": []},
}


def _add_start_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true", help="stop programs of yours that hold the port")
    p.add_argument(
        "--redirect-output",
        action="store_true",
        help="write its output to log files instead of this terminal",
    )


def build_parser() -> argparse.ArgumentParser:
    fmt = _Help
    parser = _Parser(
        prog="upsonic-server",
        description="Start, stop and inspect uvicorn servers managed by upsonic-server-manager.",
        formatter_class=fmt,
    )
    from .. import __version__

    parser.add_argument(
        "--pid-dir", default=None, help="where PID records live (default: your home directory)"
    )
    parser.add_argument("--version", action="version", version=f"upsonic-server {__version__}")
    parser.add_argument("-f", "--file", default=None, metavar="FILE", help=_cli_sets.FILE_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def command(name: str, text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text, formatter_class=fmt)
        # Also accepted after the command; SUPPRESS keeps the one given before.
        p.add_argument("--pid-dir", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        return p

    p = command("start", "start a server and return once it is ready")
    _add_server_args(p)
    _add_start_args(p)

    p = command("stop", "stop a server (or every recorded one, concurrently)")
    p.add_argument("name", metavar="NAME", nargs="?", help="the server's name")
    _cli_sets.add_file_option(p)
    p.add_argument("--all", action="store_true", help="every recorded server, concurrently")

    p = command("restart", "stop a server and start it again as it was started")
    p.add_argument("name", metavar="NAME", nargs="?", help="the server's name")
    p.add_argument("--all", action="store_true", help="every running recorded server")

    p = command("reload", "a new generation on the held socket, then the old one stops")
    p.add_argument("name", metavar="NAME", help="the server's name")

    p = command("status", "show servers as a table (exit 3 if NAME is not running)")
    p.add_argument("name", metavar="NAME", nargs="?", help="only this server")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _cli_sets.add_file_option(p)

    p = command("logs", "print servers' output, stdout and stderr, each line marked")
    p.add_argument("name", metavar="NAME", nargs="?", help="only this server (default: all)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--stdout", action="store_true", help="only the standard output")
    which.add_argument("--stderr", action="store_true", help="only the standard error")
    p.add_argument(
        "-n",
        "--lines",
        type=int,
        default=20,
        metavar="LINES",
        help="lines of history per stream, spanning its rotated files",
    )
    _cli_sets.add_file_option(p, short=False)  # -f is --follow here

    p = command("diagnose", "print the diagnosis of a server as JSON")
    p.add_argument("name", metavar="NAME", help="the server's name")

    p = command("forget", "forget a stopped server (it leaves the status table)")
    p.add_argument("name", metavar="NAME", nargs="?", help="the server's name")
    p.add_argument("--all", action="store_true", help="every server that is not running")

    p = command("run", "run a server in the foreground (systemd, containers); SIGHUP reloads it")
    _add_server_args(p)
    _add_start_args(p)

    p = command("systemd-unit", "print a systemd unit that uses `run`")
    _add_server_args(p, log_dir=None)
    _add_start_args(p)
    p.add_argument("--user", default=None, help="the User= of the unit (default: you)")

    command("demo", "start the bundled demo app, request it, show status, stop it")
    _cli_sets.add_commands(command)  # up, down, config, export (docs/SETS.md)
    _cli_warm.add_command(command)  # warm, warm stop (docs/WARM.md)
    return parser


def _name_of(args: argparse.Namespace) -> str:
    """--name, else the module part of APP (`myapi.main:app` -> `myapi.main`)."""
    return args.name or args.app.split(":", 1)[0]


def _manager_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """ServerManager's keywords as the options of start, run and
    systemd-unit give them (uvicorn's own arguments come after ``--``):
    every option of the spec with a flag but the positional ones."""
    kw: dict[str, Any] = {
        o["name"]: getattr(args, o["name"])
        for o in _core.OPTIONS
        if o["flag"] is not None and not o["positional"]
    }
    kw["log_dir"] = args.log_dir or _DEFAULT_LOG_DIR
    kw["env"] = dict(args.env)
    kw["pid_dir"] = args.pid_dir
    if getattr(args, "uvicorn_args", None) is not None:
        kw["uvicorn_args"] = args.uvicorn_args
    return kw


def _manager_from_args(args: argparse.Namespace, **fixed: Any) -> ServerManager:
    """The manager the arguments describe, with ``fixed`` keywords the
    command itself decides (not options); a rejected value is a usage
    error."""
    try:
        return ServerManager(
            args.app,
            args.host,
            args.port,
            _name_of(args),
            **_manager_kwargs(args),
            # An operator's server keeps how each run ended (status lists it).
            history=True,
            **fixed,
        )
    except ValueError as e:
        raise UsageError(str(e)) from None
