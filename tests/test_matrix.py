"""The promises of docs/PROMISES.md, checked in every configuration from one
table: each row of CONFIGS is a way to run a server (as ServerManager
keywords; the CLI's flags are derived from them, so a new row needs no new
test), each test is one check, and every check runs for every row, started
from the library and from the CLI. Real uvicorn servers, real signals.

What does not fit CI's time runs in ``benchmarks/promises.py``."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import psutil
import pytest
from _helpers import (
    cli,
    free_port,
    get,
    gone,
    leftover_processes,
    port_in_use,
    preloaders,
    wait_until,
)
from upsonic_server_manager import ServerManager, StartError

# name -> ServerManager keywords. "port": 0 asks for a kernel-picked port on
# a held socket.
CONFIGS: dict[str, dict[str, Any]] = {
    "plain": {},
    "held": {"port": 0},
    "workers2": {"workers": 2},
    "warm": {"warm": True},
    "supervised": {"restart": "on-failure", "restart_delay": 0.05, "stable_after": 60.0},
}
ENTRIES = ("library", "cli")
CASES = [pytest.param(c, e, id=f"{c}-{e}") for c in CONFIGS for e in ENTRIES]


def cli_flags(kw: dict[str, Any]) -> list[str]:
    """The CLI's spelling of ServerManager keywords: ``--flag-name VALUE``,
    a bare flag for True."""
    out: list[str] = []
    for key, value in kw.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            out.append(flag)
        elif value is not False and value is not None:
            out += [flag, str(value)]
    return out


def launch(
    entry: str, config: str, name: str, home: Path, app: str = "usm_hello:app"
) -> ServerManager:
    """Starts ``app`` as ``config`` says, from ``entry``, with output to the
    log files; the manager to inspect it (for the CLI, rebuilt from its
    record, as another program would)."""
    kw = dict(CONFIGS[config])
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
def _private_preloaders(request: pytest.FixtureRequest) -> None:
    """Warm rows get a private preloader directory, killed after the test."""
    params = getattr(request.node, "callspec", None)
    if params and CONFIGS[params.params["config"]].get("warm"):
        request.getfixturevalue("warm_dir")


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
def test_serves_at_its_url_and_stop_leaves_nothing(config: str, entry: str, home: Path) -> None:
    m = launch(entry, config, f"m-{config}", home)
    try:
        st = m.status()
        assert st.state == "running" and st.port == m.port != 0, st
        assert get(m.port)["hello"] == "world"
        assert m.url.endswith(f":{m.port}")
        assert m.is_running()
    finally:
        m.stop()
    nothing_left(m, home)
    assert not m.is_running() and m.status().state in ("stopped", "dead")


@pytest.mark.parametrize(("config", "entry"), CASES)
def test_a_failure_says_why(config: str, entry: str, home: Path) -> None:
    with pytest.raises(StartError) as e:
        launch(entry, config, f"f-{config}", home, app="usm_broken:app")
    text = str(e.value)
    assert "usm_this_module_does_not_exist" in text, text
    left = lingering()
    assert not left, [p.cmdline() for p in left]


@pytest.mark.parametrize(("config", "entry"), CASES)
def test_status_after_kill_9_of_the_server(config: str, entry: str, home: Path) -> None:
    m = launch(entry, config, f"k-{config}", home)
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
            if st.workers:
                # Its workers still serve: status says so, stop ends them.
                assert "still run" in after.end_reason, after
    finally:
        m.stop()
    nothing_left(m, home)
