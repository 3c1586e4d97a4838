"""What the drop-in keeps of upsonic 0.45.0's ``ServerManager`` internals,
apart from the facade (``_manager.py``): the launched server as the
``subprocess.Popen`` the original kept in ``_process``, and the original's
overridable helpers (``_write_pid``, ``_read_pid``, ...), which a subclass
that replaces one gets called where the original called it."""

from __future__ import annotations

TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Any, Optional

    from . import _core


_server_process_class: Optional[type] = None


def server_process(core: _core.Core, pid: int) -> Any:
    """The launched server as upsonic's ``_process`` exposed it: a
    ``subprocess.Popen`` (built lazily: importing subprocess costs
    milliseconds, and most programs never look)."""
    global _server_process_class
    if _server_process_class is None:
        _server_process_class = _define_server_process()
    return _server_process_class(core, pid)


def _define_server_process() -> type:
    import subprocess

    class ServerProcess(subprocess.Popen):  # type: ignore[type-arg]
        """The server this manager launched, as the ``subprocess.Popen``
        upsonic's original kept in ``_process``: ``pid``, ``args``,
        ``poll()``, ``returncode``, ``wait(timeout=None)`` (raising
        ``subprocess.TimeoutExpired``), ``send_signal()``, ``terminate()``,
        ``kill()``, ``communicate()`` (it has no pipes). Every signal goes to
        the process itself through its pidfd, so never to a reused PID; once
        it has ended, a signal does nothing. The manager's core reaps it.
        Exit codes are negative for a signal, as Popen's are."""

        # Popen.__init__ is not run: the process exists already.
        def __init__(self, core: _core.Core, pid: int) -> None:
            self._core = core
            self.pid = pid
            self.args = core.child_cmdline(pid) or []
            self.stdin = self.stdout = self.stderr = None
            self.text_mode = False
            self.encoding = self.errors = None
            self._communication_started = False
            self._code: Optional[int] = None

        @property  # type: ignore[override]
        def returncode(self) -> Optional[int]:
            return self.poll()

        @returncode.setter
        def returncode(self, value: Optional[int]) -> None:
            self._code = value

        def poll(self) -> Optional[int]:
            """The exit code once it ended, else None. Once the manager let
            go of it (``_process = None``), the last code seen."""
            code = self._core.poll_pid(self.pid, self._code)
            if code is not None:
                self._code = code
            return code

        def wait(self, timeout: Optional[float] = None) -> int:  # type: ignore[override]
            """Waits (seconds; None: as long as it takes) and returns the exit
            code; raises ``subprocess.TimeoutExpired`` when ``timeout`` passes
            first."""
            code = self._core.wait_pid(self.pid, timeout)
            if code is None:
                if timeout is not None:
                    raise subprocess.TimeoutExpired(self.args, timeout)
                code = self._code
            else:
                self._code = code
            return code  # type: ignore[return-value]

        def communicate(
            self, input: Any = None, timeout: Optional[float] = None
        ) -> tuple[None, None]:
            """Waits for it to end (it has no pipes): ``(None, None)``."""
            self.wait(timeout)
            return (None, None)

        def send_signal(self, sig: int) -> None:
            self._core.signal_pid(self.pid, int(sig))

        def __reduce__(self) -> Any:
            raise TypeError("a server process cannot be pickled")

    return ServerProcess


# The original's overridable helpers, as this class defines them: a subclass
# that replaces one gets it called where the original's start(), stop() and
# is_running() call it (see overridden_hooks).
HOOKS = ("_write_pid", "_read_pid", "_cleanup_pid", "_is_port_in_use", "_force_cleanup_port")
_DEFAULT_HOOKS: dict[str, object] = {}


def remember_default_hooks(cls: type) -> None:
    """Records ``cls``'s own hooks (the facade's), so a subclass's can be
    told apart; called once, after the class is defined."""
    _DEFAULT_HOOKS.update((h, getattr(cls, h)) for h in HOOKS)


def overridden_hooks(cls: type) -> tuple[str, ...]:
    """The hooks ``cls`` defines otherwise than the facade does."""
    return tuple(h for h in HOOKS if getattr(cls, h) is not _DEFAULT_HOOKS[h])
