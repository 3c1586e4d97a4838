"""The set-up of a server a warm-start preloader forked: in the child, become
the process a cold start would have run (session, signals, descriptors
through ``_core.hand_over_fds``, umask, environment, launch marker, standard
streams, working directory, command line), then run it with runpy."""

from __future__ import annotations

import importlib
import os
import signal
import sys

from upsonic_server_manager._core import LAUNCH_ENV, READY_ENV, WARM_FDS, hand_over_fds
from upsonic_server_manager._preload_protocol import Fork


def _proc_region(first: int) -> tuple[int, int]:
    """Start and end address of a region of this process from /proc/self/stat
    (fields 48-49: arguments, 50-51: environment)."""
    with open("/proc/self/stat", "rb") as f:
        stat = f.read()
    fields = stat[stat.rindex(b")") + 2 :].split()
    return int(fields[first - 3]), int(fields[first - 2])


def _rewrite_marker(launch_id: bytes) -> None:
    """Writes the launch marker into the environment block the kernel shows
    in /proc/PID/environ. A forked process shows its parent's initial block,
    not os.environ; the preloader started with a placeholder as long as any
    marker, and a process may write its own memory. Ownership checks read
    the marker there, so a warm server is recognised like a cold one."""
    import ctypes

    start, end = _proc_region(50)
    block = b"\0" + ctypes.string_at(start, end - start)
    key = b"\0" + LAUNCH_ENV.encode() + b"="
    at = block.find(key)
    if at < 0:
        return
    value_at = at + len(key) - 1
    block = block[1:]
    value_end = block.index(b"\0", value_at)
    room = value_end - value_at
    if len(launch_id) > room:
        return
    # The rest of the room becomes an entry of its own: an empty entry
    # (two NULs in a row) ends the block for some readers (psutil).
    rest = room - len(launch_id) - 1
    filler = b"UPSONIC_WARM_PAD=" + b"." * (rest - 17) if rest >= 17 else b"_" * rest
    text = launch_id + (b"\0" + filler if rest >= 0 else b"")
    ctypes.memmove(start + value_at, text, room)


def _rewrite_cmdline(argv: list[bytes]) -> None:
    """Makes /proc/PID/cmdline (ps, and the manager's command-line checks)
    show the server's command line instead of the preloader's, in the room
    the preloader's padded arguments left."""
    import ctypes

    start, end = _proc_region(48)
    text = b"\0".join(argv) + b"\0"
    room = end - start
    if len(text) > room:
        return
    ctypes.memmove(start, text + b"\0" * (room - len(text)), room)


def _place_fds(fds: dict[str, int]) -> None:
    """The server's descriptors where a cold start puts them, through the
    same hand-over routine (``_core.hand_over_fds``): stdin from /dev/null,
    each descriptor the manager sent at its number (``_core.WARM_FDS``);
    every other descriptor closed."""
    null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    hand_over_fds([(0, null), *((WARM_FDS[name], fd) for name, fd in fds.items())])


def _fresh_stdio(env: dict[bytes, bytes]) -> None:
    import io

    unbuffered = bool(env.get(b"PYTHONUNBUFFERED"))
    for fd, name in ((1, "stdout"), (2, "stderr")):
        raw = io.FileIO(fd, "w", closefd=False)
        tty = raw.isatty()
        binary = io.BufferedWriter(raw)
        text = io.TextIOWrapper(
            binary,
            errors="backslashreplace" if fd == 2 else "strict",
            line_buffering=tty or fd == 2,
            write_through=unbuffered,
        )
        setattr(sys, name, text)
        setattr(sys, f"__{name}__", text)


def run_server(req: Fork) -> None:
    """In the forked child: become the server a cold start would have run,
    then run it. Never returns."""
    code = 1
    try:
        os.setsid()
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _place_fds(req.fds)
        os.umask(req.umask)
        os.environb.clear()
        os.environb.update(req.env)
        _rewrite_marker(req.env.get(LAUNCH_ENV.encode(), b""))
        _fresh_stdio(req.env)
        os.chdir(req.cwd)
        module = req.argv[1]
        _rewrite_cmdline([req.python, *(os.fsencode(a) for a in req.argv)])
        # runpy puts the module's file in argv[0], as `python -m` does.
        sys.argv = ["-m", *req.argv[2:]]
        # As `python -m`: the working directory first on the import path
        # (unless PYTHONSAFEPATH says not to).
        if not req.env.get(b"PYTHONSAFEPATH"):
            sys.path.insert(0, os.getcwd())
        importlib.invalidate_caches()
        # The objects frozen before the fork stay frozen: the collector never
        # writes to their pages, which stay shared with the preloader.
        import runpy

        if req.env.get(READY_ENV.encode()):
            # Why it fails to start goes to the manager, whatever the output.
            from upsonic_server_manager import _report

            _report.install()
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as e:
        if e.code is None:
            code = 0
        elif isinstance(e.code, int):
            code = e.code
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:
        _finish()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    except BaseException as e:  # noqa: BLE001 - as the interpreter reports it
        import traceback

        traceback.print_exc()
        code = 1
        if "upsonic_server_manager._report" in sys.modules:
            sys.modules["upsonic_server_manager._report"].report_failure(e)
    _finish()
    os._exit(code)


def _finish() -> None:
    """What the interpreter does at exit: join threads, atexit, flush."""
    import atexit
    import threading

    try:
        threading._shutdown()  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001
        pass
    atexit._run_exitfuncs()
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except Exception:  # noqa: BLE001
            pass
