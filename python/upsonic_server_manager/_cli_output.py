"""What ``upsonic-server`` prints: durations, sizes, the status table, the
spinner, and log lines from several files at once."""

from __future__ import annotations

import os
import time

from ._spec import K

TYPE_CHECKING = False

if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any, Callable, Optional, Sequence, TextIO

    from . import ServerStatus


def fmt_duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def fmt_bytes(n: Optional[int]) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def fmt_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def fmt_clock(epoch: Optional[float]) -> str:
    if epoch is None:
        return ""
    return time.strftime("%H:%M:%S", time.localtime(epoch))


def columns(cpu_window: Optional[float]) -> tuple[str, ...]:
    """The table's header; the CPU column says what it measures."""
    cpu = f"CPU({cpu_window:g}s)" if cpu_window else "CPU(avg)"
    return (
        "NAME",
        "PID",
        "ADDRESS",
        "STATE",
        "UPTIME",
        "MEM",
        cpu,
        "PROCS",
        "RESTARTS",
        "HEALTH",
        "INFO",
    )


def status_row(st: ServerStatus, cpu: Optional[float]) -> list[str]:
    """One row: ``cpu`` is the percentage to show (recent or lifetime)."""
    alive = st.state in ("running", "starting")
    info = ""
    if not alive and st.end_reason:
        at = fmt_clock(st.ended_at)
        info = f"{st.end_reason} at {at}" if at else st.end_reason
    elif st.state == "dead":
        info = "died (exit status unknown)"
    if st.unsupervised:
        info = f"unsupervised: its supervisor is gone (restart={st.restart}; start it again)"
    elif st.supervisor_pid is not None and alive:
        info = f"supervised by {st.supervisor_pid} (restart={st.restart})"
    return [
        st.name,
        "-" if st.pid is None else str(st.pid),
        fmt_address(st.host, st.port) if st.host != "-" else "-",
        st.state,
        fmt_duration(st.uptime),
        fmt_bytes(st.memory_rss),
        "-" if cpu is None or not alive else f"{cpu:.1f}%",
        str(1 + len(st.workers)) if alive else "-",
        str(st.restarts) if st.restart != "no" else "-",
        st.health or "-",
        info,
    ]


def render_table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [len(h) for h in header]
    for r in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, r)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return "\n".join(lines)


def run_with_spinner(label: str, fn: Callable[[], None], out: TextIO, spin: bool) -> float:
    """Runs ``fn`` and returns its duration. With ``spin`` on a terminal, a
    spinner with the elapsed time turns while it runs (the core releases the
    GIL); the line is ended before anything else is written."""
    t0 = time.monotonic()
    if not (spin and out.isatty()):
        fn()
        return time.monotonic() - t0
    import threading

    done = threading.Event()

    def turn() -> None:
        frames = "|/-\\"
        i = 0
        while not done.wait(0.08):
            out.write(f"\r{frames[i % 4]} {label} {time.monotonic() - t0:5.1f}s")
            out.flush()
            i += 1

    t = threading.Thread(target=turn, daemon=True)
    t.start()
    try:
        fn()
    finally:
        done.set()
        t.join()
        out.write("\r\033[K")
        out.flush()
    return time.monotonic() - t0


def follow(sources: Sequence[tuple[str, Path, int]], out: TextIO) -> None:
    """Prints lines appended to each ``(label, path, offset)`` as they arrive,
    from all of them at once, until Ctrl-C (which ends it, not the
    command); a rotated file is read to its end, then the new one from its
    start (``_logread.follow``). What ``out`` holds is flushed first."""
    from . import _logread

    out.flush()
    try:
        _logread.follow(sources, out)
    except KeyboardInterrupt:
        pass


# The library's words for what the CLI spells as options, where the option
# is not simply the keyword with dashes (those are derived, below).
_SHELL_PHRASES = (
    ("start(force=True)", "--force"),
    ("start(redirect_output=True)", "--redirect-output"),
    ('restart="on-failure" or "always"', "--restart on-failure or always"),
    ("(or None: never give up)", "(or none: never give up)"),
    (K.uvicorn_args, "the uvicorn arguments after --"),
)


def for_the_shell(message: str) -> str:
    """A library message in the CLI's words: ``hold_socket=True`` becomes
    ``--hold-socket``, ``start_timeout`` becomes ``--start-timeout``. The
    keywords are ``ServerManager``'s own (the spec's table, so a new
    option is covered without a new entry); only keywords with an
    underscore are rewritten, since one-word ones (restart, warm) are
    also plain English."""
    import re

    from . import _core

    for python, shell in _SHELL_PHRASES:
        message = message.replace(python, shell)
    names = [o["name"] for o in _core.OPTIONS if not o["positional"] and "_" in o["name"]]
    if not names:
        return message
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")(=True)?\b")
    return pattern.sub(lambda m: "--" + m.group(1).replace("_", "-"), message)


def print_history(
    logs: Sequence[tuple[str, tuple[str, str]]], args: Any, out: TextIO
) -> list[tuple[str, Path, int]]:
    """The last ``args.lines`` lines of each stream of each server
    (``logs`` is ``(name, (stdout log, stderr log))``; ``args.stdout``/
    ``args.stderr`` pick one stream), spanning the rotated files in order
    (``.N`` ... ``.1``, then the current one), each line marked ``out |``/
    ``err |`` and, for several servers, with the name. When the supervisor
    stamped the lines (``log_timestamps``) both streams interleave in time
    order; unstamped, they come stream after stream. Returns ``(label,
    path, offset)`` for ``follow``."""
    from pathlib import Path

    from . import _logread

    streams = (
        [("out", 0)] if args.stdout else [("err", 1)] if args.stderr else [("out", 0), ("err", 1)]
    )
    sources: list[tuple[str, Path, int]] = []
    for name, files in logs:
        prefix = f"{name} " if len(logs) > 1 else ""
        read = []
        for stream, i in streams:
            path = Path(files[i])
            if path.exists():
                label = f"{prefix}{stream} | "
                lines = _logread.history(path, args.lines)
                read.append((label, lines))
                sources.append((label, path, os.path.getsize(path)))
        for label, line in _logread.merge(read):
            out.write(f"{label}{line}\n")
    return sources
