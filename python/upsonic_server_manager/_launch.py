"""The launcher of servers whose listening socket the manager holds, or
that stop with their caller:
``python -m upsonic_server_manager._launch FD -- APP [uvicorn options]``
(FD ``-``: no held socket, uvicorn binds as usual).

uvicorn's own ``--fd`` wraps the descriptor as AF_UNIX, so TCP_NODELAY is
never set on its connections; here the inherited descriptor becomes the TCP
socket it is and goes to uvicorn as ``sockets=[...]``, with uvicorn's own
command-line parsing and run() for everything else. Every process that
serves (the server, or each worker) reports readiness once uvicorn's startup,
lifespan included, is complete: a datagram to the manager's ready socket,
named in ``_core.READY_ENV``, carrying the launch marker and its PID
(``_core.ready_report`` makes it).
With a lifeline (``stop_with_caller``), the server's whole group stops when
the caller that started it ends. Every name and descriptor number shared
with the manager comes from ``_core`` (``src/protocol.rs``).
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from typing import Any

import uvicorn.config
import uvicorn.server
from uvicorn.main import main as uvicorn_command

from upsonic_server_manager._core import (
    LAUNCH_ENV,
    LIFELINE_ENV,
    LOG_ERR_ENV,
    LOG_OUT_ENV,
    NO_HELD_FD,
    READY_ENV,
    RECORD_ENV,
    ready_report,
    release_record,
)

from . import _report


class _FallbackStream:
    """``sys.stdout``/``sys.stderr`` of a server whose output goes through its
    supervisor's pipes: should the supervisor die (the pipe breaks), the
    descriptor is pointed at the log file itself and writing goes on, so a
    route that prints does not fail with BrokenPipeError."""

    def __init__(self, stream: Any, path: str) -> None:
        self._stream = stream
        self._path = path

    def _reopen(self) -> None:
        fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.dup2(fd, self._stream.fileno())
        finally:
            os.close(fd)

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            # The text is in the stream's buffer: it goes to the file now.
            self._reopen()
            self._stream.flush()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._reopen()
            self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _fall_back_to_the_log_files() -> None:
    # Module level: uvicorn's spawned workers import this module too, and
    # its logging takes sys.stderr when it is configured, after this.
    for var, attr in ((LOG_OUT_ENV, "stdout"), (LOG_ERR_ENV, "stderr")):
        path = os.environ.get(var)
        stream = getattr(sys, attr)
        if path and stream is not None and not isinstance(stream, _FallbackStream):
            setattr(sys, attr, _FallbackStream(stream, path))


_fall_back_to_the_log_files()

# Why a process fails to start goes to the manager (before `startup` is
# wrapped again below, for readiness).
_report.install()

_held: socket.socket | None = None
_startup = uvicorn.server.Server.startup
_shutdown = uvicorn.server.Server.shutdown
_run = uvicorn.server.Server.run

#: How long a stopping generation keeps connections it accepted but has not
#: yet received a byte on, so that their request arrives and is answered.
LINGER = 1.0
SEEN = "_upsonic_seen_data"


def _mark_seen(protocol_class: Any) -> None:
    """Notes on each connection that data arrived (its first request did)."""
    original = protocol_class.data_received

    def data_received(self, data: bytes) -> None:  # type: ignore[no-untyped-def]
        setattr(self, SEEN, True)
        original(self, data)

    protocol_class.data_received = data_received


for _module, _name in (
    ("uvicorn.protocols.http.h11_impl", "H11Protocol"),
    ("uvicorn.protocols.http.httptools_impl", "HttpToolsProtocol"),
):
    try:
        _mark_seen(getattr(__import__(_module, fromlist=[_name]), _name))
    except (ImportError, AttributeError):
        pass  # that HTTP implementation is not installed


def _report_ready() -> None:
    name = os.environ.get(READY_ENV)
    if not name:
        return
    message = ready_report(os.environ.get(LAUNCH_ENV, ""), os.getpid())
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        try:
            s.sendto(message, "\0" + name)
        except OSError:
            pass  # the manager stopped waiting; nothing to tell


async def _startup_then_report(self: uvicorn.server.Server, sockets=None) -> None:  # type: ignore[no-untyped-def]
    await _startup(self, sockets=sockets)
    if self.started:
        _report_ready()


async def _stop_accepting_then_shutdown(self: uvicorn.server.Server, sockets=None) -> None:  # type: ignore[no-untyped-def]
    # The socket is shared with the next generation: stop accepting first,
    # then let connections accepted a moment ago deliver their request
    # (uvicorn's shutdown closes a connection with no request in flight,
    # which a client that just sent one sees as a dropped connection).
    # Connections that already served requests (idle keep-alive) are not
    # waited for.
    for server in getattr(self, "servers", []):
        server.close()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LINGER
    while loop.time() < deadline and any(
        not getattr(c, SEEN, False) for c in self.server_state.connections
    ):
        await asyncio.sleep(0.005)
    await _shutdown(self, sockets=sockets)


def _run_on_held(self: uvicorn.server.Server, sockets=None) -> None:  # type: ignore[no-untyped-def]
    # A worker is handed its sockets by uvicorn; the single server gets ours.
    if sockets is None and _held is not None:
        sockets = [_held]
    _run(self, sockets=sockets)


def _bind_held(self: uvicorn.config.Config) -> socket.socket:
    assert _held is not None
    return _held


# Module level, so that uvicorn's spawned workers (which import this module
# as __mp_main__) report their readiness too.
uvicorn.server.Server.startup = _startup_then_report  # type: ignore[method-assign]
uvicorn.server.Server.shutdown = _stop_accepting_then_shutdown  # type: ignore[method-assign]


def _watch_lifeline() -> None:
    """With a lifeline (the read end of a pipe whose write ends the program
    that wanted this server holds): when it reads end-of-file, that program
    is gone, even SIGKILLed, and this server stops (its whole group: the
    workers too). A thread of this process, which lives as long as it does."""
    raw = os.environ.pop(LIFELINE_ENV, None)
    pid_file = os.environ.pop(RECORD_ENV, None)
    if raw is None:
        return
    fd = int(raw)
    os.set_inheritable(fd, False)

    def watch() -> None:
        import signal
        import time

        try:
            while os.read(fd, 4096):
                pass
        except OSError:
            pass  # not readable as a lifeline: never outlive the owner unnoticed
        if pid_file:
            # Stopping with the caller is a stop, not a death: the record
            # goes (as after stop()), so the name is not listed as "died".
            try:
                release_record(pid_file)
            except Exception:  # noqa: BLE001 - the stop below matters more
                pass
        os.killpg(0, signal.SIGTERM)
        time.sleep(5)
        os.killpg(0, signal.SIGKILL)

    import threading

    threading.Thread(target=watch, name="upsonic-lifeline", daemon=True).start()


def main(argv: list[str]) -> None:
    global _held
    if len(argv) < 3 or argv[1] != "--":
        sys.exit("usage: python -m upsonic_server_manager._launch FD -- APP [uvicorn options]")
    _watch_lifeline()
    if argv[0] != NO_HELD_FD:
        # socket(fileno=...) reads the family and type from the descriptor:
        # TCP over IPv4 or IPv6, so asyncio sets TCP_NODELAY on each connection.
        _held = socket.socket(fileno=int(argv[0]))
        _held.set_inheritable(False)
        uvicorn.server.Server.run = _run_on_held  # type: ignore[method-assign]
        uvicorn.config.Config.bind_socket = _bind_held  # type: ignore[method-assign]
    try:
        uvicorn_command.main(args=argv[2:], prog_name="uvicorn")
    except BaseException as e:
        # What escaped uvicorn (a failure it did not log) goes to the manager
        # too; a usage error is reported by click itself as exit code 2.
        if _report._failed_exit(e):
            _report.report_failure(e)
        raise


if __name__ == "__main__":
    main(sys.argv[1:])
