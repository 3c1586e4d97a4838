"""What every command shares: exit codes, the two errors `main` turns into
messages (a usage error, an unknown NAME) and finding a recorded server."""

from __future__ import annotations

import argparse
import os

from .. import ServerManager, list_records

TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Optional, Sequence


EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3  # LSB status: "program is not running"
EXIT_UNKNOWN = 4  # LSB status: "program or service status is unknown"
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """Bad command-line input: exit 2 with the usage line and the problem."""

    def __init__(self, message: str, usage: str = "") -> None:
        super().__init__(message)
        self.usage = usage


class UnknownName(Exception):
    """A NAME that no record knows: the known names, and a non-zero exit."""

    def __init__(self, name: str, known: Sequence[str], where: str) -> None:
        listed = f"known: {', '.join(known)}" if known else f"no servers recorded in {where}"
        super().__init__(f"no server named {name!r} ({listed})")


def _pid_dir_text(args: argparse.Namespace) -> str:
    return args.pid_dir or os.path.expanduser("~")


def _known(args: argparse.Namespace) -> list[str]:
    """Every name recorded, running or kept after a stop."""
    return list_records(args.pid_dir, stopped=True)


def _recorded(args: argparse.Namespace, name: str) -> Optional[ServerManager]:
    """The manager recorded as ``name``; UnknownName if no record knows it."""
    known = _known(args)
    if name not in known:
        raise UnknownName(name, known, _pid_dir_text(args))
    try:
        return ServerManager.from_record(name, args.pid_dir)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _one_name_or_all(args: argparse.Namespace) -> None:
    if bool(args.name) == bool(args.all):
        raise UsageError(f"{args.command}: give a NAME or --all (not both)")
