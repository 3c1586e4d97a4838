"""An app whose import takes 30 s: for measuring Ctrl-C during start()."""

import time

time.sleep(30)


async def app(scope, receive, send):  # pragma: no cover - never reached
    pass
