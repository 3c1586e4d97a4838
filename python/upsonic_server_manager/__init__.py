"""Start, watch and stop uvicorn servers from Python, safely.

A drop-in replacement for upsonic's ``ServerManager`` with a Rust core.
"""

from ._errors import (
    PortHolder,
    PortInUseError,
    ServerManagerError,
    StartError,
    StartTimeoutError,
)
from ._group import ServerGroup, install_signal_handlers, stop_on_exit
from ._manager import (
    DEFAULT_UVICORN_ARGS,
    ServerManager,
    ServerStatus,
    list_records,
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
    "port_holders",
    "stop_on_exit",
]

__version__ = "0.1.0"
