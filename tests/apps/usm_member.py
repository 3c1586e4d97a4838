"""A plain ASGI app (light enough to run twenty) for server sets.

At startup it requests every URL in $USM_NEEDS (comma-separated) and fails
its lifespan if one does not answer: it starts only after what it depends
on is ready. At shutdown it requests them again and appends
"stop NAME reached|unreached" to $USM_EVENTS, so a test sees whether what it
depends on was still up when it stopped. GET answers its name, pid and
$USM_MARKER as JSON."""

import json
import os
import urllib.request

NAME = os.environ.get("USM_NAME", "member")


def _reach_all() -> bool:
    for url in filter(None, os.environ.get("USM_NEEDS", "").split(",")):
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                r.read()
        except OSError:
            return False
    return True


def _note(line: str) -> None:
    path = os.environ.get("USM_EVENTS")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if _reach_all():
                    _note(f"start {NAME}")
                    await send({"type": "lifespan.startup.complete"})
                else:
                    _note(f"start {NAME} failed: a dependency did not answer")
                    await send({"type": "lifespan.startup.failed", "message": "dependency down"})
            elif message["type"] == "lifespan.shutdown":
                _note(f"stop {NAME} {'reached' if _reach_all() else 'unreached'}")
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = json.dumps(
        {"name": NAME, "pid": os.getpid(), "marker": os.environ.get("USM_MARKER")}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})
