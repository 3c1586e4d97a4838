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
from ._manager import DEFAULT_UVICORN_ARGS, ServerManager, ServerStatus, port_holders

__all__ = [
    "DEFAULT_UVICORN_ARGS",
    "PortHolder",
    "PortInUseError",
    "ServerManager",
    "ServerManagerError",
    "ServerStatus",
    "StartError",
    "StartTimeoutError",
    "port_holders",
]

__version__ = "0.1.0"
