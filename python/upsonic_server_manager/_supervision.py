"""The caller's end of a supervisor's events pipe: its words go to the
``upsonic_server_manager`` logger (library code never prints), and the
supervisor, a child of this process while it lives, is reaped when it ends.

An event is one JSON object per line (``src/protocol/events.rs``); every
key, kind and level name comes from ``_core``, never spelled here."""

from __future__ import annotations

import json
import logging
import os
import threading
from typing import Any

from ._core import (
    EVENT_FAILED,
    EVENT_KIND,
    EVENT_LEVEL,
    EVENT_LEVEL_INFO,
    EVENT_LEVEL_WARNING,
    EVENT_LOG,
    EVENT_MESSAGE,
)

logger = logging.getLogger("upsonic_server_manager")

_LEVELS = {EVENT_LEVEL_INFO: logging.INFO, EVENT_LEVEL_WARNING: logging.WARNING}


def parse_event(raw: bytes) -> dict[str, Any]:
    """One events line as a dict (its kind under ``_core.EVENT_KIND``: one of
    ``_core.EVENT_READY``, ``EVENT_LOG``, ``EVENT_ERROR``, ``EVENT_DONE``,
    ``EVENT_FAILED``, ``EVENT_STOPPED``); an empty dict for a line that is not
    an event (never raises)."""
    try:
        event = json.loads(raw)
    except ValueError:  # json.JSONDecodeError and UnicodeDecodeError
        return {}
    return event if isinstance(event, dict) and isinstance(event.get(EVENT_KIND), str) else {}


def log_level(event: dict[str, Any]) -> int:
    """The ``logging`` level of a log event (INFO for a level it does not know)."""
    level = event.get(EVENT_LEVEL)
    return _LEVELS.get(level, logging.INFO) if isinstance(level, str) else logging.INFO


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
                event = parse_event(raw)
                kind = event.get(EVENT_KIND)
                if kind == EVENT_LOG:
                    logger.log(log_level(event), "%s", event.get(EVENT_MESSAGE, ""))
                elif kind == EVENT_FAILED:
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
