"""An app that can stop listening while the process keeps running."""

import os
import socket

from fastapi import FastAPI

app = FastAPI()


@app.get("/")
def root() -> dict:
    return {"deaf": False}


@app.post("/deafen")
def deafen() -> dict:
    # shutdown() on a listening socket takes it out of LISTEN; the process
    # and its descriptor stay.
    closed = 0
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            s = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue
        try:
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                s.shutdown(socket.SHUT_RDWR)
                closed += 1
        except OSError:
            pass
        finally:
            s.close()
    return {"closed": closed}
