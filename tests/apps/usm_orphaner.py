"""An app whose /orphan endpoint leaves an orphan: a grandchild whose parent
exits at once, so it is re-parented to the nearest init (or subreaper)."""

import os
import time

from fastapi import FastAPI

app = FastAPI()


@app.post("/orphan")
def orphan() -> dict:
    child = os.fork()
    if child == 0:
        if os.fork() == 0:
            time.sleep(0.3)
            os._exit(0)
        os._exit(0)
    os.waitpid(child, 0)
    return {"orphaned": True}
