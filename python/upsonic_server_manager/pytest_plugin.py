"""pytest fixtures that give each test (or a whole session) live uvicorn
servers: started on a port the kernel picks (no bind-close-start race),
stopped at the end of their scope, their records and logs under pytest's
temporary directory, their output in the report of a failing test, and none
left behind even when pytest itself is killed.

Installed with the package (the ``pytest11`` entry point); ``-p
no:upsonic_server_manager`` turns it off.

    def test_hello(uvicorn_server):
        srv = uvicorn_server("myapp.main:app")
        with srv.client() as client:
            assert client.get("/").status_code == 200
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Optional

import pytest

from ._manager import ServerManager
from ._spec import K

if TYPE_CHECKING:
    import httpx


class LiveServer(ServerManager):
    """A started server of a test: a :class:`ServerManager` on port 0 with
    ``url`` and ``port``, plus :meth:`client`."""

    def client(self, **kwargs: Any) -> httpx.Client:
        """An ``httpx.Client`` whose base URL is this server's (needs httpx)."""
        try:
            import httpx
        except ImportError:
            raise RuntimeError("srv.client() needs httpx: pip install httpx") from None
        return httpx.Client(base_url=self.url, **kwargs)


StartServer = Callable[..., LiveServer]


class _Servers:
    """Every server the fixtures started in this pytest process, and where
    their records go."""

    def __init__(self, base: Path, worker: str) -> None:
        self.base = base
        self.worker = worker
        self.counter = itertools.count(1)
        self.started: list[LiveServer] = []

    def start(
        self,
        owner: list[LiveServer],
        label: str,
        app_path: str,
        *,
        host: str = "127.0.0.1",
        workers: Optional[int] = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[os.PathLike[str] | str] = None,
        **kwargs: Any,
    ) -> LiveServer:
        n = next(self.counter)
        name = f"{self.worker}-{n}-{label}"[:120]
        directory = self.base / name
        directory.mkdir(parents=True)
        kwargs.setdefault(K.pid_dir, directory)
        kwargs.setdefault(K.log_dir, directory / "logs")
        srv = LiveServer(
            app_path,
            host,
            0,
            name,
            workers=workers,
            env=env,
            cwd=cwd,
            hold_socket=True,
            # However pytest ends (SIGKILL, SIGTERM, Ctrl-C), its servers and
            # their supervisors (with restart=...) end with it.
            stop_with_caller=True,
            **kwargs,
        )
        owner.append(srv)
        self.started.append(srv)
        srv.start(redirect_output=True)
        return srv

    def still_running(self) -> list[tuple[str, int]]:
        out = []
        for srv in self.started:
            st = srv.status()
            if st.state in ("running", "starting") and st.pid is not None:
                out.append((srv.name, st.pid))
        return out


_KEY = pytest.StashKey[_Servers]()
_SECTIONS = pytest.StashKey[list[LiveServer]]()


def _safe_label(text: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "._-" else "_" for c in text)
    return cleaned.strip("._-")[:60] or "test"


def pytest_configure(config: pytest.Config) -> None:
    # xdist gives each worker's config its id; the environment variable would
    # also name a session merely started from inside a worker (pytester,
    # a nested tox run), which then took its parent's worker's names.
    workerinput = getattr(config, "workerinput", None)
    worker = workerinput["workerid"] if workerinput else "main"
    factory = pytest.TempPathFactory.from_config(config, _ispytest=True)
    config.stash[_KEY] = _Servers(factory.mktemp(f"uvicorn-{worker}", numbered=True), worker)


def _stop_all(servers: list[LiveServer]) -> None:
    if servers:
        from ._group import stop_all

        stop_all(servers)


@pytest.fixture
def uvicorn_server(request: pytest.FixtureRequest) -> Iterator[StartServer]:
    """A factory: ``uvicorn_server("pkg.app:app", host=..., workers=...,
    env=..., cwd=..., **ServerManager_kwargs)`` starts a server on a port the
    kernel picks and returns it started; all of them stop after the test.
    ``warm=True`` (and ``preload=[...]``) forks it from a preloader: a start
    in a fraction of a cold one, the app still imported fresh each time."""
    servers = request.config.stash[_KEY]
    mine: list[LiveServer] = []
    request.node.stash[_SECTIONS] = mine
    label = _safe_label(request.node.name)

    def start(app_path: str, **kwargs: Any) -> LiveServer:
        return servers.start(mine, label, app_path, **kwargs)

    try:
        yield start
    finally:
        _stop_all(mine)


@pytest.fixture(scope="session")
def uvicorn_server_session(request: pytest.FixtureRequest) -> Iterator[StartServer]:
    """Like ``uvicorn_server``, for servers shared by the whole session."""
    servers = request.config.stash[_KEY]
    mine: list[LiveServer] = []

    def start(app_path: str, **kwargs: Any) -> LiveServer:
        return servers.start(mine, "session", app_path, **kwargs)

    try:
        yield start
    finally:
        _stop_all(mine)


def _tail(path: Optional[str], limit: int = 20_000) -> str:
    if not path or not os.path.exists(path):
        return ""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - limit))
        return f.read().decode(errors="replace")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed:
        for srv in item.stash.get(_SECTIONS, []):
            out, err = srv.log_files
            for stream, path in (("stdout", out), ("stderr", err)):
                text = _tail(path)
                if text:
                    report.sections.append((f"uvicorn {srv.name} {stream}", text))
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    servers = session.config.stash.get(_KEY, None)
    if servers is None:
        return
    left = servers.still_running()
    if left:
        named = ", ".join(f"{name} (pid {pid})" for name, pid in left)
        session.config.get_terminal_writer().line(
            f"upsonic-server-manager: servers started by the fixtures still run: {named}",
            red=True,
        )
        _stop_all([s for s in servers.started if s.name in {n for n, _ in left}])
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
