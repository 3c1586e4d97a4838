"""Why a server failed to start, told to its manager from inside the server.

Installed by our launcher (``_launch``, in every process that serves: the
server and each of its workers) and by the warm-start child (``_preload``).
Whatever the output mode (the caller's terminal or log files), a process
that fails before serving sends one datagram to the manager's ready socket
(named in ``_core.READY_ENV``), made by ``_core.failed_report``: its launch,
its PID and TEXT, uvicorn's error records of this process and the
exception, as its stderr would show them; the manager (``src/why.rs``)
finds the server's own error line in it. A failure is: importing or loading the app failed
(``Config.load``), or uvicorn's startup (the lifespan) failed.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import traceback

import uvicorn.config
import uvicorn.server

from upsonic_server_manager._core import LAUNCH_ENV, READY_ENV, failed_report

_records: list[str] = []
_sent = False


class _Keep(logging.Handler):
    """Keeps this process's last error records (uvicorn logs the real
    error, then "Application startup failed. Exiting.")."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = f"{record.levelname}:    {record.getMessage()}"
            if record.exc_info and record.exc_info[1] is not None:
                text += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
            _records.append(text)
            del _records[:-8]
        except Exception:  # noqa: BLE001 - reporting must never break the server
            pass


def report_failure(exc: BaseException | None = None, text: str | None = None) -> None:
    """Tells the manager this process failed (once per process); a no-op
    without a ready socket."""
    global _sent
    name = os.environ.get(READY_ENV)
    if _sent or not name:
        return
    _sent = True
    parts = list(_records)
    if text:
        parts.append(text)
    if exc is not None and not isinstance(exc, SystemExit):
        parts.append(
            "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()
        )
    if not parts and isinstance(exc, SystemExit):
        parts.append(f"it exited with code {exc.code}")
    # Lone surrogates (undecodable bytes in a path) as escapes: valid UTF-8.
    body = "\n".join(parts).encode(errors="backslashreplace").decode()
    message = failed_report(os.environ.get(LAUNCH_ENV, ""), os.getpid(), body)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        try:
            s.sendto(message, "\0" + name)
        except OSError:
            pass  # the manager stopped waiting; nothing to tell


def _failed_exit(exc: BaseException) -> bool:
    return not isinstance(exc, KeyboardInterrupt) and not (
        isinstance(exc, SystemExit) and exc.code in (0, None)
    )


def install() -> None:
    """Wraps uvicorn's logging set-up, app loading and startup (once)."""
    config_cls = uvicorn.config.Config
    if getattr(config_cls, "_upsonic_reports", False):
        return
    config_cls._upsonic_reports = True  # type: ignore[attr-defined]
    configure = config_cls.configure_logging
    load = config_cls.load
    startup = uvicorn.server.Server.startup

    # functools.wraps: what is wrapped stays visible (tests/_uvicorn_probe.py
    # reads uvicorn's own startup through it).
    @functools.wraps(configure)
    def configure_logging(self):  # type: ignore[no-untyped-def]
        configure(self)
        log = logging.getLogger("uvicorn.error")
        if not any(isinstance(h, _Keep) for h in log.handlers):
            log.addHandler(_Keep())

    @functools.wraps(load)
    def load_or_report(self):  # type: ignore[no-untyped-def]
        try:
            load(self)
        except BaseException as e:
            if _failed_exit(e):
                report_failure(e)
            raise

    @functools.wraps(startup)
    async def startup_or_report(self, sockets=None):  # type: ignore[no-untyped-def]
        try:
            await startup(self, sockets=sockets)
        except BaseException as e:
            # uvicorn >= 0.35 exits here when the lifespan failed.
            if _failed_exit(e):
                report_failure(e)
            raise
        if not self.started and getattr(self.lifespan, "should_exit", False):
            report_failure()  # older uvicorn returns instead

    config_cls.configure_logging = configure_logging  # type: ignore[method-assign]
    config_cls.load = load_or_report  # type: ignore[method-assign]
    uvicorn.server.Server.startup = startup_or_report  # type: ignore[method-assign]
    _into_workers()


def _into_workers() -> None:
    """uvicorn's workers are fresh interpreters: their target goes through
    `_worker`, which installs this module there too (the launcher's workers
    import it anyway; a warm child running uvicorn's own module needs it)."""
    try:
        import uvicorn.supervisors.multiprocess as mp
    except ImportError:
        return
    spawn = mp.get_subprocess

    def get_subprocess(config, target, sockets):  # type: ignore[no-untyped-def]
        return spawn(config=config, target=functools.partial(_worker, target), sockets=sockets)

    mp.get_subprocess = get_subprocess  # type: ignore[assignment]


def _worker(target, sockets=None):  # type: ignore[no-untyped-def]
    """A worker's target, in the worker: reports on, then uvicorn's."""
    install()
    log = logging.getLogger("uvicorn.error")  # its logging is set up already
    if not any(isinstance(h, _Keep) for h in log.handlers):
        log.addHandler(_Keep())
    target(sockets=sockets)
