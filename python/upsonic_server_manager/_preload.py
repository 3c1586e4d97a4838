"""The preloader of warm starts:
``python -m upsonic_server_manager._preload SOCKET IDLE PAD -- [MODULE ...]``.

One process per user and interpreter environment, single-threaded, that has
uvicorn and the heavy libraries imported and forks a server on request. The
app itself is imported only after the fork, by uvicorn, so an edit is served
by the next start. The manager (``src/warm/``) connects to ``SOCKET``, sends
the server's command line, environment, working directory, umask and its
descriptors (stdout, stderr, the held socket, the lifeline) with
SCM_RIGHTS, and gets the server's PID; once it has pinned that PID with a
pidfd it says so; when the server exits, the exit code follows on the same
connection (this process is its parent and reaps it). ``upsonic-server
warm`` asks for a status (not counted as use) or asks it to stop. The wire
format is ``src/warm/request.rs``'s, through ``_core``
(``_preload_protocol``); the child's set-up is ``_preload_child``; what is
imported, ``_preload_imports``; this module is the loop.

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
import os
import select
import signal
import socket
import struct
import sys
import time

from upsonic_server_manager._core import (
    WARM_FORK,
    WARM_PINNED,
    WARM_STATUS,
    WARM_STOP,
    warm_decode_ask,
    warm_reply_busy,
    warm_reply_error,
    warm_reply_exit,
    warm_reply_pid,
    warm_reply_status,
    warm_reply_stopping,
)
from upsonic_server_manager._preload_child import run_server
from upsonic_server_manager._preload_imports import fingerprint, preload
from upsonic_server_manager._preload_protocol import (
    Fork,
    Refused,
    fork_request,
    read_ask,
    read_line,
    send,
)

EXIT_REFUSED = 3


class Preloader:
    def __init__(self, path: str, idle: float, lock_fd: int, modules: list[str]) -> None:
        self.path = path
        self.modules = modules
        #: Servers forked (and pinned) since it started.
        self.forked = 0
        #: Set by a stop request: the loop ends now, whatever runs.
        self.stopped = False
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
        while not self.stopped and (self.listener is not None or self.children):
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
        fds: list[int] = []
        try:
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            _pid, uid, _gid = struct.unpack("3i", creds)
            if uid != os.getuid():
                raise Refused(f"a request from uid {uid}")
            ask, fds = read_ask(conn)
            if ask.kind == WARM_STATUS:
                send(conn, self.status())
            elif ask.kind == WARM_STOP:
                self.stop(conn, ask.force)
            elif ask.kind == WARM_FORK:
                # Only a fork counts as use: a status query keeps the idle time.
                self.last_used = time.monotonic()
                if fingerprint() != self.stamp:
                    self.retire()
                    raise Refused("the interpreter's import path or installed packages changed")
                req = fork_request(ask, fds)
                fds = []  # the fork owns them now
                self.fork(req, conn)
                return
            else:
                raise Refused(f"unexpected {ask.kind} message")
        except (Refused, OSError, ValueError) as e:
            send(conn, warm_reply_error(str(e)))
        for fd in fds:
            os.close(fd)
        conn.close()

    def status(self) -> bytes:
        """The answer to a status query."""
        return warm_reply_status(
            pid=os.getpid(),
            python=sys.executable,
            live=len(self.children),
            forked=self.forked,
            idle_seconds=max(0.0, time.monotonic() - self.last_used),
            idle_limit=self.idle,
            modules=self.modules,
        )

    def stop(self, conn: socket.socket, force: bool) -> None:
        """Ends the preloader unless it serves live servers (then only with
        `force`: they run on, reparented, their exit no longer reported)."""
        live = len(self.children)
        if live and not force:
            send(conn, warm_reply_busy(live))
            return
        # The name is free before the answer: a warm start after it starts
        # a new preloader instead of reaching this one.
        self.retire()
        send(conn, warm_reply_stopping(live))
        self.stopped = True

    def fork(self, req: Fork, conn: socket.socket) -> None:
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
        try:
            conn.settimeout(5)
            conn.sendall(warm_reply_pid(pid))
            # The manager pins the PID with its own pidfd before it may be
            # reaped (and reused): wait for its word.
            pinned = warm_decode_ask(read_line(conn)).kind == WARM_PINNED
        except (OSError, ValueError, Refused):
            pinned = False
        if pinned:
            try:
                os.write(go_write, b"g")
            except OSError:
                pass  # it died already; its exit is reported as any other
        os.close(go_write)
        self.forked += pinned
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
            send(conn, warm_reply_exit(os.waitstatus_to_exitcode(status)))
            conn.close()

    def manager_gone(self, fd: int) -> None:
        """The manager closed its end: the server runs on, unreported."""
        pidfd = self.conns.pop(fd)
        self.poll.unregister(fd)
        pid, conn = self.children[pidfd]
        if conn is not None:
            conn.close()
        self.children[pidfd] = (pid, None)


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
        modules = preload(argv[4:])
        p = Preloader(path, idle, lock_fd, modules)
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
