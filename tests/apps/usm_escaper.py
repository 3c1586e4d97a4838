"""An app that starts a grandchild which leaves its session and group."""

import os
import subprocess
import sys

from fastapi import FastAPI

app = FastAPI()
_child = subprocess.Popen(
    [sys.executable, "-c", "import time; time.sleep(600)"],
    start_new_session=True,
)
with open(os.environ["USM_ESCAPER_PIDFILE"], "w") as f:
    f.write(str(_child.pid))


@app.get("/")
def root() -> dict:
    return {"escaped": _child.pid}
