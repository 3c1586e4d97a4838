"""The spec's table as Python reads it: ``OPTIONS`` (``_core.OPTIONS``, one
row per option of ``ServerSpec``, src/spec.rs) and ``K``, every option's
name as an attribute whose value is the name (``K.workers`` is the key
workers), so that Python code names a configuration key without spelling
it: the name lives in the spec alone, and a key the spec drops fails loudly
(AttributeError) where it is used instead of silently missing a dictionary
entry."""

from __future__ import annotations

from . import _core

TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Any, Iterable

OPTIONS: tuple[dict[str, Any], ...] = _core.OPTIONS


class _Keys:
    """The option names of the spec, as attributes whose value is the name."""

    __slots__ = ("_names",)

    def __init__(self, names: Iterable[str]) -> None:
        object.__setattr__(self, "_names", frozenset(names))

    def __getattr__(self, name: str) -> str:
        if name in self._names:
            return name
        raise AttributeError(f"the spec has no option {name!r} (src/spec.rs, OPTIONS)")

    def __dir__(self) -> list[str]:
        return sorted(self._names)


#: Every option's name, as an attribute whose value is that name.
K = _Keys(o["name"] for o in OPTIONS)
