"""An app that reports, from the server side, whether TCP_NODELAY is set on
the connection it is answering (found through uvicorn's protocol objects)."""

import gc
import os
import socket


def _nodelay_of_open_connections() -> list[int]:
    values = []
    for obj in gc.get_objects():
        transport = getattr(obj, "transport", None)
        if type(obj).__name__.endswith("Protocol") and transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                values.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
    return values


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = f"{os.getpid()} {_nodelay_of_open_connections()}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
