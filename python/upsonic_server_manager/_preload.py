"""The preloader of warm starts:
``python -m upsonic_server_manager._preload SOCKET IDLE PAD -- [MODULE ...]``.

One process per user and interpreter environment, single-threaded, that has
uvicorn and the heavy libraries imported and forks a server on request. The
app itself is imported only after the fork, by uvicorn, so an edit is served
by the next start. The manager (``src/warm/``) connects to ``SOCKET``, sends
the server's command line, environment, working directory, umask and its
descriptors (stdout, stderr, the held socket, the lifeline) with
SCM_RIGHTS, and gets ``pid N``; once it has pinned that PID with a pidfd it
answers ``pinned``; when the server exits, ``exit CODE`` follows on the same
connection (this process is its parent and reaps it).

The process run as the command first forks the preloader proper into its
own session and exits once it listens (0) or failed (1, the reason on
stderr), so the manager waits for a plain child. The preloader refuses to
run with a thread besides its own (forking a threaded process copies locks
held by threads that do not exist in the child), retires when the
interpreter's ``sys.path`` or installed packages change, and exits after
``IDLE`` seconds without a request, once the servers it forked have exited.
"""

from __future__ import annotations

import fcntl
import gc
import importlib
import os
import select
import signal
import socket
import struct
import sys
import time

from upsonic_server_manager._core import LAUNCH_ENV, LAUNCHER_MODULE, WARM_FDS, hand_over_fds

VERSION = "usm-warm 1"
#: Always imported: what every server runs before it imports the app.
BASE_MODULES = (
    "asyncio",
    "uvicorn",
    "uvicorn.main",
    "uvicorn.config",
    "uvicorn.server",
    "uvicorn.lifespan.on",
    "uvicorn.loops.auto",
    "uvicorn.loops.asyncio",
    "uvicorn.protocols.http.auto",
    "uvicorn.protocols.http.h11_impl",
    "uvicorn.protocols.websockets.auto",
    "uvicorn.middleware.proxy_headers",
    "upsonic_server_manager",
    "upsonic_server_manager._report",
)
#: Imported when installed.
OPTIONAL_MODULES = (
    "uvicorn.protocols.http.httptools_impl",
    "uvloop",
    "fastapi",
    "fastapi.routing",
    "starlette",
    "starlette.applications",
    "pydantic",
    # FastAPI imports it lazily, when the app declares its first route.
    "pydantic.v1",
    "anyio",
)
#: The modules a server may be run as (``python -m MODULE``).
RUNNABLE = ("uvicorn", LAUNCHER_MODULE)
EXIT_REFUSED = 3


class Refused(Exception):
    """The preloader cannot serve: the reason goes to the manager's log."""


def threads() -> int:
    """Threads of this process, as the kernel counts them."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 0


def preload(extra: list[str]) -> list[str]:
    """Imports the modules, one at a time, stopping at the first that leaves
    a thread running. Returns what was imported."""
    import importlib.util
    import threading

    done = []
    for name in (*BASE_MODULES, *OPTIONAL_MODULES, *extra):
        optional = name in OPTIONAL_MODULES
        if optional:
            try:
                if importlib.util.find_spec(name) is None:
                    continue
            except (ImportError, ValueError):
                continue
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - any import failure refuses
            if optional:
                continue
            raise Refused(f"importing {name} failed: {type(e).__name__}: {e}") from e
        if threading.active_count() > 1 or threads() > 1:
            names = ", ".join(
                t.name for t in threading.enumerate() if t is not threading.main_thread()
            )
            raise Refused(
                f"importing {name} started a thread ({names or 'not a Python thread'}): "
                "a threaded process cannot be forked safely"
            )
        done.append(name)
    return done


def fingerprint() -> tuple:
    """What a server started now would import from: the interpreter, the
    import path, and the modification time of each directory packages are
    installed in (installing or removing a package, or a .pth file of an
    editable install, changes it). Other entries (PYTHONPATH, a source tree)
    are not stamped: editing an app there must not replace the preloader,
    and the app is never preloaded."""
    stamps = []
    for entry in sys.path:
        if os.path.basename(entry.rstrip("/")) not in ("site-packages", "dist-packages"):
            continue
        try:
            stamps.append((entry, os.stat(entry).st_mtime_ns))
        except OSError:
            stamps.append((entry, None))
    return (sys.executable, tuple(sys.path), tuple(stamps))


# ---- the forked server ----------------------------------------------------------------


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


def run_server(req: Request) -> None:
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
        module = req.argv[1].decode()
        _rewrite_cmdline([req.python, *req.argv])
        # runpy puts the module's file in argv[0], as `python -m` does.
        sys.argv = ["-m", *(os.fsdecode(a) for a in req.argv[2:])]
        # As `python -m`: the working directory first on the import path
        # (unless PYTHONSAFEPATH says not to).
        if not req.env.get(b"PYTHONSAFEPATH"):
            sys.path.insert(0, os.getcwd())
        importlib.invalidate_caches()
        # The objects frozen before the fork stay frozen: the collector never
        # writes to their pages, which stay shared with the preloader.
        import runpy

        if req.env.get(b"UPSONIC_READY_SOCKET"):
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


# ---- the request ----------------------------------------------------------------------


class Request:
    """One server to fork, as the manager sent it."""

    def __init__(self, payload: bytes, fds: list[int]) -> None:
        fields = payload.split(b"\0")
        if fields[0].decode() != VERSION:
            raise Refused(f"protocol {fields[0]!r}, this preloader speaks {VERSION!r}")
        self.cwd = fields[1]
        self.umask = int(fields[2])
        names = [n for n in fields[3].decode().split(",") if n]
        if len(names) != len(fds):
            raise Refused(f"{len(fds)} descriptors for {names}")
        self.fds = dict(zip(names, fds))
        self.python = fields[4]
        argc = int(fields[5])
        self.argv = fields[6 : 6 + argc]
        self.env = dict(e.split(b"=", 1) for e in fields[6 + argc :] if b"=" in e)
        if len(self.argv) < 2 or self.argv[0] != b"-m" or self.argv[1].decode() not in RUNNABLE:
            raise Refused(f"cannot run {self.argv[:2]!r}")


def read_request(conn: socket.socket) -> Request:
    conn.settimeout(5)
    fds: list[int] = []
    head = b""
    while len(head) < 4:
        data, anc, _flags, _addr = conn.recvmsg(4 - len(head), socket.CMSG_SPACE(8 * 4))
        if not data:
            raise Refused("the manager closed the connection")
        head += data
        for level, kind, raw in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.extend(struct.unpack(f"{len(raw) // 4}i", raw[: len(raw) // 4 * 4]))
    (length,) = struct.unpack(">I", head)
    payload = b""
    while len(payload) < length:
        chunk = conn.recv(length - len(payload))
        if not chunk:
            raise Refused("the manager closed the connection")
        payload += chunk
    try:
        return Request(payload, fds)
    except Exception:
        for fd in fds:
            os.close(fd)
        raise


# ---- the preloader --------------------------------------------------------------------


class Preloader:
    def __init__(self, path: str, idle: float, lock_fd: int) -> None:
        self.path = path
        self.idle = idle
        self.lock_fd: int | None = lock_fd
        self.listener: socket.socket | None = None
        self.poll = select.poll()
        self.children: dict[int, tuple[int, socket.socket | None]] = {}  # pidfd -> (pid, conn)
        self.conns: dict[int, int] = {}  # conn fd -> pidfd
        self.last_used = time.monotonic()
        self.stamp = fingerprint()

    def listen(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            s.bind(self.path)
        finally:
            os.umask(old)
        s.listen(64)
        self.listener = s
        self.ino = os.stat(self.path).st_ino
        self.poll.register(s.fileno(), select.POLLIN)

    def retire(self) -> None:
        """Stops taking requests (a newer preloader may take the name) and
        stays only to reap the servers it forked."""
        if self.listener is None:
            return
        try:
            if os.stat(self.path).st_ino == self.ino:
                os.unlink(self.path)
        except OSError:
            pass
        self.poll.unregister(self.listener.fileno())
        self.listener.close()
        self.listener = None
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None

    def serve(self) -> None:
        while self.listener is not None or self.children:
            wait = None
            if self.listener is not None:
                wait = max(0.0, self.last_used + self.idle - time.monotonic())
            events = self.poll.poll(None if wait is None else int(wait * 1000) + 1)
            if not events and self.listener is not None:
                if time.monotonic() >= self.last_used + self.idle:
                    self.retire()
                continue
            for fd, _ev in events:
                if self.listener is not None and fd == self.listener.fileno():
                    try:
                        self.accept()
                    except Exception:  # noqa: BLE001 - the servers forked so far need us
                        import traceback

                        traceback.print_exc()
                elif fd in self.children:
                    self.reap(fd)
                elif fd in self.conns:
                    self.manager_gone(fd)

    def accept(self) -> None:
        assert self.listener is not None
        conn, _ = self.listener.accept()
        self.last_used = time.monotonic()
        try:
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            _pid, uid, _gid = struct.unpack("3i", creds)
            if uid != os.getuid():
                raise Refused(f"a request from uid {uid}")
            if fingerprint() != self.stamp:
                self.retire()
                raise Refused("the interpreter's import path or installed packages changed")
            req = read_request(conn)
        except (Refused, OSError, ValueError) as e:
            _reply(conn, f"error {e}")
            conn.close()
            return
        self.fork(req, conn)

    def fork(self, req: Request, conn: socket.socket) -> None:
        for f in (sys.stdout, sys.stderr):
            f.flush()
        # The server runs only once the manager has pinned it: a server the
        # manager gave up on (it timed out, and starts cold) must never run
        # beside the cold one. It waits on this pipe for the word.
        go_read, go_write = os.pipe()
        gc.freeze()
        pid = os.fork()
        if pid == 0:
            os.close(go_write)
            if os.read(go_read, 1) != b"g":
                os._exit(EXIT_REFUSED)
            os.close(go_read)
            # The child keeps nothing of the preloader's: its sockets are
            # detached so that no later garbage collection closes a
            # descriptor number the server has reused.
            if self.listener is not None:
                self.listener.detach()
            conn.detach()
            for _pid, c in self.children.values():
                if c is not None:
                    c.detach()
            run_server(req)
        gc.unfreeze()  # the preloader's own later garbage stays collectable
        os.close(go_read)
        for fd in req.fds.values():
            os.close(fd)
        pidfd = os.pidfd_open(pid)
        conn.settimeout(5)
        try:
            conn.sendall(f"pid {pid}\n".encode())
            # The manager pins the PID with its own pidfd before it may be
            # reaped (and reused): wait for its word.
            pinned = conn.recv(64).startswith(b"pinned")
        except OSError:
            pinned = False
        if pinned:
            try:
                os.write(go_write, b"g")
            except OSError:
                pass  # it died already; its exit is reported as any other
        os.close(go_write)
        if not pinned:
            os.kill(pid, signal.SIGKILL)
            conn.close()
            self.children[pidfd] = (pid, None)
        else:
            conn.setblocking(False)
            self.children[pidfd] = (pid, conn)
            self.conns[conn.fileno()] = pidfd
            self.poll.register(conn.fileno(), select.POLLIN)
        self.poll.register(pidfd, select.POLLIN)

    def reap(self, pidfd: int) -> None:
        pid, conn = self.children.pop(pidfd)
        self.poll.unregister(pidfd)
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        self.last_used = time.monotonic()
        if conn is not None:
            self.conns.pop(conn.fileno(), None)
            self.poll.unregister(conn.fileno())
            conn.setblocking(True)
            _reply(conn, f"exit {os.waitstatus_to_exitcode(status)}")
            conn.close()

    def manager_gone(self, fd: int) -> None:
        """The manager closed its end: the server runs on, unreported."""
        pidfd = self.conns.pop(fd)
        self.poll.unregister(fd)
        pid, conn = self.children[pidfd]
        if conn is not None:
            conn.close()
        self.children[pidfd] = (pid, None)


def _reply(conn: socket.socket, line: str) -> None:
    try:
        conn.sendall(line.encode() + b"\n")
    except OSError:
        pass


def main(argv: list[str]) -> None:
    if len(argv) < 4 or argv[3] != "--":
        sys.exit("usage: python -m upsonic_server_manager._preload SOCKET IDLE PAD -- [MODULE ...]")
    path, idle = argv[0], float(argv[1])
    # Not the directory it was started in: a server's own is put first.
    if sys.path and sys.path[0] in ("", os.getcwd()):
        del sys.path[0]
    read_end, write_end = os.pipe()
    if os.fork() != 0:
        os.close(write_end)
        with os.fdopen(read_end, "rb") as r:
            word = r.read().decode(errors="replace")
        if word == "ok":
            os._exit(0)
        sys.stderr.write((word or "the preloader exited while starting") + "\n")
        os._exit(EXIT_REFUSED)
    os.close(read_end)
    os.setsid()
    try:
        lock_fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.write(write_end, b"busy: another preloader holds " + path.encode())
            os._exit(EXIT_REFUSED)
        preload(argv[4:])
        p = Preloader(path, idle, lock_fd)
        p.listen()
    except BaseException as e:  # noqa: BLE001 - every reason goes to the manager
        reason = str(e) if isinstance(e, Refused) else f"{type(e).__name__}: {e}"
        os.write(write_end, reason.encode())
        os._exit(EXIT_REFUSED)
    os.write(write_end, b"ok")
    os.close(write_end)
    gc.collect()
    p.serve()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
