"""An app whose import takes USM_SLOW_SECONDS (default 30) seconds."""

import os
import time

from fastapi import FastAPI

time.sleep(float(os.environ.get("USM_SLOW_SECONDS", "30")))

app = FastAPI()


@app.get("/")
def root() -> dict:
    return {"slow": True}
