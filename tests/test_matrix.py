"""The promises of docs/PROMISES.md, checked in every configuration from one
table: each row of CONFIGS is a way to run a server (as ServerManager
keywords; the CLI's flags are derived from them, so a new row needs no new
test), each test is one check, and every check runs for every row, started
from the library and from the CLI. Real uvicorn servers, real signals.

Every case here runs in CI; the owner-ends table (tests/test_owner.py) runs a
slice in CI and the whole with ``USM_FULL_MATRIX=1``."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from _helpers import (
    cli,
    free_port,
    gone,
    leftover_processes,
    port_in_use,
    preloaders,
    wait_until,
)
from upsonic_server_manager import ServerManager, StartError

SUPERVISED = {"restart": "on-failure", "restart_delay": 0.05, "stable_after": 60.0}
# uvicorn's TLS options; {key} and {cert} are the `cert` fixture's files.
TLS = (
    "--log-level",
    "error",
    "--no-access-log",
    "--ssl-keyfile",
    "{key}",
    "--ssl-certfile",
    "{cert}",
)

# name -> ServerManager keywords. "port": 0 asks for a kernel-picked port on
# a held socket.
CONFIGS: dict[str, dict[str, Any]] = {
    "plain": {},
    "held": {"port": 0},
    "workers2": {"workers": 2},
    "warm": {"warm": True},
    "supervised": SUPERVISED,
    "tls": {"uvicorn_args": TLS},
    # A health probe every 0.3 s over TLS: a healthy server is never replaced.
    "tls-supervised": {**SUPERVISED, "uvicorn_args": TLS, "health_check": "/",
                       "health_interval": 0.3, "health_failures": 2},
}  # fmt: skip
ENTRIES = ("library", "cli")
CASES = [pytest.param(c, e, id=f"{c}-{e}") for c in CONFIGS for e in ENTRIES]


def cli_flags(kw: dict[str, Any]) -> list[str]:
    """The CLI's spelling of ServerManager keywords: ``--flag-name VALUE``,
    a bare flag for True; uvicorn's own arguments after ``--``."""
    out: list[str] = []
    for key, value in kw.items():
        flag = "--" + key.replace("_", "-")
        if key == "uvicorn_args":
            continue
        if value is True:
            out.append(flag)
        elif value is not False and value is not None:
            out += [flag, str(value)]
    return out + ["--", *kw["uvicorn_args"]] if "uvicorn_args" in kw else out


def fetch(m: ServerManager) -> dict:
    """GET the server at its own url (https with TLS: a self-signed
    certificate, so not verified)."""
    r = httpx.get(m.url, verify=False, timeout=5)
    r.raise_for_status()
    return r.json()


def launch(
    entry: str,
    config: str,
    name: str,
    home: Path,
    request: pytest.FixtureRequest,
    app: str = "usm_hello:app",
) -> ServerManager:
    """Starts ``app`` as ``config`` says, from ``entry``, with output to the
    log files; the manager to inspect it (for the CLI, rebuilt from its
    record, as another program would)."""
    kw = dict(CONFIGS[config])
    if "uvicorn_args" in kw:
        kw["uvicorn_args"] = request.node.usm_args
    port = kw.pop("port", None)
    port = free_port() if port is None else port
    if entry == "library":
        m = ServerManager(app, "127.0.0.1", port, name, **kw)
        m.start(redirect_output=True)
        return m
    r = cli(
        "start", app, "--port", str(port), "--name", name, "--redirect-output",
        *cli_flags(kw), home=home,
    )  # fmt: skip
    if r.returncode != 0:
        raise StartError(r.stderr.strip())
    m = ServerManager.from_record(name)
    assert m is not None, r
    return m


@pytest.fixture(autouse=True)
def _row_setup(request: pytest.FixtureRequest) -> None:
    """Warm rows get a private preloader directory, killed after the test;
    TLS rows a certificate."""
    params = getattr(request.node, "callspec", None)
    config = CONFIGS[params.params["config"]] if params else {}
    if config.get("warm"):
        request.getfixturevalue("warm_dir")
    if "uvicorn_args" in config:
        key, cert = request.getfixturevalue("cert")
        files = {"{key}": key, "{cert}": cert}
        request.node.usm_args = tuple(files.get(a, a) for a in config["uvicorn_args"])


def lingering() -> list[psutil.Process]:
    """Processes of ours still running, but for warm-start preloaders (they
    outlive servers by design, until idle)."""
    keep = {p.pid for p in preloaders(os.environ.get("UPSONIC_WARM_DIR", "/nonexistent"))}
    return [p for p in leftover_processes(keep)]


def nothing_left(m: ServerManager, home: Path) -> None:
    """After stop(): the port is free, no process of ours runs, no record."""
    assert not port_in_use(m.port), f"port {m.port} still held"
    left = lingering()
    assert not left, [p.cmdline() for p in left]
    records = [f for f in os.listdir(home) if f.endswith((".pid", ".id", ".sup"))]
    assert not records, records


@pytest.mark.parametrize(("config", "entry"), CASES)
def test_serves_at_its_url_and_stop_leaves_nothing(
    config: str, entry: str, home: Path, request: pytest.FixtureRequest
) -> None:
    m = launch(entry, config, f"m-{config}", home, request)
    try:
        st = m.status()
        assert st.state == "running" and st.port == m.port != 0, st
        assert fetch(m)["hello"] == "world"
        tls = "uvicorn_args" in CONFIGS[config]
        assert m.url.startswith("https://" if tls else "http://"), m.url
        assert m.url.endswith(f":{m.port}")
        assert m.is_running()
        if m.restart_policy != "no":
            time.sleep(1.0)  # a few health intervals: a healthy server stays
            assert m.status().restarts == 0 and m.status().pid == st.pid, m.status()
    finally:
        m.stop()
    nothing_left(m, home)
    assert not m.is_running() and m.status().state in ("stopped", "dead")


@pytest.mark.parametrize(("config", "entry"), CASES)
def test_a_failure_says_why(
    config: str, entry: str, home: Path, request: pytest.FixtureRequest
) -> None:
    with pytest.raises(StartError) as e:
        launch(entry, config, f"f-{config}", home, request, app="usm_broken:app")
    text = str(e.value)
    assert "usm_this_module_does_not_exist" in text, text
    left = lingering()
    assert not left, [p.cmdline() for p in left]


@pytest.mark.parametrize(("config", "entry"), CASES)
def test_status_after_kill_9_of_the_server(
    config: str, entry: str, home: Path, request: pytest.FixtureRequest
) -> None:
    m = launch(entry, config, f"k-{config}", home, request)
    try:
        st = m.status()
        master = psutil.Process(st.pid)
        master.send_signal(signal.SIGKILL)
        assert wait_until(lambda: gone(master))
        if "restart" in CONFIGS[config]:
            # Its supervisor brings it back, and says how the run ended.
            assert wait_until(lambda: m.status().state == "running" and m.status().pid != st.pid)
            after = m.status()
            assert after.restarts == 1 and after.last_exit == -signal.SIGKILL, after
        else:
            after = m.status()
            assert after.state == "dead", after
            assert after.end_reason and (
                "SIGKILL" in after.end_reason or after.end_reason.startswith("died")
            ), after
            if st.workers and entry == "library":
                # Its workers still serve: status says so, stop ends them.
                # (The CLI's watcher sweeps them itself once it sees the end.)
                assert "still run" in after.end_reason, after
    finally:
        m.stop()
    nothing_left(m, home)
