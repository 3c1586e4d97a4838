"""``upsonic-server``: start, stop and inspect servers from the shell, run one
in the foreground under systemd or in a container, or try the bundled demo.

A package by responsibility: ``_parser`` (the parser, built from the spec's
table), ``_servers`` (start, stop, restart, reload, forget, run),
``_inspect`` (status, logs, diagnose), ``_systemd`` (systemd-unit and its
quoting), ``_demo``, ``_common`` (exit codes, errors, records); here the
command table and ``main``, the entry point. The library's public API only."""

from __future__ import annotations

# Only what every command needs is imported at start-up: `upsonic-server
# status` is run by scripts and should start quickly. The rest is imported
# by the command that uses it.
import argparse
import signal
import sys

from .. import PortInUseError, _cli_sets, _cli_warm
from .._cli_output import for_the_shell
from ._common import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_NOT_RUNNING,
    EXIT_OK,
    EXIT_UNKNOWN,
    EXIT_USAGE,
    UnknownName,
    UsageError,
)
from ._demo import cmd_demo
from ._inspect import CPU_WINDOW, cmd_diagnose, cmd_logs, cmd_status
from ._parser import _manager_from_args, _manager_kwargs, build_parser
from ._servers import (
    cmd_forget,
    cmd_reload,
    cmd_restart,
    cmd_run,
    cmd_start,
    cmd_stop,
)
from ._systemd import _systemd_quote, cmd_systemd_unit

TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Callable, Optional, Sequence, TextIO


__all__ = [
    "CPU_WINDOW",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_RUNNING",
    "EXIT_OK",
    "EXIT_UNKNOWN",
    "EXIT_USAGE",
    "COMMANDS",
    "UnknownName",
    "UsageError",
    "_manager_from_args",
    "_manager_kwargs",
    "_systemd_quote",
    "build_parser",
    "main",
]

COMMANDS: dict[str, Callable[[argparse.Namespace, TextIO], int]] = {
    "start": cmd_start,
    "stop": cmd_stop,
    "restart": cmd_restart,
    "reload": cmd_reload,
    "status": cmd_status,
    "logs": cmd_logs,
    "diagnose": cmd_diagnose,
    "forget": cmd_forget,
    "run": cmd_run,
    "systemd-unit": cmd_systemd_unit,
    "demo": cmd_demo,
    "warm": _cli_warm.cmd_warm,
}


# The commands that start a server take uvicorn's own arguments after `--`
# (ServerManager's uvicorn_args; given, they replace the defaults).
_TAKE_UVICORN_ARGS = ("start", "run", "systemd-unit")


def _parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    words = list(sys.argv[1:] if argv is None else argv)
    rest: Optional[list[str]] = None
    if "--" in words:
        at = words.index("--")
        words, rest = words[:at], words[at + 1 :]
    args = build_parser().parse_args(words)
    if rest is not None:
        if args.command not in _TAKE_UVICORN_ARGS:
            raise UsageError(
                f"{args.command} takes no uvicorn arguments after --; "
                f"only {', '.join(_TAKE_UVICORN_ARGS)} do"
            )
        args.uvicorn_args = rest
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    out = sys.stdout
    args: Optional[argparse.Namespace] = None
    try:
        args = _parse(argv)
        if args.command in ("start", "restart", "reload"):
            # SIGTERM (`timeout`, `kill`, a CI runner) while a server starts
            # cleans up as Ctrl-C does, instead of leaving it coming up.
            signal.signal(signal.SIGTERM, _terminated)
        return (_cli_sets.dispatch(args) or COMMANDS[args.command])(args, out)
    except UsageError as e:
        if e.usage:
            print(e.usage, file=sys.stderr)
        print(f"upsonic-server: error: {for_the_shell(str(e))}", file=sys.stderr)
        return EXIT_USAGE
    except UnknownName as e:
        print(f"upsonic-server: {e}", file=sys.stderr)
        return EXIT_ERROR
    except PortInUseError as e:
        print(f"upsonic-server: {for_the_shell(str(e))}", file=sys.stderr)
        return EXIT_ERROR
    except RuntimeError as e:
        print(f"upsonic-server: {for_the_shell(str(e))}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt as e:
        command = getattr(args, "command", None)
        word = "terminated" if isinstance(e, _Terminated) else "interrupted"
        if command in ("start", "restart"):
            before = " (the running one had been stopped first)" if command == "restart" else ""
            print(
                f"\nupsonic-server: {word}; the half-started server was stopped{before}",
                file=sys.stderr,
            )
        if isinstance(e, _Terminated):
            # End as SIGTERM would have ended us (the shell sees 143).
            sys.stderr.flush()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.raise_signal(signal.SIGTERM)
        return EXIT_INTERRUPTED


class _Terminated(KeyboardInterrupt):
    """SIGTERM while a server starts: handled as Ctrl-C is."""


def _terminated(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one clean-up is enough
    raise _Terminated


if __name__ == "__main__":
    sys.exit(main())
