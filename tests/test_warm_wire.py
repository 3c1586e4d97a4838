"""The warm-start wire format (src/warm/request.rs) as Python sees it
through ``_core``: every message round-trips, other versions are refused,
and the preloader's modules spell none of it."""

from __future__ import annotations

import pathlib

import pytest
from upsonic_server_manager import _core

PACKAGE = pathlib.Path(_core.__file__).parent


def test_a_fork_request_round_trips_with_bytes_that_are_not_utf8():
    env = [(b"A", b"1=2\n"), (b"B\xff", b"")]
    line = _core.warm_encode_ask(
        _core.WARM_FORK,
        cwd=b"/srv/\xff",
        umask=0o27,
        fd_names=["stdout", "stderr", "held"],
        python=b"/usr/bin/python3",
        argv=["-m", "uvicorn", "m:app"],
        env=env,
    )
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    ask = _core.warm_decode_ask(line)
    assert ask.kind == _core.WARM_FORK
    assert (ask.cwd, ask.umask, ask.python) == (b"/srv/\xff", 0o27, b"/usr/bin/python3")
    assert ask.fd_names == ["stdout", "stderr", "held"]
    assert ask.argv == ["-m", "uvicorn", "m:app"]
    assert ask.env == dict(env)


@pytest.mark.parametrize("kind", ["WARM_PINNED", "WARM_STATUS", "WARM_STOP"])
def test_the_other_asks_round_trip(kind):
    ask = _core.warm_decode_ask(_core.warm_encode_ask(getattr(_core, kind), force=True))
    assert ask.kind == getattr(_core, kind)
    assert ask.force is (kind == "WARM_STOP")


def test_replies_round_trip():
    assert _core.warm_decode_reply(_core.warm_reply_pid(42)) == ("pid", 42)
    assert _core.warm_decode_reply(_core.warm_reply_exit(-15)) == ("exit", -15)
    assert _core.warm_decode_reply(_core.warm_reply_error("no\nway")) == ("error", "no\nway")
    assert _core.warm_decode_reply(_core.warm_reply_stopping(2)) == ("stopping", 2)
    assert _core.warm_decode_reply(_core.warm_reply_busy(1)) == ("busy", 1)
    line = _core.warm_reply_status(
        pid=7,
        python="/py",
        live=1,
        forked=3,
        idle_seconds=1.5,
        idle_limit=300.0,
        modules=["uvicorn"],
    )
    kind, p = _core.warm_decode_reply(line)
    assert kind == "status" and isinstance(p, _core.Preloader)
    assert (p.pid, p.python, p.live, p.forked) == (7, "/py", 1, 3)
    assert (p.idle_seconds, p.idle_limit, p.modules, p.answering) == (1.5, 300.0, ["uvicorn"], True)


def test_another_version_or_garbage_is_refused():
    ours = _core.warm_encode_ask(_core.WARM_STATUS)
    other = ours.replace(_core.WARM_VERSION.encode(), b"usm-warm 0")
    with pytest.raises(ValueError, match="usm-warm 0"):
        _core.warm_decode_ask(other)
    for bad in (b"pinned\n", b"{}", b"\xff"):
        with pytest.raises(ValueError):
            _core.warm_decode_ask(bad)
    with pytest.raises(ValueError):
        _core.warm_encode_ask("reboot")


def test_the_preloader_spells_no_wire_word():
    words = [_core.WARM_VERSION, '"fork"', '"pinned"', '"status"', 'b"pid ', 'b"exit ']
    for f in PACKAGE.glob("_preload*.py"):
        text = f.read_text()
        for w in words:
            assert w not in text, f"{f.name} spells {w}"
