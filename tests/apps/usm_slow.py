"""An app whose import takes USM_SLOW_SECONDS (default 30) seconds; with
USM_IGNORE_TERM=1 it ignores SIGTERM meanwhile."""

import os
import signal
import time

if os.environ.get("USM_IGNORE_TERM") == "1":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

from fastapi import FastAPI

time.sleep(float(os.environ.get("USM_SLOW_SECONDS", "30")))

app = FastAPI()


@app.get("/")
def root() -> dict:
    return {"slow": True}
