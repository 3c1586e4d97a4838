"""Server sets with real servers: ``upsonic-server up/down`` on an
``upsonic-servers.toml`` (docs/SETS.md) and ``ServerGroup.from_file``.

The member app (tests/apps/usm_member.py) fails its startup when what it
depends on does not answer, and notes at shutdown whether it still did: the
order of `up` and `down` is observed from the apps themselves."""

from __future__ import annotations

from pathlib import Path

import pytest
from _helpers import cli, free_port, get, port_in_use
from upsonic_server_manager import ServerGroup, ServerManager, list_records


def _member(name: str, port: int, events: Path, needs: list[int] = (), **extra: str) -> str:
    env = {"USM_NAME": name, "USM_EVENTS": str(events)}
    env["USM_NEEDS"] = ",".join(f"http://127.0.0.1:{p}/" for p in needs)
    env.update(extra)
    table = ", ".join(f'{k} = "{v}"' for k, v in env.items())
    return f'[servers.{name}]\napp_path = "usm_member:app"\nport = {port}\nenv = {{ {table} }}\n'


def _lines(result) -> dict[str, str]:
    """{server: its line} from `up`/`down` output."""
    return {line.split(":", 1)[0]: line for line in result.stdout.splitlines() if ":" in line}


def _pid(name: str) -> int:
    m = ServerManager.from_record(name)
    assert m is not None and m.is_running(), name
    return m.status().pid


@pytest.fixture
def stop_set(home: Path):
    """Stops every server recorded in the private home after the test."""
    yield
    for name in list_records():
        m = ServerManager.from_record(name)
        if m is not None:
            m.stop()


def test_up_in_order_no_op_restart_only_the_changed_down_dependents_first(
    home: Path, tmp_path: Path, stop_set
) -> None:
    events = tmp_path / "events"
    tools, api, other = free_port(), free_port(), free_port()
    text = (
        _member("tools", tools, events)
        + _member("api", api, events, needs=[tools], USM_MARKER="${MARK:-one}")
        + 'depends_on = ["tools"]\nhold_socket = true\n'
        + _member("other", other, events)
    )
    (Path.cwd() / "upsonic-servers.toml").write_text(text)

    up = cli("up", home=home, timeout=120)
    assert up.returncode == 0, up.stderr
    lines = _lines(up)
    assert all("started" in lines[n] for n in ("tools", "api", "other")), up.stdout
    # api's startup requested tools: it could only start after tools was ready.
    assert get(api)["marker"] == "one"
    pids = {n: _pid(n) for n in ("tools", "api", "other")}

    again = cli("up", home=home, timeout=120)
    assert again.returncode == 0, again.stderr
    assert all("unchanged" in line for line in _lines(again).values()), again.stdout
    assert {n: _pid(n) for n in pids} == pids

    changed = cli("up", home=home, timeout=120, env={"MARK": "two"})
    assert changed.returncode == 0, changed.stderr
    lines = _lines(changed)
    assert "restarted (env changed; reloaded on its socket)" in lines["api"], changed.stdout
    assert "unchanged" in lines["tools"] and "unchanged" in lines["other"]
    assert get(api)["marker"] == "two"
    assert _pid("api") != pids["api"]
    assert _pid("tools") == pids["tools"] and _pid("other") == pids["other"]

    status = cli("status", "-f", "upsonic-servers.toml", home=home)
    assert status.returncode == 0 and status.stdout.count("running") == 3, status.stdout

    down = cli("down", home=home, timeout=120)
    assert down.returncode == 0, down.stderr
    assert all("stopped" in line for line in _lines(down).values()), down.stdout
    stops = [line for line in events.read_text().splitlines() if line.startswith("stop")]
    # api stopped while tools still answered: dependents go first.
    assert "stop api reached" in stops
    assert stops.index("stop api reached") < stops.index("stop tools reached")
    assert not any(port_in_use(p) for p in (tools, api, other))


def test_a_failed_dependency_keeps_its_dependents_from_starting(
    home: Path, tmp_path: Path, stop_set
) -> None:
    events = tmp_path / "events"
    broken, api = free_port(), free_port()
    text = (
        f'[servers.broken]\napp_path = "usm_broken:app"\nport = {broken}\nstart_timeout = 20\n'
        + _member("api", api, events, needs=[broken])
        + 'depends_on = ["broken"]\n'
    )
    (Path.cwd() / "upsonic-servers.toml").write_text(text)
    up = cli("up", home=home, timeout=120)
    assert up.returncode == 1, up.stdout
    lines = _lines(up)
    assert "failed" in lines["broken"]
    # The error names both: the server not started and the one that failed.
    assert "api: failed" in lines["api"] and "broken" in lines["api"], up.stdout
    assert not events.exists()  # api never ran
    assert not port_in_use(api)


def test_from_file_env_overlay_and_variables(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stop_set
) -> None:
    events = tmp_path / "events"
    base, front = free_port(), free_port()
    monkeypatch.setenv("FRONT_PORT", str(front))
    text = (
        _member("base", base, events, USM_MARKER="dev")
        + _member("front", 0, events, needs=[base]).replace("port = 0", 'port = "${FRONT_PORT:-1}"')
        + 'depends_on = ["base"]\n'
        + f'[environments.prod.base]\nenv = {{ USM_NAME = "base", USM_EVENTS = "{events}", '
        'USM_MARKER = "${MARK:-prod}" }\n'
    )
    path = tmp_path / "servers.toml"
    path.write_text(text)
    group = ServerGroup.from_file(path, env="prod")
    assert [m.name for m in group] == ["base", "front"]
    with group:
        assert get(base)["marker"] == "prod"
        assert get(front)["name"] == "front"  # on the port ${FRONT_PORT} gave
    stops = [line for line in events.read_text().splitlines() if line.startswith("stop")]
    assert stops == ["stop front reached", "stop base reached"]
    assert not port_in_use(base) and not port_in_use(front)


BAD = {
    "unknown key": ('[servers.api]\napp_path = "m:app"\nprot = 8000\n', "servers.api.prot"),
    "missing dependency": (
        '[servers.api]\napp_path = "m:app"\nport = PORT\ndepends_on = ["tools"]\n',
        "servers.api.depends_on: no server 'tools'",
    ),
    "cycle": (
        '[servers.a]\napp_path = "m:app"\nport = PORT\ndepends_on = ["b"]\n'
        '[servers.b]\napp_path = "m:app"\nport = 1\ndepends_on = ["a"]\n',
        "dependency cycle: a -> b -> a",
    ),
    "one port": (
        '[servers.a]\napp_path = "m:app"\nport = PORT\n[servers.b]\napp_path = "m:app"\n'
        "port = PORT\n",
        "servers.b.port: port",
    ),
    "one name": (
        '[servers.a]\napp_path = "m:app"\nport = PORT\n[servers.a]\napp_path = "m:app"\n',
        "twice (at line 7",
    ),
    "wrong type": ('[servers.a]\napp_path = "m:app"\nport = "http"\n', "servers.a.port"),
    "core check": (
        '[servers.a]\napp_path = "m:app"\nport = PORT\nworkers = 0\n',
        "servers.a.workers: workers must be",
    ),
    "syntax": ('[servers.a]\napp_path = "m:app\nport = PORT\n', "line 5"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_file_exits_2_names_the_path_and_starts_nothing(home: Path, case: str) -> None:
    # The first server of every file is good: nothing may start before the
    # file is known to be good as a whole.
    good = free_port()
    text, expected = BAD[case]
    text = f'[servers.good]\napp_path = "usm_hello:app"\nport = {good}\n' + text
    (Path.cwd() / "upsonic-servers.toml").write_text(text.replace("PORT", str(free_port())))
    for command in (["up"], ["config"]):
        r = cli(*command, home=home, timeout=60)
        assert r.returncode == 2, (r.stdout, r.stderr)
        assert "Traceback" not in r.stderr
        assert expected in r.stderr, r.stderr
        assert "upsonic-servers.toml" in r.stderr
    assert not port_in_use(good)
    assert list_records(stopped=True) == []


def test_up_supervised_and_port_0_servers(home: Path, tmp_path: Path, stop_set) -> None:
    """A supervised server's record keeps its supervision settings, port 0
    matches the port it got, and a change without a held socket is a stop
    and a start."""
    events = tmp_path / "events"
    text = (
        _member("sup", free_port(), events, USM_MARKER="${MARK:-one}")
        + 'restart = "on-failure"\nmax_memory = "1GiB"\nlog_dir = "../sup-logs"\n'
        + _member("anyport", 0, events)
    )
    (Path.cwd() / "upsonic-servers.toml").write_text(text)
    assert cli("up", home=home, timeout=120).returncode == 0
    sup, anyport = _pid("sup"), _pid("anyport")
    port = ServerManager.from_record("anyport").port
    assert port != 0 and get(port)["name"] == "anyport"
    assert (tmp_path / "sup-logs" / "sup_server.log").exists()  # relative to the file

    again = cli("up", home=home, timeout=120)
    assert all("unchanged" in line for line in _lines(again).values()), again.stdout
    status = cli("status", "-f", "upsonic-servers.toml", home=home)
    assert f"127.0.0.1:{port}" in status.stdout and "supervised" in status.stdout, status.stdout

    logs = cli("-f", "upsonic-servers.toml", "logs", "sup", home=home)
    assert logs.returncode == 0, logs.stderr  # its log files, found in the file's log_dir
    assert cli("logs", "--file", "upsonic-servers.toml", "nope", home=home).returncode == 2

    changed = cli("up", "sup", home=home, timeout=120, env={"MARK": "two"})
    lines = _lines(changed)
    assert list(lines) == ["sup"], changed.stdout  # only what was named (and its deps)
    assert "restarted (env changed), pid" in lines["sup"], changed.stdout
    assert _pid("sup") != sup and _pid("anyport") == anyport
    stop = cli("stop", "-f", "upsonic-servers.toml", home=home, timeout=120)
    assert stop.returncode == 0 and stop.stdout.count("stopped") == 2, stop.stdout
