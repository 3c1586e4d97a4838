"""The compiled core of upsonic-server-manager (private: use the package API)."""

from os import PathLike
from pathlib import Path
from typing import Any, Optional, Sequence, final

__all__ = [
    "Core",
    "descendants",
    "memory_available",
    "port_holders",
    "process_info",
    "read_record",
    "_panic_for_tests",
]

@final
class Core:
    """The native half of a ``ServerManager``: every syscall, wait and signal."""

    def __new__(
        cls,
        app_path: str,
        host: str,
        port: int,
        name: str,
        workers: int,
        log_dir: str | PathLike[str],
        pid_dir: str | PathLike[str],
        cwd: Optional[str | PathLike[str]],
        env: Sequence[tuple[str, str]],
        start_timeout: float,
        stop_timeout: float,
        uvicorn_args: Sequence[str],
        python: str | PathLike[str],
    ) -> Core: ...
    def start(self, redirect_output: bool, force: bool) -> bool:
        """Start unless ours already runs; True if a server was launched."""
    def stop(self) -> None:
        """Stop the server's whole process group; quiet when nothing runs."""
    def is_running(self) -> bool:
        """True only for our own server, alive and verified."""
    def port_in_use(self) -> bool:
        """Whether a bind() to (host, port) would fail now."""
    def kill_port_holders(self) -> bool:
        """Stop same-user holders of the port; True if something was stopped."""
    def force_cleanup_port(self) -> None:
        """Free the port or raise PortInUseError."""
    def port_holders(self) -> list[tuple[int, str, str, str, bool, int]]:
        """(pid, name, user, address, same_user, uid) of each holder."""
    def read_pid(self) -> Optional[int]:
        """The PID in the PID file, if well-formed."""
    def write_pid(self) -> bool:
        """Record our launched child; False if there is none."""
    def cleanup_pid(self) -> None:
        """Remove the PID record."""
    def child_pid(self) -> Optional[int]:
        """PID of the server this object launched, if any."""
    def child_poll(self) -> Optional[int]:
        """Exit code of our launched child, or None while it runs."""
    def forget_child(self) -> None:
        """Stop tracking the launched child (it keeps running)."""
    @property
    def pid_file(self) -> Path:
        """Path of the PID file."""
    @property
    def id_file(self) -> Path:
        """Path of the identity file beside the PID file."""
    @property
    def lock_file(self) -> Path:
        """Path of the per-name lock file."""
    def log_paths(self) -> tuple[Path, Path]:
        """(stdout log, stderr log) used when output is redirected."""
    def status(self) -> dict[str, Any]:
        """A snapshot of state and resources as plain values."""

def port_holders(port: int, host: str = ...) -> list[tuple[int, str, str, str, bool, int]]:
    """Holders of listening sockets that clash with a bind to (host, port)."""

def process_info(pid: int) -> Optional[dict[str, Any]]:
    """What /proc says about ``pid``, or None if it does not exist."""

def memory_available() -> int:
    """Bytes of memory available to new processes."""

def descendants(pid: int) -> list[int]:
    """PIDs of every descendant of ``pid``."""

def read_record(pid_dir: str | PathLike[str], name: str) -> Optional[dict[str, Any]]:
    """The PID record of server ``name``: pid, and host, port, app_path,
    log_dir, started_ms when our identity file is beside it; None if absent."""

def _panic_for_tests(message: str) -> None:
    """Panic in Rust on purpose (tests check it surfaces as PanicException)."""
