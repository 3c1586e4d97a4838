"""Exceptions raised by :class:`ServerManager`.

Every class derives from :class:`RuntimeError`, so ``except RuntimeError``
written for upsonic's original ``ServerManager`` keeps working.
"""

from __future__ import annotations

# typing is imported for type checkers only: at run time it costs milliseconds.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Any, Optional, Sequence


class PortHolder(tuple):
    """A process holding a listening socket that clashes with the port:
    ``(pid, name, user, address, same_user, uid)``, a named tuple.

    Hand-written rather than ``typing.NamedTuple`` so that importing the
    package does not pull in ``typing`` and ``collections``.
    """

    __slots__ = ()
    _fields = ("pid", "name", "user", "address", "same_user", "uid")

    def __new__(
        cls, pid: int, name: str, user: str, address: str, same_user: bool, uid: int
    ) -> PortHolder:
        return tuple.__new__(cls, (pid, name, user, address, same_user, uid))

    @property
    def pid(self) -> int:
        return self[0]

    @property
    def name(self) -> str:
        return self[1]

    @property
    def user(self) -> str:
        return self[2]

    @property
    def address(self) -> str:
        return self[3]

    @property
    def same_user(self) -> bool:
        return self[4]

    @property
    def uid(self) -> int:
        return self[5]

    def _asdict(self) -> dict[str, Any]:
        return dict(zip(self._fields, self))

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in zip(self._fields, self))
        return f"PortHolder({inner})"

    def __getnewargs__(self) -> tuple:
        return tuple(self)


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
