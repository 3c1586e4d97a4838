"""Exceptions raised by :class:`ServerManager`.

Every class derives from :class:`RuntimeError`, so ``except RuntimeError``
written for upsonic's original ``ServerManager`` keeps working.
"""

from __future__ import annotations

# typing is imported for type checkers only: at run time it costs milliseconds.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Optional, Sequence

    from ._core import PortHolder


class ServerManagerError(RuntimeError):
    """Base class of every error the server manager raises at run time.

    ``errno`` is the operating system's error number when one caused it
    (the ``OSError`` is also its ``__cause__``), else None."""

    errno: Optional[int] = None


class PortInUseError(ServerManagerError):
    """The port is held by a process that may not or could not be stopped."""

    def __init__(
        self, message: str, *, port: int, holders: Sequence[PortHolder | tuple] = ()
    ) -> None:
        # The core is loaded by the time anything raises this; importing it
        # at the top would be circular (the core resolves these classes).
        from ._core import PortHolder

        super().__init__(message)
        self.port = port
        self.holders: list[PortHolder] = [
            h if isinstance(h, PortHolder) else PortHolder(*h) for h in holders
        ]


class StartError(ServerManagerError):
    """The server exited (or could not be launched) before it was ready.

    ``reason`` is the server's own error (``"ModuleNotFoundError: No module
    named 'x'"``, the exception behind a lifespan failure), which the
    message leads with; None when nothing said why. ``stderr_tail`` is its
    last error output (the log file's, or what it reported when its output
    went to the terminal), led by ``reason``; ``exit_code`` is uvicorn's,
    None when unknown or when a worker failed while uvicorn still ran."""

    def __init__(
        self,
        message: str,
        *,
        exit_code: Optional[int] = None,
        stderr_tail: Optional[str] = None,
        reason: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.stderr_tail = stderr_tail
        self.reason = reason


class StartTimeoutError(StartError, TimeoutError):
    """The server did not listen within ``start_timeout``; it was stopped."""

    def __init__(
        self, message: str, *, stderr_tail: Optional[str] = None, reason: Optional[str] = None
    ) -> None:
        super().__init__(message, exit_code=None, stderr_tail=stderr_tail, reason=reason)
