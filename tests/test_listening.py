"""How the server listens, read from uvicorn's own arguments (issue 19,
item 5): TLS (``--ssl-certfile``/``--ssl-keyfile``) gives an ``https://``
url and a health probe that speaks TLS, so a healthy supervised TLS server
is never replaced; arguments that change where or how the server listens
and that the manager does not manage are refused at once, naming the
option. Real TLS servers with a self-signed certificate made by the `cert` fixture (conftest)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from _helpers import free_port
from upsonic_server_manager import ServerManager
from upsonic_server_manager._manager import DEFAULT_UVICORN_ARGS


def tls_args(cert: tuple[str, str]) -> list[str]:
    return [*DEFAULT_UVICORN_ARGS, "--ssl-keyfile", cert[0], "--ssl-certfile", cert[1]]


@pytest.mark.parametrize("port", [0, None], ids=["held", "plain"])
def test_a_tls_server_is_served_at_an_https_url(home: Path, managers: list, cert, port) -> None:
    m = ServerManager(
        "usm_hello:app", "127.0.0.1", free_port() if port is None else 0, "tls",
        uvicorn_args=tls_args(cert),
    )  # fmt: skip
    managers.append(m)
    m.start()
    assert m.url == f"https://127.0.0.1:{m.port}"
    r = httpx.get(m.url + "/", verify=False, timeout=10)
    assert r.json()["hello"] == "world"
    plain = ServerManager("usm_hello:app", "127.0.0.1", m.port, "tls-probe")
    assert plain.url.startswith("http://")


def test_a_supervised_tls_server_passing_its_health_check_is_never_replaced(
    home: Path, managers: list, cert
) -> None:
    m = ServerManager(
        "usm_supervised:app", "127.0.0.1", 0, "tlssv",
        uvicorn_args=tls_args(cert), restart="on-failure", health_check="/healthz",
        health_interval=0.2, health_timeout=2.0, health_failures=2,
    )  # fmt: skip
    managers.append(m)
    m.start()
    pid = m.status().pid
    # Ten intervals: a probe that cannot speak TLS fails two in a row within
    # half a second, and the server would be replaced.
    time.sleep(2.0)
    st = m.status()
    assert (st.restarts, st.pid) == (0, pid), st
    assert st.health == "ok", st
    assert httpx.get(m.url + "/", verify=False, timeout=10).json()["pid"] == pid


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--uds", "/tmp/usm.sock"], "--uds"),
        (["--fd", "3"], "--fd"),
        (["--log-level", "error", "--port", "9"], "--port"),
        (["--host=0.0.0.0"], "--host"),
        (["--workers", "2"], "--workers"),
        (["--reload"], "--reload"),
        (["--reload-dir", "src"], "--reload-dir"),
        (["--version"], "--version"),
    ],
)
def test_arguments_that_change_how_it_listens_are_refused_at_once(
    home: Path, args: list[str], option: str
) -> None:
    with pytest.raises(ValueError, match=f'uvicorn_args "{option}" is refused: ') as ei:
        ServerManager("usm_hello:app", "127.0.0.1", free_port(), "refused", uvicorn_args=args)
    assert len(str(ei.value).split("is refused: ", 1)[1]) > 20  # and why
    assert not any(home.iterdir())


def test_the_environment_cannot_do_what_a_refused_option_would(home: Path) -> None:
    with pytest.raises(ValueError, match='env "UVICORN_UDS" is refused: .*unix socket'):
        ServerManager("usm_hello:app", "127.0.0.1", free_port(), "r", env={"UVICORN_UDS": "/x"})
