"""The caller's end of a supervisor's events pipe: its words go to the
``upsonic_server_manager`` logger (library code never prints), and the
supervisor, a child of this process while it lives, is reaped when it ends."""

from __future__ import annotations

import logging
import os
import threading

logger = logging.getLogger("upsonic_server_manager")

_LEVELS = {"info": logging.INFO, "warning": logging.WARNING}


def _unescape(text: str) -> str:
    out, chars = [], iter(text)
    for c in chars:
        if c != "\\":
            out.append(c)
            continue
        nxt = next(chars, "\\")
        out.append({"n": "\n", "r": "\r"}.get(nxt, nxt))
    return "".join(out)


def parse_event(raw: bytes) -> tuple[str, str]:
    """(kind, text) of one events line: ("log", message), ("ready", "PID
    PORT"), ("done", ""), ("failed", ""), ("stopped", ""), ("error", ...)."""
    line = raw.decode("utf-8", "replace").rstrip("\n")
    kind, _, rest = line.partition(" ")
    if kind == "log":
        level, _, msg = rest.partition(" ")
        return kind, _unescape(msg)
    return kind, rest


def _relay(name: str, pidfd: int, fd: int) -> None:
    with open(fd, "rb", buffering=0, closefd=True) as pipe:
        buf = b""
        while True:
            try:
                chunk = pipe.read(4096)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for raw in lines:
                kind, text = parse_event(raw)
                if kind == "log":
                    level = raw.split(b" ", 2)[1].decode()
                    logger.log(_LEVELS.get(level, logging.INFO), "%s", text)
                elif kind == "failed":
                    logger.error(
                        "%s: supervision gave up; the server is down (state 'failed')", name
                    )
    # The supervisor closed its end: it exited (or is about to). Reap it if
    # it is still our child (stop() may have done so already); through its
    # pidfd, so a reused PID is never waited for.
    try:
        os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
    except (ChildProcessError, OSError):
        pass
    finally:
        os.close(pidfd)


def follow(name: str, pid: int, fd: int) -> None:
    """Starts relaying supervisor ``pid``'s events from pipe ``fd``."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:  # already gone and reaped by a stop()
        os.close(fd)
        return
    threading.Thread(
        target=_relay, args=(name, pidfd, fd), name=f"usm-supervisor-{name}", daemon=True
    ).start()
