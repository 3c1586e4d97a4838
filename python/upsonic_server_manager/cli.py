"""``upsonic-server``: start, stop and inspect servers from the shell, run one
in the foreground under systemd or in a container, or try the bundled demo."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Callable, Optional, Sequence, TextIO

from . import ServerManager, ServerManagerError, ServerStatus, list_records, log_files
from ._foreground import run_foreground

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3  # LSB: "program is not running"


class UsageError(Exception):
    """Bad command-line input: exit 2 with one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


# ---- formatting -------------------------------------------------------------------------


def fmt_duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def fmt_bytes(n: Optional[int]) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n:.1f} GiB"


def fmt_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


COLUMNS = ("NAME", "PID", "ADDRESS", "STATE", "UPTIME", "MEM", "CPU", "WORKERS")


def status_row(st: ServerStatus) -> list[str]:
    return [
        st.name,
        "-" if st.pid is None else str(st.pid),
        fmt_address(st.host, st.port),
        st.state,
        fmt_duration(st.uptime),
        fmt_bytes(st.memory_rss),
        "-" if st.cpu_percent is None else f"{st.cpu_percent:.1f}%",
        str(len(st.workers)) if st.state in ("running", "starting") else "-",
    ]


def render_table(rows: Sequence[Sequence[str]], header: Sequence[str] = COLUMNS) -> str:
    widths = [len(h) for h in header]
    for r in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, r)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return "\n".join(lines)


# ---- waiting with a spinner -------------------------------------------------------------


def run_with_spinner(label: str, fn: Callable[[], None], out: TextIO) -> float:
    """Runs ``fn`` and returns its duration. On a terminal a spinner with the
    elapsed time turns while it runs (the core releases the GIL)."""
    t0 = time.monotonic()
    if not out.isatty():
        fn()
        return time.monotonic() - t0
    done = threading.Event()

    def spin() -> None:
        frames = "|/-\\"
        i = 0
        while not done.wait(0.08):
            out.write(f"\r{frames[i % 4]} {label} {time.monotonic() - t0:5.1f}s")
            out.flush()
            i += 1

    t = threading.Thread(target=spin, daemon=True)
    t.start()
    try:
        fn()
    finally:
        done.set()
        t.join()
        out.write("\r\033[K")
        out.flush()
    return time.monotonic() - t0


# ---- arguments --------------------------------------------------------------------------


def _env_pair(text: str) -> tuple[str, str]:
    if "=" not in text or text.startswith("="):
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    return k, v


def _positive(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return v


def _add_server_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("app", metavar="APP", help="the ASGI app, e.g. package.module:app")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, required=True, help="port to listen on")
    p.add_argument("--name", required=True, help="server name (PID file and log names)")
    p.add_argument("--workers", type=int, default=None, help="uvicorn worker processes")
    p.add_argument("--log-dir", default="logs", help="log directory (default ./logs)")
    p.add_argument("--cwd", default=None, help="working directory of the server")
    p.add_argument(
        "--env",
        type=_env_pair,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the server (repeatable)",
    )
    p.add_argument("--start-timeout", type=_positive, default=30.0, metavar="SECONDS")
    p.add_argument("--stop-timeout", type=_positive, default=5.0, metavar="SECONDS")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="upsonic-server",
        description="Start, stop and inspect uvicorn servers managed by upsonic-server-manager.",
    )
    parser.add_argument(
        "--pid-dir", default=None, help="where PID records live (default: your home directory)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("start", help="start a server and return once it is ready")
    _add_server_args(p)
    p.add_argument("--force", action="store_true", help="stop your own programs holding the port")
    p.add_argument("--redirect-output", action="store_true", help="write output to log files")

    p = sub.add_parser("stop", help="stop a server (or --all, concurrently)")
    p.add_argument("name", metavar="NAME", nargs="?")
    p.add_argument("--all", action="store_true", help="every recorded server, concurrently")

    p = sub.add_parser("restart", help="stop a server and start it again (or --all)")
    p.add_argument("name", metavar="NAME", nargs="?")
    p.add_argument("--all", action="store_true", help="every recorded server")

    p = sub.add_parser("status", help="show servers as a table (exit 3 if NAME is not running)")
    p.add_argument("name", metavar="NAME", nargs="?")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = sub.add_parser("logs", help="print a server's log (like tail)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    p.add_argument("--stderr", action="store_true", help="the error log instead of stdout's")
    p.add_argument("-n", "--lines", type=int, default=20, metavar="LINES")

    p = sub.add_parser("diagnose", help="print the diagnosis of a server as JSON")
    p.add_argument("name", metavar="NAME")

    p = sub.add_parser("run", help="run a server in the foreground (systemd, containers)")
    _add_server_args(p)
    p.add_argument("--force", action="store_true", help="stop your own programs holding the port")
    p.add_argument("--redirect-output", action="store_true", help="write output to log files")

    p = sub.add_parser("systemd-unit", help="print a systemd unit that uses `run`")
    _add_server_args(p)
    p.add_argument("--user", default=None, help="the User= of the unit (default: you)")

    sub.add_parser("demo", help="start the bundled demo app, request it, show status, stop it")
    return parser


def _manager_from_args(args: argparse.Namespace) -> ServerManager:
    """The manager the arguments describe; a rejected value is a usage error."""
    try:
        return ServerManager(
            args.app,
            args.host,
            args.port,
            args.name,
            workers=args.workers,
            log_dir=args.log_dir,
            pid_dir=args.pid_dir,
            cwd=args.cwd,
            env=dict(args.env),
            start_timeout=args.start_timeout,
            stop_timeout=args.stop_timeout,
        )
    except ValueError as e:
        raise UsageError(str(e)) from None


def _manager_from_record(args: argparse.Namespace, name: str) -> Optional[ServerManager]:
    try:
        return ServerManager.from_record(name, args.pid_dir)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _pid_dir_text(args: argparse.Namespace) -> str:
    return args.pid_dir or os.path.expanduser("~")


# ---- commands ------------------------------------------------------------------------------


def cmd_start(args: argparse.Namespace, out: TextIO) -> int:
    m = _manager_from_args(args)
    already = m.is_running()
    took = run_with_spinner(
        f"starting {m.name}", lambda: m.start(args.redirect_output, args.force), out
    )
    st = m.status()
    verb = "already running" if already else f"started in {took * 1000:.0f} ms"
    out.write(f"{m.name}: pid {st.pid} on http://{fmt_address(m.host, m.port)} {verb}\n")
    return EXIT_OK


def _one_name_or_all(args: argparse.Namespace) -> None:
    if bool(args.name) == bool(args.all):
        raise UsageError(f"{args.command}: give a NAME or --all (not both)")


def _recorded_managers(args: argparse.Namespace) -> list[ServerManager]:
    """A manager for every recorded server that still has something to go on."""
    found = (_manager_from_record(args, n) for n in list_records(args.pid_dir))
    return [m for m in found if m is not None]


def _stop_all(args: argparse.Namespace, out: TextIO) -> list[ServerManager]:
    """Stops every recorded server concurrently; returns those that ran."""
    from ._group import ServerGroup

    managers = _recorded_managers(args)
    running = [m for m in managers if m.is_running()]
    t0 = time.monotonic()
    # Concurrently: every SIGTERM goes out first, then one wait for all.
    ServerGroup(managers).stop()
    took = (time.monotonic() - t0) * 1000
    out.write(f"stopped {len(running)} of {len(managers)} recorded servers in {took:.0f} ms\n")
    return running


def cmd_stop(args: argparse.Namespace, out: TextIO) -> int:
    _one_name_or_all(args)
    if args.all:
        _stop_all(args, out)
        return EXIT_OK
    m = _manager_from_record(args, args.name)
    if m is None or not m.is_running():
        if m is not None:
            m.stop()  # clears a stale record
        out.write(f"{args.name}: not running\n")
        return EXIT_OK
    t0 = time.monotonic()
    m.stop()
    out.write(f"{args.name}: stopped in {(time.monotonic() - t0) * 1000:.0f} ms\n")
    return EXIT_OK


def cmd_restart(args: argparse.Namespace, out: TextIO) -> int:
    _one_name_or_all(args)
    if args.all:
        return _restart_all(args, out)
    m = _manager_from_record(args, args.name)
    if m is None:
        raise ServerManagerError(f"no PID record for a server named {args.name!r}")
    # from_record remembers whether output was redirected; restart keeps it.
    m.stop()
    took = run_with_spinner(f"starting {m.name}", lambda: m.start(m.redirect_output), out)
    out.write(f"{m.name}: restarted, pid {m.status().pid} in {took * 1000:.0f} ms\n")
    return EXIT_OK


def _restart_all(args: argparse.Namespace, out: TextIO) -> int:
    from ._group import ServerGroup

    running = _stop_all(args, out)
    # Start again in parallel, each with its recorded output mode.
    t0 = time.monotonic()
    for redirect in (True, False):
        ServerGroup([m for m in running if m.redirect_output == redirect]).start(redirect)
    took = (time.monotonic() - t0) * 1000
    out.write(f"started {len(running)} servers again in {took:.0f} ms\n")
    return EXIT_OK


def cmd_status(args: argparse.Namespace, out: TextIO) -> int:
    names = [args.name] if args.name else list_records(args.pid_dir)
    statuses = []
    for name in names:
        m = _manager_from_record(args, name)
        if m is None:
            statuses.append(ServerStatus(name, None, "-", 0, "stopped", None, None, None, None))
        else:
            statuses.append(m.status())
    if args.json:
        out.write(json.dumps([s.as_dict() for s in statuses], indent=2) + "\n")
    elif statuses:
        out.write(render_table([status_row(s) for s in statuses]) + "\n")
    else:
        out.write(f"no servers recorded in {_pid_dir_text(args)}\n")
    if args.name:
        return EXIT_OK if statuses[0].state in ("running", "starting") else EXIT_NOT_RUNNING
    return EXIT_OK


def _tail(path: Path, lines: int) -> tuple[list[str], int]:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        end = f.tell()
        f.seek(max(0, end - max(lines, 1) * 512 - 4096))
        data = f.read()
    text = data.decode(errors="replace").splitlines()
    return (text[-lines:] if lines > 0 else []), end


def cmd_logs(args: argparse.Namespace, out: TextIO) -> int:
    m = _manager_from_record(args, args.name)
    files = m.log_files if m is not None else log_files(args.name)
    path = Path(files[1] if args.stderr else files[0])
    if not path.exists():
        raise ServerManagerError(
            f"no log file at {path} (was the server started with output redirected?)"
        )
    lines, pos = _tail(path, args.lines)
    for line in lines:
        out.write(line + "\n")
    out.flush()
    if not args.follow:
        return EXIT_OK
    try:
        with open(path, "rb") as f:
            f.seek(pos)
            while True:
                chunk = f.read()
                if chunk:
                    out.write(chunk.decode(errors="replace"))
                    out.flush()
                else:
                    if os.path.getsize(path) < f.tell():  # truncated or rotated
                        f.seek(0)
                    time.sleep(0.2)
    except KeyboardInterrupt:
        return EXIT_OK


def cmd_diagnose(args: argparse.Namespace, out: TextIO) -> int:
    m = _manager_from_record(args, args.name)
    if m is None:
        raise ServerManagerError(f"no PID record for a server named {args.name!r}")
    out.write(json.dumps(m.diagnose(), indent=2, default=str) + "\n")
    return EXIT_OK


def cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    return run_foreground(_manager_from_args(args), args.redirect_output, args.force, out)


def cmd_systemd_unit(args: argparse.Namespace, out: TextIO) -> int:
    _manager_from_args(args)  # validates every argument
    import pwd

    user = args.user or pwd.getpwuid(os.getuid()).pw_name
    cwd = os.path.abspath(args.cwd or os.getcwd())
    run = [sys.executable, "-m", "upsonic_server_manager"]
    if args.pid_dir:
        run += ["--pid-dir", os.path.abspath(args.pid_dir)]
    run += ["run", args.app, "--host", args.host, "--port", str(args.port), "--name", args.name]
    if args.workers:
        run += ["--workers", str(args.workers)]
    run += ["--log-dir", os.path.join(cwd, args.log_dir), "--redirect-output"]
    run += ["--start-timeout", str(args.start_timeout), "--stop-timeout", str(args.stop_timeout)]
    env_lines = "".join(
        f"Environment={shlex.quote(f'{k}={v}')}\n"
        for k, v in [("PYTHONUNBUFFERED", "1")] + args.env
    )
    unit = f"""\
# systemd unit for upsonic server {args.name!r}.
# Install it with:
#   sudo tee /etc/systemd/system/upsonic-{args.name}.service < this-file
#   sudo systemctl daemon-reload && sudo systemctl enable --now upsonic-{args.name}
# `run` reports READY=1 once the server listens and stops it on SIGTERM.
[Unit]
Description=upsonic server {args.name} ({args.app} on {fmt_address(args.host, args.port)})
After=network.target

[Service]
Type=notify
NotifyAccess=main
User={user}
WorkingDirectory={cwd}
{env_lines}ExecStart={shlex.join(run)}
Restart=on-failure
RestartSec=2s
KillMode=mixed
TimeoutStopSec={int(args.stop_timeout) + 10}

[Install]
WantedBy=multi-user.target
"""
    out.write(unit)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    import tempfile

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="upsonic-demo-") as tmp:
        m = ServerManager(
            "upsonic_server_manager.demo_app:app",
            "127.0.0.1",
            port,
            "demo",
            pid_dir=tmp,
            log_dir=os.path.join(tmp, "logs"),
        )
        try:
            took = run_with_spinner("starting demo", lambda: m.start(redirect_output=True), out)
            import importlib.util

            kind = "FastAPI" if importlib.util.find_spec("fastapi") else "plain ASGI"
            out.write(
                f"1. started the bundled demo app ({kind}) on http://127.0.0.1:{port} "
                f"(pid {m.status().pid}) in {took * 1000:.0f} ms\n"
            )
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/hello", timeout=10) as r:
                body = r.read().decode()
                out.write(f"2. GET /hello -> {r.status} {body}\n")
            out.write("3. status:\n")
            out.write(render_table([status_row(m.status())]) + "\n")
        finally:
            t0 = time.monotonic()
            m.stop()
        free = not m.port_holders()
        out.write(
            f"4. stopped it in {(time.monotonic() - t0) * 1000:.0f} ms; "
            f"port {port} is {'free' if free else 'STILL HELD'}, running={m.is_running()}\n"
        )
        return EXIT_OK if free else EXIT_ERROR


COMMANDS: dict[str, Callable[[argparse.Namespace, TextIO], int]] = {
    "start": cmd_start,
    "stop": cmd_stop,
    "restart": cmd_restart,
    "status": cmd_status,
    "logs": cmd_logs,
    "diagnose": cmd_diagnose,
    "run": cmd_run,
    "systemd-unit": cmd_systemd_unit,
    "demo": cmd_demo,
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    out = sys.stdout
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args, out)
    except UsageError as e:
        print(f"upsonic-server: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except RuntimeError as e:
        print(f"upsonic-server: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
