"""``ServerManager``: the drop-in API. Every call runs in the Rust core."""

from __future__ import annotations

import os
import sys

from . import _core

# typing is imported for type checkers only: at run time it costs milliseconds.
TYPE_CHECKING = False

if TYPE_CHECKING:
    # Only for annotations: importing typing at run time costs milliseconds.
    from types import TracebackType
    from typing import Any, Mapping, Optional, Sequence, Union

    from ._core import PortHolder

    PathLike = Union[str, os.PathLike[str]]

DEFAULT_UVICORN_ARGS: tuple[str, ...] = ("--log-level", "error", "--no-access-log")


# Built by the core: a read-only snapshot with ``as_dict()``.
ServerStatus = _core.ServerStatus


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


class _StopsOnExit:
    """The end of a ``with`` block: ``stop()``, whatever happened inside."""

    def stop(self) -> None:
        raise NotImplementedError

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.stop()


class ServerManager(_StopsOnExit):
    """Start, watch and stop one uvicorn server.

    The first four arguments are positional, as in upsonic's original. The
    PID file is ``{pid_dir}/.upsonic_{name}_server.pid`` (``pid_dir``
    defaults to the home directory) and redirected logs go to
    ``{log_dir}/{name}_server.log`` and ``{log_dir}/{name}_server_error.log``.

    ``stop_with_caller`` (bool, default False): when True, the server, its
    workers and its supervisor stop when the process that called
    ``start()`` ends, however it ends (normal exit, an exception, SIGTERM,
    SIGKILL, Ctrl-C), within about a second plus ``stop_timeout``. With a
    restart policy, the supervisor keeps the server up while that process
    lives and ends supervision when it ends. See docs/OWNER.md.
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
        hold_socket: Optional[bool] = None,
        stop_with_caller: bool = False,
        restart: str = "no",
        restart_delay: float = 0.1,
        restart_max_delay: float = 30.0,
        restart_limit: Optional[int] = 10,
        stable_after: float = 10.0,
        health_check: Optional[str] = None,
        health_interval: float = 5.0,
        health_timeout: float = 2.0,
        health_failures: int = 3,
        max_memory: Union[int, str, None] = None,
        warm: bool = False,
        preload: Optional[Sequence[str]] = None,
    ) -> None:
        # Every check, of types and values, is the core's: one validation
        # for every entry point, each error naming the argument.
        self._core = _core.Core(
            app_path,
            host,
            port,
            name,
            workers=workers,
            log_dir=log_dir,
            pid_dir=pid_dir,
            cwd=cwd,
            env=env,
            start_timeout=start_timeout,
            stop_timeout=stop_timeout,
            uvicorn_args=uvicorn_args,
            python=sys.executable,
            hold_socket=hold_socket,
            stop_with_caller=stop_with_caller,
            restart=restart,
            restart_delay=restart_delay,
            restart_max_delay=restart_max_delay,
            restart_limit=restart_limit,
            stable_after=stable_after,
            health_check=health_check,
            health_interval=health_interval,
            health_timeout=health_timeout,
            health_failures=health_failures,
            max_memory=max_memory,
            warm=warm,
            preload=preload,
        )

    # -- the original's attributes ---------------------------------------------------

    # The configuration is the core's; these read it. They are read-only: a
    # manager describes one server (build another to change it).

    @property
    def app_path(self) -> str:
        return self._core.app_path

    @property
    def host(self) -> str:
        return self._core.host

    @property
    def port(self) -> int:
        """The port it listens on: after ``start()`` with port 0, the one the
        kernel picked."""
        return self._core.port

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` (brackets around an IPv6 host)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def restart_policy(self) -> str:
        """``"no"`` (no supervisor), ``"on-failure"`` or ``"always"``."""
        return self._core.restart_policy

    @property
    def hold_socket(self) -> bool:
        """Whether this manager binds and holds the listening socket and the
        server inherits it (port 0, ``reload()``)."""
        return self._core.hold_socket

    @property
    def warm(self) -> bool:
        """Whether servers are forked from a warm-start preloader (see
        docs/WARM.md); a start falls back to cold, and logs why, whenever
        the preloader cannot be used."""
        return self._core.warm

    @property
    def name(self) -> str:
        return self._core.name

    @property
    def workers(self) -> int:
        return self._core.workers

    @property
    def cwd(self) -> Optional[str]:
        """The server's working directory, or None for the caller's."""
        cwd = self._core.cwd
        return None if cwd is None else str(cwd)

    @property
    def env(self) -> dict[str, str]:
        """The extra environment the server starts with (a copy)."""
        return dict(self._core.env)

    @property
    def log_dir(self) -> str:
        """Where redirected output goes (as given; relative to the current
        directory at start)."""
        return str(self._core.log_dir)

    @property
    def log_files(self) -> tuple[str, str]:
        """(stdout log, stderr log) of redirected output, as absolute paths."""
        out, err = self._core.log_paths()
        return str(out), str(err)

    @property
    def redirect_output(self) -> bool:
        """Whether the last start (or, for a manager from ``from_record``,
        the recorded one) sent output to the log files; ``restart()`` and
        ``with`` reuse it."""
        return self._core.redirect_output

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
        if _uvicorn_missing():
            from ._errors import StartError

            raise StartError(
                f"Failed to start {self.name} server: uvicorn is not installed for "
                f"{sys.executable} (pip install uvicorn)"
            )
        self._core.start(bool(redirect_output), bool(force))
        self._follow_supervisor()

    def _follow_supervisor(self) -> None:
        """Relays what a supervisor this call spawned says (restarts and
        their reasons) to the ``upsonic_server_manager`` logger, from a
        daemon thread, for as long as both live."""
        link = self._core.take_supervisor_link()
        if link is not None:
            from ._supervision import follow

            follow(self.name, *link)

    def stop(self) -> None:
        """Stop the server's whole process group; quiet when nothing runs."""
        self._core.stop()

    def restart(self, redirect_output: Optional[bool] = None, force: bool = False) -> None:
        """Stop, then start again (with the last ``redirect_output`` by
        default). With a held socket the socket stays open in between, so
        connections that arrive meanwhile wait instead of being refused."""
        redirect = self._core.redirect_output if redirect_output is None else redirect_output
        if self.hold_socket and not _uvicorn_missing():
            self._core.restart(bool(redirect), bool(force))
            return
        self.stop()
        self.start(redirect, force)

    def reload(self) -> None:
        """Start a new generation on the same socket, wait until it is ready,
        then stop the old one gracefully (it finishes in-flight requests). If
        the new one fails, it is stopped, the old one keeps serving and
        :class:`StartError` says why. Needs a held socket
        (``hold_socket=True``, the default for port 0)."""
        self._core.reload()

    def is_running(self) -> bool:
        """True only when this server (identity verified) is alive."""
        return self._core.is_running()

    def __enter__(self) -> ServerManager:
        self.start(self._core.redirect_output)
        return self

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
        return self._core.port_holders()

    def status(self) -> ServerStatus:
        """A snapshot of the server's state, resources and logs."""
        return self._core.status()

    def cpu_time(self) -> Optional[float]:
        """CPU seconds the server and its workers have used so far, or None
        when it does not run; two readings give its recent CPU use."""
        return self._core.cpu_time()

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
        PID record with the whole configuration it was started with (workers,
        cwd, env, timeouts, uvicorn arguments, output mode), or from the
        command line of an original's server; for a stopped server, from how
        its last run was kept. None when there is nothing to go on. Keyword
        arguments override what was recorded."""
        directory = os.fspath(pid_dir) if pid_dir is not None else os.fspath(_core.home_dir())
        rec = _core.read_record(directory, name, last_run=True)
        if rec is None:
            return None
        app, host, port = rec.get("app_path"), rec.get("host"), rec.get("port")
        if app is None and rec["pid"] is not None:
            info = _core.process_info(rec["pid"])
            cmd = _core.parse_uvicorn_cmdline(info["cmdline"]) if info else None
            if cmd is not None:
                app, host, port = cmd.app, cmd.host, cmd.port
                if cmd.workers:
                    kwargs.setdefault("workers", cmd.workers)
        if not app:
            return None
        if rec.get("log_dir"):
            kwargs.setdefault("log_dir", rec["log_dir"])
        config = rec.get("config")
        if config:
            keys = ("workers", "cwd", "env", "start_timeout", "stop_timeout", "uvicorn_args")
            supervision = (
                "restart",
                "restart_delay",
                "restart_max_delay",
                "restart_limit",
                "stable_after",
                "health_check",
                "health_interval",
                "health_timeout",
                "health_failures",
                "max_memory",
            )
            for key in supervision:
                if key in config:
                    kwargs.setdefault(key, config[key])
            for key in (*keys, "hold_socket", "warm", "preload"):
                if config.get(key) is not None:
                    kwargs.setdefault(key, config[key])
        m = cls(app, host or "127.0.0.1", int(port or 8000), name, pid_dir=directory, **kwargs)
        redirected = config["redirect_output"] if config else bool(rec.get("log_dir"))
        m._core.remember_output(redirected)
        return m

    def forget(self) -> bool:
        """Forget a server that is not running: its stale record and how its
        last run ended (stopped servers stay listed until then). False, and
        nothing forgotten, while it runs."""
        return self._core.forget()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.app_path!r}, {self.host!r}, {self.port!r}, {self.name!r})"
        )


def list_records(pid_dir: Optional[PathLike] = None, *, stopped: bool = False) -> list[str]:
    """Names of every server with a PID file in ``pid_dir`` (default: home);
    with ``stopped=True`` also those stopped whose last run is kept (until
    ``forget()`` or a new start)."""
    return _core.list_records(None if pid_dir is None else os.fspath(pid_dir), stopped)


def log_files(name: str, log_dir: PathLike = "logs") -> tuple[str, str]:
    """(stdout log, stderr log) that server ``name`` writes in ``log_dir``
    when its output is redirected."""
    out, err = _core.log_paths(os.fspath(log_dir), name)
    return str(out), str(err)


def port_holders(port: int, host: str = "0.0.0.0") -> list[PortHolder]:
    """Processes whose listening sockets clash with a bind to (host, port)."""
    return _core.port_holders(port, host)
