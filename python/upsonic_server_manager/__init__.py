"""Start, watch and stop uvicorn servers from Python, safely.

A drop-in replacement for upsonic's ``ServerManager`` with a Rust core.
"""

from ._core import PortHolder
from ._core import __version__ as __version__
from ._errors import (
    PortInUseError,
    ServerManagerError,
    StartError,
    StartTimeoutError,
)
from ._manager import (
    DEFAULT_UVICORN_ARGS,
    ServerManager,
    ServerStatus,
    list_records,
    log_files,
    port_holders,
)

__all__ = [
    "DEFAULT_UVICORN_ARGS",
    "PortHolder",
    "PortInUseError",
    "ServerGroup",
    "ServerManager",
    "ServerManagerError",
    "ServerStatus",
    "StartError",
    "StartTimeoutError",
    "install_signal_handlers",
    "list_records",
    "log_files",
    "port_holders",
    "stop_on_exit",
]

# typing is not imported at run time (it costs milliseconds); type checkers
# treat any name TYPE_CHECKING as true and so see the lazy names below.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from ._group import ServerGroup, install_signal_handlers, stop_on_exit

_LAZY = {"ServerGroup", "install_signal_handlers", "stop_on_exit"}


def __getattr__(name: str) -> object:
    # The group helpers pull in threading, atexit and signal: load them on
    # first use so that a plain import stays cheap.
    if name in _LAZY:
        from . import _group

        return getattr(_group, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LAZY)
