"""Several servers as one unit, and process-exit hooks (the guide's
``start_server_cluster``, ``ServerController`` and Docker handlers, built in)."""

from __future__ import annotations

import atexit
import signal
import sys
import threading

from ._errors import ServerManagerError
from ._manager import ServerManager

# typing is imported for type checkers only: at run time it costs milliseconds.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from types import FrameType, TracebackType
    from typing import Iterable, Iterator, Optional, Union

    from ._manager import ServerStatus

    Stoppable = Union[ServerManager, "ServerGroup"]


class ServerGroup:
    """Start servers in parallel and stop them in reverse order.

    ``start()`` returns once every server is ready; if any fails, the ones
    that started are stopped again and :class:`ServerManagerError` is raised,
    naming each failure (the first is its ``__cause__``).
    """

    def __init__(self, managers: Iterable[ServerManager]) -> None:
        self.managers: list[ServerManager] = list(managers)
        names = [m.name for m in self.managers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"managers must have distinct names; repeated: {', '.join(dupes)}")

    def start(self, redirect_output: bool = False, force: bool = False) -> None:
        if not self.managers:
            return
        # The core releases the GIL while it waits, so threads give real
        # parallelism here.
        outcome: dict[int, BaseException] = {}

        def run(i: int, m: ServerManager) -> None:
            try:
                m.start(redirect_output, force)
            except BaseException as e:  # noqa: BLE001 - reported below
                outcome[i] = e

        threads = [
            threading.Thread(target=run, args=(i, m), name=f"start-{m.name}")
            for i, m in enumerate(self.managers)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        errors = [(self.managers[i], e) for i, e in sorted(outcome.items())]
        if errors:
            for m in reversed(self.managers):
                try:
                    m.stop()
                except Exception:  # noqa: BLE001 - keep rolling back the rest
                    pass
            detail = "; ".join(f"{m.name}: {e}" for m, e in errors)
            raise ServerManagerError(f"Failed to start server group: {detail}") from errors[0][1]

    def stop(self) -> None:
        """Stop every server, last first; raises the first failure at the end."""
        first: Optional[BaseException] = None
        for m in reversed(self.managers):
            try:
                m.stop()
            except Exception as e:  # noqa: BLE001 - stop the others regardless
                first = first or e
        if first is not None:
            raise first

    def is_running(self) -> bool:
        """True when every server runs."""
        return bool(self.managers) and all(m.is_running() for m in self.managers)

    def status(self) -> dict[str, ServerStatus]:
        return {m.name: m.status() for m in self.managers}

    def __enter__(self) -> ServerGroup:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.stop()

    def __iter__(self) -> Iterator[ServerManager]:
        return iter(self.managers)

    def __len__(self) -> int:
        return len(self.managers)


def _stop_all(items: Iterable[Stoppable]) -> None:
    for item in reversed(list(items)):
        try:
            item.stop()
        except Exception as e:  # noqa: BLE001 - at exit, report and go on
            print(f"upsonic-server-manager: stopping {item!r} failed: {e}", file=sys.stderr)


def stop_on_exit(*managers: Stoppable) -> None:
    """Stop these servers (last first) when the interpreter exits normally."""
    atexit.register(_stop_all, managers)


def install_signal_handlers(*managers: Stoppable, exit_code: int = 0) -> None:
    """On SIGTERM or SIGINT, stop these servers (last first) and exit with
    ``exit_code``: what a container's main process must do."""

    def handler(signum: int, frame: Optional[FrameType]) -> None:
        # A second signal while stopping must not interrupt the cleanup.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _stop_all(managers)
        sys.exit(exit_code)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
