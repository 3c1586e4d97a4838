"""The warm-start preloader's side of the wire: one JSON line per message,
decoded and encoded by ``_core`` (``src/warm/request.rs`` defines the
format; nothing of it is spelled here). A fork request carries the server's
descriptors (SCM_RIGHTS) with its first bytes."""

from __future__ import annotations

import array
import os
import socket
from dataclasses import dataclass

from upsonic_server_manager._core import (
    LAUNCHER_MODULE,
    WARM_FDS,
    WarmAsk,
    warm_decode_ask,
)

#: The modules a server may be run as (``python -m MODULE``).
RUNNABLE = ("uvicorn", LAUNCHER_MODULE)
#: The longest message accepted, in bytes (a request carries the environment).
MAX_LINE = 4 << 20
#: Seconds a peer may take to send its message or its word.
PEER_TIMEOUT = 5.0


class Refused(Exception):
    """The preloader cannot serve: the reason goes to the manager's log."""


@dataclass
class Fork:
    """One server to fork, as the manager sent it, with its descriptors."""

    cwd: bytes
    umask: int
    fds: dict[str, int]
    python: bytes
    argv: list[str]
    env: dict[bytes, bytes]


def read_line(conn: socket.socket, fds: list[int] | None = None) -> bytes:
    """One line from `conn` (within ``PEER_TIMEOUT``), descriptors that came
    with it appended to `fds` (closed when `fds` is None). Raises Refused."""
    conn.settimeout(PEER_TIMEOUT)
    data = b""
    while not data.endswith(b"\n"):
        if len(data) > MAX_LINE:
            raise Refused("a message longer than the limit")
        chunk, anc, _flags, _addr = conn.recvmsg(65536, socket.CMSG_SPACE(8 * 4))
        for level, kind, raw in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                got = array.array("i")
                got.frombytes(raw[: len(raw) - len(raw) % got.itemsize])
                if fds is None:
                    for fd in got:
                        os.close(fd)
                else:
                    fds.extend(got)
        if not chunk:
            raise Refused("the manager closed the connection")
        data += chunk
    return data


def read_ask(conn: socket.socket) -> tuple[WarmAsk, list[int]]:
    """The next message and the descriptors sent with it. Raises Refused
    (the descriptors closed)."""
    fds: list[int] = []
    try:
        return warm_decode_ask(read_line(conn, fds)), fds
    except (Refused, OSError, ValueError) as e:
        for fd in fds:
            os.close(fd)
        raise Refused(str(e)) from e


def fork_request(ask: WarmAsk, fds: list[int]) -> Fork:
    """The server a fork message describes. Raises Refused (the caller
    closes the descriptors)."""
    names = list(ask.fd_names)
    if len(names) != len(fds) or any(n not in WARM_FDS for n in names):
        raise Refused(f"{len(fds)} descriptors for {names}")
    argv = list(ask.argv)
    if len(argv) < 2 or argv[0] != "-m" or argv[1] not in RUNNABLE:
        raise Refused(f"cannot run {argv[:2]!r}")
    return Fork(
        cwd=ask.cwd,
        umask=ask.umask,
        fds=dict(zip(names, fds)),
        python=ask.python,
        argv=argv,
        env=dict(ask.env),
    )


def send(conn: socket.socket, line: bytes) -> None:
    """Sends one encoded line; a peer gone is not an error here."""
    try:
        conn.sendall(line)
    except OSError:
        pass
