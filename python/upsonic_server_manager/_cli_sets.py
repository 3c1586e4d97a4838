"""The CLI of server files (docs/SETS.md): ``up``, ``down``, ``config``,
``export systemd``, and ``status``/``logs``/``stop`` with ``-f FILE``.

A bad file exits 2 with its message (no traceback) before anything starts."""

from __future__ import annotations

import os
import sys

from ._spec import K

TYPE_CHECKING = False

if TYPE_CHECKING:
    import argparse
    from typing import Any, Callable, Optional, Sequence, TextIO

    from ._sets import Outcome, ServerSet

# _sets (inspect, threads, the group) is imported by the commands that use
# it: `upsonic-server status` builds this parser too and should start quickly.

#: The server file `up` and the others read, and ``ServerGroup.from_file``.
DEFAULT_FILE = "upsonic-servers.toml"

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2

FILE_HELP = f"the server file (default: ./{DEFAULT_FILE})"


def add_file_option(p: argparse.ArgumentParser, short: bool = True) -> None:
    """``-f/--file FILE`` after a command (``logs`` keeps ``-f`` for follow)."""
    import argparse

    flags = ("-f", "--file") if short else ("--file",)
    p.add_argument(*flags, dest="file", default=argparse.SUPPRESS, metavar="FILE", help=FILE_HELP)


def _env_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--env", dest="set_env", default=None, metavar="NAME", help="apply [environments.NAME]"
    )


def add_commands(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """The file commands, added through cli.py's ``command(name, text)``."""
    p = command("up", "start a file's servers in dependency order; restart what changed")
    add_file_option(p)
    _env_option(p)
    p.add_argument(
        "servers", metavar="SERVER", nargs="*", help="only these (and their dependencies)"
    )

    p = command("down", "stop a file's servers, dependents first")
    add_file_option(p)
    _env_option(p)
    p.add_argument("servers", metavar="SERVER", nargs="*", help="only these (and their dependents)")

    p = command("config", "check a server file and print it resolved")
    add_file_option(p)
    _env_option(p)

    p = command("export", "write service files for a server file's servers")
    p.add_argument("format", metavar="FORMAT", choices=("systemd",), help="systemd")
    add_file_option(p)
    _env_option(p)
    p.add_argument("--output", "-o", required=True, metavar="DIR", help="directory to write to")
    p.add_argument(
        "--app",
        default=None,
        help="prefix of the unit names and name of the .target (default: the file's directory)",
    )
    p.add_argument("--user", default=None, help="the User= of the units (default: you)")


def _load(args: argparse.Namespace) -> ServerSet:
    from ._sets import load

    return load(getattr(args, "file", None), getattr(args, "set_env", None), pid_dir=args.pid_dir)


def _usage_errors(fn: Callable[[argparse.Namespace, TextIO], int]) -> Callable[..., int]:
    """A bad file or name: its message on stderr and exit 2, no traceback."""

    def wrapped(args: argparse.Namespace, out: TextIO) -> int:
        from ._sets import SetFileError

        try:
            return fn(args, out)
        except SetFileError as e:
            print(f"upsonic-server: error: {e}", file=sys.stderr)
            return EXIT_USAGE

    wrapped.__name__ = fn.__name__
    wrapped.__doc__ = fn.__doc__
    return wrapped


def _printer(out: TextIO) -> Callable[[Outcome], None]:
    def report(o: Outcome) -> None:
        out.write(o.line() + "\n")
        out.flush()

    return report


@_usage_errors
def cmd_up(args: argparse.Namespace, out: TextIO) -> int:
    s = _load(args)
    results = s.up(args.servers, _printer(out))
    return EXIT_ERROR if any(r.failed for r in results) else EXIT_OK


@_usage_errors
def cmd_down(args: argparse.Namespace, out: TextIO) -> int:
    s = _load(args)
    results = s.down(args.servers, _printer(out))
    return EXIT_ERROR if any(r.failed for r in results) else EXIT_OK


# ---- config: the file resolved, as TOML ----------------------------------------------------


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        import json

        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML for {value!r}")


def _key(k: str) -> str:
    import re

    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else _toml(k)


def render(s: ServerSet) -> str:
    """The resolved file as TOML: every key of every server (a None that is
    the default left out, another written "none": TOML has no null),
    variables expanded, the overlay applied, paths absolute. Read back, it
    describes the same servers."""
    from ._sets import defaults

    d = defaults()
    env = f" --env {s.env}" if s.env else ""
    lines = [f"# {s.path}{env}, resolved: levels {s.levels()}"]
    for name, spec in s.specs.items():
        lines.append("")
        lines.append(f"[servers.{_key(name)}]")
        if spec.depends_on:
            lines.append(f"depends_on = {_toml(spec.depends_on)}")
        for k, v in spec.kwargs.items():
            if v is not None:
                lines.append(f"{k} = {_toml(v)}")
            elif d.get(k) is not None:
                lines.append(f'{k} = "none"')  # TOML has no null
    return "\n".join(lines) + "\n"


@_usage_errors
def cmd_config(args: argparse.Namespace, out: TextIO) -> int:
    out.write(render(_load(args)))
    return EXIT_OK


# ---- export systemd ---------------------------------------------------------------------


def run_arguments(spec: Any, extra: Sequence[str] = ()) -> list[str]:
    """The `run` options that give a server its file's configuration. Each
    non-default key maps to the `run` option whose destination is its name
    (found in the CLI's own parser); one `run` has no option for is an
    error naming it. ``extra`` options go last before uvicorn's own
    arguments (which follow ``--``)."""
    from argparse import BooleanOptionalAction

    from ._sets import SetFileError, defaults
    from .cli._parser import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    run = sub.choices["run"]  # type: ignore[index]
    by_dest = {a.dest: a for a in run._actions}
    d = defaults()
    argv = [spec.kwargs[K.app_path], "--name", spec.name]
    uvicorn: list[str] = []
    for key, value in spec.kwargs.items():
        if key in (K.app_path, K.cwd, K.env, K.pid_dir, K.log_dir):
            continue  # WorkingDirectory=, Environment=, and the unit's directories
        if key == K.uvicorn_args:
            if list(value) != list(d.get(key, ())):
                uvicorn = ["--", *value]  # run takes them after --
            continue
        action = by_dest.get(key)
        # --x/--no-x options are spelled either way: `run`'s default for
        # one (--supervise) need not be the library's.
        both_ways = isinstance(action, BooleanOptionalAction)
        if key in d and value == d[key] and key != K.host and not both_ways:
            continue
        if action is None:
            at = spec.origin.get(key, f"servers.{spec.name}.{key}")
            raise SetFileError(
                f"{at}: `upsonic-server run` has no option for {key}, so a systemd unit "
                "cannot carry it; leave it out of the file (or --env) you export"
            )
        # The long positive spelling (`--supervise`, not `--no-supervise`).
        flag = max((s for s in action.option_strings if not s.startswith("--no-")), key=len)
        if value is None:
            # Not the default, so the option reads "none" (--restart-limit).
            argv += [flag, "none"]
            continue
        if isinstance(value, bool):
            # --x for True; --no-x for False where the option has one
            # (argparse.BooleanOptionalAction: --supervise/--no-supervise).
            flags = [o for o in action.option_strings if o.startswith("--no-") != value]
            if flags:
                argv.append(max(flags, key=len))
            continue
        if isinstance(value, (list, tuple)):
            for v in value:
                argv += [flag, str(v)]
            continue
        argv += [flag, str(value)]
    return argv + list(extra) + uvicorn


def _unit_name(app: str, name: str) -> str:
    return f"{app}-{name}"


@_usage_errors
def cmd_export(args: argparse.Namespace, out: TextIO) -> int:
    import pwd
    import re

    from .cli._systemd import _systemd_quote

    s = _load(args)
    base = os.path.dirname(os.path.abspath(s.path))
    app = args.app or re.sub(r"[^A-Za-z0-9_.-]", "-", os.path.basename(base)) or "upsonic"
    user = args.user or pwd.getpwuid(os.getuid()).pw_name
    units: dict[str, str] = {}
    for name, spec in s.specs.items():
        unit = _unit_name(app, name)
        m = s[name]
        directories = ""
        if spec.origin.get(K.pid_dir) or args.pid_dir:
            pid_dir = os.fspath(m._core.pid_dir)
        else:
            # The user's home may not be writable (or exist) for a service.
            pid_dir = f"/run/{unit}"
            directories += f"RuntimeDirectory={unit}\n"
        run = [sys.executable, "-m", "upsonic_server_manager", "--pid-dir", pid_dir, "run"]
        run += run_arguments(spec, ["--log-dir", spec.kwargs[K.log_dir], "--redirect-output"])
        env = [("PYTHONUNBUFFERED", "1"), *(spec.kwargs.get(K.env) or {}).items()]
        env_lines = "".join(
            f"Environment={_systemd_quote(f'{k}={v}', dollars=False)}\n" for k, v in env
        )
        deps = [f"{_unit_name(app, d)}.service" for d in spec.depends_on]
        requires = f"Requires={' '.join(deps)}\nAfter={' '.join(deps)}\n" if deps else ""
        reload = "ExecReload=/bin/kill -HUP $MAINPID\n" if m.hold_socket else ""
        exec_start = " ".join(_systemd_quote(a) for a in run)
        units[f"{unit}.service"] = f"""\
# upsonic server {name!r} of {s.path} (upsonic-server export systemd).
[Unit]
Description=upsonic server {name} ({spec.kwargs[K.app_path]} on port {spec.kwargs[K.port]})
PartOf={app}.target
After=network.target
{requires}
[Service]
Type=notify
NotifyAccess=main
User={user}
WorkingDirectory={spec.kwargs[K.cwd].replace("%", "%%")}
{directories}{env_lines}ExecStart={exec_start}
{reload}Restart=on-failure
RestartSec=2s
KillMode=mixed
TimeoutStopSec={int(spec.kwargs[K.stop_timeout]) + 10}

[Install]
WantedBy={app}.target
"""
    wants = " ".join(units)
    units[f"{app}.target"] = f"""\
# The servers of {s.path}: systemctl start|stop {app}.target
[Unit]
Description=upsonic servers of {app}
Wants={wants}

[Install]
WantedBy=multi-user.target
"""
    os.makedirs(args.output, exist_ok=True)
    for fname, text in units.items():
        path = os.path.join(args.output, fname)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        out.write(f"wrote {path}\n")
    out.write(
        f"install: sudo cp {os.path.join(args.output, '*')} /etc/systemd/system/ && "
        f"sudo systemctl daemon-reload && sudo systemctl enable --now {app}.target\n"
    )
    return EXIT_OK


# ---- status, logs, stop with -f ------------------------------------------------------------


@_usage_errors
def cmd_status(args: argparse.Namespace, out: TextIO) -> int:
    """`status -f`: the file's servers, in its order (never started: stopped)."""
    import json

    from ._cli_output import columns, render_table, status_row
    from ._manager import ServerManager

    s = _load(args)
    names = s.names([args.name] if args.name else [])
    # The record knows what runs (the port picked for port 0); the file, the
    # rest (a server never started).
    found = [ServerManager.from_record(n, os.fspath(s[n]._core.pid_dir)) or s[n] for n in names]
    statuses = [m.status() for m in found]
    if args.json:
        out.write(json.dumps([st.as_dict() for st in statuses], indent=2) + "\n")
    else:
        out.write(render_table([status_row(st, st.cpu_percent) for st in statuses], columns(None)))
        out.write("\n")
    if args.name:
        return EXIT_OK if statuses[0].state in ("running", "starting") else 3
    return EXIT_OK


@_usage_errors
def cmd_stop(args: argparse.Namespace, out: TextIO) -> int:
    """`stop -f [NAME]`: as `down` (dependents first)."""
    s = _load(args)
    results = s.down([args.name] if args.name else [], _printer(out))
    return EXIT_ERROR if any(r.failed for r in results) else EXIT_OK


@_usage_errors
def cmd_logs(args: argparse.Namespace, out: TextIO) -> int:
    """`logs --file`: the file's servers' logs, in its log_dir."""

    from ._cli_output import follow, print_history

    s = _load(args)
    names = s.names([args.name] if args.name else [])
    sources = print_history([(name, s[name].log_files) for name in names], args, out)
    if not sources:
        print(f"upsonic-server: no log files for {', '.join(names)} (not up yet?)", file=sys.stderr)
        return EXIT_ERROR
    if args.follow:
        follow(sources, out)
    return EXIT_OK


COMMANDS = {"up": cmd_up, "down": cmd_down, "config": cmd_config, "export": cmd_export}

#: Commands that cover a file's servers when given -f/--file.
WITH_FILE = {"status": cmd_status, "stop": cmd_stop, "logs": cmd_logs}


def dispatch(args: argparse.Namespace) -> Optional[Callable[[argparse.Namespace, TextIO], int]]:
    """The file-aware command for ``args``, or None for cli.py's own."""
    if args.command in COMMANDS:
        return COMMANDS[args.command]
    if args.command in WITH_FILE and getattr(args, "file", None) is not None:
        return WITH_FILE[args.command]
    return None
