"""``ServerManager``: the drop-in API. Every call runs in the Rust core."""

from __future__ import annotations

import os
import sys

from . import _core
from ._errors import PortHolder

# typing is imported for type checkers only: at run time it costs milliseconds.
TYPE_CHECKING = False

if TYPE_CHECKING:
    # Only for annotations: importing typing at run time costs milliseconds.
    from types import TracebackType
    from typing import Any, Mapping, Optional, Sequence, Union

    PathLike = Union[str, os.PathLike[str]]

DEFAULT_UVICORN_ARGS: tuple[str, ...] = ("--log-level", "error", "--no-access-log")


class ServerStatus:
    """A snapshot of one server, as returned by :meth:`ServerManager.status`.

    ``state`` is ``running``, ``starting`` (alive, not yet listening),
    ``dead`` (a record or child remains but the process is gone) or
    ``stopped``. ``started_at`` is in seconds since the epoch,
    ``memory_rss`` in bytes (server and workers), ``cpu_percent`` the CPU
    time of server and workers over its lifetime, in percent of one core.
    """

    __slots__ = (
        "name",
        "pid",
        "host",
        "port",
        "state",
        "started_at",
        "uptime",
        "memory_rss",
        "cpu_percent",
        "workers",
        "exit_code",
        "stdout_log",
        "stderr_log",
    )

    name: str
    pid: Optional[int]
    host: str
    port: int
    state: str
    started_at: Optional[float]
    uptime: Optional[float]
    memory_rss: Optional[int]
    cpu_percent: Optional[float]
    workers: list[int]
    exit_code: Optional[int]
    stdout_log: Optional[str]
    stderr_log: Optional[str]

    def __init__(
        self,
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
    ) -> None:
        values = locals()
        for k in self.__slots__:
            object.__setattr__(self, k, values[k])
        object.__setattr__(self, "workers", list(workers or []))

    def __setattr__(self, key: str, value: object) -> None:
        raise AttributeError("ServerStatus is read-only")

    def as_dict(self) -> dict[str, Any]:
        """The status as a JSON-ready dict."""
        return {k: getattr(self, k) for k in self.__slots__}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ServerStatus):
            return NotImplemented
        return self.as_dict() == other.as_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__)
        return f"ServerStatus({inner})"


class _ChildProcess:
    """The launched server as upsonic's ``_process`` exposed it (``pid``,
    ``poll()``, ``returncode``); reaping stays with the core."""

    def __init__(self, core: _core.Core, pid: int) -> None:
        self._core = core
        self.pid = pid

    def poll(self) -> Optional[int]:
        return self.returncode

    @property
    def returncode(self) -> Optional[int]:
        # Once the manager forgot this child (stopped, restarted), it is not
        # ours to report on.
        if self._core.child_pid() != self.pid:
            return None
        return self._core.child_poll()

    def __repr__(self) -> str:
        return f"<server process pid={self.pid} returncode={self.returncode}>"


_uvicorn_found = False


def _uvicorn_missing() -> bool:
    """True when the interpreter that will run the server cannot import
    uvicorn. Once found, it is not looked up again on every start()."""
    global _uvicorn_found
    if not _uvicorn_found:
        import importlib.util

        try:
            _uvicorn_found = importlib.util.find_spec("uvicorn") is not None
        except (ImportError, ValueError):
            return True
    return not _uvicorn_found


def _home_dir() -> str:
    home = os.environ.get("HOME", "")
    if home and os.path.isabs(home):
        return home
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:
        return os.path.abspath(home or ".")


def _workers_from_env() -> int:
    raw = os.environ.get("UPSONIC_WORKERS_AMOUNT")
    if raw is None or raw.strip() == "":
        return 1
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"UPSONIC_WORKERS_AMOUNT must be a whole number, got {raw!r}") from None


def _check_type(name: str, value: object, kind: type, what: str) -> None:
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise TypeError(f"{name} must be {what}, got {type(value).__name__}")


class ServerManager:
    """Start, watch and stop one uvicorn server.

    The first four arguments are positional, as in upsonic's original. The
    PID file is ``{pid_dir}/.upsonic_{name}_server.pid`` (``pid_dir``
    defaults to the home directory) and redirected logs go to
    ``{log_dir}/{name}_server.log`` and ``{log_dir}/{name}_server_error.log``.
    """

    def __init__(
        self,
        app_path: str,
        host: str,
        port: int,
        name: str,
        *,
        workers: Optional[int] = None,
        log_dir: PathLike = "logs",
        pid_dir: Optional[PathLike] = None,
        cwd: Optional[PathLike] = None,
        env: Optional[Mapping[str, str]] = None,
        start_timeout: float = 30.0,
        stop_timeout: float = 5.0,
        uvicorn_args: Sequence[str] = DEFAULT_UVICORN_ARGS,
    ) -> None:
        _check_type("app_path", app_path, str, "a string like 'package.module:app'")
        _check_type("host", host, str, "a string")
        _check_type("port", port, int, "an int")
        _check_type("name", name, str, "a string")
        if workers is None:
            workers = _workers_from_env()
        _check_type("workers", workers, int, "an int or None")
        if isinstance(uvicorn_args, str):
            raise TypeError("uvicorn_args must be a sequence of strings, not one string")
        args = list(uvicorn_args)
        for a in args:
            _check_type("each uvicorn_args item", a, str, "a string")
        env_items = [(str(k), str(v)) for k, v in (env or {}).items()]
        for label, value in (("start_timeout", start_timeout), ("stop_timeout", stop_timeout)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{label} must be a number of seconds")
        self._core = _core.Core(
            app_path,
            host,
            port,
            name,
            workers,
            os.fspath(log_dir),
            os.fspath(pid_dir) if pid_dir is not None else _home_dir(),
            os.fspath(cwd) if cwd is not None else None,
            env_items,
            float(start_timeout),
            float(stop_timeout),
            args,
            sys.executable,
        )
        self._app_path = app_path
        self._host = host
        self._port = port
        self._name = name
        self.workers = workers
        self._redirect_output = False

    # -- the original's attributes ---------------------------------------------------

    @property
    def app_path(self) -> str:
        return self._app_path

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        return self._port

    @property
    def name(self) -> str:
        return self._name

    @property
    def _pid_file(self) -> str:
        return str(self._core.pid_file)

    @property
    def _process(self) -> Optional[_ChildProcess]:
        pid = self._core.child_pid()
        return None if pid is None else _ChildProcess(self._core, pid)

    @_process.setter
    def _process(self, value: object) -> None:
        if value is not None:
            raise TypeError("_process can only be reset to None")
        self._core.forget_child()

    # -- lifecycle ----------------------------------------------------------------------

    def start(self, redirect_output: bool = False, force: bool = False) -> None:
        """Start the server and return once it listens on its port.

        A no-op if this server already runs. Raises :class:`PortInUseError`
        if another program holds the port (``force=True`` stops holders
        owned by the same user), :class:`StartError` if the server exits
        first and :class:`StartTimeoutError` after ``start_timeout``.
        """
        self._redirect_output = bool(redirect_output)
        if _uvicorn_missing():
            from ._errors import StartError

            raise StartError(
                f"Failed to start {self.name} server: uvicorn is not installed for "
                f"{sys.executable} (pip install uvicorn)"
            )
        self._core.start(bool(redirect_output), bool(force))

    def stop(self) -> None:
        """Stop the server's whole process group; quiet when nothing runs."""
        self._core.stop()

    def restart(self, redirect_output: Optional[bool] = None, force: bool = False) -> None:
        """Stop, then start again (with the last ``redirect_output`` by default)."""
        self.stop()
        self.start(self._redirect_output if redirect_output is None else redirect_output, force)

    def is_running(self) -> bool:
        """True only when this server (identity verified) is alive."""
        return self._core.is_running()

    def __enter__(self) -> ServerManager:
        self.start(self._redirect_output)
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.stop()

    # -- the original's helpers ----------------------------------------------------------

    def _is_port_in_use(self, kill_if_used: bool = False) -> bool:
        """Whether a bind to (host, port) would fail. With ``kill_if_used``,
        stops same-user holders and returns False if it stopped any."""
        in_use = self._core.port_in_use()
        if in_use and kill_if_used:
            return not self._core.kill_port_holders()
        return in_use

    def _kill_process_using_port(self) -> bool:
        """Stop same-user processes holding the port; True if any was stopped.
        Raises :class:`PortInUseError` naming holders it may not stop."""
        return self._core.kill_port_holders()

    def _force_cleanup_port(self) -> None:
        """Free the port or raise :class:`PortInUseError`."""
        self._core.force_cleanup_port()

    def _read_pid(self) -> Optional[int]:
        return self._core.read_pid()

    def _write_pid(self) -> None:
        self._core.write_pid()

    def _cleanup_pid(self) -> None:
        self._core.cleanup_pid()

    # -- beyond the original ---------------------------------------------------------

    def port_holders(self) -> list[PortHolder]:
        """Processes whose listening sockets clash with (host, port)."""
        return [PortHolder(*h) for h in self._core.port_holders()]

    def status(self) -> ServerStatus:
        """A snapshot of the server's state, resources and logs."""
        s = self._core.status()
        return ServerStatus(
            name=self.name,
            pid=s["pid"],
            host=self.host,
            port=self.port,
            state=s["state"],
            started_at=s["started_at"],
            uptime=s["uptime"],
            memory_rss=s["rss_bytes"],
            cpu_percent=s["cpu_percent"],
            workers=list(s["workers"]),
            exit_code=s["exit_code"],
            stdout_log=None if s["stdout_log"] is None else str(s["stdout_log"]),
            stderr_log=None if s["stderr_log"] is None else str(s["stderr_log"]),
        )

    def diagnose(self) -> dict[str, Any]:
        """The guide's ``diagnose_server_issues`` keys, plus ``port_holders``.
        Never raises: a failing probe is reported under ``errors``."""
        results: dict[str, Any] = {}
        errors: dict[str, str] = {}

        def probe(key: str, fn: Any, default: Any) -> None:
            try:
                results[key] = fn()
            except Exception as e:  # noqa: BLE001 - diagnose must not raise
                results[key] = default
                errors[key] = f"{type(e).__name__}: {e}"

        probe("is_running", self.is_running, False)
        probe("port_available", lambda: not self._is_port_in_use(), None)
        probe("pid_file_exists", lambda: os.path.exists(self._pid_file), False)
        probe("stored_pid", self._read_pid, None)
        pid = results.get("stored_pid")
        if pid:
            info = _core.process_info(pid)
            results["pid_running"] = bool(info and info["alive"])
            if info:
                results["process_name"] = info["name"]
                results["process_cmdline"] = info["cmdline"]
        probe(
            "port_holders",
            lambda: [h._asdict() for h in self.port_holders()],
            [],
        )
        results["system_info"] = {
            "platform": sys.platform,
            "python_version": sys.version,
            "memory_available": _core.memory_available() / (1024 * 1024),
        }
        if errors:
            results["errors"] = errors
        return results

    @classmethod
    def from_record(
        cls, name: str, pid_dir: Optional[PathLike] = None, **kwargs: Any
    ) -> Optional[ServerManager]:
        """A manager for the server recorded under ``name``, rebuilt from its
        PID record (ours, or the command line of an original's server), or
        None when there is no record to go on."""
        directory = os.fspath(pid_dir) if pid_dir is not None else _home_dir()
        rec = _core.read_record(directory, name)
        if rec is None:
            return None
        app, host, port = rec.get("app_path"), rec.get("host"), rec.get("port")
        if app is None and rec["pid"] is not None:
            info = _core.process_info(rec["pid"])
            app, host, port = _parse_uvicorn_cmdline(info["cmdline"] if info else [])
        if not app:
            return None
        if rec.get("log_dir"):
            kwargs.setdefault("log_dir", rec["log_dir"])
        return cls(app, host or "127.0.0.1", int(port or 8000), name, pid_dir=directory, **kwargs)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.app_path!r}, {self.host!r}, {self.port!r}, {self.name!r})"
        )


def _parse_uvicorn_cmdline(
    cmd: Sequence[str],
) -> tuple[Optional[str], Optional[str], Optional[int]]:
    """(app_path, host, port) from a ``python -m uvicorn APP ...`` command line."""
    app: Optional[str] = None
    host: Optional[str] = None
    port: Optional[int] = None
    args = list(cmd)
    try:
        i = args.index("uvicorn")
    except ValueError:
        i = next((k for k, a in enumerate(args) if a.endswith("/uvicorn")), -1)
        if i < 0:
            return None, None, None
    rest = args[i + 1 :]
    k = 0
    while k < len(rest):
        a = rest[k]
        if a in ("--host", "--port") and k + 1 < len(rest):
            if a == "--host":
                host = rest[k + 1]
            elif rest[k + 1].isdigit():
                port = int(rest[k + 1])
            k += 2
            continue
        if a.startswith("--host="):
            host = a.split("=", 1)[1]
        elif a.startswith("--port=") and a.split("=", 1)[1].isdigit():
            port = int(a.split("=", 1)[1])
        elif not a.startswith("-") and app is None:
            app = a
        k += 1
    return app, host, port


def list_records(pid_dir: Optional[PathLike] = None) -> list[str]:
    """Names of every server with a PID file in ``pid_dir`` (default: home)."""
    directory = os.fspath(pid_dir) if pid_dir is not None else _home_dir()
    names = []
    try:
        entries = os.listdir(directory)
    except OSError:
        return []
    for entry in entries:
        if entry.startswith(".upsonic_") and entry.endswith("_server.pid"):
            names.append(entry[len(".upsonic_") : -len("_server.pid")])
    return sorted(n for n in names if n)


def port_holders(port: int, host: str = "0.0.0.0") -> list[PortHolder]:
    """Processes whose listening sockets clash with a bind to (host, port)."""
    return [PortHolder(*h) for h in _core.port_holders(port, host)]
