"""The server file's pure parts (no server runs): variables, overlays, paths,
checks, dependency order, `config` and `export systemd` (docs/SETS.md)."""

from __future__ import annotations

import inspect
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from _helpers import cli
from upsonic_server_manager import ServerGroup, ServerManager, _sets
from upsonic_server_manager._cli_sets import DEFAULT_FILE, render
from upsonic_server_manager._sets import SetFileError, load


def _write(tmp_path: Path, text: str, name: str = "upsonic-servers.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# ---- ${VAR} ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("${A}", "1"),
        ("x${A}y${A}", "x1y1"),
        ("${UNSET:-7541}", "7541"),
        ("${EMPTY:-d}", "d"),  # empty takes the default, as in compose
        ("${A:-d}", "1"),
        ("${EMPTY}", ""),
        ("$$A and $${A}", "$A and ${A}"),
        ("${UNSET:-}", ""),
        ("plain $A", "plain $A"),
    ],
)
def test_expand(text: str, expected: str) -> None:
    assert _sets.expand(text, {"A": "1", "EMPTY": ""}, "p") == expected


@pytest.mark.parametrize("text, word", [("${UNSET}", "UNSET:-VALUE"), ("${1X}", "not a variable")])
def test_expand_refuses_with_the_path(text: str, word: str) -> None:
    with pytest.raises(SetFileError, match="servers.a.port") as e:
        _sets.expand(text, {}, "servers.a.port")
    assert word in str(e.value)


# ---- dependency order -------------------------------------------------------------------

GRAPH = {"db": [], "cache": [], "api": ["db", "cache"], "web": ["api"], "solo": []}


def test_levels_closure_dependents() -> None:
    assert _sets.levels(GRAPH) == [["db", "cache", "solo"], ["api"], ["web"]]
    assert _sets.closure(GRAPH, ["api"]) == ["db", "cache", "api"]
    assert _sets.dependents(GRAPH, ["db"]) == ["db", "api", "web"]
    assert _sets.find_cycle(GRAPH) is None
    assert _sets.find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]


# ---- keys from ServerManager's signature ---------------------------------------------------


def test_keys_and_defaults_are_the_signatures() -> None:
    params = inspect.signature(ServerManager.__init__).parameters
    keys = _sets.allowed_keys()
    assert set(keys) == set(params) - {"self", "name", "stop_with_caller"} | {"depends_on"}
    d = _sets.defaults()
    assert d["host"] == "127.0.0.1"  # the CLI's, not the signature's (it has none)
    assert d["stop_timeout"] == params["stop_timeout"].default
    assert _sets.required_keys() == ["app_path", "port"]
    # One home for the default file name.
    assert inspect.signature(ServerGroup.from_file).parameters["path"].default == DEFAULT_FILE


def test_strings_for_numbers_overlays_and_paths(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
[servers.api]
app_path = "api:app"
port = "${PORT:-7541}"
workers = "2"
start_timeout = "${T:-2.5}"
hold_socket = "true"
max_memory = "512MiB"
restart = "on-failure"
log_dir = "var/log"

[servers.tools]
app_path = "tools:app"
port = 8001
cwd = "tools"
env = { MODE = "dev" }

[environments.production.api]
workers = 4
[environments.production.tools]
env = { MODE = "prod" }
""",
    )
    s = load(path, environ={})
    api, tools = s.specs["api"].kwargs, s.specs["tools"].kwargs
    assert (api["port"], api["workers"], api["start_timeout"]) == (7541, 2, 2.5)
    assert api["hold_socket"] is True and api["max_memory"] == "512MiB"
    assert api["log_dir"] == str(tmp_path / "var" / "log")
    assert api["cwd"] == str(tmp_path)  # no cwd: the file's directory
    assert tools["cwd"] == str(tmp_path / "tools")
    assert tools["log_dir"] == str(tmp_path / "logs")
    assert tools["env"] == {"MODE": "dev"}
    prod = load(path, "production", environ={"PORT": "9000"})
    assert prod.specs["api"].kwargs["workers"] == 4
    assert prod.specs["api"].kwargs["port"] == 9000
    assert prod.specs["tools"].kwargs["env"] == {"MODE": "prod"}

    # --pid-dir is relative to where the command runs, not to the file.
    assert load(path, environ={}, pid_dir="recs").specs["api"].kwargs["pid_dir"] == os.path.abspath(
        "recs"
    )


@pytest.mark.parametrize(
    "extra, env, words",
    [
        (
            "[environments.production.api]\nworkerz = 4\n",
            "production",
            "environments.production.api.workerz: unknown key; did you mean 'workers'?",
        ),
        (
            "[environments.production.api]\nworkers = 0\n",
            "production",
            "environments.production.api.workers: workers must be between",
        ),
        ("[environments.production.nope]\nworkers = 2\n", None, "no server 'nope' to overlay"),
        ("", "staging", "no environment 'staging' (environments in the file: none)"),
        (
            '[servers.b]\napp_path = "b:app"\nport = true\n',
            None,
            "servers.b.port: expected a number, got true",
        ),
        (
            '[servers.b]\napp_path = "b:app"\nport = 8000\n',
            None,
            "servers.b.port: port 8000 is also servers.api's",
        ),
        ("[servers.b]\nport = 8001\n", None, "servers.b.app_path: missing"),
        (
            '[servers.b]\napp_path = "b:app"\nport = 8001\nhold_socket = "maybe"\n',
            None,
            "servers.b.hold_socket: expected true or false",
        ),
        (
            '[servers.b]\napp_path = "b:app"\nport = 8001\ndepends_on = ["b"]\n',
            None,
            "depends on itself",
        ),
        ("[server.b]\n", None, "unknown table 'server'"),
        ("[environments]\nprod = 3\n", None, "environments.prod: must be a table"),
    ],
)
def test_errors_name_the_path(tmp_path: Path, extra: str, env, words: str) -> None:
    path = _write(tmp_path, '[servers.api]\napp_path = "api:app"\nport = 8000\n' + extra)
    with pytest.raises(SetFileError) as e:
        load(path, env, environ={})
    assert words in str(e.value)
    assert str(e.value).startswith(path)


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SetFileError, match="no such file"):
        load(str(tmp_path / "nope.toml"))


def test_config_reads_back_as_the_same_servers(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        '[servers.tools]\napp_path = "tools:app"\nport = "${P:-8001}"\nenv = { "A B" = "x\\"y" }\n'
        '[servers.api]\napp_path = "api:app"\nport = 8000\ndepends_on = ["tools"]\n'
        'restart = "on-failure"\nrestart_limit = "none"\nworkers = "${W:-}"\n',
    )
    s = load(path, environ={})
    again = load(_write(tmp_path, render(s), "resolved.toml"), environ={})

    def norm(kw: dict) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()}

    assert s.specs["api"].kwargs["restart_limit"] is None  # never give up
    assert s.specs["api"].kwargs["workers"] is None  # an empty variable: the default
    assert list(again.specs) == list(s.specs)
    for name in s.specs:
        assert norm(again.specs[name].kwargs) == norm(s.specs[name].kwargs)
        assert again.specs[name].depends_on == s.specs[name].depends_on


# ---- export systemd -------------------------------------------------------------------------

FILE = """
[servers.tools]
app_path = "tools:app"
port = 8001
env = { MODE = "dev" }

[servers.api]
app_path = "api:app"
port = 8000
workers = 2
hold_socket = true
restart = "on-failure"
depends_on = ["tools"]
"""


def test_export_systemd(tmp_path: Path, home: Path) -> None:
    app = tmp_path / "shop"
    app.mkdir()
    _write(app, FILE)
    out = tmp_path / "units"
    r = cli("export", "systemd", "--output", str(out), home=home, cwd=app)
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(out)) == ["shop-api.service", "shop-tools.service", "shop.target"]
    api = (out / "shop-api.service").read_text()
    tools = (out / "shop-tools.service").read_text()
    target = (out / "shop.target").read_text()
    assert "Type=notify" in api and "Type=notify" in tools
    assert "Requires=shop-tools.service\nAfter=shop-tools.service" in api
    assert "Requires=" not in tools
    assert "ExecReload=/bin/kill -HUP $MAINPID" in api  # it holds its socket
    assert "ExecReload" not in tools
    assert " run api:app --name api " in api
    assert "--workers 2" in api and "--hold-socket" in api and "--restart on-failure" in api
    assert "Environment=MODE=dev" in tools
    assert f"WorkingDirectory={app}" in tools
    assert "Wants=shop-tools.service shop-api.service" in target
    assert "WantedBy=shop.target" in api
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed: the units were not verified")
    v = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *sorted(str(p) for p in out.iterdir())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert v.returncode == 0, v.stderr


def test_export_carries_uvicorn_args_after_dashes(tmp_path: Path, home: Path) -> None:
    _write(tmp_path, '[servers.a]\napp_path = "a:app"\nport = 8000\nuvicorn_args = ["--x"]\n')
    r = cli("export", "systemd", "-o", str(tmp_path / "u"), home=home, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    unit = next((tmp_path / "u").glob("*a.service")).read_text()
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert exec_start.endswith(" --redirect-output -- --x"), exec_start


def test_stop_with_caller_is_refused_in_a_file(tmp_path: Path, home: Path) -> None:
    """Each server would stop as soon as `up` exits."""
    _write(tmp_path, '[servers.a]\napp_path = "a:app"\nport = 8000\nstop_with_caller = true\n')
    r = cli("config", home=home, cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "servers.a.stop_with_caller" in r.stderr, r.stderr
