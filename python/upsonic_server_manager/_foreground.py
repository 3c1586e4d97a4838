"""Foreground supervision for ``upsonic-server run``: start one server, tell
systemd it is ready, stop it on SIGTERM/SIGINT, exit with its code if it
dies, and reap orphans when running as PID 1 (in a container)."""

from __future__ import annotations

import os
import select
import signal
import socket

from ._cli_output import for_the_shell
from ._manager import ServerManager

TYPE_CHECKING = False

if TYPE_CHECKING:
    from types import FrameType
    from typing import Optional, TextIO

EXIT_OK = 0
EXIT_ERROR = 1


def sd_notify(message: str) -> bool:
    """Sends ``message`` to $NOTIFY_SOCKET (systemd's readiness protocol)."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(addr)
        s.sendall(message.encode())
    return True


class _Terminate(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _Reload(Exception):
    """SIGHUP: start a new generation, then stop the old one."""


def _reap_orphans(keep: int) -> None:
    """As PID 1, reap exited orphans, leaving our server's status for the core."""
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if info is None or info.si_pid == 0 or info.si_pid == keep:
            return
        try:
            os.waitpid(info.si_pid, os.WNOHANG)
        except ChildProcessError:
            return


def _wait_for_exit(m: ServerManager, out: TextIO) -> int:
    """Blocks until the server exits (a pidfd poll), reaping orphans as PID
    1; SIGHUP reloads it (the server's PID changes, ours does not: systemd's
    MAINPID stays valid). Returns the last generation's PID."""
    pid = m.status().pid
    assert pid is not None
    while True:
        pidfd = os.pidfd_open(pid)
        try:
            while True:
                ready, _, _ = select.select([pidfd], [], [], 1.0)
                if os.getpid() == 1:
                    _reap_orphans(pid)
                if ready:
                    return pid
        except _Reload:
            pass
        finally:
            os.close(pidfd)
        sd_notify("RELOADING=1")
        # One reload at a time: a SIGHUP meanwhile is not queued.
        hangup = signal.signal(signal.SIGHUP, signal.SIG_IGN)
        try:
            m.reload()
            pid = m.status().pid or pid
            out.write(f"{m.name}: reloaded, now pid {pid}\n")
        except RuntimeError as e:  # the old generation keeps serving
            out.write(f"{m.name}: reload failed, still serving: {for_the_shell(str(e))}\n")
        finally:
            signal.signal(signal.SIGHUP, hangup)
        out.flush()
        sd_notify(f"READY=1\nSTATUS=serving on {m.host}:{m.port}")


def _exit_status(code: Optional[int]) -> int:
    """The shell's view of the server's exit: 128+N for signal N."""
    if code is None:
        return EXIT_ERROR
    return code if code >= 0 else 128 - code


def run_foreground(m: ServerManager, redirect_output: bool, force: bool, out: TextIO) -> int:
    """Runs ``m`` until it dies (its exit status) or we are told to stop (0)."""

    def on_signal(signum: int, frame: Optional[FrameType]) -> None:
        raise _Terminate(signum)

    def on_hangup(signum: int, frame: Optional[FrameType]) -> None:
        raise _Reload()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    old[signal.SIGHUP] = signal.signal(signal.SIGHUP, on_hangup)
    try:
        try:
            m.start(redirect_output, force)
        except KeyboardInterrupt:
            return EXIT_OK
        pid = m.status().pid
        if pid is None:
            raise RuntimeError(f"{m.name}: the server exited right after it became ready")
        sd_notify(f"READY=1\nMAINPID={os.getpid()}\nSTATUS=serving on {m.host}:{m.port}")
        out.write(f"{m.name}: pid {pid} serving on {m.url}\n")
        out.flush()
        _wait_for_exit(m, out)
        # The server died on its own: say how ("killed by SIGKILL") and exit
        # with its status, as a shell would report it.
        st = m.status()
        # `upsonic-server stop NAME` from elsewhere removed the record as it
        # stopped the server: a deliberate stop, not a crash (so that
        # systemd's Restart=on-failure does not bring it back).
        stopped_elsewhere = m._read_pid() is None and st.exit_code == -signal.SIGTERM
        if stopped_elsewhere:
            # Its stopper kept how it ended ("stopped"); we exit right away,
            # and our exit reaps the child.
            m._process = None
            sd_notify("STOPPING=1")
            out.write(f"{m.name}: stopped\n")
            return EXIT_OK
        m.stop()
        out.write(f"{m.name}: {st.end_reason or 'exited, status unknown'}\n")
        return _exit_status(st.exit_code)
    except _Terminate:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        sd_notify("STOPPING=1")
        m.stop()
        out.write(f"{m.name}: stopped\n")
        return EXIT_OK
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run_supervised(m: ServerManager, redirect_output: bool, force: bool, out: TextIO) -> int:
    """``run`` with a restart policy: this process is the server's supervisor
    (the same loop, in Rust, as the background one), so systemd's MAINPID
    and a container's PID 1 stay one process across restarts. SIGTERM and
    SIGINT stop it, SIGHUP replaces the running server; what the supervisor
    says is printed as it happens."""
    import threading

    from ._core import EVENT_KIND, EVENT_LOG, EVENT_MESSAGE, EVENT_READY, EVENT_SERVER_PID
    from ._supervision import parse_event

    control_r, control_w = os.pipe()
    os.set_blocking(control_r, False)
    os.set_blocking(control_w, False)
    events_r, events_w = os.pipe()
    signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    # While Rust waits, signals only write their number to the control pipe.
    old = {s: signal.signal(s, lambda *_: None) for s in signals}
    old_fd = signal.set_wakeup_fd(control_w)

    def relay() -> None:
        with open(events_r, "rb", buffering=0) as pipe:
            for raw in iter(pipe.readline, b""):
                event = parse_event(raw)
                kind = event.get(EVENT_KIND)
                if kind == EVENT_READY:
                    pid = event.get(EVENT_SERVER_PID)
                    sd_notify(
                        f"READY=1\nMAINPID={os.getpid()}\nSTATUS=serving on {m.host}:{m.port}"
                    )
                    out.write(f"{m.name}: pid {pid} serving on {m.url}\n")
                elif kind == EVENT_LOG:
                    out.write(f"{event.get(EVENT_MESSAGE, '')}\n")
                out.flush()

    reader = threading.Thread(target=relay, name="usm-run-events", daemon=True)
    reader.start()
    try:
        try:
            code = m._core.supervise_here(redirect_output, force, control_r, events_w)
        except KeyboardInterrupt:
            # SIGTERM or SIGINT before the first run was ready: the core
            # stopped the half-started server; a stop, as once it serves.
            reader.join(5)
            sd_notify("STOPPING=1")
            out.write(f"{m.name}: stopped before it was ready\n")
            out.flush()
            return EXIT_OK
        reader.join(5)
        if code == 0:
            sd_notify("STOPPING=1")
            out.write(f"{m.name}: stopped\n")
        return code
    finally:
        signal.set_wakeup_fd(old_fd)
        for s, h in old.items():
            signal.signal(s, h)
        os.close(control_r)
        os.close(control_w)
