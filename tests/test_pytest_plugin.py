"""The pytest plugin, driven by pytest's own pytester: real pytest runs in
subprocesses, real servers, real SIGKILL."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from _helpers import gone, wait_until

pytest_plugins = ["pytester"]


@pytest.fixture
def run(pytester: pytest.Pytester, home: Path):
    """Runs pytest in a subprocess in the pytester directory (the test apps
    are on PYTHONPATH through the `home` fixture)."""

    def go(*args: str) -> pytest.RunResult:
        # `home` changed the working directory: name the test directory.
        where = str(pytester.path)
        return pytester.runpytest_subprocess(where, "-p", "no:cacheprovider", *args, timeout=300)

    return go


def test_fixtures_are_there_without_configuration(pytester, run, home):
    pytester.makepyfile(
        """
        import httpx

        def test_serves(uvicorn_server):
            srv = uvicorn_server("usm_hello:app", env={"USM_MARKER": "mine"})
            assert srv.port > 0 and srv.url == f"http://127.0.0.1:{srv.port}"
            with srv.client() as client:
                assert client.get("/").json()["marker"] == "mine"
            assert "pytest-of" in srv._pid_file
        """
    )
    result = run()
    result.assert_outcomes(passed=1)
    # Nothing of it lands in the user's home.
    assert not [p for p in home.iterdir() if p.name.startswith(".upsonic_")]
    off = run("-p", "no:upsonic_server_manager")
    assert "fixture 'uvicorn_server' not found" in off.stdout.str()


def test_parallel_tests_each_get_their_own_server_under_xdist(pytester, run, tmp_path):
    pytest.importorskip("xdist", reason="pytest-xdist is installed by scripts/test.sh")
    out = tmp_path / "seen"
    out.mkdir()
    pytester.makepyfile(
        f"""
        import os, pytest

        @pytest.mark.parametrize("i", range(24))
        def test_own_server(uvicorn_server, i):
            srv = uvicorn_server("usm_hello:app", env={{"USM_MARKER": str(i)}})
            with srv.client() as client:
                body = client.get("/").json()
            assert body["marker"] == str(i)
            with open(os.path.join({str(out)!r}, str(i)), "w") as f:
                f.write(f"{{srv.port}} {{body['pid']}} {{srv.name}}")
        """
    )
    result = run("-n", "3")
    result.assert_outcomes(passed=24)
    seen = [p.read_text().split() for p in out.iterdir()]
    assert len(seen) == 24
    # Each test reached its own server (the marker above). Ports are not
    # compared: the kernel may give a later test the port of a server that
    # has already stopped, which is reuse, not sharing.
    assert len({s[2] for s in seen}) == 24, "two tests shared a name"
    assert len({s[2].split("-")[0] for s in seen}) == 3, "not three xdist workers"
    for _, pid, _ in seen:
        assert not psutil.pid_exists(int(pid)) or gone(psutil.Process(int(pid)))


def test_a_failing_test_reports_its_servers_output(pytester, run):
    pytester.makepyfile(
        """
        def test_fails(uvicorn_server):
            uvicorn_server("usm_talker:app")
            assert False, "on purpose"
        """
    )
    result = run()
    result.assert_outcomes(failed=1)
    text = result.stdout.str()
    assert "uvicorn main-1-test_fails stdout" in text
    assert "talker says hello on stdout" in text
    assert "talker says hello on stderr" in text


def test_session_scope_starts_one_server_for_many_tests(pytester, run, tmp_path):
    pids = tmp_path / "pids"
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.fixture(scope="session")
        def shared(uvicorn_server_session):
            return uvicorn_server_session("usm_hello:app")

        @pytest.mark.parametrize("i", range(5))
        def test_uses_it(shared, i):
            with shared.client() as client:
                pid = client.get("/").json()["pid"]
            with open({str(pids)!r}, "a") as f:
                f.write(f"{{pid}}\\n")
        """
    )
    run().assert_outcomes(passed=5)
    assert len(set(pids.read_text().split())) == 1


def test_nothing_survives_a_sigkilled_pytest(pytester, home, tmp_path):
    marker = tmp_path / "server-pid"
    pytester.makepyfile(
        f"""
        import time

        def test_hangs(uvicorn_server):
            srv = uvicorn_server("usm_hello:app", workers=2)
            with open({str(marker)!r}, "w") as f:
                f.write(str(srv.status().pid))
            time.sleep(600)
        """
    )
    p = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", str(pytester.path)],
        cwd=pytester.path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_until(lambda: marker.exists() and marker.read_text(), 60)
        server = psutil.Process(int(marker.read_text()))
        group = [server, *server.children(recursive=True)]
        assert wait_until(lambda: len(server.children()) >= 2, 30)
        group = [server, *server.children(recursive=True)]
        p.send_signal(signal.SIGKILL)
        p.wait(10)
        assert all(wait_until(lambda q=q: gone(q), 10) for q in group), [
            q.pid for q in group if not gone(q)
        ]
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_session_end_fails_the_run_naming_a_server_still_running(pytester, run):
    # A test that keeps a fixture server alive past its scope by hand: the
    # session-end check names it and fails the run.
    pytester.makepyfile(
        """
        import upsonic_server_manager.pytest_plugin as plugin

        def test_leaks(uvicorn_server, request):
            srv = uvicorn_server("usm_hello:app")
            # Pretend the fixture lost track of it.
            request.node.stash[plugin._SECTIONS].clear()
        """
    )
    result = run()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert (
        "servers started by the fixtures still run: main-1-test_leaks (pid" in result.stdout.str()
    )
