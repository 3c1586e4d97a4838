"""An app that says one line on each stream as it starts."""

import sys

print("talker says hello on stdout", flush=True)
print("talker says hello on stderr", file=sys.stderr, flush=True)


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"talker"})
