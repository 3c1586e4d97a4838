"""An app whose shutdown never finishes; with USM_IGNORE_TERM=1 it also ignores SIGTERM."""

import asyncio
import os
import signal
from contextlib import asynccontextmanager

from fastapi import FastAPI


@asynccontextmanager
async def lifespan(app):
    if os.environ.get("USM_IGNORE_TERM") == "1":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    yield
    while True:
        await asyncio.sleep(3600)


app = FastAPI(lifespan=lifespan)


@app.get("/")
def root() -> dict:
    return {"stubborn": True}
