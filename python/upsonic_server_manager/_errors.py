"""Exceptions raised by :class:`ServerManager`.

Every class derives from :class:`RuntimeError`, so ``except RuntimeError``
written for upsonic's original ``ServerManager`` keeps working.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence


class PortHolder(NamedTuple):
    """A process holding a listening socket that clashes with the port."""

    pid: int
    name: str
    user: str
    address: str
    same_user: bool
    uid: int


class ServerManagerError(RuntimeError):
    """Base class of every error the server manager raises at run time."""


class PortInUseError(ServerManagerError):
    """The port is held by a process that may not or could not be stopped."""

    def __init__(self, message: str, *, port: int, holders: Sequence[tuple] = ()) -> None:
        super().__init__(message)
        self.port = port
        self.holders: list[PortHolder] = [PortHolder(*h) for h in holders]


class StartError(ServerManagerError):
    """The server exited (or could not be launched) before it was ready."""

    def __init__(
        self,
        message: str,
        *,
        exit_code: Optional[int] = None,
        stderr_tail: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.stderr_tail = stderr_tail


class StartTimeoutError(StartError, TimeoutError):
    """The server did not listen within ``start_timeout``; it was stopped."""

    def __init__(self, message: str, *, stderr_tail: Optional[str] = None) -> None:
        super().__init__(message, exit_code=None, stderr_tail=stderr_tail)
