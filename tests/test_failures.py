"""A failed start says why (issue 19, item 3): the server's own error, not
uvicorn's follow-on line or an exit code, leads StartError's message,
``.reason`` and ``.stderr_tail``, in every configuration: plain (from the
redirected error log), held socket, warm and supervised (our code inside
the server reports it, whatever the output mode), one worker or two (the
first worker's failure fails the start at once). Real servers throughout."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from _helpers import cli, free_port, get
from upsonic_server_manager import ServerManager, ServerManagerError, StartError

IMPORT_ERROR = "ModuleNotFoundError: No module named 'usm_this_module_does_not_exist'"
LIFESPAN_ERROR = "RuntimeError: the database is unreachable at startup"

# name -> (ServerManager keywords, redirect_output). Plain runs uvicorn's own
# command line (nothing of ours inside): only a redirected log can say why.
CONFIGS: dict[str, tuple[dict[str, Any], bool]] = {
    "plain": ({"hold_socket": False}, True),
    "held": ({"hold_socket": True}, False),
    "held-files": ({"hold_socket": True}, True),
    "warm": ({"hold_socket": False, "warm": True}, False),
    "warm-held": ({"hold_socket": True, "warm": True}, False),
    "supervised": ({"restart": "on-failure", "restart_delay": 0.05}, False),
}


def failed_start(managers: list, app: str, name: str, redirect: bool, **kw: Any) -> StartError:
    kw.setdefault("start_timeout", 60)
    m = ServerManager(app, "127.0.0.1", free_port(), name, **kw)
    managers.append(m)
    t0 = time.monotonic()
    with pytest.raises(StartError) as ei:
        m.start(redirect_output=redirect)
    took = time.monotonic() - t0
    # Failing at the first failure, not at start_timeout (generous: 2 cores).
    assert took < 40, f"took {took:.1f} s: waited for start_timeout"
    assert not m.is_running()
    return ei.value


def says(e: StartError, name: str, reason: str) -> None:
    assert e.reason == reason, str(e)
    assert str(e).startswith(f"Failed to start {name} server: {reason} ("), str(e)
    assert e.stderr_tail is not None and e.stderr_tail.startswith(reason), e.stderr_tail
    assert "Application startup failed" not in str(e).splitlines()[0]


@pytest.fixture
def config(request: pytest.FixtureRequest) -> tuple[dict[str, Any], bool]:
    kw, redirect = CONFIGS[request.param]
    if kw.get("warm"):
        request.getfixturevalue("warm_dir")
    return dict(kw), redirect


@pytest.mark.parametrize("config", list(CONFIGS), indirect=True)
@pytest.mark.parametrize("workers", [1, 2])
def test_an_app_that_cannot_be_imported(home: Path, managers: list, config, workers) -> None:
    kw, redirect = config
    e = failed_start(managers, "usm_broken:app", "broken", redirect, workers=workers, **kw)
    says(e, "broken", IMPORT_ERROR)


@pytest.mark.parametrize("config", list(CONFIGS), indirect=True)
@pytest.mark.parametrize("workers", [1, 2])
def test_a_lifespan_failure_leads_with_its_exception(
    home: Path, managers: list, config, workers
) -> None:
    kw, redirect = config
    e = failed_start(managers, "usm_lifespan_fails:app", "ls", redirect, workers=workers, **kw)
    says(e, "ls", LIFESPAN_ERROR)
    if workers == 1:
        assert e.exit_code == 3  # uvicorn's STARTUP_FAILURE
    elif kw.get("hold_socket", True):
        # The first worker's failure ended the start; no "exited with code 0".
        assert "its worker pid" in str(e) and "code 0" not in str(e)


@pytest.mark.parametrize("config", ["held", "supervised"], indirect=True)
def test_a_reason_in_awkward_words_arrives_unchanged(
    home: Path, managers: list, config, tmp_path: Path
) -> None:
    # Through the ready socket's report (held) and the supervisor's error
    # event (supervised): a tab, quotes, a backslash and non-ASCII intact.
    kw, redirect = config
    words = 'boom\tafter a tab, "quoted" \\ back, né 日本'
    fail = tmp_path / "fail"
    fail.write_text(words, encoding="utf-8")
    env = {"USM_FAIL_FILE": str(fail)}
    e = failed_start(managers, "usm_supervised:app", "awkward", redirect, env=env, **kw)
    says(e, "awkward", f"RuntimeError: {words}")


def test_a_reload_whose_new_code_fails_at_import_says_why(home: Path, managers: list) -> None:
    """Port 0, output to the terminal: the launcher's report is all there is."""
    module = Path.cwd() / "usm_flip.py"
    module.write_text("from usm_hello import app  # noqa: F401\n")
    m = ServerManager("usm_flip:app", "127.0.0.1", 0, "flip", env={"PYTHONDONTWRITEBYTECODE": "1"})
    managers.append(m)
    m.start()
    old = m.status().pid
    module.write_text("raise RuntimeError('a bad setting at import')\n")
    with pytest.raises(StartError) as ei:
        m.reload()
    says(ei.value, "flip", "RuntimeError: a bad setting at import")
    assert f"the old generation (pid {old}) still serves" in str(ei.value)
    assert ei.value.exit_code == 1
    assert m.status().pid == old
    get(m.port)


def test_a_supervised_reload_whose_new_code_fails_says_why(home: Path, managers: list) -> None:
    """The supervisor keeps the old generation and tells the asker why, at
    once (it used to wait start_timeout + 10 s and say only "not ready")."""
    module = Path.cwd() / "usm_flop.py"
    module.write_text("from usm_hello import app  # noqa: F401\n")
    m = ServerManager(
        "usm_flop:app", "127.0.0.1", 0, "flop", restart="on-failure",
        env={"PYTHONDONTWRITEBYTECODE": "1"},
    )  # fmt: skip
    managers.append(m)
    m.start()
    old = m.status().pid
    module.write_text("raise RuntimeError('broken at import')\n")
    with pytest.raises(RuntimeError) as ei:
        m.reload()
    text = str(ei.value)
    assert "RuntimeError: broken at import" in text, text
    assert f"the old generation (pid {old}) still serves" in text, text
    assert m.status().pid == old
    get(m.port)


def test_cli_start_of_two_workers_that_cannot_import_fails_at_once(home: Path) -> None:
    t0 = time.monotonic()
    r = cli(
        "start", "usm_broken:app", "--port", "0", "--workers", "2", "--name", "b2",
        "--start-timeout", "60", home=home,
    )  # fmt: skip
    assert r.returncode != 0
    assert time.monotonic() - t0 < 40
    said = [line for line in r.stderr.splitlines() if line.startswith("upsonic-server:")]
    assert said and said[0].startswith(
        f"upsonic-server: Failed to start b2 server: {IMPORT_ERROR} ("
    ), r.stderr


GOOD = "from usm_hello import app  # noqa: F401\n"
LIFESPAN_FAILS = "from usm_lifespan_fails import app  # noqa: F401\n"
IMPORT_FAILS = "raise RuntimeError('a bad setting at import')\n"


def test_cli_restart_that_fails_at_lifespan_says_the_server_is_now_down(home: Path) -> None:
    module = Path.cwd() / "usm_flop.py"
    module.write_text(GOOD)
    env = {"PYTHONDONTWRITEBYTECODE": "1"}
    port = str(free_port())
    # Unwatched: stop then start (a watched server is reloaded beside the
    # old generation, which keeps serving when the new one fails).
    r = cli("start", "usm_flop:app", "--port", port, "--name", "flop", "--redirect-output",
            "--no-supervise", home=home, env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    try:
        module.write_text(LIFESPAN_FAILS)  # imports fine: only its startup fails
        r = cli("restart", "flop", home=home, env=env)
        assert r.returncode != 0
        said = [line for line in r.stderr.splitlines() if line.startswith("upsonic-server:")][0]
        assert said.startswith("upsonic-server: flop: the server is now down ("), r.stderr
        assert LIFESPAN_ERROR in said, said
        assert cli("status", "flop", home=home).returncode != 0
    finally:
        cli("stop", "flop", home=home)


def test_cli_reload_that_fails_says_the_old_generation_still_serves(home: Path) -> None:
    module = Path.cwd() / "usm_flap.py"
    module.write_text(GOOD)
    env = {"PYTHONDONTWRITEBYTECODE": "1"}
    port = free_port()
    # Unwatched: the CLI's own reload (a watched server's supervisor words
    # the same failure as "Cannot supervise flap: not reloaded, ...").
    r = cli("start", "usm_flap:app", "--port", str(port), "--name", "flap", "--hold-socket",
            "--redirect-output", "--no-supervise", home=home, env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    try:
        old = get(port)["pid"]
        module.write_text(IMPORT_FAILS)
        r = cli("reload", "flap", home=home, env=env)
        assert r.returncode != 0
        said = r.stderr.strip().splitlines()
        assert said[0].startswith(
            f"upsonic-server: flap: not reloaded, the old generation (pid {old}) still serves: "
            "the new generation failed: Failed to start flap server: "
            "RuntimeError: a bad setting at import ("
        ), r.stderr
        assert get(port)["pid"] == old
    finally:
        cli("stop", "flap", home=home)


def test_a_missing_cwd_is_named_and_nothing_is_made_under_it(home, tmp_path):
    missing = tmp_path / "no-such-dir"
    m = ServerManager("usm_hello:app", "127.0.0.1", free_port(), "nocwd", cwd=missing)
    with pytest.raises(ServerManagerError, match="in its cwd .*no-such-dir: No such file"):
        m.start(redirect_output=True)
    assert not missing.exists()
    r = cli("start", "usm_hello:app", "--port", str(free_port()), "--name", "nocwd2",
            "--cwd", str(missing), home=home)  # fmt: skip
    assert r.returncode != 0 and "in its cwd" in r.stderr, r.stderr
    assert not missing.exists()
