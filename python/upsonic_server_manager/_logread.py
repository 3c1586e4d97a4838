"""Reading a server's log files across rotation (issue 20).

The supervisor rotates ``{name}_server.log`` as Python's
``RotatingFileHandler`` does: the current file, then ``.1`` (newest) ...
``.N`` (oldest). ``history`` takes the last lines of one stream across
those files, oldest first; ``Follower`` prints new lines as they arrive,
reopening a file by name when rotation replaced it (after reading the old
one to its end); ``merge`` interleaves both streams in time order when the
supervisor stamped their lines (``log_timestamps``).
"""

from __future__ import annotations

import heapq
import os
import re
import time

from . import _core

TYPE_CHECKING = False

if TYPE_CHECKING:
    from pathlib import Path
    from typing import BinaryIO, Iterable, Optional, Sequence, TextIO

#: A stamped line starts with this (defined in Rust, src/protocol.rs).
STAMP = re.compile(_core.LOG_STAMP_PATTERN)


def rotated(path: Path | str, n: int) -> str:
    """The name of the ``n``-th newest rotated file of ``path`` (``path.n``)."""
    return f"{os.fspath(path)}.{n}"


def _last_lines(path: str, count: int) -> list[bytes]:
    """The last ``count`` whole lines of ``path`` (without newlines), read
    backwards in blocks so a large file costs only what is printed."""
    if count <= 0:
        return []
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        end = pos = f.tell()
        data = b""
        while pos > 0 and data.count(b"\n") <= count:
            step = min(pos, 64 * 1024)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
        del end
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if pos > 0:
        lines = lines[1:]  # the first one may be cut
    return lines[-count:]


def history(path: Path | str, count: int) -> list[str]:
    """The last ``count`` lines of one stream, oldest first, spanning the
    current file and its rotated ones (``.N`` ... ``.1``, then the current).
    A missing file contributes nothing."""
    out: list[bytes] = []
    n = 0
    while len(out) < count:
        name = os.fspath(path) if n == 0 else rotated(path, n)
        try:
            out = _last_lines(name, count - len(out)) + out
        except FileNotFoundError:
            if n > 0:
                break
        n += 1
    return [line.decode(errors="replace") for line in out]


def stamp_of(line: str) -> Optional[str]:
    """The supervisor's timestamp leading ``line`` (as text, which sorts in
    time order), or None when the line is not stamped."""
    m = STAMP.match(line)
    return m.group(0) if m else None


def merge(streams: Sequence[tuple[str, Sequence[str]]]) -> list[tuple[str, str]]:
    """``(label, line)`` of every stream's lines. When every stream's lines
    are stamped, they interleave in time order (a line without a stamp
    stays after the line before it in its stream); otherwise stream after
    stream, each in its own order (unstamped files do not say when a line
    was written)."""
    stamped = all(
        not lines or stamp_of(lines[0]) is not None or stamp_of(lines[-1]) is not None
        for _, lines in streams
    )
    if not stamped:
        return [(label, line) for label, lines in streams for line in lines]

    def keyed(label: str, lines: Iterable[str]) -> Iterable[tuple[str, int, str, str]]:
        last = ""
        for i, line in enumerate(lines):
            last = stamp_of(line) or last
            yield last, i, label, line

    merged = heapq.merge(*(keyed(label, lines) for label, lines in streams))
    return [(label, line) for _, _, label, line in merged]


#: Said in place of lines that a follower could not read because the
#: rotation removed them first (more rotations between two looks than
#: ``log_backup_count`` keeps).
GAP_NOTE = (
    "[upsonic-server: lines may be missing here: rotated away before they "
    "could be read (a larger log_backup_count keeps them)]"
)


class _Tail:
    """One file followed by name: the open file, where we are, a partial line."""

    def __init__(self, label: str, path: Path | str, pos: int) -> None:
        self.label = label
        self.path = os.fspath(path)
        self.pos = pos
        self.partial = b""
        self.file: Optional[BinaryIO] = None
        self.inode: Optional[int] = None
        self._open()

    def _open(self) -> None:
        try:
            f = open(self.path, "rb")  # noqa: SIM115 (kept open while followed)
        except OSError:
            return
        self.file, self.inode = f, os.fstat(f.fileno()).st_ino

    def _read_rest(self) -> bytes:
        if self.file is None:
            return b""
        size = os.fstat(self.file.fileno()).st_size
        if size < self.pos:
            self.pos = 0  # cut (copy-truncate, or rotation with no backups)
        self.file.seek(self.pos)
        chunk = self.file.read()
        self.pos += len(chunk)
        return chunk

    def _written_since(self) -> tuple[list[str], bool]:
        """After a rotation: the rotated files written after ours, oldest
        first (more than one rotation between two polls), and whether ours
        is still among them. Gone, it was the oldest and was removed: files
        between it and the oldest kept one may have gone with it."""
        names: list[str] = []
        while len(names) < 10_000 and os.path.exists(rotated(self.path, len(names) + 1)):
            names.append(rotated(self.path, len(names) + 1))  # .1 newest ... .N oldest
        for k, name in enumerate(names):
            try:
                if os.stat(name).st_ino == self.inode:
                    return names[:k][::-1], True
            except OSError:
                pass
        return names[::-1], False

    def poll(self) -> list[str]:
        """The whole lines written since the last poll, across rotations:
        the old file is read to its end, then every file rotated after it,
        then the new one. Lines rotated away before they could be read are
        said, never skipped silently."""
        data = self._read_rest()
        try:
            now = os.stat(self.path).st_ino
        except OSError:
            now = None
        note = b""
        if now is not None and now != self.inode:
            if self.file is not None:
                self.file.close()
            between, found = self._written_since() if self.inode is not None else ([], True)
            if not found and between:
                note = GAP_NOTE.encode() + b"\n"
            for name in between:
                try:
                    with open(name, "rb") as f:
                        note += f.read()
                except OSError:
                    pass
            data += note
            self.file, self.pos = None, 0
            self._open()
            data += self._read_rest()
        data = self.partial + data
        *complete, self.partial = data.split(b"\n")
        return [line.decode(errors="replace") for line in complete]

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def follow(
    sources: Sequence[tuple[str, Path | str, int]],
    out: TextIO,
    interval: float = 0.2,
    rounds: Optional[int] = None,
) -> None:
    """Prints lines appended to each ``(label, path, offset)`` as they
    arrive, every ``interval`` seconds, until interrupted (or after
    ``rounds`` polls), following each file through rotation. Lines of one
    poll are put in time order when stamped."""
    tails = [_Tail(label, path, pos) for label, path, pos in sources]
    try:
        done = 0
        while rounds is None or done < rounds:
            batch = merge([(t.label, t.poll()) for t in tails])
            for label, line in batch:
                out.write(f"{label}{line}\n")
            if batch:
                out.flush()
            done += 1
            if rounds is None or done < rounds:
                time.sleep(interval)
    finally:
        for t in tails:
            t.close()
