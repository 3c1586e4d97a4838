"""Several servers as one unit, and process-exit hooks (the guide's
``start_server_cluster``, ``ServerController`` and Docker handlers, built in)."""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading

from ._errors import ServerManagerError
from ._manager import ServerManager, _StopsOnExit

# typing is imported for type checkers only: at run time it costs milliseconds.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from types import FrameType
    from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, Union

    from ._manager import ServerStatus

    Stoppable = Union[ServerManager, "ServerGroup"]
    Handler = Union[Callable[[int, Optional[FrameType]], Any], int, None]

ORDERS = ("parallel", "reverse")


def _check_order(order: str) -> str:
    if order not in ORDERS:
        raise ValueError(f"order must be 'parallel' or 'reverse', got {order!r}")
    return order


def _label(item: Stoppable) -> str:
    if isinstance(item, ServerGroup):
        return "[" + ", ".join(m.name for m in item.managers) + "]"
    return item.name


class ServerGroup(_StopsOnExit):
    """Start servers in parallel; stop them concurrently (or one by one).

    ``start()`` returns once every server is ready; if any fails, the ones
    that started are stopped again and :class:`ServerManagerError` is raised,
    naming each failure (the first is its ``__cause__``).

    ``stop()`` follows ``order``: ``"parallel"`` (the default) sends every
    server its SIGTERM at once and waits for all of them together, each one
    SIGKILLed at its own ``stop_timeout``; ``"reverse"`` stops them one after
    another, last first, for servers that need each other while they shut
    down. A member may itself be a group, which stops in its own order: so
    ``ServerGroup([backends, frontends], order="reverse")`` stops all the
    frontends together, then all the backends together.
    """

    def __init__(
        self,
        managers: Iterable[Union[ServerManager, ServerGroup]],
        *,
        order: str = "parallel",
    ) -> None:
        self.order = _check_order(order)
        members = list(managers)
        # ``managers`` stays a flat list of servers (what iteration, len() and
        # status() report); the nesting is kept only when there is some.
        self._members: Optional[list[Stoppable]] = None
        if any(isinstance(m, ServerGroup) for m in members):
            self._members = members
        self.managers: list[ServerManager] = []
        for m in members:
            if isinstance(m, ServerGroup):
                self.managers.extend(m.managers)
            else:
                self.managers.append(m)
        names = [m.name for m in self.managers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"managers must have distinct names; repeated: {', '.join(dupes)}")

    @classmethod
    def from_file(
        cls, path: Union[str, os.PathLike[str]] = "upsonic-servers.toml", env: Optional[str] = None
    ) -> ServerGroup:
        """The servers an ``upsonic-servers.toml`` file describes (see
        docs/SETS.md), with the overlays of environment ``env``: a group
        whose ``start()`` starts each server once those it ``depends_on``
        are ready and whose ``stop()`` stops dependents first. Raises
        ``ValueError`` (``SetFileError``) naming the file and the key."""
        from ._sets import load

        return load(os.fspath(path), env)

    def _items(self) -> list[Stoppable]:
        return list(self.managers) if self._members is None else list(self._members)

    def start(self, redirect_output: bool = False, force: bool = False) -> None:
        items = self._items()
        if not items:
            return
        # The core releases the GIL while it waits, so threads give real
        # parallelism here.
        outcome: dict[int, BaseException] = {}

        def run(i: int, m: Stoppable) -> None:
            try:
                m.start(redirect_output, force)
            except BaseException as e:  # noqa: BLE001 - reported below
                outcome[i] = e

        threads = [
            threading.Thread(target=run, args=(i, m), name=f"start-{_label(m)}")
            for i, m in enumerate(items)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        errors = [(items[i], e) for i, e in sorted(outcome.items())]
        if errors:
            try:
                stop_all(items, order=self.order)
            except ServerManagerError:
                pass  # the start failure is the one to report
            detail = "; ".join(f"{_label(m)}: {e}" for m, e in errors)
            raise ServerManagerError(f"Failed to start server group: {detail}") from errors[0][1]

    def stop(self, order: Optional[str] = None) -> None:
        """Stop every server, concurrently unless ``order`` (default: the
        group's) is ``"reverse"``. Every server is attempted; then
        :class:`ServerManagerError` names each failure."""
        stop_all(self._items(), order=self.order if order is None else order)

    def is_running(self) -> bool:
        """True when every server runs."""
        return bool(self.managers) and all(m.is_running() for m in self.managers)

    def status(self) -> dict[str, ServerStatus]:
        return {m.name: m.status() for m in self.managers}

    def __enter__(self) -> ServerGroup:
        self.start()
        return self

    def __iter__(self) -> Iterator[ServerManager]:
        return iter(self.managers)

    def __len__(self) -> int:
        return len(self.managers)

    def __repr__(self) -> str:
        return f"ServerGroup({_label(self)}, order={self.order!r})"


def stop_all(items: Iterable[Stoppable], *, order: str = "parallel") -> None:
    """Stop servers and groups, concurrently or (``order="reverse"``) one by
    one, last first.

    ``"parallel"`` starts one thread per server before waiting for any, so
    every SIGTERM goes out at once; each server is SIGKILLed at its own
    ``stop_timeout``. A group among ``items`` stops in its own order (a
    ``"reverse"`` group is one unit, stopped one by one, beside the rest).

    Every item is attempted; then :class:`ServerManagerError` names each
    failure, chained to the first. Ctrl-C (or SIGTERM) during a concurrent
    stop is held back until every server has stopped, then raised; during a
    one-by-one stop it interrupts the current server (killed at once, as
    ``ServerManager.stop()`` does) and the rest are stopped concurrently
    before it is raised. Either way no server is left running.
    """
    _check_order(order)
    given = list(items)
    if order == "parallel":
        units = _units(given, set())
        # One server needs no thread, and stays interruptible as
        # ServerManager.stop() is.
        failures = _stop_concurrently(units) if len(units) > 1 else _stop_in_turn(units)
    else:
        failures = _stop_in_turn(given[::-1])
    if failures:
        detail = "; ".join(f"{_label(m)}: {e}" for m, e in failures)
        raise ServerManagerError(f"Failed to stop servers: {detail}") from failures[0][1]


def _units(items: Iterable[Stoppable], seen: set[int]) -> list[Stoppable]:
    """What stops concurrently: every server of every ``"parallel"`` group,
    and each ``"reverse"`` group as a whole. Each object appears once."""
    out: list[Stoppable] = []
    for item in items:
        if isinstance(item, ServerGroup) and item.order == "parallel":
            out.extend(_units(item._items(), seen))
        elif id(item) not in seen:
            seen.add(id(item))
            out.append(item)
    return out


def _stop_in_turn(units: Sequence[Stoppable]) -> list[tuple[Stoppable, BaseException]]:
    failures: list[tuple[Stoppable, BaseException]] = []
    done = 0
    try:
        for u in units:
            try:
                u.stop()
            except Exception as e:  # noqa: BLE001 - stop the others regardless
                failures.append((u, e))
            done += 1
    except KeyboardInterrupt:
        # The interrupted server was killed by its own stop(); the user is
        # waiting, so the rest stop together (stop() again is harmless).
        _stop_concurrently(units[done:])
        raise
    return failures


def _stop_concurrently(units: Sequence[Stoppable]) -> list[tuple[Stoppable, BaseException]]:
    outcome: dict[int, BaseException] = {}

    def run(i: int, u: Stoppable) -> None:
        try:
            u.stop()
        except BaseException as e:  # noqa: BLE001 - reported by the caller
            outcome[i] = e

    threads = [
        threading.Thread(target=run, args=(i, u), name=f"stop-{_label(u)}")
        for i, u in enumerate(units)
    ]
    with _HeldSignals():
        started = 0
        try:
            for t in threads:
                t.start()
                started += 1
        except RuntimeError:
            # No new threads (interpreter shutdown, or a thread limit): the
            # rest are stopped here, one after another.
            for i in range(started, len(units)):
                run(i, units[i])
        for t in threads[:started]:
            t.join()
    return [(units[i], e) for i, e in sorted(outcome.items())]


class _HeldSignals:
    """Holds SIGINT and SIGTERM back while the stop threads are started and
    joined: a KeyboardInterrupt in between would leave servers without a
    stop, or the caller unaware of a failure. On exit the handlers are
    restored and a held signal is handled as it would have been (a Python
    handler is called, a default action is taken). Python runs signal
    handlers in the main thread only, so elsewhere there is nothing to hold."""

    def __enter__(self) -> _HeldSignals:
        self.saved: dict[int, Handler] = {}
        self.held: list[tuple[int, Optional[FrameType]]] = []
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                # None: a handler not installed from Python, which could not
                # be put back.
                if signal.getsignal(s) is None:
                    continue
                try:
                    self.saved[s] = signal.signal(s, self._hold)
                except ValueError:  # not the main interpreter: nothing to hold
                    break
        return self

    def _hold(self, signum: int, frame: Optional[FrameType]) -> None:
        if all(s != signum for s, _ in self.held):
            self.held.append((signum, frame))

    def __exit__(self, *exc: object) -> None:
        for s, h in self.saved.items():
            signal.signal(s, h)
        for s, frame in self.held:
            h = self.saved[s]
            if callable(h):
                h(s, frame)
            elif h == signal.SIG_DFL:
                signal.raise_signal(s)


def _stop_at_exit(items: Sequence[Stoppable], order: str) -> None:
    try:
        stop_all(items, order=order)
    except Exception as e:  # noqa: BLE001 - at exit, report and go on
        print(f"upsonic-server-manager: {e}", file=sys.stderr)


#: Signals that end a program by default and after which ``stop_on_exit``
#: stops its servers: systemd, Docker, CI runners and ``kill`` send SIGTERM;
#: a closed terminal or ssh session SIGHUP.
EXIT_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
#: What each of those signals did before ``stop_on_exit`` took it over.
_previous: dict[int, Handler] = {}
#: Everything ``stop_on_exit`` was given, as (servers, order).
_on_exit: list[tuple[Sequence[Stoppable], str]] = []


def _stop_registered() -> None:
    while _on_exit:
        items, order = _on_exit.pop()
        _stop_at_exit(items, order)


def _on_exit_signal(signum: int, frame: Optional[FrameType]) -> None:
    previous = _previous.get(signum, signal.SIG_DFL)
    if callable(previous):
        # The program's own handler first. If it exits (SystemExit), the
        # interpreter's exit stops the servers (atexit); if it returns, the
        # program chose to live on, and so do its servers.
        previous(signum, frame)
        return
    # The default action: the servers stop, then the program ends as that
    # signal would have ended it (its exit status says so).
    for s in EXIT_SIGNALS:
        signal.signal(s, signal.SIG_IGN)  # a second signal must not cut the stop short
    _stop_registered()
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except Exception:  # noqa: BLE001
            pass
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)


def stop_on_exit(*managers: Stoppable, order: str = "parallel") -> None:
    """Stop these servers (concurrently, or last first with
    ``order="reverse"``) when the program ends: at a normal interpreter exit
    (``atexit``) and on SIGTERM or SIGHUP. For those signals a handler the
    program installed before is called first (if it exits, the servers stop
    at that exit; if it returns, the program and its servers go on);
    otherwise the servers stop and the program then ends as the signal
    would have ended it. A signal the program ignores stays ignored. The
    signal handlers are installed only from the main thread (elsewhere,
    only the exit hook). A SIGKILLed program cannot run any of this: use
    ``ServerManager(..., stop_with_caller=True)``."""
    entry = (managers, _check_order(order))
    _on_exit.append(entry)
    atexit.register(_stop_at_exit_once, entry)
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in EXIT_SIGNALS:
        current = signal.getsignal(sig)
        if current is _on_exit_signal or current == signal.SIG_IGN:
            continue
        _previous[sig] = current
        signal.signal(sig, _on_exit_signal)


def _stop_at_exit_once(entry: tuple[Sequence[Stoppable], str]) -> None:
    if entry in _on_exit:
        _on_exit.remove(entry)
        _stop_at_exit(*entry)


def install_signal_handlers(
    *managers: Stoppable, exit_code: int = 0, order: str = "parallel"
) -> None:
    """On SIGTERM or SIGINT, stop these servers (concurrently, or last first
    with ``order="reverse"``) and exit with ``exit_code``: what a container's
    main process must do."""
    _check_order(order)

    def handler(signum: int, frame: Optional[FrameType]) -> None:
        # A second signal while stopping must not interrupt the cleanup.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _stop_at_exit(managers, order)
        sys.exit(exit_code)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
