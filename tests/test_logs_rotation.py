"""The supervisor writes and rotates its server's logs (issue 20): real
servers printing numbered lines, real rotation, and ``upsonic-server logs``
reading across the rotated files. The reader's own parts (history across
files, interleaving by stamp, following through a rename) are checked on
files written here."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from _helpers import cli, free_port, get, wait_until
from upsonic_server_manager import ServerManager, _core
from upsonic_server_manager._logread import GAP_NOTE, _Tail, history, merge, rotated

CAP = 64 * 1024
BACKUPS = 3
STAMP = re.compile(_core.LOG_STAMP_PATTERN)
NUMBERED = re.compile(r"(?:out|err) (\d{7}) ")


# ---- the reader, on files written here --------------------------------------------------


def test_history_spans_the_rotated_files_oldest_first(tmp_path: Path) -> None:
    base = tmp_path / "a_server.log"
    # .3 is the oldest, then .2, .1, then the current file.
    for n, lines in ((3, range(0, 5)), (2, range(5, 10)), (1, range(10, 15))):
        Path(rotated(base, n)).write_text("".join(f"l{i}\n" for i in lines))
    base.write_text("".join(f"l{i}\n" for i in range(15, 18)))
    assert history(base, 2) == ["l16", "l17"]
    assert history(base, 9) == [f"l{i}" for i in range(9, 18)]
    assert history(base, 100) == [f"l{i}" for i in range(18)]


def test_stamped_streams_interleave_in_time_order_unstamped_do_not() -> None:
    out = ["2026-12-01T03:00:00.001Z a", "2026-12-01T03:00:00.003Z c", "continued"]
    err = ["2026-12-01T03:00:00.002Z b", "2026-12-01T03:00:00.004Z d"]
    merged = merge([("o", out), ("e", err)])
    # The unstamped line keeps its place after the line before it in its stream.
    assert [line.split(" ")[-1] for _, line in merged] == ["a", "b", "c", "continued", "d"]
    assert [label for label, _ in merged] == ["o", "e", "o", "o", "e"]
    plain = merge([("o", ["x", "y"]), ("e", ["z"])])
    assert plain == [("o", "x"), ("o", "y"), ("e", "z")]


def test_following_reads_the_old_file_to_its_end_then_the_new_one(tmp_path: Path) -> None:
    base = tmp_path / "f_server.log"
    base.write_text("old 1\n")
    tail = _Tail("out | ", base, base.stat().st_size)
    with open(base, "a") as f:
        f.write("old 2\nold 3\n")
    os.rename(base, rotated(base, 1))  # rotation: renamed, a new file created
    base.write_text("new 1\n")
    assert tail.poll() == ["old 2", "old 3", "new 1"]
    with open(base, "a") as f:
        f.write("new 2\npart")
    assert tail.poll() == ["new 2"]
    with open(base, "a") as f:
        f.write("ial\n")
    assert tail.poll() == ["partial"]
    tail.close()


def rotate(base: Path, backups: int, text: str) -> None:
    """One rotation as the supervisor does it: ``.i`` to ``.i+1`` (the
    oldest removed), the file to ``.1``, and ``text`` in a new file."""
    oldest = Path(rotated(base, backups))
    if oldest.exists():
        oldest.unlink()
    for i in range(backups - 1, 0, -1):
        if Path(rotated(base, i)).exists():
            os.rename(rotated(base, i), rotated(base, i + 1))
    os.rename(base, rotated(base, 1))
    base.write_text(text)


def test_following_reads_every_file_of_several_rotations_between_two_looks(
    tmp_path: Path,
) -> None:
    base = tmp_path / "r_server.log"
    base.write_text("a1\n")
    tail = _Tail("", base, base.stat().st_size)
    with open(base, "a") as f:
        f.write("a2\n")
    rotate(base, 3, "b1\n")
    rotate(base, 3, "c1\n")  # b's file is .1 now, a's .2
    with open(base, "a") as f:
        f.write("c2\n")
    assert tail.poll() == ["a2", "b1", "c1", "c2"]
    tail.close()


def test_following_says_when_rotation_outran_the_backups(tmp_path: Path) -> None:
    base = tmp_path / "g_server.log"
    base.write_text("a1\n")
    tail = _Tail("", base, base.stat().st_size)
    for text in ("b1\n", "c1\n", "d1\n", "e1\n"):  # b's file is removed with a's
        rotate(base, 2, text)
    lines = tail.poll()
    assert lines[0] == GAP_NOTE and lines[1:] == ["c1", "d1", "e1"], lines
    tail.close()


# ---- real servers -------------------------------------------------------------------------


@pytest.fixture
def printer(home: Path, managers: list):
    """``printer(name, **kw)``: a supervised manager of the printing app
    with a 64 KiB cap and 3 backups, stopped after the test."""

    def make(name: str, **kw: Any) -> ServerManager:
        kw.setdefault("restart", "always")
        kw.setdefault("restart_delay", 0.05)
        kw.setdefault("log_max_bytes", CAP)
        kw.setdefault("log_backup_count", BACKUPS)
        m = ServerManager("usm_printer:app", "127.0.0.1", kw.pop("port", free_port()), name, **kw)
        managers.append(m)
        return m

    return make


def say(m: ServerManager, start: int, n: int) -> int:
    """Has the server print lines start..start+n-1 on both streams; the next start."""
    r = httpx.get(f"http://127.0.0.1:{m.port}/print", params={"start": start, "n": n}, timeout=60)
    r.raise_for_status()
    return start + n


def crash(m: ServerManager) -> None:
    """Crashes the server; returns once its supervisor's next run serves."""
    old = get(m.port)["pid"]
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{m.port}/crash", timeout=10)

    def new_server() -> bool:
        try:
            return get(m.port)["pid"] != old
        except (OSError, httpx.HTTPError):
            return False

    assert wait_until(new_server, 30)


def files_of(path: str) -> list[Path]:
    """The current file and its rotated ones, oldest first."""
    rot = [Path(rotated(path, n)) for n in range(BACKUPS, 0, -1)]
    return [p for p in rot if p.exists()] + [Path(path)]


def check_run(path: str, last: int, stamped: bool = False) -> list[int]:
    """The numbered lines kept across the files: each file within the cap
    (plus one line), no `.4`, the numbers contiguous and ending at ``last``."""
    assert not Path(rotated(path, BACKUPS + 1)).exists()
    nums: list[int] = []
    for f in files_of(path):
        data = f.read_bytes()
        longest = max((len(line) + 1 for line in data.split(b"\n")), default=0)
        assert len(data) <= CAP + longest, (f, len(data))
        for line in data.decode().splitlines():
            if stamped:
                assert STAMP.match(line), line
            m = NUMBERED.search(line)
            if m:
                nums.append(int(m.group(1)))
    assert nums, path
    assert nums[-1] == last, nums[-5:]
    gaps = [(a, b) for a, b in zip(nums, nums[1:]) if b != a + 1]
    assert not gaps, gaps[:5]
    return nums


def test_rotation_keeps_a_contiguous_run_within_the_cap(printer) -> None:
    m = printer("rot")
    m.start()
    nxt = 0
    for _ in range(5):
        nxt = say(m, nxt, 2000)
    m.stop()  # the supervisor drains its pipes before it exits
    out, err = m.log_files
    for path in (out, err):
        nums = check_run(path, nxt - 1)
        # Rotated: the oldest lines are gone, the files hold 3 backups.
        assert nums[0] > 0 and Path(rotated(path, BACKUPS)).exists()


def test_no_line_lost_or_repeated_across_a_reload_and_a_crash_restart(printer) -> None:
    m = printer("across", hold_socket=True)
    m.start()
    nxt = say(m, 0, 1500)
    m.reload()
    nxt = say(m, nxt, 1500)
    crash(m)
    nxt = say(m, nxt, 3000)
    m.stop()
    for path in m.log_files:
        check_run(path, nxt - 1)


def test_an_outside_rotation_is_followed(printer, tmp_path: Path) -> None:
    """logrotate's `create` (the live file moved away) and a plain `rm`:
    the writer opens a new file at the path each time, and no line is lost
    or repeated across the three files."""
    m = printer("outside", log_max_bytes=0)
    m.start()
    out, _ = m.log_files
    nxt = say(m, 0, 10)
    assert wait_until(lambda: Path(out).exists() and Path(out).stat().st_size > 0)
    moved = tmp_path / "moved.log"
    os.rename(out, moved)

    def follows() -> bool:
        nonlocal nxt
        nxt = say(m, nxt, 1)
        return Path(out).exists()

    assert wait_until(follows, 10), "the writer kept writing the moved file"

    def numbers(text: str) -> list[int]:
        return [int(x.group(1)) for x in map(NUMBERED.search, text.splitlines()) if x]

    # The removed file stays readable through a descriptor of ours: what
    # the writer put there until it noticed is counted, not lost.
    with open(out) as removed:
        os.remove(out)
        assert wait_until(follows, 10), "the writer kept writing the removed file"
        nxt = say(m, nxt, 10)
        m.stop()
        in_removed = numbers(removed.read())
    # Every number printed is in one of the three files, once.
    nums = sorted(numbers(moved.read_text()) + in_removed + numbers(Path(out).read_text()))
    assert nums == list(range(nxt)), nums


def test_timestamps_stamp_every_line(printer) -> None:
    m = printer("stamped", log_timestamps=True)
    m.start()
    nxt = say(m, 0, 3000)
    m.stop()
    for path in m.log_files:
        check_run(path, nxt - 1, stamped=True)


def test_a_partial_last_line_appears_whole(printer) -> None:
    m = printer("partial")
    m.start()
    partial = {"text": "no newline here"}
    httpx.get(f"http://127.0.0.1:{m.port}/partial", params=partial).raise_for_status()
    crash(m)  # it crashes without ending the line
    say(m, 0, 1)  # the next run writes on: its lines must not join the partial one
    partial = {"text": "the last words"}
    httpx.get(f"http://127.0.0.1:{m.port}/partial", params=partial).raise_for_status()
    m.stop()  # the server exits without ending its line
    text = Path(m.log_files[0]).read_text()
    lines = text.splitlines()
    assert "no newline here" in lines and "the last words" in lines, lines
    assert text.endswith("\n")


def test_cli_logs_n_spans_rotation_in_order(printer, home: Path) -> None:
    m = printer("cli-logs", log_timestamps=True)
    m.start()
    nxt = 0
    for _ in range(4):
        nxt = say(m, nxt, 2000)
    out_log = m.log_files[0]
    # Written by now? The writer is behind the pipe by a moment at most.
    assert wait_until(lambda: f"out {nxt - 1:07d}" in Path(out_log).read_text(), 10)
    assert Path(rotated(out_log, 1)).exists()
    r = cli("logs", "cli-logs", "-n", "2000", "--stdout", home=home)
    assert r.returncode == 0, r.stderr
    got = [int(x) for x in re.findall(r"^out \| \S+ out (\d{7}) ", r.stdout, re.M)]
    assert got == list(range(nxt - 2000, nxt))[-len(got) :]
    # Access log lines share the stream: the numbered ones are what is left of 2000.
    assert len(r.stdout.splitlines()) == 2000 and got[-1] == nxt - 1
    # Both streams, stamped: one time-ordered run.
    r = cli("logs", "cli-logs", "-n", "50", home=home)
    stamps = [line.split(" | ", 1)[1][:24] for line in r.stdout.splitlines()]
    assert stamps == sorted(stamps)
    assert {line[:3] for line in r.stdout.splitlines()} == {"out", "err"}
    m.stop()


def test_following_through_live_rotations(printer) -> None:
    m = printer("follow")
    m.start()
    out_log = m.log_files[0]
    tail = _Tail("out | ", out_log, os.path.getsize(out_log))
    seen: list[int] = []

    def caught_up(last: int) -> bool:
        seen.extend(int(x.group(1)) for x in map(NUMBERED.search, tail.poll()) if x)
        return bool(seen) and seen[-1] == last

    nxt = 0
    for _ in range(12):  # about 250 KiB: several rotations, one at most per batch
        nxt = say(m, nxt, 400)
        assert wait_until(lambda last=nxt - 1: caught_up(last), 10), seen[-3:]
    tail.close()
    m.stop()
    assert Path(rotated(out_log, 2)).exists()
    assert seen == list(range(nxt))


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 256 KiB tmpfs (needs root; skipped otherwise), unmounted after the test."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root")
    d = tmp_path / "small"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(d)])
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield d
    subprocess.run(["umount", "-l", str(d)])


def test_a_full_disk_drops_lines_says_so_once_and_how_many(printer, small_disk: Path) -> None:
    sup_log = small_disk / "full_supervisor.log"
    # A page of it taken before the disk fills: its messages still fit.
    sup_log.write_text("#\n" * 50)
    m = printer("full", log_dir=str(small_disk), log_max_bytes=10 << 20)
    m.start()
    nxt = say(m, 0, 6000)  # about 650 KB for 256 KiB: the server is never blocked
    assert get(m.port)["pid"]
    assert wait_until(lambda: "no room" in sup_log.read_text(), 10), sup_log.read_text()
    out_log, err_log = m.log_files
    for p in (out_log, err_log):
        os.truncate(p, 0)  # room again

    def resumed() -> bool:
        nonlocal nxt
        nxt = say(m, nxt, 10)
        return "lines were dropped" in sup_log.read_text()

    assert wait_until(resumed, 30, step=0.5), sup_log.read_text()
    text = sup_log.read_text()
    assert text.count("no room") == 2, text  # once per file, not once per line
    dropped = [int(n) for n in re.findall(r"; (\d+) lines were dropped", text)]
    assert dropped and all(n > 0 for n in dropped), text
    m.stop()
    assert f"out {nxt - 1:07d}" in Path(out_log).read_text()
