"""Loads upsonic 0.45.0's ``server_manager`` module from the installed
package without running ``upsonic/__init__`` (which imports its whole client
stack). Install it with ``pip install --no-deps upsonic==0.45.0 psutil``."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType


def load_original_module() -> ModuleType:
    spec = importlib.util.find_spec("upsonic")
    assert spec and spec.submodule_search_locations, "pip install --no-deps upsonic==0.45.0"
    path = Path(list(spec.submodule_search_locations)[0]) / "server_manager.py"
    s = importlib.util.spec_from_file_location("_upsonic_original", path)
    assert s and s.loader
    mod = importlib.util.module_from_spec(s)
    s.loader.exec_module(mod)
    return mod
