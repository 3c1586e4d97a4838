"""What _launch.py (servers on a held socket) relies on in uvicorn's private API.

The package caps uvicorn below the next untested minor release in
pyproject.toml. When a new uvicorn is tried (raise the cap, install it, run
this file), this test names each method, parameter or attribute it no longer
has, rather than leaving a held-socket start to hang or a reload to drop
connections. Runs in a fresh interpreter: importing _launch patches uvicorn's
Server in the importing process.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys

PROBE = r"""
import inspect, json

import uvicorn
import uvicorn.config
import uvicorn.main
import uvicorn.server
from uvicorn.protocols.http.h11_impl import H11Protocol

# The originals, captured by _launch before it wraps them.
from upsonic_server_manager import _launch

missing = []


def params(func):
    try:
        return inspect.signature(func).parameters
    except (TypeError, ValueError):
        return {}


def need(ok, what):
    if not ok:
        missing.append(what)


for name, original, is_async in (
    ("Server.startup", _launch._startup, True),
    ("Server.shutdown", _launch._shutdown, True),
    ("Server.run", _launch._run, False),
):
    need(callable(original), f"uvicorn.server.{name} (a method)")
    need(
        inspect.iscoroutinefunction(original) == is_async,
        f"uvicorn.server.{name} {'a coroutine' if is_async else 'a plain method'}",
    )
    p = params(original).get("sockets")
    need(p is not None and p.default is None, f"uvicorn.server.{name}(self, sockets=None)")

bind = getattr(uvicorn.config.Config, "bind_socket", None)
need(callable(bind) and list(params(bind)) == ["self"], "uvicorn.config.Config.bind_socket(self)")

server = uvicorn.server.Server(uvicorn.config.Config(app=lambda *a: None))
need(getattr(server, "started", None) is False, "uvicorn.server.Server().started (False)")
state = getattr(server, "server_state", None)
need(
    isinstance(getattr(state, "connections", None), set),
    "uvicorn.server.Server().server_state.connections (a set)",
)
need(
    "self.servers" in inspect.getsource(_launch._startup),
    "uvicorn.server.Server.startup setting self.servers (the asyncio servers)",
)
run_source = inspect.getsource(uvicorn.main.run)
need("config.bind_socket()" in run_source, "uvicorn.main.run calling config.bind_socket()")
need("server.run" in run_source, "uvicorn.main.run calling server.run")
need(
    callable(getattr(uvicorn.main.main, "main", None)),
    "uvicorn.main.main as a click command (its .main(args=, prog_name=))",
)
need(callable(getattr(H11Protocol, "data_received", None)), "H11Protocol.data_received")

print(json.dumps({"version": uvicorn.__version__, "missing": missing}))
"""


def test_uvicorn_still_has_what_launch_relies_on() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"the uvicorn probe failed to run:\n{done.stderr}"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    missing = result["missing"]
    assert not missing, (
        f"uvicorn {result['version']} no longer provides what "
        "python/upsonic_server_manager/_launch.py relies on:\n  - "
        + "\n  - ".join(missing)
        + "\nAdapt _launch.py, or keep the upper bound on uvicorn in pyproject.toml below "
        f"{result['version']}."
    )


def test_uvicorn_requirement_has_an_upper_bound() -> None:
    requires = importlib.metadata.requires("upsonic-server-manager") or []
    uvicorn = [r for r in requires if r.replace(" ", "").startswith("uvicorn")]
    assert uvicorn, f"no uvicorn requirement in {requires}"
    assert "<" in uvicorn[0], (
        f"the uvicorn requirement {uvicorn[0]!r} has no upper bound; _launch.py uses "
        "uvicorn's private methods, so each new minor release is tried first"
    )
