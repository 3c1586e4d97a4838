"""The compiled core of upsonic-server-manager (private: use the package API)."""

from collections.abc import Iterator, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any, ClassVar, Final, Optional, Union, final

__all__ = [
    "Core",
    "PortHolder",
    "ServerStatus",
    "UvicornCommand",
    "descendants",
    "forget_leftovers",
    "release_record",
    "home_dir",
    "list_records",
    "log_paths",
    "memory_available",
    "parse_uvicorn_cmdline",
    "port_holders",
    "process_info",
    "read_record",
    "record_paths",
    "memory_size",
    "_panic_for_tests",
    "_supervisor_main",
    "hand_over_fds",
    "EVENTS_FD",
    "HELD_FD",
    "LAUNCHER_MODULE",
    "LAUNCH_ENV",
    "LIFELINE_ENV",
    "RECORD_ENV",
    "LOG_OUT_ENV",
    "LOG_ERR_ENV",
    "LIFELINE_FD",
    "LOG_STAMP_PATTERN",
    "NO_HELD_FD",
    "READY_ENV",
    "SUPERVISOR_LIFELINE_FD",
    "WARM_FDS",
    "Preloader",
    "PreloaderStop",
    "WarmAsk",
    "preloaders",
    "stop_preloader",
    "warm_decode_ask",
    "warm_encode_ask",
    "warm_decode_reply",
    "warm_reply_busy",
    "warm_reply_error",
    "warm_reply_exit",
    "warm_reply_pid",
    "warm_reply_status",
    "warm_reply_stopping",
    "WARM_FORK",
    "WARM_PINNED",
    "WARM_STATUS",
    "WARM_STOP",
    "WARM_VERSION",
    "EVENT_DONE",
    "EVENT_ERROR",
    "EVENT_FAILED",
    "EVENT_KIND",
    "EVENT_LEVEL",
    "EVENT_LEVEL_INFO",
    "EVENT_LEVEL_WARNING",
    "EVENT_LOG",
    "EVENT_MESSAGE",
    "EVENT_PORT",
    "EVENT_READY",
    "EVENT_SERVER_PID",
    "EVENT_STOPPED",
    "_event_line",
    "failed_report",
    "ready_report",
    "OPTIONS",
    "__version__",
]

#: The package's version, from Cargo.toml (the one place it is written).
__version__: str

_Path = str | PathLike[str]

@final
class ServerStatus:
    """A snapshot of one server, as returned by ``ServerManager.status()``.

    ``state`` is ``running``, ``starting`` (alive, not yet listening),
    ``dead`` (a record or child remains but the process is gone) or
    ``stopped``; supervised servers also ``backoff`` (waiting to restart)
    and ``failed`` (the supervisor gave up). ``started_at`` is in seconds since the epoch,
    ``memory_rss`` in bytes (server and workers), ``cpu_percent`` the CPU
    time of server and workers over its lifetime, in percent of one core.
    """

    @property
    def name(self) -> str: ...
    @property
    def pid(self) -> Optional[int]: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def state(self) -> str: ...
    @property
    def started_at(self) -> Optional[float]: ...
    @property
    def uptime(self) -> Optional[float]: ...
    @property
    def memory_rss(self) -> Optional[int]: ...
    @property
    def cpu_percent(self) -> Optional[float]: ...
    @property
    def workers(self) -> list[int]: ...
    @property
    def exit_code(self) -> Optional[int]: ...
    @property
    def stdout_log(self) -> Optional[str]: ...
    @property
    def stderr_log(self) -> Optional[str]: ...
    @property
    def ended_at(self) -> Optional[float]: ...
    @property
    def end_reason(self) -> Optional[str]: ...
    @property
    def restart(self) -> str: ...
    @property
    def restarts(self) -> int: ...
    @property
    def last_exit(self) -> Optional[int]: ...
    @property
    def supervisor_pid(self) -> Optional[int]: ...
    @property
    def health(self) -> Optional[str]: ...
    @property
    def supervised(self) -> bool:
        """It was started with a supervisor: a restart policy, or the watcher
        (``supervise=True``, the CLI's default)."""
    @property
    def unsupervised(self) -> bool:
        """It was started with a supervisor, and none runs (it was killed)."""
    def __new__(
        cls,
        name: str,
        pid: Optional[int],
        host: str,
        port: int,
        state: str,
        started_at: Optional[float],
        uptime: Optional[float],
        memory_rss: Optional[int],
        cpu_percent: Optional[float],
        workers: Optional[list[int]] = None,
        exit_code: Optional[int] = None,
        stdout_log: Optional[str] = None,
        stderr_log: Optional[str] = None,
        ended_at: Optional[float] = None,
        end_reason: Optional[str] = None,
        restart: str = ...,
        restarts: int = 0,
        last_exit: Optional[int] = None,
        supervisor_pid: Optional[int] = None,
        health: Optional[str] = None,
    ) -> ServerStatus: ...
    def as_dict(self) -> dict[str, Any]:
        """The status as a JSON-ready dict."""
    def __eq__(self, other: object, /) -> bool: ...
    def __ne__(self, other: object, /) -> bool: ...
    __hash__: ClassVar[None]  # type: ignore[assignment]

@final
class PortHolder:
    """A process holding a listening socket that clashes with the port:
    ``(pid, name, user, address, same_user, uid)``, readable by name, by
    index and by unpacking, and equal to that tuple."""

    _fields: ClassVar[tuple[str, str, str, str, str, str]]
    @property
    def pid(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def user(self) -> str: ...
    @property
    def address(self) -> str: ...
    @property
    def same_user(self) -> bool: ...
    @property
    def uid(self) -> int: ...
    @property
    def server(self) -> Optional[str]:
        """The managed server it belongs to, when known (not in the tuple)."""
    def __new__(
        cls,
        pid: int,
        name: str,
        user: str,
        address: str,
        same_user: bool,
        uid: int,
        server: Optional[str] = None,
    ) -> PortHolder: ...
    def _asdict(self) -> dict[str, Any]:
        """The fields as a dict."""
    def __len__(self) -> int: ...
    def __getitem__(self, index: int | slice, /) -> Any: ...
    def __iter__(self) -> Iterator[Any]: ...
    def __eq__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...
    def __reduce__(self) -> tuple[type[PortHolder], tuple[Any, ...]]: ...

@final
class UvicornCommand:
    """What a uvicorn command line serves."""

    @property
    def app(self) -> Optional[str]: ...
    @property
    def host(self) -> Optional[str]: ...
    @property
    def port(self) -> Optional[int]: ...
    @property
    def workers(self) -> Optional[int]: ...

@final
class Core:
    """The native half of a ``ServerManager``: every syscall, wait and signal,
    and the configuration (validated here, for every entry point)."""

    def __new__(
        cls,
        app_path: str,
        host: str,
        port: int,
        name: str,
        *,
        python: _Path,
        workers: Optional[int],
        log_dir: _Path,
        pid_dir: Optional[_Path],
        cwd: Optional[_Path],
        env: Optional[Mapping[Any, Any]],
        start_timeout: float,
        stop_timeout: float,
        uvicorn_args: Sequence[str],
        hold_socket: Optional[bool],
        stop_with_caller: Optional[bool],
        restart: str,
        restart_delay: float,
        restart_max_delay: float,
        restart_limit: Optional[int],
        stable_after: float,
        health_check: Optional[str],
        health_interval: float,
        health_timeout: float,
        health_failures: int,
        max_memory: Union[int, str, None],
        supervise: Optional[bool],
        log_max_bytes: Union[int, str, None],
        log_backup_count: Optional[int],
        log_timestamps: Optional[bool],
        warm: Optional[bool],
        preload: Optional[Sequence[str]],
        pid_file: Optional[_Path],
        history: Optional[bool],
    ) -> Core: ...
    def replace_server(self, other: Core, what: str) -> None:
        """Take ``other``'s (validated) configuration from the next start on;
        ServerManagerError naming ``what`` while the server runs."""
    def arguments(self) -> dict[str, Any]:
        """The keywords that build this configuration again (configured port)."""
    def start(self, redirect_output: bool, force: bool) -> bool:
        """Start unless ours already runs; True if a server was launched."""
    def forget(self) -> bool:
        """Forget a stopped server's record and last run; False if it runs."""
    def restart(self, redirect_output: bool, force: bool) -> bool:
        """Stop and start again; a held socket stays open in between."""
    def reload(self) -> None:
        """A new generation on the held socket, then the old one stops."""
    def remember_output(self, redirect_output: bool) -> None:
        """Set the output mode that restart() reuses."""
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
    def port_holders(self) -> list[PortHolder]:
        """Processes whose listening sockets clash with (host, port)."""
    def read_pid(self) -> Optional[int]:
        """The PID in the PID file, if well-formed."""
    def write_pid(self) -> bool:
        """Record our launched child; False if there is none."""
    def cleanup_pid(self) -> None:
        """Remove the PID record."""
    def supervise_here(
        self, redirect_output: bool, force: bool, control_fd: int, events_fd: int
    ) -> int:
        """Supervise from this process until a stop; the exit status."""
    def take_supervisor_link(self) -> Optional[tuple[int, int]]:
        """(PID, events pipe fd) of the supervisor this object spawned; once."""
    @property
    def restart_policy(self) -> str: ...
    @property
    def supervised(self) -> bool:
        """A supervisor process runs the server (supervise, a policy or a log option)."""
    def child_pid(self) -> Optional[int]:
        """PID of the server this object launched, if any."""
    def child_poll(self) -> Optional[int]:
        """Exit code of our launched child, or None while it runs."""
    def poll_pid(self, pid: int, unknown: Optional[int] = None) -> Optional[int]:
        """poll() of our child ``pid``; ``unknown`` once the manager let go of it."""
    def wait_pid(self, pid: int, timeout: Optional[float] = None) -> Optional[int]:
        """wait() for our child ``pid`` (seconds); None when the timeout passed."""
    def signal_pid(self, pid: int, sig: int) -> bool:
        """Signal our child ``pid`` through its pidfd; False once it ended."""
    def child_cmdline(self, pid: int) -> Optional[list[str]]:
        """The command line of our unreaped child ``pid``."""
    def pid_is_ours(self, pid: int) -> bool:
        """Whether ``pid`` is our server, alive and verified."""
    def stop_pid(self, pid: int) -> bool:
        """Stop ``pid`` if it is our server (verified); True if stopped."""
    def forget_child(self) -> None:
        """Stop tracking the launched child (it keeps running)."""
    def status(self) -> ServerStatus:
        """A snapshot of state and resources."""
    def log_paths(self) -> tuple[Path, Path]:
        """(stdout log, stderr log) used when output is redirected."""
    def cpu_time(self) -> Optional[float]:
        """CPU seconds used so far by the server and its workers, or None."""
    @property
    def app_path(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def workers(self) -> int: ...
    @property
    def hold_socket(self) -> bool: ...
    @property
    def warm(self) -> bool:
        """Whether servers are forked from a warm-start preloader."""
    @property
    def preload(self) -> list[str]:
        """The preloader's extra modules."""
    @property
    def log_dir(self) -> Path: ...
    @property
    def pid_dir(self) -> Path: ...
    @property
    def cwd(self) -> Optional[Path]: ...
    @property
    def env(self) -> list[tuple[str, str]]: ...
    @property
    def start_timeout(self) -> float: ...
    @property
    def stop_timeout(self) -> float: ...
    @property
    def uvicorn_args(self) -> list[str]: ...
    @property
    def scheme(self) -> str: ...
    @property
    def redirect_output(self) -> bool: ...
    @property
    def pid_file(self) -> Path:
        """Path of the PID file."""
    @property
    def id_file(self) -> Path:
        """Path of the identity file beside the PID file."""
    @property
    def lock_file(self) -> Path:
        """Path of the per-name lock file."""

def port_holders(port: int, host: str = ...) -> list[PortHolder]:
    """Holders of listening sockets that clash with a bind to (host, port)."""

def process_info(pid: int) -> Optional[dict[str, Any]]:
    """What /proc says about ``pid``, or None if it does not exist."""

def memory_available() -> int:
    """Bytes of memory available to new processes."""

def descendants(pid: int) -> list[int]:
    """PIDs of every descendant of ``pid``."""

def read_record(
    pid_dir: Optional[_Path], name: str, last_run: bool = False
) -> Optional[dict[str, Any]]:
    """The PID record of server ``name``: pid, and host, port, app_path,
    log_dir, started_ms and config when our identity file is beside it; with
    ``last_run``, a stopped server's kept last run (pid None, end, ended_ms).
    None if there is nothing."""

def list_records(pid_dir: Optional[_Path] = None, last_runs: bool = False) -> list[str]:
    """Names of every server with a PID file in ``pid_dir`` (default: home);
    with ``last_runs`` also stopped servers whose last run is kept."""

def release_record(pid_file: _Path) -> bool:
    """For the launcher once its lifeline ended: remove the record at
    ``pid_file`` while it names this process, keeping the run as "stopped"
    when history was asked for. True if it was this process's record."""

def forget_leftovers(pid_dir: Optional[_Path], name: str) -> bool:
    """Remove server ``name``'s record, dead supervisor state and kept last
    run when no process they name lives; True if something was removed.
    Raises ValueError for a bad name."""

def record_paths(pid_dir: Optional[_Path], name: str) -> tuple[Path, Path, Path]:
    """(PID file, identity file, lock file) of server ``name``."""

def log_paths(log_dir: _Path, name: str) -> tuple[Path, Path]:
    """(stdout log, stderr log) of server ``name`` in ``log_dir``."""

def parse_uvicorn_cmdline(argv: Sequence[str]) -> Optional[UvicornCommand]:
    """What a uvicorn command line serves, or None if it is not uvicorn."""

def home_dir() -> Path:
    """The directory PID records live in by default."""

def memory_size(value: Union[int, str]) -> int:
    """Bytes in a memory size: an int, or a string like "512MiB" or "1GiB"."""

def _supervisor_main(control_fd: int) -> int:
    """The supervisor process's body (reads its orders from stdin)."""

def ready_report(launch: str, pid: int) -> bytes:
    """The ready-socket datagram of a process of launch ``launch`` that serves."""

def failed_report(launch: str, pid: int, text: str) -> bytes:
    """The ready-socket datagram of a process that failed before serving:
    ``text`` (its error output) cut to its end within about 16 KiB."""

def _event_line(event: str) -> bytes:
    """The events line a supervisor writes for ``event`` (an event's JSON text)."""

def _panic_for_tests(message: str) -> None:
    """Panic in Rust on purpose (tests check it surfaces as PanicException)."""

def hand_over_fds(pairs: Sequence[tuple[int, int]]) -> None:
    """(target, source) pairs; every other descriptor from 3 up is closed."""

# The names and descriptor numbers shared between our processes (src/protocol.rs).
HELD_FD: Final[int]
LIFELINE_FD: Final[int]
EVENTS_FD: Final[int]
SUPERVISOR_LIFELINE_FD: Final[int]
LAUNCH_ENV: Final[str]
READY_ENV: Final[str]
LIFELINE_ENV: Final[str]
RECORD_ENV: Final[str]
LOG_OUT_ENV: Final[str]
LOG_ERR_ENV: Final[str]
LAUNCHER_MODULE: Final[str]
NO_HELD_FD: Final[str]
#: A regular expression matching the timestamp the supervisor puts at the
#: start of each log line with ``log_timestamps`` (ISO 8601 UTC, then a space).
LOG_STAMP_PATTERN: Final[str]
WARM_FDS: Final[dict[str, int]]

# Warm-start preloaders (src/python/warm.rs; the wire format is src/warm/request.rs).
WARM_VERSION: Final[str]
WARM_FORK: Final[str]
WARM_PINNED: Final[str]
WARM_STATUS: Final[str]
WARM_STOP: Final[str]

@final
class Preloader:
    """A warm-start preloader as ``preloaders()`` found it. When it did not
    answer (``answering`` False, ``error`` says why) only ``socket`` and
    maybe ``pid`` are known; the other fields are None."""

    @property
    def socket(self) -> str:
        """Its unix socket's path."""
    @property
    def pid(self) -> Optional[int]:
        """Its PID (None if unknown)."""
    @property
    def answering(self) -> bool:
        """Whether it answered the status query in time."""
    @property
    def error(self) -> Optional[str]:
        """Why it did not answer, else None."""
    @property
    def python(self) -> Optional[str]:
        """The interpreter it runs."""
    @property
    def live(self) -> Optional[int]:
        """Servers it forked that still run."""
    @property
    def forked(self) -> Optional[int]:
        """Servers it forked since it started."""
    @property
    def idle_seconds(self) -> Optional[float]:
        """Seconds since its last fork or server exit."""
    @property
    def idle_limit(self) -> Optional[float]:
        """Seconds idle, with no live server, after which it exits."""
    @property
    def modules(self) -> list[str]:
        """The modules it imported, in order."""
    def __eq__(self, other: object, /) -> bool: ...
    def __ne__(self, other: object, /) -> bool: ...
    __hash__: ClassVar[None]  # type: ignore[assignment]

@final
class PreloaderStop:
    """What ``stop_preloader`` did. ``outcome``: "ended" (it exited),
    "exiting" (asked; not gone by the timeout), "busy" (left running: it
    serves ``servers`` live servers), "no answer" (left running; ``reason``)
    or "killed" (did not answer; force). ``servers``: its servers that run
    on (ended, exiting) or kept it (busy)."""

    @property
    def socket(self) -> str: ...
    @property
    def pid(self) -> Optional[int]: ...
    @property
    def outcome(self) -> str: ...
    @property
    def servers(self) -> int: ...
    @property
    def reason(self) -> Optional[str]: ...
    def __eq__(self, other: object, /) -> bool: ...
    def __ne__(self, other: object, /) -> bool: ...
    __hash__: ClassVar[None]  # type: ignore[assignment]

@final
class WarmAsk:
    """One decoded message to a preloader (``warm_decode_ask``). ``kind`` is
    one of ``WARM_FORK``, ``WARM_PINNED``, ``WARM_STATUS``, ``WARM_STOP``;
    the other fields are those of a fork (empty otherwise) and ``force`` of a
    stop."""

    @property
    def kind(self) -> str: ...
    @property
    def cwd(self) -> bytes: ...
    @property
    def umask(self) -> int: ...
    @property
    def fd_names(self) -> list[str]: ...
    @property
    def python(self) -> bytes: ...
    @property
    def argv(self) -> list[str]: ...
    @property
    def env(self) -> dict[bytes, bytes]: ...
    @property
    def force(self) -> bool: ...

def preloaders(
    dir: Optional[Union[str, PathLike[str]]] = None, timeout: float = 2.0
) -> list[Preloader]:
    """Every warm-start preloader of this user in ``dir`` (default: the
    directory warm starts use), each asked for its status within ``timeout``
    seconds; one that does not answer is listed, not waited for. Raises
    ValueError when the directory is not private to this user."""

def stop_preloader(
    preloader: Preloader, force: bool = False, timeout: float = 5.0
) -> PreloaderStop:
    """Asks ``preloader`` to exit, waiting up to ``timeout`` seconds. Without
    ``force`` one serving live servers or not answering is left running;
    with it the first exits (its servers run on) and the second is killed."""

def warm_decode_ask(line: bytes) -> WarmAsk:
    """Decodes a message to a preloader. Raises ValueError."""

def warm_encode_ask(
    kind: str,
    *,
    cwd: bytes = ...,
    umask: int = 0o022,
    fd_names: Sequence[str] = ...,
    python: bytes = ...,
    argv: Sequence[str] = ...,
    env: Sequence[tuple[bytes, bytes]] = ...,
    force: bool = False,
) -> bytes:
    """Encodes a message to a preloader (one line; the fields default to
    empty). Raises ValueError for an unknown kind."""

def warm_decode_reply(line: bytes) -> tuple[str, Any]:
    """A preloader's line as (kind, value): ("pid", int), ("exit", int),
    ("error", str), ("status", Preloader), ("stopping", int), ("busy", int).
    Raises ValueError."""

def warm_reply_pid(pid: int) -> bytes:
    """The line saying a server was forked as ``pid``."""

def warm_reply_exit(code: int) -> bytes:
    """The line saying a server exited (minus the signal number for a signal)."""

def warm_reply_error(reason: str) -> bytes:
    """The line refusing a request."""

def warm_reply_status(
    *,
    pid: int,
    python: str,
    live: int,
    forked: int,
    idle_seconds: float,
    idle_limit: float,
    modules: Sequence[str],
) -> bytes:
    """The line answering a status query (times in seconds)."""

def warm_reply_stopping(live: int) -> bytes:
    """The line answering a stop: it exits, ``live`` servers run on."""

def warm_reply_busy(live: int) -> bytes:
    """The line refusing a stop without force: ``live`` servers are served."""

# The supervisor's event lines (src/protocol/events.rs): keys, kinds, levels.
EVENT_KIND: Final[str]
EVENT_READY: Final[str]
EVENT_ERROR: Final[str]
EVENT_LOG: Final[str]
EVENT_DONE: Final[str]
EVENT_FAILED: Final[str]
EVENT_STOPPED: Final[str]
EVENT_SERVER_PID: Final[str]
EVENT_PORT: Final[str]
EVENT_LEVEL: Final[str]
EVENT_MESSAGE: Final[str]
EVENT_LEVEL_INFO: Final[str]
EVENT_LEVEL_WARNING: Final[str]
# Every option of a server (src/spec.rs): one dict per option, in the
# signature's order, with "name", "annotation", "required", "default",
# "help", "flag", "metavar", "group", "positional", "assignable", "restored".
OPTIONS: Final[tuple[dict[str, Any], ...]]
