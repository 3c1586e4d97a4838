"""What a warm-start preloader imports, and what tells it to retire: the
modules every server needs (``BASE_MODULES``, ``OPTIONAL_MODULES``, the
caller's extras), imported one at a time with a check that none started a
thread, and the fingerprint of the installed packages."""

from __future__ import annotations

import os
import sys

from upsonic_server_manager._preload_protocol import Refused

#: Always imported: what every server runs before it imports the app.
BASE_MODULES = (
    "asyncio",
    "uvicorn",
    "uvicorn.main",
    "uvicorn.config",
    "uvicorn.server",
    "uvicorn.lifespan.on",
    "uvicorn.loops.auto",
    "uvicorn.loops.asyncio",
    "uvicorn.protocols.http.auto",
    "uvicorn.protocols.http.h11_impl",
    "uvicorn.protocols.websockets.auto",
    "uvicorn.middleware.proxy_headers",
    "upsonic_server_manager",
    "upsonic_server_manager._report",
)
#: Imported when installed.
OPTIONAL_MODULES = (
    "uvicorn.protocols.http.httptools_impl",
    "uvloop",
    "fastapi",
    "fastapi.routing",
    "starlette",
    "starlette.applications",
    "pydantic",
    # FastAPI imports it lazily, when the app declares its first route.
    "pydantic.v1",
    "anyio",
)


def threads() -> int:
    """Threads of this process, as the kernel counts them."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 0


def preload(extra: list[str]) -> list[str]:
    """Imports the modules, one at a time, stopping at the first that leaves
    a thread running. Returns what was imported."""
    import importlib.util
    import threading

    done = []
    for name in (*BASE_MODULES, *OPTIONAL_MODULES, *extra):
        optional = name in OPTIONAL_MODULES
        if optional:
            try:
                if importlib.util.find_spec(name) is None:
                    continue
            except (ImportError, ValueError):
                continue
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - any import failure refuses
            if optional:
                continue
            raise Refused(f"importing {name} failed: {type(e).__name__}: {e}") from e
        if threading.active_count() > 1 or threads() > 1:
            names = ", ".join(
                t.name for t in threading.enumerate() if t is not threading.main_thread()
            )
            raise Refused(
                f"importing {name} started a thread ({names or 'not a Python thread'}): "
                "a threaded process cannot be forked safely"
            )
        done.append(name)
    return done


def fingerprint() -> tuple:
    """What a server started now would import from: the interpreter, the
    import path, and the modification time of each directory packages are
    installed in (installing or removing a package, or a .pth file of an
    editable install, changes it). Other entries (PYTHONPATH, a source tree)
    are not stamped: editing an app there must not replace the preloader,
    and the app is never preloaded."""
    stamps: list[tuple[str, int | None]] = []
    for entry in sys.path:
        if os.path.basename(entry.rstrip("/")) not in ("site-packages", "dist-packages"):
            continue
        try:
            stamps.append((entry, os.stat(entry).st_mtime_ns))
        except OSError:
            stamps.append((entry, None))
    return (sys.executable, tuple(sys.path), tuple(stamps))
