"""The supervisor's event lines (``src/protocol/events.rs``) as Python reads
them: what Rust writes (``_core._event_line``, the supervisor's own writer)
parsed by ``_supervision.parse_event``, every kind and awkward text, and the
relay that turns them into log records. Key and kind names come from
``_core`` here too."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
from upsonic_server_manager import _core
from upsonic_server_manager._supervision import _relay, log_level, parse_event

K = _core.EVENT_KIND
AWKWARD = [
    "",
    "a\tb",
    "line one\nline two\r\n",
    "back\\slash \\n \\t not escapes",
    "\"quoted\" 'single'",
    "non-ASCII: é ü 日本 🚀",
    "\x00 nul and \x1b[31m an escape",
    '{"kind": "done"}',
]


def events(text: str) -> list[dict]:
    log = {K: _core.EVENT_LOG, _core.EVENT_MESSAGE: text}
    failed = {
        "kind": "start_failed",
        "address": text,
        "exit_code": -9,
        "stderr_tail": text,
        "output_captured": True,
        "reason": None,
        "worker": None,
    }
    return [
        {K: _core.EVENT_READY, _core.EVENT_SERVER_PID: 4194304, _core.EVENT_PORT: 65535},
        {**log, _core.EVENT_LEVEL: _core.EVENT_LEVEL_INFO},
        {**log, _core.EVENT_LEVEL: _core.EVENT_LEVEL_WARNING},
        {K: _core.EVENT_DONE},
        {K: _core.EVENT_FAILED},
        {K: _core.EVENT_STOPPED},
        {K: _core.EVENT_ERROR, _core.EVENT_ERROR: failed},
    ]


@pytest.mark.parametrize("text", AWKWARD)
def test_what_rust_writes_python_reads_unchanged(text: str) -> None:
    for event in events(text):
        line = _core._event_line(json.dumps(event))
        assert line.endswith(b"\n") and line.count(b"\n") == 1, line
        assert parse_event(line) == event
        assert parse_event(line.rstrip(b"\n")) == event


def test_log_levels_and_lines_that_are_not_events() -> None:
    info, warning = events("x")[1:3]
    assert (log_level(info), log_level(warning)) == (logging.INFO, logging.WARNING)
    assert log_level({}) == logging.INFO
    for junk in [b"", b"log info old form", b"[1]", b'{"no": "kind"}', b"\xff\xfe", b"{"]:
        assert parse_event(junk) == {}, junk
    with pytest.raises(ValueError):
        _core._event_line('{"kind": "news"}')


def test_the_relay_logs_each_message_as_sent(caplog) -> None:
    # A real pipe carrying Rust's lines (split across writes at awkward
    # places), and a real child the relay reaps once the pipe closes.
    caplog.set_level(logging.INFO, logger="upsonic_server_manager")
    lines = b"".join(
        _core._event_line(json.dumps(e))
        for text in AWKWARD
        for e in events(text)
        if e[K] in (_core.EVENT_LOG, _core.EVENT_READY)
    ) + _core._event_line(json.dumps({K: _core.EVENT_FAILED}))
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    r, w = os.pipe()
    pidfd = os.pidfd_open(child.pid)
    for i in range(0, len(lines), 7):
        os.write(w, lines[i : i + 7])
    os.close(w)
    _relay("talker", pidfd, r)
    child.wait()
    got = [(rec.levelno, rec.getMessage()) for rec in caplog.records]
    want = [(lvl, text) for text in AWKWARD for lvl in (logging.INFO, logging.WARNING)]
    assert got[:-1] == want
    assert got[-1][0] == logging.ERROR and "talker: supervision gave up" in got[-1][1]
