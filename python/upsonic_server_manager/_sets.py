"""Declarative server sets: ``upsonic-servers.toml`` read, expanded, overlaid,
checked and ordered; a set brought up (what changed restarted) and down.

The keys of a server's table are ``ServerManager``'s keyword names, read from
its signature (never spelled here), plus ``depends_on``; a value is checked
by building the ``ServerManager`` (the core checks every argument). Errors are
:class:`SetFileError`, naming the key's path (``servers.api.prot``).
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time

from . import _core
from ._cli_sets import DEFAULT_FILE
from ._errors import ServerManagerError
from ._group import ServerGroup, stop_all
from ._manager import ServerManager
from ._spec import K

TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

#: The CLI's default host (a file without ``host`` binds here, as `start` does).
DEFAULT_HOST = "127.0.0.1"

# Not in a file: the name is the table's, and stop_with_caller would tie each
# server to the `up` command that started it (it would stop as `up` exits).
_NOT_IN_FILE = ("self", K.name, K.stop_with_caller)

#: Relative paths in these keys resolve against the file's directory.
_PATH_KEYS = (K.cwd, K.log_dir, K.pid_dir)


class SetFileError(ValueError):
    """A server file that cannot be used: the message names the file and the
    key's path (``servers.api.port``), and says what to write instead."""


# ---- the keys, from ServerManager's signature ------------------------------------------


_NO_DEFAULT = object()

# name -> (default or _NO_DEFAULT, annotation text), in the signature's order.
_PARAMETERS: dict[str, tuple[Any, str]] = {}


def _parameters() -> dict[str, tuple[Any, str]]:
    """``ServerManager``'s keywords but ``name`` and ``stop_with_caller``:
    each one's default and annotation, from the spec's table
    (``_core.OPTIONS``, which the signature is built from)."""
    if not _PARAMETERS:
        for o in _core.OPTIONS:
            if o["name"] not in _NOT_IN_FILE:
                default = _NO_DEFAULT if o["required"] else o["default"]
                _PARAMETERS[o["name"]] = (default, o["annotation"])
    return _PARAMETERS


def defaults() -> dict[str, Any]:
    """Every key a server table may hold with its default (the CLI's host);
    keys without one (``app_path``, ``port``) are required."""
    out: dict[str, Any] = {}
    for n, (default, _) in _parameters().items():
        if n == K.host:
            out[n] = DEFAULT_HOST
        elif default is not _NO_DEFAULT:
            out[n] = default
    return out


def allowed_keys() -> list[str]:
    return [*_parameters(), "depends_on"]


def required_keys() -> list[str]:
    d = defaults()
    return [n for n in _parameters() if n not in d]


def _annotation(key: str) -> str:
    return _parameters()[key][1]


# ---- ${VAR} and ${VAR:-default} ---------------------------------------------------------

_VAR = re.compile(r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\{([^}]*)\}?)")


def expand(text: str, environ: Mapping[str, str], path: str) -> str:
    """``${VAR}``, ``${VAR:-default}`` (also when VAR is empty) from
    ``environ``; ``$$`` is a literal ``$``. An unset VAR without a default,
    or a malformed ``${...}``, is a :class:`SetFileError` naming ``path``."""

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, default, bad = m.group(1), m.group(2), m.group(3)
        if name is None:
            raise SetFileError(
                f"{path}: ${{{bad}}} is not a variable; write ${{NAME}} or "
                f"${{NAME:-default}} (and $$ for a literal $)"
            )
        value = environ.get(name)
        if value:
            return value
        if default is not None:
            return default
        if value is not None:
            return value
        raise SetFileError(
            f"{path}: ${{{name}}} is not set; set it, or give a default: ${{{name}:-VALUE}}"
        )

    return _VAR.sub(one, text)


def _expand_all(value: Any, environ: Mapping[str, str], path: str) -> Any:
    if isinstance(value, str):
        return expand(value, environ, path)
    if isinstance(value, list):
        return [_expand_all(v, environ, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _expand_all(v, environ, f"{path}.{k}") for k, v in value.items()}
    return value


# ---- values -------------------------------------------------------------------------------


def _convert(key: str, value: Any, path: str) -> Any:
    """A string given for a number (or a bool) becomes one, as the
    annotation of ``key`` in ``ServerManager.__init__`` says; a TOML bool
    for a number is refused (Python would take it as 0 or 1)."""
    if key == "depends_on":
        return value
    ann = _annotation(key)
    numeric = re.search(r"\b(int|float)\b", ann)
    if isinstance(value, bool) and numeric and "bool" not in ann:
        raise SetFileError(f"{path}: expected a number, got {str(value).lower()}")
    if not isinstance(value, str):
        return value
    if re.search(r"\b(Optional|None)\b", ann) and value.strip().lower() in ("", "none"):
        # TOML has no null: "none" (or a variable that is empty) is None,
        # e.g. restart_limit = "none" (never give up), workers = "${WORKERS:-}".
        return None
    if numeric:
        text = value.strip()
        try:
            if numeric.group(1) == "int" and re.fullmatch(r"[+-]?\d+", text):
                return int(text)
            if numeric.group(1) == "float" and "str" not in ann:
                return float(text)
        except ValueError:
            pass
        if "str" not in ann:
            kind = "an integer" if numeric.group(1) == "int" else "a number"
            raise SetFileError(f"{path}: expected {kind}, got {value!r}")
    if re.search(r"\bbool\b", ann) and "str" not in ann:
        low = value.strip().lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise SetFileError(f"{path}: expected true or false, got {value!r}")
    return value


# ---- the file ------------------------------------------------------------------------------


class ServerSpec:
    """One server of a file: its name, the full keyword arguments of its
    ``ServerManager`` (defaults filled, paths absolute), ``depends_on``, and
    where each key was set (for messages)."""

    def __init__(
        self,
        name: str,
        kwargs: dict[str, Any],
        depends_on: list[str],
        origin: dict[str, str],
    ) -> None:
        self.name = name
        self.kwargs = kwargs
        self.depends_on = depends_on
        self.origin = origin

    def manager(self) -> ServerManager:
        kw = dict(self.kwargs)
        return ServerManager(kw.pop(K.app_path), kw.pop(K.host), kw.pop(K.port), self.name, **kw)

    def __repr__(self) -> str:
        return f"ServerSpec({self.name!r}, depends_on={self.depends_on!r})"


def _parse(path: str) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - the conditional dependency
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise SetFileError(f"{path}: no such file (write one, or name it with -f FILE)") from None
    except IsADirectoryError:
        raise SetFileError(f"{path}: is a directory, not a server file") from None
    except tomllib.TOMLDecodeError as e:
        # Its message carries "(at line N, column M)".
        raise SetFileError(f"{path}: TOML syntax error: {e}") from None


def _table(value: Any, path: str, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        kind = type(value).__name__
        raise SetFileError(f"{where}: {path}: must be a table ([{path}]), got {kind}")
    return value


def load(
    path: Optional[str] = None,
    env: Optional[str] = None,
    *,
    environ: Optional[Mapping[str, str]] = None,
    pid_dir: Optional[str] = None,
) -> ServerSet:
    """Read a server file into a :class:`ServerSet`: ``${VAR}`` expanded
    from ``environ`` (default ``os.environ``), the overlays of environment
    ``env`` applied, relative ``cwd``/``log_dir``/``pid_dir`` resolved
    against the file's directory (a server without ``cwd`` runs there), every
    value checked by building its ``ServerManager``, dependencies checked
    (present, no cycle) and no two servers on one port. ``pid_dir`` is the
    default for servers that set none. Raises :class:`SetFileError`."""
    path = os.fspath(path if path is not None else DEFAULT_FILE)
    environ = os.environ if environ is None else environ
    doc = _parse(path)
    base = os.path.dirname(os.path.abspath(path))
    where = path
    for key in doc:
        if key not in ("servers", "environments"):
            raise SetFileError(
                f"{where}: unknown table {key!r} (a server file has [servers.NAME] "
                "and [environments.ENV.NAME])"
            )
    servers = _table(doc.get("servers", {}), "servers", where)
    if not servers:
        raise SetFileError(f"{where}: no servers (add a [servers.NAME] table)")
    envs = _table(doc.get("environments", {}), "environments", where)
    overlay: dict[str, Any] = {}
    if env is not None:
        if env not in envs:
            known = ", ".join(sorted(envs)) or "none"
            raise SetFileError(
                f"{where}: no environment {env!r} (environments in the file: {known})"
            )
        overlay = _table(envs[env], f"environments.{env}", where)
    for e, tables in envs.items():
        for name in _table(tables, f"environments.{e}", where):
            if name not in servers:
                raise SetFileError(
                    f"{where}: environments.{e}.{name}: no server {name!r} to overlay "
                    f"(servers: {', '.join(servers)})"
                )
            _table(tables[name], f"environments.{e}.{name}", where)
    allowed = allowed_keys()
    specs: dict[str, ServerSpec] = {}
    for name, table in servers.items():
        tpath = f"servers.{name}"
        raw: dict[str, Any] = {}
        origin: dict[str, str] = {}
        layers = [(tpath, _table(table, tpath, where))]
        if name in overlay:
            layers.append((f"environments.{env}.{name}", overlay[name]))
        for lpath, layer in layers:
            for key, value in layer.items():
                kpath = f"{lpath}.{key}"
                if key not in allowed:
                    close = _closest(key, allowed)
                    hint = f"; did you mean {close!r}?" if close else ""
                    raise SetFileError(
                        f"{where}: {kpath}: unknown key{hint} (keys: {', '.join(allowed)})"
                    )
                value = _expand_all(value, environ, kpath)
                raw[key] = _convert(key, value, f"{where}: {kpath}")
                origin[key] = kpath
        specs[name] = _spec(where, name, raw, origin, base, pid_dir)
    _check_dependencies(where, specs)
    _check_ports(where, specs)
    return ServerSet(path, specs, env)


def _closest(key: str, allowed: Sequence[str]) -> Optional[str]:
    import difflib

    found = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    return found[0] if found else None


def _spec(
    where: str,
    name: str,
    raw: dict[str, Any],
    origin: dict[str, str],
    base: str,
    pid_dir: Optional[str],
) -> ServerSpec:
    tpath = f"servers.{name}"
    for key in required_keys():
        if key not in raw:
            raise SetFileError(f"{where}: {tpath}.{key}: missing (every server needs {key})")
    depends = raw.pop("depends_on", [])
    if isinstance(depends, str):
        depends = [depends]
    if not isinstance(depends, list) or not all(isinstance(d, str) for d in depends):
        raise SetFileError(
            f"{where}: {origin['depends_on']}: must be a list of server names, got {depends!r}"
        )
    merged = {**defaults(), **raw}
    kwargs = {k: merged[k] for k in _parameters() if k in merged}
    if kwargs.get(K.cwd) is None:
        kwargs[K.cwd] = base
    for key in _PATH_KEYS:
        v = kwargs.get(key)
        if isinstance(v, str) and (key in raw or key == K.log_dir):
            kwargs[key] = os.path.normpath(os.path.join(base, os.path.expanduser(v)))
    if pid_dir is not None and K.pid_dir not in raw:
        # --pid-dir: relative to where the command runs, as for every command.
        kwargs[K.pid_dir] = os.path.abspath(pid_dir)
    spec = ServerSpec(name, kwargs, list(dict.fromkeys(depends)), origin)
    try:
        spec.manager()
    except (ValueError, TypeError) as e:
        culprit = _culprit(spec, str(e))
        at = origin.get(culprit, f"{tpath}.{culprit}") if culprit else tpath
        raise SetFileError(f"{where}: {at}: {e}") from None
    return spec


def _culprit(spec: ServerSpec, message: str) -> Optional[str]:
    """The key a core error is about: the one its message starts with, else
    the one that fails alone (with every other key at its default)."""
    for key in sorted(spec.kwargs, key=len, reverse=True):
        if message.startswith(key + " ") or message.startswith(key + ":"):
            return key
    d = defaults()
    for key in spec.origin:
        if key in required_keys() or key == "depends_on":
            continue
        alone = {**d, **{k: spec.kwargs[k] for k in required_keys()}, key: spec.kwargs[key]}
        try:
            ServerSpec(spec.name, alone, [], {}).manager()
        except (ValueError, TypeError):
            return key
    return None


def _check_dependencies(where: str, specs: dict[str, ServerSpec]) -> None:
    for s in specs.values():
        for d in s.depends_on:
            if d not in specs:
                at = s.origin["depends_on"]
                raise SetFileError(f"{where}: {at}: no server {d!r} (servers: {', '.join(specs)})")
            if d == s.name:
                raise SetFileError(f"{where}: {s.origin['depends_on']}: {d!r} depends on itself")
    cycle = find_cycle({n: s.depends_on for n, s in specs.items()})
    if cycle:
        first = specs[cycle[0]].origin["depends_on"]
        raise SetFileError(f"{where}: {first}: dependency cycle: {' -> '.join(cycle)}")


def find_cycle(graph: Mapping[str, Sequence[str]]) -> Optional[list[str]]:
    """A cycle in ``graph`` (name -> what it depends on) as a path whose last
    name is its first, or None."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(n: str) -> Optional[list[str]]:
        state[n] = 1
        path.append(n)
        for d in graph.get(n, ()):
            if state.get(d) == 1:
                return path[path.index(d) :] + [d]
            if d not in state:
                found = visit(d)
                if found:
                    return found
        path.pop()
        state[n] = 2
        return None

    for n in graph:
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


_WILDCARDS = ("0.0.0.0", "::", "")


def _check_ports(where: str, specs: dict[str, ServerSpec]) -> None:
    seen: list[ServerSpec] = []
    for s in specs.values():
        port, host = s.kwargs[K.port], s.kwargs[K.host]
        for o in seen:
            oh = o.kwargs[K.host]
            clash = host == oh or host in _WILDCARDS or oh in _WILDCARDS
            if port and port == o.kwargs[K.port] and clash:
                at = s.origin.get(K.port, f"servers.{s.name}.port")
                raise SetFileError(
                    f"{where}: {at}: port {port} is also servers.{o.name}'s "
                    f"({oh}:{port}); give each server its own port"
                )
        seen.append(s)


def levels(graph: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """``graph`` (name -> dependencies, acyclic) in levels: each name after
    everything it depends on; names in one level depend on none of each other."""
    level: dict[str, int] = {}

    def of(n: str) -> int:
        if n not in level:
            level[n] = 1 + max((of(d) for d in graph[n]), default=-1)
        return level[n]

    out: list[list[str]] = []
    for n in graph:
        i = of(n)
        while len(out) <= i:
            out.append([])
    for n in graph:
        out[level[n]].append(n)
    return out


def closure(graph: Mapping[str, Sequence[str]], names: Iterable[str]) -> list[str]:
    """``names`` and everything they depend on, in the graph's order."""
    want: set[str] = set()
    todo = list(names)
    while todo:
        n = todo.pop()
        if n not in want:
            want.add(n)
            todo.extend(graph[n])
    return [n for n in graph if n in want]


def dependents(graph: Mapping[str, Sequence[str]], names: Iterable[str]) -> list[str]:
    """``names`` and everything that depends on them, in the graph's order."""
    want = set(names)
    grew = True
    while grew:
        grew = False
        for n, deps in graph.items():
            if n not in want and want.intersection(deps):
                want.add(n)
                grew = True
    return [n for n in graph if n in want]


# ---- canonical configuration: has a running server's changed? ----------------------------


def _memory(value: Any) -> Optional[int]:
    return None if value is None else _core.memory_size(value)


def canonical(m: ServerManager, extra: Mapping[str, Any]) -> dict[str, Any]:
    """What a server runs with, in one form for a file's spec and a record:
    the manager's resolved values (workers, hold_socket, absolute paths) and,
    for keys the manager does not expose, ``extra`` (defaults filled)."""
    core = m._core
    out: dict[str, Any] = {
        K.app_path: core.app_path,
        K.host: core.host,
        K.port: core.port,
        K.workers: core.workers,
        K.cwd: None if core.cwd is None else os.path.abspath(core.cwd),
        K.env: dict(sorted(core.env)),
        K.log_dir: os.path.abspath(os.path.join(core.cwd or "", core.log_dir))
        if not os.path.isabs(core.log_dir)
        else os.path.normpath(core.log_dir),
        K.start_timeout: core.start_timeout,
        K.stop_timeout: core.stop_timeout,
        K.uvicorn_args: list(core.uvicorn_args),
        K.hold_socket: core.hold_socket,
        K.warm: core.warm,
        K.preload: list(core.preload),
        K.restart: core.restart_policy,
    }
    d = defaults()
    for key in d:
        if key not in out and key not in (K.pid_dir, K.name):
            value = extra.get(key, d[key])
            out[key] = _memory(value) if key == K.max_memory else value
    # Every key is compared, supervision's included: the record keeps every
    # option (record=3), and one written before it (record=2, which kept
    # them only under a restart policy) reads as the defaults. A watcher
    # (`supervise`) or a log option changed without a restart policy is a
    # change too.
    return out


def changes(spec: ServerSpec, running: ServerManager, record: Mapping[str, Any]) -> list[str]:
    """The keys whose value in the file differs from what the running server
    was started with (``record``: its ``_core.read_record``). Port 0 in the
    file matches any port; `up` always redirects output to the log files."""
    config = record.get("config") or {}
    want = canonical(spec.manager(), spec.kwargs)
    have = canonical(running, config)
    if spec.kwargs[K.port] == 0:
        want[K.port] = have[K.port]
    diff = [k for k in want if want[k] != have.get(k)]
    if config and not config.get("redirect_output", False):
        diff.append("redirect_output")
    if config.get("python") not in (None, sys.executable):
        diff.append("python")
    return diff


# ---- bringing a set up and down ----------------------------------------------------------


class Outcome:
    """What `up` or `down` did to one server: ``action`` is ``started``,
    ``unchanged``, ``restarted`` (``detail`` names what changed, and says
    when it was a reload on the held socket), ``stopped``, ``not running``
    or ``failed`` (``error`` says why); ``pid`` (and ``old_pid``), ``took``
    in seconds."""

    def __init__(
        self,
        name: str,
        action: str,
        detail: str = "",
        error: Optional[BaseException] = None,
        pid: Optional[int] = None,
        took: float = 0.0,
        old_pid: Optional[int] = None,
    ) -> None:
        self.name, self.action, self.detail = name, action, detail
        self.error, self.pid, self.took, self.old_pid = error, pid, took, old_pid

    @property
    def failed(self) -> bool:
        return self.action == "failed"

    def line(self) -> str:
        more = f" ({self.detail})" if self.detail else ""
        if self.failed:
            return f"{self.name}: failed{more}: {self.error}"
        pid = f", pid {self.pid}" if self.pid else ""
        if self.old_pid and self.pid:
            pid = f", pid {self.old_pid} -> {self.pid}"
        took = f" in {self.took * 1000:.0f} ms" if self.took >= 0.0005 else ""
        return f"{self.name}: {self.action}{more}{pid}{took}"

    def __repr__(self) -> str:
        return f"Outcome({self.line()!r})"


def _in_order(
    graph: Mapping[str, Sequence[str]],
    names: Sequence[str],
    act: Callable[[str], Outcome],
    report: Optional[Callable[[Outcome], None]],
    reverse: bool = False,
    decided: Optional[Mapping[str, Outcome]] = None,
) -> list[Outcome]:
    """Runs ``act`` for each name in a thread that first waits for its
    dependencies (``reverse``: its dependents) among ``names``; one whose
    dependency failed is not run (its outcome names the failed one). Names
    in ``decided`` already have their outcome: reported first, no thread.

    Ctrl-C (in the main thread) lets what is under way finish, runs nothing
    more (those not reached fail as interrupted), then is raised."""
    wanted = set(names)
    if reverse:
        after = {n: [m for m in names if n in graph[m]] for n in names}
    else:
        after = {n: [d for d in graph[n] if d in wanted] for n in names}
    done = {n: threading.Event() for n in names}
    results: dict[str, Outcome] = {}
    lock = threading.Lock()
    interrupted = threading.Event()

    def outcome(n: str) -> Outcome:
        for d in after[n]:
            done[d].wait()
        if interrupted.is_set():
            return Outcome(n, "failed", error=KeyboardInterrupt("interrupted: not done"))
        blocked = [d for d in after[n] if results[d].failed]
        if blocked and not reverse:
            return Outcome(
                n,
                "failed",
                error=ServerManagerError(
                    f"not started: {', '.join(blocked)} (which {n} depends on) failed"
                ),
            )
        try:
            return act(n)
        except Exception as e:  # noqa: BLE001 - reported as its outcome
            return Outcome(n, "failed", error=e)

    def run(n: str) -> None:
        out = Outcome(n, "failed", error=ServerManagerError("internal error"))
        try:
            out = outcome(n)
        finally:
            try:
                with lock:
                    results[n] = out
                    if report is not None:
                        report(out)
            finally:
                done[n].set()

    for n, out in (decided or {}).items():
        results[n] = out
        if report is not None:
            report(out)
        done[n].set()
    threads = [
        threading.Thread(target=run, args=(n,), name=f"set-{n}") for n in names if n not in results
    ]
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join()
    except KeyboardInterrupt:
        interrupted.set()
        for t in threads:
            t.join()
        raise
    return [results[n] for n in names]


class ServerSet(ServerGroup):
    """The servers of one file: a :class:`ServerGroup` that starts each
    server once what it ``depends_on`` is ready (independent ones in
    parallel) and stops dependents before what they depend on.

    ``start()`` is all or nothing, as a group's: if one fails, those it
    started are stopped and :class:`ServerManagerError` names the failure
    (and the dependents it kept from starting). ``up()`` is the CLI's: it
    leaves what started running and reports each server."""

    def __init__(self, path: str, specs: dict[str, ServerSpec], env: Optional[str]) -> None:
        self.path = path
        self.env = env
        self.specs = specs
        self.graph = {n: s.depends_on for n, s in specs.items()}
        super().__init__([s.manager() for s in specs.values()], order="reverse")
        self._by_name = {m.name: m for m in self.managers}

    def __getitem__(self, name: str) -> ServerManager:
        return self._by_name[name]

    def names(self, given: Sequence[str] = ()) -> list[str]:
        """``given`` checked against the file (every server when empty)."""
        for n in given:
            if n not in self.specs:
                raise SetFileError(
                    f"{self.path}: no server {n!r} (servers: {', '.join(self.specs)})"
                )
        return list(given) if given else list(self.specs)

    def levels(self) -> list[list[str]]:
        return levels(self.graph)

    # -- ServerGroup ----------------------------------------------------------------------

    def start(self, redirect_output: bool = False, force: bool = False) -> None:
        def act(n: str) -> Outcome:
            m = self._by_name[n]
            running = m.is_running()
            t0 = time.monotonic()
            m.start(redirect_output, force)
            took = time.monotonic() - t0
            return Outcome(n, "unchanged" if running else "started", took=took)

        results = _in_order(self.graph, list(self.specs), act, None)
        failed = [r for r in results if r.failed]
        if failed:
            started = [self._by_name[r.name] for r in results if r.action == "started"]
            try:
                stop_all(started)
            except ServerManagerError:
                pass  # the start failure is the one to report
            detail = "; ".join(f"{r.name}: {r.error}" for r in failed)
            raise ServerManagerError(f"Failed to start server set: {detail}") from failed[0].error

    def stop(self, order: Optional[str] = None) -> None:
        if order == "parallel":
            super().stop(order)
            return
        failed = [r for r in self.down() if r.failed]
        if failed:
            detail = "; ".join(f"{r.name}: {r.error}" for r in failed)
            raise ServerManagerError(f"Failed to stop servers: {detail}") from failed[0].error

    # -- the CLI's up and down --------------------------------------------------------------

    def up(
        self,
        names: Sequence[str] = (),
        report: Optional[Callable[[Outcome], None]] = None,
        redirect_output: bool = True,
    ) -> list[Outcome]:
        """Brings ``names`` (default all) and what they depend on up: starts
        what does not run, leaves a server running with the file's
        configuration alone, restarts one whose configuration changed
        (reloads it on its socket when it holds one). ``report`` gets each
        outcome as it happens."""
        targets = closure(self.graph, self.names(names))
        # What runs unchanged is known here, without a thread (the common
        # case, and the one `up` should answer at once); threads act on the rest.
        plans = {n: self._plan(n) for n in targets}
        decided = {n: p for n, p in plans.items() if isinstance(p, Outcome)}

        def act(n: str) -> Outcome:
            return self._up_one(n, plans[n], redirect_output)  # type: ignore[arg-type]

        return _in_order(self.graph, targets, act, report, decided=decided)

    def _plan(self, name: str) -> Union[Outcome, tuple[Optional[ServerManager], list[str]]]:
        """``unchanged`` for a server running as the file says, else (the
        recorded manager if it runs, the keys that changed)."""
        m = self._by_name[name]
        pid_dir = os.fspath(m._core.pid_dir)
        record = _core.read_record(pid_dir, name)
        old = ServerManager.from_record(name, pid_dir) if record else None
        if old is None or not old.is_running():
            if old is not None:
                old.stop()  # a stale record, or a dead launch's rest
            return None, []
        diff = changes(self.specs[name], old, record or {})
        if not diff:
            return Outcome(name, "unchanged", pid=record.get("pid") if record else None)
        return old, diff

    def _up_one(
        self, name: str, plan: tuple[Optional[ServerManager], list[str]], redirect: bool
    ) -> Outcome:
        spec = self.specs[name]
        m = self._by_name[name]
        t0 = time.monotonic()
        old, diff = plan
        if old is None:
            m.start(redirect)
            return Outcome(name, "started", pid=m.status().pid, took=time.monotonic() - t0)
        what = f"{', '.join(diff)} changed"
        before = old.status().pid
        supervised = old.restart_policy != "no" or m.restart_policy != "no"
        same_place = old.app_path == m.app_path and old.host == m.host
        same_place = same_place and spec.kwargs[K.port] in (0, old.port)
        if old.hold_socket and m.hold_socket and same_place and not supervised:
            # reload() reuses the manager's output mode: this one never started.
            m._core.remember_output(redirect)
            m.reload()
            took = time.monotonic() - t0
            detail = f"{what}; reloaded on its socket"
            return Outcome(name, "restarted", detail, pid=m.status().pid, took=took, old_pid=before)
        old.stop()
        m.start(redirect)
        took = time.monotonic() - t0
        return Outcome(name, "restarted", what, pid=m.status().pid, took=took, old_pid=before)

    def down(
        self, names: Sequence[str] = (), report: Optional[Callable[[Outcome], None]] = None
    ) -> list[Outcome]:
        """Stops ``names`` (default all) and what depends on them, each once
        its dependents have stopped (independent ones concurrently)."""
        targets = dependents(self.graph, self.names(names))
        return _in_order(self.graph, targets, self._down_one, report, reverse=True)

    def _down_one(self, name: str) -> Outcome:
        m = self._by_name[name]
        pid_dir = os.fspath(m._core.pid_dir)
        # The recorded configuration, which may differ from the file's.
        old = ServerManager.from_record(name, pid_dir) or m
        if not old.is_running():
            old.stop()  # clears a stale record
            return Outcome(name, "not running")
        pid = old.status().pid
        t0 = time.monotonic()
        old.stop()
        return Outcome(name, "stopped", pid=pid, took=time.monotonic() - t0)

    def __repr__(self) -> str:
        return f"ServerSet({self.path!r}, {list(self.specs)!r})"


def from_file(path: Optional[str] = None, env: Optional[str] = None) -> ServerSet:
    return load(path if path is not None else DEFAULT_FILE, env)
