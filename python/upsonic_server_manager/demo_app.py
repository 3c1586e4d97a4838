"""The app behind ``upsonic-server demo``: no user code needed.

A FastAPI app when FastAPI is installed (``scripts/demo.sh`` installs it),
else the same two routes as a bare ASGI app, so the demo works with only
the package's own dependency, uvicorn.
"""

from __future__ import annotations

import json
import os
from typing import Any, Awaitable, Callable

Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


def _payload(path: str) -> dict[str, Any]:
    return {"hello": "from upsonic-server-manager", "path": path, "pid": os.getpid()}


async def asgi_app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """The fallback: a minimal ASGI app answering JSON on every path."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    body = json.dumps(_payload(scope["path"])).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _fastapi_app() -> Any:
    from fastapi import FastAPI

    api = FastAPI(title="upsonic-server-manager demo")

    @api.get("/")
    def root() -> dict[str, Any]:
        return _payload("/")

    @api.get("/hello")
    def hello() -> dict[str, Any]:
        return _payload("/hello")

    return api


try:
    app: Any = _fastapi_app()
except ImportError:
    app = asgi_app
