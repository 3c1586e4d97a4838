"""An app to supervise: a health endpoint that fails while the file named by
$USM_SICK_FILE exists, an endpoint that blocks the event loop (a hung
server), one that grows resident memory, and, with $USM_CRASH_AFTER set, a
crash (exit code 1, or $USM_EXIT_CODE) that many seconds after start-up; while
the file named by $USM_FAIL_FILE exists, start-up fails with RuntimeError(its text)."""

import asyncio
import os
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Response

_hoard: list[bytearray] = []


@asynccontextmanager
async def lifespan(app: FastAPI):
    fail = os.environ.get("USM_FAIL_FILE")
    if fail and os.path.exists(fail):
        with open(fail, encoding="utf-8") as f:
            raise RuntimeError(f.read())
    after = os.environ.get("USM_CRASH_AFTER")
    if after:
        code = int(os.environ.get("USM_EXIT_CODE", "1"))
        asyncio.get_running_loop().call_later(float(after), os._exit, code)
    yield


app = FastAPI(lifespan=lifespan)


@app.get("/")
def root() -> dict:
    return {"pid": os.getpid()}


@app.get("/healthz")
def healthz(response: Response) -> dict:
    once = os.environ.get("USM_SICK_ONCE_FILE")
    if once and os.path.exists(once):
        os.unlink(once)  # one failed check, then healthy again
        response.status_code = 503
        return {"ok": False}
    sick = os.environ.get("USM_SICK_FILE")
    if sick and os.path.exists(sick):
        response.status_code = 503
        return {"ok": False}
    return {"ok": True}


@app.get("/hang")
async def hang() -> dict:
    time.sleep(3600)  # blocks the event loop on purpose
    return {}


@app.get("/grow")
def grow(mb: int) -> dict:
    block = bytearray(mb * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1  # touch every page: resident, not just reserved
    _hoard.append(block)
    return {"grown": mb}
