"""A plain ASGI app (no FastAPI: light enough to run dozens) that notes, in
$USM_TERMLOG_DIR/<pid>, the CLOCK_MONOTONIC time at which it got SIGTERM
("term") and at which its graceful shutdown finished ("exit").
USM_SHUTDOWN_SECONDS makes that shutdown take so long; USM_IGNORE_TERM=1
makes it note SIGTERM and otherwise ignore it (only SIGKILL ends it)."""

import asyncio
import json
import os
import signal
import time


def _note(event: str) -> None:
    d = os.environ.get("USM_TERMLOG_DIR")
    if d:
        with open(os.path.join(d, str(os.getpid())), "a") as f:
            f.write(f"{event} {time.monotonic()!r}\n")


def _watch_term() -> None:
    # uvicorn has installed its handler by the time the lifespan starts.
    uvicorn_handler = signal.getsignal(signal.SIGTERM)
    ignore = os.environ.get("USM_IGNORE_TERM") == "1"

    def on_term(signum, frame):
        _note("term")
        if not ignore and callable(uvicorn_handler):
            uvicorn_handler(signum, frame)

    signal.signal(signal.SIGTERM, on_term)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                _watch_term()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.sleep(float(os.environ.get("USM_SHUTDOWN_SECONDS", "0")))
                _note("exit")
                await send({"type": "lifespan.shutdown.complete"})
                return
    elif scope["type"] == "http":
        body = json.dumps({"hello": "world", "pid": os.getpid()}).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
