"""``ServerManager``: the drop-in API. Every call runs in the Rust core."""

from __future__ import annotations

import os
import sys

from . import _core
from ._compat import overridden_hooks, remember_default_hooks, server_process
from ._spec import K

# typing is imported for type checkers only: at run time it costs milliseconds.
TYPE_CHECKING = False

if TYPE_CHECKING:
    # Only for annotations: importing typing at run time costs milliseconds.
    from types import TracebackType
    from typing import Any, Mapping, Optional, Sequence, Union

    from ._core import PortHolder

    PathLike = Union[str, os.PathLike[str]]

# Every option of a server, from the core's spec (src/spec.rs): its name,
# default, annotation and help. The signature below is built from it.
_OPTIONS: tuple[dict[str, Any], ...] = _core.OPTIONS
# Each keyword's default, for the keywords that have one.
_DEFAULTS: dict[str, Any] = {o["name"]: o["default"] for o in _OPTIONS if not o["required"]}
_POSITIONAL: tuple[str, ...] = tuple(o["name"] for o in _OPTIONS if o["positional"])

DEFAULT_UVICORN_ARGS: tuple[str, ...] = _DEFAULTS[K.uvicorn_args]


# Built by the core: a read-only snapshot with ``as_dict()``.
ServerStatus = _core.ServerStatus


# Attributes the original sets in __init__ that programs assign, and the
# configuration keyword each one is (the spec's assignable options; the PID
# file's attribute is the original's ``_pid_file``).
_ASSIGNABLE = {
    ("_" + o["name"] if o["name"] == K.pid_file else o["name"]): o["name"]
    for o in _OPTIONS
    if o["assignable"]
}


def _spec_init() -> Any:
    """``ServerManager.__init__``, written from the spec's table: the four
    positional arguments, then every option as a keyword with its default
    and annotation (what ``inspect.signature`` shows), all passed through
    to the core, which checks them. Generated so that no keyword or default
    is spelled twice; a program sees an ordinary function."""
    names = [o["name"] for o in _OPTIONS if not o["positional"]]
    head = ", ".join(_POSITIONAL)
    keywords = ", ".join(f"{n}=_D[{n!r}]" for n in names)
    passed = ", ".join(f"{n}={n}" for n in names)
    source = (
        f"def __init__(self, {head}, *, {keywords}):\n"
        f"    self._core = _core.Core({head}, python=_sys.executable, {passed})\n"
    )
    scope: dict[str, Any] = {"_D": _DEFAULTS, "_core": _core, "_sys": sys}
    exec(compile(source, __file__, "exec"), scope)  # noqa: S102 - our own table
    init = scope["__init__"]
    init.__qualname__ = "ServerManager.__init__"
    if hasattr(init.__code__, "co_qualname"):  # Python 3.11+: error messages
        init.__code__ = init.__code__.replace(co_qualname=init.__qualname__)
    init.__annotations__ = {o["name"]: o["annotation"] for o in _OPTIONS}
    init.__annotations__["return"] = "None"
    init.__doc__ = (
        "Every keyword and its default is the spec's (``_core.OPTIONS``); every "
        "check, of types and values, is the core's: one validation for every "
        "entry point, each error (ValueError, TypeError) naming the argument."
    )
    return init


def _rebuild(
    cls: type[ServerManager], kwargs: dict[str, Any], redirect_output: bool
) -> ServerManager:
    """A manager equal to a pickled or copied one (see ``__reduce__``)."""
    m = cls.__new__(cls)
    args = [kwargs.pop(k) for k in (K.app_path, K.host, K.port, K.name)]
    ServerManager.__init__(m, *args, **kwargs)
    m._core.remember_output(redirect_output)
    return m


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
    defaults to the home directory; ``pid_file`` chooses another path, the
    other record files going beside it) and redirected logs go to
    ``{log_dir}/{name}_server.log`` and ``{log_dir}/{name}_server_error.log``.

    ``stop_with_caller`` (bool, default False): when True, the server, its
    workers and its supervisor stop when the process that called
    ``start()`` ends, however it ends (normal exit, an exception, SIGTERM,
    SIGKILL, Ctrl-C), within about a second plus ``stop_timeout``. With a
    restart policy, the supervisor keeps the server up while that process
    lives and ends supervision when it ends. See docs/OWNER.md.

    ``supervise`` (bool, default False): run the per-server supervisor
    without a restart policy too, as a watcher: the server's parent, it
    records how each run ended and writes its output. A restart policy or
    any ``log_*`` option implies it. ``log_max_bytes`` (int bytes or a size
    such as ``"64KiB"``; None: 50 MiB; 0: never rotate) and
    ``log_backup_count`` (int; None: 10) rotate the log files as
    ``logging.handlers.RotatingFileHandler`` names them (``.1`` newest);
    ``log_timestamps`` (default False) starts every line with an ISO 8601
    UTC timestamp. A ``ValueError`` names a bad value.

    ``workers=None`` reads ``$UPSONIC_WORKERS_AMOUNT`` at each ``start()``.
    ``history=True`` keeps how every run ended on disk
    (``.upsonic_{name}_server.last``, listed by ``upsonic-server status``),
    clean stops included, as the CLI's starts and supervised servers do;
    by default only failed runs are kept there. ``app_path``, ``host``,
    ``port``, ``name`` and ``_pid_file`` are assignable while the server does
    not run (docs/DROPIN.md).
    """

    _core: _core.Core

    if TYPE_CHECKING:
        # For type checkers only: the keywords, their types (the defaults
        # are the spec's, ``_core.OPTIONS``).
        def __init__(
            self,
            app_path: str,
            host: str,
            port: int,
            name: str,
            *,
            workers: Optional[int] = ...,
            log_dir: PathLike = ...,
            pid_dir: Optional[PathLike] = ...,
            cwd: Optional[PathLike] = ...,
            env: Optional[Mapping[str, str]] = ...,
            start_timeout: float = ...,
            stop_timeout: float = ...,
            uvicorn_args: Sequence[str] = ...,
            hold_socket: Optional[bool] = ...,
            stop_with_caller: bool = ...,
            restart: str = ...,
            restart_delay: float = ...,
            restart_max_delay: float = ...,
            restart_limit: Optional[int] = ...,
            stable_after: float = ...,
            health_check: Optional[str] = ...,
            health_interval: float = ...,
            health_timeout: float = ...,
            health_failures: int = ...,
            max_memory: Union[int, str, None] = ...,
            supervise: bool = ...,
            log_max_bytes: Union[int, str, None] = ...,
            log_backup_count: Optional[int] = ...,
            log_timestamps: bool = ...,
            warm: bool = ...,
            preload: Optional[Sequence[str]] = ...,
            pid_file: Optional[PathLike] = ...,
            history: bool = ...,
        ) -> None: ...

    else:
        __init__ = _spec_init()

    # -- the original's attributes ---------------------------------------------------

    # The configuration is the core's; these read it. Those the original sets
    # in __init__ (app_path, host, port, name, _pid_file) are assignable, as
    # there, while the server does not run: validated as the constructor's
    # arguments, they take effect at the next start().

    def _reconfigure(self, attr: str, value: object) -> None:
        """Assigns one of the original's attributes: the configuration is
        built again with the new value (same checks as the constructor: a
        ``ValueError`` or ``TypeError`` naming it) and replaces this
        manager's; a :class:`ServerManagerError` says to stop the server
        first while it runs."""
        kw = self._core.arguments()
        key = _ASSIGNABLE[attr]
        if key == K.port:
            # hold_socket left to its default follows the port (0 holds one).
            if kw[K.hold_socket] == (kw[K.port] == 0 or kw[K.restart] != "no"):
                kw[K.hold_socket] = None
        if key == K.pid_file and value is not None:
            value = os.fspath(value)  # type: ignore[call-overload]
        kw[key] = value
        self._core.replace_server(_core.Core(**kw), attr)

    @property
    def app_path(self) -> str:
        return self._core.app_path

    @app_path.setter
    def app_path(self, value: str) -> None:
        self._reconfigure(K.app_path, value)

    @property
    def host(self) -> str:
        return self._core.host

    @host.setter
    def host(self, value: str) -> None:
        self._reconfigure(K.host, value)

    @property
    def port(self) -> int:
        """The port it listens on: after ``start()`` with port 0, the one the
        kernel picked. Assignable while the server does not run."""
        return self._core.port

    @port.setter
    def port(self, value: int) -> None:
        self._reconfigure(K.port, value)

    @property
    def url(self) -> str:
        """``http://HOST:PORT``, or ``https://`` when ``uvicorn_args`` give
        it TLS (``--ssl-certfile``); brackets around an IPv6 host."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self._core.scheme}://{host}:{self.port}"

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

    @name.setter
    def name(self, value: str) -> None:
        # Unlike the original, the PID file follows the name (unless one was
        # chosen with _pid_file): the name is what finds the server again.
        self._reconfigure(K.name, value)

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
        """Where redirected output goes, as given: a relative one is under the
        server's working directory (``cwd`` when given, else the caller's),
        resolved at start; ``log_files`` gives the absolute paths."""
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

    @_pid_file.setter
    def _pid_file(self, value: Optional[PathLike]) -> None:
        # The identity, lock and last-run files go beside it; None: the default.
        self._reconfigure("_pid_file", value)

    _process_obj: Any = None

    @property
    def _process(self) -> Any:
        """The server this manager launched, as a ``subprocess.Popen``
        (see ``ServerProcess``), or None; the same object until the
        manager lets go of it (stop, restart)."""
        pid = self._core.child_pid()
        if pid is None:
            return None
        p = self._process_obj
        if p is None or p.pid != pid:
            p = self._process_obj = server_process(self._core, pid)
        return p

    @_process.setter
    def _process(self, value: object) -> None:
        if value is not None:
            raise TypeError("_process can only be reset to None")
        self._core.forget_child()
        self._process_obj = None

    def _overridden_hooks(self) -> tuple[str, ...]:
        """The original's helpers a subclass replaced (looked up per call,
        so a class patched later counts too); none for this class itself."""
        cls = type(self)
        if cls is ServerManager:
            return ()
        return overridden_hooks(cls)

    def __reduce__(self) -> Any:
        """Pickling and ``copy.deepcopy`` rebuild an equal manager, as the
        original's could be copied, while it has no server of its own
        running. Raises TypeError while it has one (the copy could not own
        that child). A copy with ``stop_with_caller`` stops with the process
        that unpickled it."""
        pid = self._core.child_pid()
        if pid is not None and self._core.poll_pid(pid) is None:
            raise TypeError(
                f"cannot pickle or copy ServerManager {self.name!r} while the server it "
                f"started runs (pid {pid}): a copy cannot own that child process. Stop it "
                f"first, or rebuild it where it is needed with "
                f"ServerManager.from_record({self.name!r})"
            )
        kw = self._core.arguments()
        del kw["python"]  # the interpreter of the process that unpickles it
        state = {k: v for k, v in self.__dict__.items() if k not in ("_core", "_process_obj")}
        return (_rebuild, (type(self), kw, self._core.redirect_output), state or None)

    # -- lifecycle ----------------------------------------------------------------------

    def start(self, redirect_output: bool = False, force: bool = False) -> None:
        """Start the server and return once it listens on its port.

        A no-op if this server already runs. Raises :class:`PortInUseError`
        if another program holds the port (``force=True`` stops holders
        owned by the same user), :class:`StartError` if the server exits
        first and :class:`StartTimeoutError` after ``start_timeout``.
        """
        hooks = self._overridden_hooks()
        if hooks:
            self._start_with_hooks(hooks, bool(redirect_output), bool(force))
            return
        self._launch(bool(redirect_output), bool(force))

    def _launch(self, redirect_output: bool, force: bool) -> bool:
        """``start()`` in the core; True if it launched a server."""
        if _uvicorn_missing():
            from ._errors import StartError

            raise StartError(
                f"Failed to start {self.name} server: uvicorn is not installed for "
                f"{sys.executable} (pip install uvicorn)"
            )
        launched = self._core.start(redirect_output, force)
        self._follow_supervisor()
        return launched

    def _start_with_hooks(self, hooks: tuple[str, ...], redirect_output: bool, force: bool) -> None:
        """``start()`` calling a subclass's helpers where the original's
        does: ``_force_cleanup_port()`` first; then nothing if
        ``is_running()`` (which asks ``_read_pid()``); else
        ``_is_port_in_use(kill_if_used=force)`` (True: the port is taken);
        ``_write_pid()`` once the server is launched (the core has recorded it
        already) and ``_is_port_in_use()`` until it says the server listens.
        An exception from one of them stops the server and is raised as
        :class:`StartError`, as the original wraps it in RuntimeError."""
        from ._errors import PortInUseError, StartError

        if "_force_cleanup_port" in hooks:
            self._force_cleanup_port()
        if self.is_running():
            return
        port_hook = "_is_port_in_use" in hooks
        if port_hook:
            if self._is_port_in_use(kill_if_used=force):
                raise PortInUseError(
                    f"Port {self.port} is still in use and could not be freed "
                    f"({type(self).__name__}._is_port_in_use says so)",
                    port=self.port,
                )
        if not self._launch(redirect_output, force):
            return
        try:
            if "_write_pid" in hooks:
                self._write_pid()
            if port_hook:
                self._await_port_hook()
        except StartError:
            self.stop()
            raise
        except Exception as e:
            self.stop()
            raise StartError(f"Failed to start {self.name} server: {e}") from e

    def _await_port_hook(self) -> None:
        """Waits until an overridden ``_is_port_in_use()`` says the server
        listens (the core has seen it listen), within ``start_timeout``."""
        import time

        from ._errors import StartError, StartTimeoutError

        deadline = time.monotonic() + self._core.start_timeout
        while not self._is_port_in_use():
            p = self._process
            code = None if p is None else p.poll()
            if code is not None:
                raise StartError(
                    f"Failed to start {self.name} server: it exited with code {code}",
                    exit_code=code,
                )
            if time.monotonic() >= deadline:
                raise StartTimeoutError(
                    f"Failed to start {self.name} server: {type(self).__name__}._is_port_in_use() "
                    f"did not report port {self.port} in use within {self._core.start_timeout} s "
                    "(start_timeout); it was stopped"
                )
            time.sleep(0.01)

    def _follow_supervisor(self) -> None:
        """Relays what a supervisor this call spawned says (restarts and
        their reasons) to the ``upsonic_server_manager`` logger, from a
        daemon thread, for as long as both live."""
        link = self._core.take_supervisor_link()
        if link is not None:
            from ._supervision import follow

            follow(self.name, *link)

    def stop(self) -> None:
        """Stop the server's whole process group; quiet when nothing runs.

        A subclass's ``_read_pid()`` is asked first, as the original does,
        and the server it names stopped too when it is ours (verified as a
        PID record is; anything else is left alone); its ``_cleanup_pid()``
        is called last."""
        hooks = self._overridden_hooks()
        pid = self._read_pid() if "_read_pid" in hooks else None
        self._core.stop()
        self._process_obj = None
        if isinstance(pid, int) and pid > 1:
            self._core.stop_pid(pid)
        if "_cleanup_pid" in hooks:
            self._cleanup_pid()

    def restart(self, redirect_output: Optional[bool] = None, force: bool = False) -> None:
        """Stop, then start again (with the last ``redirect_output`` by
        default). With a held socket the socket stays open in between, so
        connections that arrive meanwhile wait instead of being refused."""
        redirect = self._core.redirect_output if redirect_output is None else redirect_output
        if self.hold_socket and not _uvicorn_missing() and not self._overridden_hooks():
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
        from ._errors import StartError

        old = self._core.status().pid
        try:
            self._core.reload()
        except StartError as e:
            # The message is the failed generation's; say what still serves.
            if old is not None and e.args:
                e.args = (
                    f"{e.args[0]}\nNot reloaded: the old generation (pid {old}) still serves.",
                    *e.args[1:],
                )
            raise

    def is_running(self) -> bool:
        """True only when this server (identity verified) is alive.

        A subclass's ``_read_pid()`` / ``_cleanup_pid()`` are called as the
        original calls them: unless our own child runs, the PID it reads
        counts when it is our server, and a PID naming no live process is
        cleaned up."""
        hooks = self._overridden_hooks()
        if "_read_pid" not in hooks and "_cleanup_pid" not in hooks:
            return self._core.is_running()
        p = self._process
        if p is not None and p.poll() is None:
            return True
        pid = self._read_pid()
        if isinstance(pid, int) and pid > 1:
            if self._core.pid_is_ours(pid):
                return True
            info = _core.process_info(pid)
            if not (info and info["alive"]):
                self._cleanup_pid()
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
            # The tuple's fields, and the managed server a holder belongs to.
            lambda: [{**h._asdict(), "server": h.server} for h in self.port_holders()],
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
        app, host, port = rec.get(K.app_path), rec.get(K.host), rec.get(K.port)
        if app is None and rec["pid"] is not None:
            info = _core.process_info(rec["pid"])
            cmd = _core.parse_uvicorn_cmdline(info["cmdline"]) if info else None
            if cmd is not None:
                app, host, port = cmd.app, cmd.host, cmd.port
                if cmd.workers:
                    kwargs.setdefault(K.workers, cmd.workers)
        if not app:
            return None
        if rec.get(K.log_dir):
            kwargs.setdefault(K.log_dir, rec[K.log_dir])
        config = rec.get("config")
        if config:
            for o in _OPTIONS:
                if o["restored"] and o["name"] in config:
                    kwargs.setdefault(o["name"], config[o["name"]])
        m = cls(app, host or "127.0.0.1", int(port or 8000), name, pid_dir=directory, **kwargs)
        redirected = config["redirect_output"] if config else bool(rec.get(K.log_dir))
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


remember_default_hooks(ServerManager)


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
