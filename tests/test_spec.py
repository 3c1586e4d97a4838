"""Every option of the spec (``_core.OPTIONS``) is accepted the same by the
library, ``upsonic-server start``, ``run`` and ``systemd-unit``: the cases
come from the table, so a new option is covered without a new test. At the
validation level: the keywords each entry point builds its manager with,
and the `run` command line a unit's ExecStart holds."""

from __future__ import annotations

import inspect
import os
import shlex

import pytest
from _helpers import cli, free_port
from upsonic_server_manager import ServerManager, _core
from upsonic_server_manager import cli as C

# Supervision options need a policy and a health check to mean anything.
BASE = {"restart": "on-failure", "health_check": "/healthz"}
FLAGGED = [o for o in _core.OPTIONS if o["flag"] and not o["positional"]]


def _action(o):
    parser = C.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["start"]
    return next(a for a in sub._actions if a.dest == o["name"])


def sample(o, tmp):
    """A value of option ``o`` that is neither its default nor the base's."""
    a, d, ann = _action(o), o["default"], o["annotation"]
    if a.choices:
        return next(c for c in a.choices if c not in (d, BASE.get(o["name"])))
    if a.nargs == 0:
        return True
    if "Mapping" in ann:
        return {"USM_SPEC_KEY": "v"}
    if "Sequence" in ann:
        return ["json"]
    if "PathLike" in ann:
        return str(tmp)
    if isinstance(d, float):
        return d + 1.5
    if isinstance(d, int) and not isinstance(d, bool):
        return d + 1
    if isinstance(d, str):
        return d + "-2"
    return {"Optional[int]": 2, "Optional[str]": "/probe"}.get(ann, 1 << 30)


def words(o, value):
    if value is True:
        return [o["flag"]]
    if isinstance(value, dict):
        return [w for k, v in value.items() for w in (o["flag"], f"{k}={v}")]
    if isinstance(value, list):
        return [w for v in value for w in (o["flag"], v)]
    return [o["flag"], str(value)]


def base_words():
    return [
        w
        for k, v in BASE.items()
        for w in words(next(o for o in _core.OPTIONS if o["name"] == k), v)
    ]


def built(m, name):
    got = m._core.arguments()[name]
    return list(got) if isinstance(got, (list, tuple)) else got


def test_the_signature_is_the_table():
    params = inspect.signature(ServerManager).parameters
    assert list(params) == [o["name"] for o in _core.OPTIONS]
    for o in _core.OPTIONS:
        p = params[o["name"]]
        assert (
            p.default is (p.empty if o["required"] else o["default"]) or p.default == o["default"]
        )
        positional = p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        assert positional == o["positional"], o["name"]


@pytest.mark.parametrize("o", FLAGGED, ids=lambda o: o["name"])
def test_each_option_is_taken_the_same_everywhere(o, home, tmp_path):
    value = sample(o, tmp_path)
    port = free_port()
    lib = ServerManager(
        "usm_hello:app", "127.0.0.1", port, "spec", pid_dir=home, **{**BASE, o["name"]: value}
    )
    assert built(lib, o["name"]) == value
    for command in ("start", "run", "systemd-unit"):
        argv = [command, "usm_hello:app", "--port", str(port), "--name", "spec"]
        args = C.build_parser().parse_args(
            ["--pid-dir", str(home), *argv, *base_words(), *words(o, value)]
        )
        shell = C._manager_from_args(args)
        assert built(shell, o["name"]) == value, command
        # Everything else is alike but the defaults the CLI chose for itself
        # (history, supervise: operators keep how runs ended).
        own = cli_defaults_of_its_own(command, home, port) - {o["name"]}
        want = {k: v for k, v in lib._core.arguments().items() if k not in own}
        have = {k: v for k, v in shell._core.arguments().items() if k not in own}
        assert have == want, command


def cli_defaults_of_its_own(command, home, port):
    """The keys whose default differs between `command` and the library."""
    args = C.build_parser().parse_args(
        ["--pid-dir", str(home), command, "usm_hello:app", "--port", str(port), "--name", "spec"]
    )
    shell = C._manager_from_args(args)._core.arguments()
    lib = ServerManager("usm_hello:app", "127.0.0.1", port, "spec", pid_dir=home)._core.arguments()
    return {k for k in lib if lib[k] != shell.get(k)}


def test_the_cli_chose_few_defaults_of_its_own(home):
    # Operators keep history and a watcher (whose server holds its socket,
    # as every supervised server does); everything else is the library's.
    own = {"history", "supervise", "hold_socket"}
    for command in ("start", "run", "systemd-unit"):
        assert cli_defaults_of_its_own(command, home, free_port()) <= own


def test_systemd_unit_hands_every_option_to_run(home, tmp_path):
    given = {o["name"]: sample(o, tmp_path) for o in FLAGGED}
    argv = [w for o in FLAGGED for w in words(o, given[o["name"]])]
    # The base's restart/health_check are options too: the samples win.
    r = cli("systemd-unit", "usm_hello:app", "--port", "7541", *argv, home=home)
    assert r.returncode == 0, r.stderr
    unit = r.stdout
    exec_start = next(x for x in unit.splitlines() if x.startswith("ExecStart="))
    run = shlex.split(exec_start.removeprefix("ExecStart="))
    args = C.build_parser().parse_args(run[run.index("-m") + 2 :])
    m = C._manager_from_args(args)
    for o in FLAGGED:
        name, value = o["name"], given[o["name"]]
        if name == "cwd":
            assert f"WorkingDirectory={value}" in unit
        elif name == "env":
            assert all(f"Environment={k}={v}" in unit for k, v in value.items()), unit
        elif name == "log_dir":
            assert built(m, name) == os.path.join(str(tmp_path), value)
        else:
            assert built(m, name) == value, name


# ---- one spelling of each key ---------------------------------------------------------------

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The spec, its checks and the CLI table: the only files that may quote a
# configuration key (issue 18). Everything else names a key through the
# spec's constants (Rust `spec::key::*`, Python `_spec.K`).
MAY_SPELL_KEYS = {
    "src/spec.rs",
    "src/validate.rs",
    "python/upsonic_server_manager/cli/_parser.py",
}
# Quoted words that are a key's word but not the configuration key.
NOT_THE_KEY = {
    ("host", "src/cmdline.rs"): "uvicorn's own --host option",
    ("port", "src/cmdline.rs"): "uvicorn's own --port option",
    ("workers", "src/cmdline.rs"): "uvicorn's own --workers option",
    ("host", "src/python/types.rs"): "a ServerStatus field",
    ("port", "src/python/types.rs"): "a ServerStatus field",
    ("workers", "src/python/types.rs"): "a ServerStatus field",
    ("restart", "src/python/types.rs"): "a ServerStatus field",
    ("port", "src/python/errors.rs"): "PortInUseError's attribute",
    ("port", "src/protocol/events.rs"): "a field of a supervisor event",
    ("restart", "src/supervise/mod.rs"): "the serde field of Supervision, in its test",
    ("restart", "python/upsonic_server_manager/cli/__init__.py"): "the command restart",
    ("warm", "python/upsonic_server_manager/cli/__init__.py"): "the command warm",
    ("warm", "python/upsonic_server_manager/_cli_warm.py"): "the command warm",
    ("workers", "python/upsonic_server_manager/cli/_servers.py"): "English (orphaned workers)",
}
# "name" is also the field of every OPTIONS row, of a process and of a
# status: the word cannot be told from the key, so it is not counted.
UNCOUNTED = {"name"}


def _quoting(key):
    found = set()
    quoted = (f'"{key}"', f"'{key}'")
    for top in ("src", "python"):
        for d, _, files in os.walk(os.path.join(ROOT, top)):
            for f in files:
                if f.endswith((".rs", ".py", ".pyi")):
                    path = os.path.join(d, f)
                    with open(path, encoding="utf-8") as fh:
                        text = fh.read()
                    if any(q in text for q in quoted):
                        found.add(os.path.relpath(path, ROOT))
    return found


def test_each_key_is_spelled_only_by_the_spec_its_checks_and_the_cli_table():
    if not os.path.isdir(os.path.join(ROOT, "src")):
        pytest.skip("needs the source tree")
    spelled = {}
    for o in _core.OPTIONS:
        if o["name"] in UNCOUNTED:
            continue
        files = _quoting(o["name"])
        exempt = {f for (k, f) in NOT_THE_KEY if k == o["name"]}
        # An exemption that no longer matches would hide a future spelling.
        assert exempt <= files, (o["name"], exempt - files)
        spelled[o["name"]] = sorted(files - exempt - MAY_SPELL_KEYS)
    assert {k: v for k, v in spelled.items() if v} == {}
    assert all(len(_quoting(k) - {f for (j, f) in NOT_THE_KEY if j == k}) <= 3 for k in spelled)


def test_K_names_every_option_and_nothing_else():
    from upsonic_server_manager._spec import K

    for o in _core.OPTIONS:
        assert getattr(K, o["name"]) == o["name"]
    with pytest.raises(AttributeError, match="no option"):
        K.no_such_option  # noqa: B018
