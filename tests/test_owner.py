"""Nothing outlives its owner when the owner says so (issue 19, items 1-2):
``stop_with_caller=True`` in every configuration, however the owner ends;
``stop_on_exit`` on SIGTERM/SIGHUP; the CLI's start interrupted by SIGTERM;
the pytest fixtures' servers under ``-s`` and after a SIGKILLed pytest; and
processes that outlive their starter keep none of its descriptors.

Each owner is a real Python process running a small script that starts a
real server and is then ended by the test."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import psutil
import pytest
from _helpers import CLI, PRELOAD, can_bind, free_port, get, gone, running, wait_until
from upsonic_server_manager import ServerManager

pytest_plugins = ["pytester"]

OWNER = """
import json, os, sys, time
from upsonic_server_manager import ServerManager
config, how, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
kw = json.loads(config)
m = ServerManager("usm_hello:app", "127.0.0.1", port, "owned", stop_with_caller=True, **kw)
m.start(redirect_output=True)
st = m.status()
print(json.dumps({"pid": st.pid, "port": m.port, "supervisor": st.supervisor_pid}), flush=True)
sys.stdin.readline()  # until the test has seen the server serve
if how == "exit":
    sys.exit(0)
time.sleep(600)
"""

CONFIGS = {
    "plain": {},
    "port0": {"hold_socket": True},
    "workers2": {"workers": 2},
    "warm": {"warm": True},
    "supervised": {"restart": "always"},
}
ENDINGS = {
    "exit": None,
    "SIGTERM": signal.SIGTERM,
    "SIGKILL": signal.SIGKILL,
    "Ctrl-C": signal.SIGINT,
}


#: CI runs every configuration with SIGKILL (which nothing in the owner can
#: catch) and every ending with port 0 (the pytest fixtures' configuration);
#: USM_FULL_MATRIX=1 runs the whole table (about 90 s).
FULL = os.environ.get("USM_FULL_MATRIX") == "1"


def in_ci_slice(config: str, ending: str) -> bool:
    return FULL or ending == "SIGKILL" or config == "port0"


def group_of(pid: int) -> list[psutil.Process]:
    """The process and its descendants (a server and its workers)."""
    p = psutil.Process(pid)
    return [p, *p.children(recursive=True)]


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("config", "ending"),
    [(c, e) for c in CONFIGS for e in ENDINGS if in_ci_slice(c, e)],
)
def test_the_server_ends_with_its_owner(config, ending, home, warm_dir):
    kw = CONFIGS[config]
    port = 0 if config == "port0" else free_port()
    with running(
        [sys.executable, "-c", OWNER, json.dumps(kw), ending, str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as owner:
        assert owner.stdout is not None
        line = owner.stdout.readline()
        assert line, "the owner printed nothing (it failed to start the server)"
        info = json.loads(line)
        assert get(info["port"])["hello"] == "world"
        procs = group_of(info["pid"])
        if config == "workers2":
            assert wait_until(lambda: len(psutil.Process(info["pid"]).children()) >= 2, 30)
            procs = group_of(info["pid"])
        if info["supervisor"]:
            procs.append(psutil.Process(info["supervisor"]))
        if config == "warm":
            assert PRELOAD in psutil.Process(info["pid"]).parent().cmdline()
        sig = ENDINGS[ending]
        assert owner.stdin is not None
        owner.stdin.write("go\n")
        owner.stdin.flush()
        if sig is not None:
            owner.send_signal(sig)
        owner.wait(30)
        assert all(wait_until(lambda q=q: gone(q), 20) for q in procs), [
            q.pid for q in procs if not gone(q)
        ]
        assert wait_until(lambda: can_bind("127.0.0.1", info["port"]), 10)
    # Stopping with its caller is a stop: no record is left behind and the
    # name is not reported as a server that died.
    assert wait_until(lambda: not (home / ".upsonic_owned_server.pid").exists(), 10)
    after = ServerManager("usm_hello:app", "127.0.0.1", info["port"], "owned").status()
    assert after.state != "dead", after.end_reason


LAYOUT = """
import json, os, sys, time
from upsonic_server_manager import ServerManager
# The caller's 3 and 4 free (and stdin closed): what the manager opens lands
# on the numbers the server's descriptors must have. The lifeline is made
# with the first manager that asks for it: its read end takes 3, the held
# socket's target, and the socket (bound at start) comes above it. Set one
# at a time, the socket overwrote the lifeline: 3 and 4 were both the socket.
# With stdin closed too, the lifeline's read end takes 0, which /dev/null
# overwrote (the server then read end-of-file at once and stopped).
for fd in json.loads(sys.argv[1]):
    try:
        os.close(fd)
    except OSError:
        pass
b = ServerManager("usm_hello:app", "127.0.0.1", 0, "b", stop_with_caller=True, workers=2)
assert os.readlink("/proc/self/fd/3").startswith("pipe:")
b.start(redirect_output=True)
print(json.dumps([b.status().pid, b.port]), flush=True)
time.sleep(600)
"""


def pipe_of(pid: int, fd: int) -> str:
    """What descriptor `fd` of `pid` is ("" if it closed meanwhile)."""
    try:
        return os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        return ""


@pytest.mark.parametrize("closed", [[3, 4], [0, 3, 4]], ids=["3-4-free", "stdin-closed"])
def test_the_callers_layout_never_mixes_up_the_servers_descriptors(closed, home):
    argv = [sys.executable, "-c", LAYOUT, json.dumps(closed)]
    with running(argv, stdout=subprocess.PIPE, text=True) as owner:
        assert owner.stdout is not None
        b, b_port = json.loads(owner.stdout.readline())
        assert pipe_of(b, 0) == "/dev/null"
        assert pipe_of(b, 3).startswith("socket:")
        lifeline = pipe_of(b, 4)
        assert lifeline.startswith("pipe:")
        # The very pipe the owner holds (its write end is the owner's alone).
        owner_pipes = [pipe_of(owner.pid, int(f)) for f in os.listdir(f"/proc/{owner.pid}/fd")]
        assert owner_pipes.count(lifeline) == 2, owner_pipes
        # Nothing else of the owner's: none of the server's other
        # descriptors is one the owner has (its stdout pipe, its files).
        mine = {pipe_of(owner.pid, int(f)) for f in os.listdir(f"/proc/{owner.pid}/fd")}
        rest = {pipe_of(b, int(f)) for f in os.listdir(f"/proc/{b}/fd") if int(f) > 4}
        shared = {x for x in mine & rest if x.startswith(("pipe:", "socket:"))}
        assert not shared, shared
        assert wait_until(lambda: len(psutil.Process(b).children()) >= 2, 30)
        procs = group_of(b)
        assert get(b_port)["hello"] == "world"
        owner.kill()
        owner.wait(10)
        assert all(wait_until(lambda q=q: gone(q), 20) for q in procs), [
            q.pid for q in procs if not gone(q)
        ]


def test_without_stop_with_caller_the_server_outlives_a_sigkilled_owner(home, managers):
    # The control: the original's behaviour is kept by default.
    port = free_port()
    script = OWNER.replace("stop_with_caller=True", "stop_with_caller=False")
    with running(
        [sys.executable, "-c", script, "{}", "SIGKILL", str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as owner:
        assert owner.stdout is not None
        info = json.loads(owner.stdout.readline())
        owner.kill()
        owner.wait(10)
    m = ServerManager("usm_hello:app", "127.0.0.1", port, "owned")
    managers.append(m)
    assert get(port)["hello"] == "world"
    assert not gone(psutil.Process(info["pid"]))


def test_stop_with_caller_must_be_a_bool(home):
    with pytest.raises(TypeError, match="stop_with_caller"):
        ServerManager("usm_hello:app", "127.0.0.1", 8000, "x", stop_with_caller="yes")  # type: ignore[arg-type]


# ---- stop_on_exit ----------------------------------------------------------------------------

STOP_ON_EXIT = """
import signal, sys, time
from upsonic_server_manager import ServerManager, stop_on_exit
port, chained = int(sys.argv[1]), sys.argv[2]
if chained == "1":
    def mine(signum, frame):
        print("own handler", signum, flush=True)
        sys.exit(3)
    signal.signal(signal.SIGTERM, mine)
    signal.signal(signal.SIGHUP, mine)
m = ServerManager("usm_hello:app", "127.0.0.1", port, "soe")
m.start(redirect_output=True)
stop_on_exit(m)
print(m.status().pid, flush=True)
time.sleep(600)
"""


def test_a_handler_that_returns_keeps_the_program_and_its_server(home, managers):
    port = free_port()
    code = STOP_ON_EXIT.replace("sys.exit(3)", "pass")
    with running(
        [sys.executable, "-c", code, str(port), "1"], stdout=subprocess.PIPE, text=True
    ) as owner:
        assert owner.stdout is not None
        pid = int(owner.stdout.readline())
        owner.send_signal(signal.SIGTERM)
        assert owner.stdout.readline().startswith("own handler")
        assert owner.poll() is None
        assert get(port)["pid"] == pid
    managers.append(ServerManager("usm_hello:app", "127.0.0.1", port, "soe"))


@pytest.mark.parametrize("chained", ["0", "1"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_stop_on_exit_stops_on_sigterm_and_sighup(sig, chained, home):
    port = free_port()
    with running(
        [sys.executable, "-c", STOP_ON_EXIT, str(port), chained], stdout=subprocess.PIPE, text=True
    ) as owner:
        assert owner.stdout is not None
        server = psutil.Process(int(owner.stdout.readline()))
        owner.send_signal(sig)
        code = owner.wait(30)
        rest = owner.stdout.read()
        assert wait_until(lambda: gone(server), 10)
        assert can_bind("127.0.0.1", port)
        if chained == "1":
            # The program's own handler ran, and its exit stopped the server.
            assert f"own handler {int(sig)}" in rest
            assert code == 3
        else:
            # It ends as that signal would have ended it.
            assert code == -sig


# ---- the CLI's start interrupted by SIGTERM ---------------------------------------------------


def test_sigterm_while_the_cli_starts_cleans_up_like_ctrl_c(home):
    port = free_port()
    env = {**os.environ, "USM_SLOW_SECONDS": "3"}
    argv = [*CLI, "start", "usm_slow:app", "--port", str(port), "--name", "slowterm"]
    with running(argv, env=env, stderr=subprocess.PIPE, text=True) as p:
        assert wait_until(lambda: bool(psutil.Process(p.pid).children(recursive=True)), 10)
        kids = psutil.Process(p.pid).children(recursive=True)
        p.send_signal(signal.SIGTERM)
        code = p.wait(20)
        assert p.stderr is not None
        err = p.stderr.read()
    assert code == -signal.SIGTERM, err
    assert "half-started server was stopped" in err
    assert all(wait_until(lambda q=q: gone(q), 10) for q in kids)
    # And it does not come up later.
    assert not wait_until(lambda: not can_bind("127.0.0.1", port), 4)


RUN_MODES = {
    "watched": [],  # the CLI's default: `run` is the server's supervisor
    "no-supervise": ["--no-supervise"],
    "restart": ["--restart", "always"],
}


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("mode", "ending"),
    [(m, "SIGKILL") for m in RUN_MODES] + [("watched", "SIGTERM"), ("no-supervise", "Ctrl-C")],
)
def test_upsonic_server_run_takes_its_server_along_however_it_ends(mode, ending, home):
    """`run` owns its server in the foreground: killed outright, it still
    leaves no server, no record and no supervisor state naming it."""
    port = free_port()
    argv = [*CLI, "run", "usm_hello:app", "--port", str(port), "--name", "fg", *RUN_MODES[mode]]
    with running(argv, stdout=subprocess.PIPE, text=True) as p:
        assert p.stdout is not None
        line = p.stdout.readline()
        assert "serving on" in line, line
        pid = int(line.split(" pid ")[1].split()[0])
        procs = group_of(pid)
        assert get(port)["hello"] == "world"
        p.send_signal(ENDINGS[ending])
        p.wait(30)
        assert all(wait_until(lambda q=q: gone(q), 20) for q in procs), [
            q.pid for q in procs if not gone(q)
        ]
        assert wait_until(lambda: can_bind("127.0.0.1", port), 10)
    assert wait_until(lambda: not (home / ".upsonic_fg_server.pid").exists(), 10)
    assert not (home / ".upsonic_fg_server.sup").exists()
    assert wait_until(lambda: not (home / ".upsonic_fg_server.lock").exists(), 10)
    st = ServerManager("usm_hello:app", "127.0.0.1", port, "fg").status()
    assert st.state == "stopped" and st.supervisor_pid is None, st


@pytest.mark.parametrize("mode", ["watched", "no-supervise"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_run_stopped_before_its_server_is_ready_says_so_and_exits_0(mode, sig, home):
    """systemd's stop (SIGTERM) or Ctrl-C while `run` still waits for its
    server: the half-started server is stopped, `run` says so and exits 0,
    as it does once the server serves (it exited 130 without a word)."""
    port = free_port()
    env = {**os.environ, "USM_SLOW_SECONDS": "3"}
    argv = [*CLI, "run", "usm_slow:app", "--port", str(port), "--name", "early", *RUN_MODES[mode]]
    with running(argv, env=env, stdout=subprocess.PIPE, text=True) as p:
        assert wait_until(lambda: bool(psutil.Process(p.pid).children(recursive=True)), 10)
        kids = psutil.Process(p.pid).children(recursive=True)
        p.send_signal(sig)
        code = p.wait(20)
        assert p.stdout is not None
        said = p.stdout.read()
    assert code == 0, said
    if mode == "watched":
        assert "early: stopped before it was ready" in said
    assert all(wait_until(lambda q=q: gone(q), 10) for q in kids)
    assert not [f.name for f in home.glob(".upsonic_early_server.*") if f.suffix != ".last"]


# ---- descriptors of the starter ---------------------------------------------------------------

STARTER = """
import sys
from upsonic_server_manager import ServerManager
supervised = sys.argv[2] == "supervised"
kw = dict(restart="always") if supervised else dict(warm=True)
m = ServerManager("usm_hello:app", "127.0.0.1", int(sys.argv[1]), "detached", **kw)
m.start(redirect_output=not supervised)
print("started", m.status().pid)
"""


@pytest.mark.parametrize("kind", ["supervised", "warm"])
def test_a_captured_script_that_starts_a_server_returns_at_once(kind, home, warm_dir):
    # Warm, the server itself gets log files (redirect_output=True): the
    # preloader, which outlives the script, must hold none of its pipes.
    port = free_port()
    try:
        # capture_output: the script's stdout and stderr are pipes this test
        # reads to the end; a process that kept them would hang this call.
        r = subprocess.run(
            [sys.executable, "-c", STARTER, str(port), kind],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        assert "started" in r.stdout
        assert get(port)["hello"] == "world"
    finally:
        ServerManager("usm_hello:app", "127.0.0.1", port, "detached").stop()


def test_cli_start_piped_returns_at_once(home):
    port = free_port()
    try:
        r = subprocess.run(
            [*CLI, "start", "usm_hello:app", "--port", str(port), "--name", "piped"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        assert get(port)["hello"] == "world"
    finally:
        subprocess.run([*CLI, "stop", "piped"], capture_output=True, timeout=60)


def test_the_plain_library_start_still_shares_the_callers_terminal(home, managers, tmp_path):
    # upsonic's debug mode reads the server's output on the caller's terminal.
    out = tmp_path / "out.txt"
    code = textwrap.dedent(
        f"""
        from upsonic_server_manager import ServerManager
        args = ["--log-level", "info"]
        m = ServerManager("usm_hello:app", "127.0.0.1", {free_port()}, "shared", uvicorn_args=args)
        m.start()
        m.stop()
        """
    )
    with open(out, "w") as f:
        subprocess.run([sys.executable, "-c", code], stdout=f, stderr=f, timeout=60, check=True)
    assert "Uvicorn running" in out.read_text() or "Application startup" in out.read_text()


# ---- the pytest fixtures -----------------------------------------------------------------------


def test_fixture_servers_have_their_own_descriptors_under_dash_s(pytester, home):
    # -s: the servers' stderr is pytest's. The lifeline thread raised
    # "OSError: [Errno 107]" there when descriptors 3 and 4 were both the
    # listening socket.
    pytester.makepyfile(
        """
        import os

        def test_serves(uvicorn_server):
            srv = uvicorn_server("usm_hello:app")
            fd3 = os.readlink(f"/proc/{srv.status().pid}/fd/3")
            fd4 = os.readlink(f"/proc/{srv.status().pid}/fd/4")
            assert fd3.startswith("socket:") and fd4.startswith("pipe:"), (fd3, fd4)
            assert srv.client().get("/").status_code == 200
        """
    )
    r = pytester.runpytest_subprocess(
        "-s", "-p", "no:cacheprovider", str(pytester.path), timeout=120
    )
    r.assert_outcomes(passed=1)
    assert "upsonic-lifeline" not in r.stdout.str() + r.stderr.str()


def test_fixtures_accept_a_restart_policy_and_end_with_a_sigkilled_pytest(pytester, home, tmp_path):
    marker = tmp_path / "pids"
    pytester.makepyfile(
        f"""
        import time

        def test_hangs(uvicorn_server):
            srv = uvicorn_server("usm_hello:app", restart="always")
            st = srv.status()
            with open({str(marker)!r}, "w") as f:
                f.write(f"{{st.pid}} {{st.supervisor_pid}}")
            time.sleep(600)
        """
    )
    p = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-s", "-p", "no:cacheprovider", str(pytester.path)],
        cwd=pytester.path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_until(lambda: marker.exists() and marker.read_text(), 60)
        procs = [psutil.Process(int(x)) for x in marker.read_text().split()]
        p.send_signal(signal.SIGKILL)
        p.wait(10)
        assert all(wait_until(lambda q=q: gone(q), 20) for q in procs), [
            q.pid for q in procs if not gone(q)
        ]
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
