"""Run by test_uvicorn_reliance.py in a fresh interpreter (importing _launch
wraps uvicorn's Server methods in the importing process): prints, as JSON,
uvicorn's version and each thing _launch.py relies on that it lacks."""

import importlib
import inspect
import json

import uvicorn
import uvicorn.config
import uvicorn.server
from upsonic_server_manager import _launch  # holds the originals it wraps
from uvicorn.protocols.http.h11_impl import H11Protocol

# The module: the package's own `uvicorn.main` attribute is the click command.
uvicorn_main = importlib.import_module("uvicorn.main")
missing: list[str] = []


def need(what: str, check) -> None:  # type: ignore[no-untyped-def]
    try:
        ok = check()
    except Exception as e:  # a missing attribute or a changed shape
        ok = False
        what = f"{what} ({type(e).__name__}: {e})"
    if not ok:
        missing.append(what)


def sockets_param(func) -> bool:  # type: ignore[no-untyped-def]
    p = inspect.signature(func).parameters.get("sockets")
    return p is not None and p.default is None


for name, original, is_async in (
    ("Server.startup", _launch._startup, True),
    ("Server.shutdown", _launch._shutdown, True),
    ("Server.run", _launch._run, False),
):
    kind = "a coroutine" if is_async else "a plain method"
    need(
        f"uvicorn.server.{name}, {kind}",
        lambda: inspect.iscoroutinefunction(original) == is_async,  # noqa: B023
    )
    need(f"uvicorn.server.{name}(self, sockets=None)", lambda: sockets_param(original))  # noqa: B023

need(
    "uvicorn.config.Config.bind_socket(self)",
    lambda: list(inspect.signature(uvicorn.config.Config.bind_socket).parameters) == ["self"],
)
server = uvicorn.server.Server(uvicorn.config.Config(app=lambda *a: None))
need("uvicorn.server.Server().started, False before startup", lambda: server.started is False)
need(
    "uvicorn.server.Server().server_state.connections, a set",
    lambda: isinstance(server.server_state.connections, set),
)
need(
    "uvicorn.server.Server.startup setting self.servers (its asyncio servers)",
    lambda: "self.servers" in inspect.getsource(_launch._startup),
)
need(
    "uvicorn.main.run calling config.bind_socket() (workers share our socket)",
    lambda: "config.bind_socket()" in inspect.getsource(uvicorn_main.run),
)
need(
    "uvicorn.main.run calling server.run",
    lambda: "server.run" in inspect.getsource(uvicorn_main.run),
)
need(
    "uvicorn.main.main, a click command with .main(args=, prog_name=)",
    lambda: "prog_name" in inspect.signature(uvicorn_main.main.main).parameters,
)
need("uvicorn's H11Protocol.data_received", lambda: callable(H11Protocol.data_received))

print(json.dumps({"version": uvicorn.__version__, "missing": missing}))
