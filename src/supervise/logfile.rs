//! One log file of a server, as the supervisor writes it (issue 20): bytes
//! to whole lines (`LineAssembler`, pure), the stamp and the rotated names
//! (pure), and `Sink`, one file rotated at a line boundary as Python's
//! `RotatingFileHandler` rotates (`.1` newest ... `.N` oldest), a full disk
//! counted and retried rather than blocking. The pipes and the thread that
//! feed it are `logwriter`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A partial line longer than this is written out without waiting for
/// its newline (the rest of the line follows it in the file).
const LINE_MAX: usize = 1 << 20;
/// How often the writer checks that its file is still the one at its path
/// (an outside rotation moved or removed it, or truncated it in place).
const WATCH_EVERY: Duration = Duration::from_secs(1);
/// While a file cannot be written (a full disk), the next try comes after this.
pub(super) const RETRY_EVERY: Duration = Duration::from_secs(5);

/// How the logs are rotated and stamped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOptions {
    /// A file is rotated before a line would take it over this many bytes
    /// (a single longer line still goes whole into a file of its own);
    /// 0: never rotated.
    pub max_bytes: u64,
    /// Rotated files kept (`.1` ... `.N`); 0: the file is cut instead.
    pub backup_count: u32,
    /// Every line starts with an ISO 8601 UTC timestamp (`stamp`).
    pub timestamps: bool,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            max_bytes: super::LOG_MAX_BYTES,
            backup_count: super::LOG_BACKUP_COUNT,
            timestamps: false,
        }
    }
}

impl From<&super::Supervision> for LogOptions {
    /// `log_max_bytes`, `log_backup_count`, `log_timestamps` (the defaults
    /// where not given).
    fn from(sup: &super::Supervision) -> Self {
        Self {
            max_bytes: sup.log_max_bytes.unwrap_or(super::LOG_MAX_BYTES),
            backup_count: sup.log_backup_count.unwrap_or(super::LOG_BACKUP_COUNT),
            timestamps: sup.log_timestamps,
        }
    }
}

// ---- the pure part -----------------------------------------------------------------

/// `base.N`, as `RotatingFileHandler` names the Nth newest rotated file.
pub fn rotated_name(base: &Path, n: u32) -> PathBuf {
    let mut s = base.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// The timestamp a stamped line starts with, for `ms` since the epoch:
/// `2026-12-01T03:04:05.123Z ` (ISO 8601, UTC, milliseconds, one space).
pub fn stamp(ms: i64) -> String {
    let (days, rest) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s) = (rest / 3_600_000, rest / 60_000 % 60, rest / 1000 % 60);
    format!(
        "{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{:03}Z ",
        rest % 1000
    )
}

pub(super) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Turns the bytes of one stream into whole lines (each ending in `\n`,
/// led by its stamp when stamping): a line's stamp is when its first byte
/// arrived.
#[derive(Debug, Default)]
pub struct LineAssembler {
    pending: Vec<u8>,
}

impl LineAssembler {
    /// Appends the whole lines in `data` to `out`; the partial last line
    /// stays pending. `stamp` (if any) leads each line that starts here.
    pub fn feed(&mut self, data: &[u8], stamp: Option<&str>, out: &mut Vec<u8>) -> usize {
        if stamp.is_none() {
            // Unstamped: the whole lines go in one copy.
            let Some(last) = data.iter().rposition(|c| *c == b'\n') else {
                return self.feed_partial(data, out);
            };
            out.append(&mut self.pending);
            out.extend_from_slice(&data[..=last]);
            self.feed_partial(&data[last + 1..], out);
            return count_lines(&data[..=last]) as usize;
        }
        let mut lines = 0;
        let mut rest = data;
        while !rest.is_empty() {
            if self.pending.is_empty() {
                if let Some(s) = stamp {
                    self.pending.extend_from_slice(s.as_bytes());
                }
            }
            match memchr(b'\n', rest) {
                Some(i) => {
                    let (line, after) = rest.split_at(i + 1);
                    self.pending.extend_from_slice(line);
                    out.append(&mut self.pending);
                    lines += 1;
                    rest = after;
                }
                None => {
                    self.pending.extend_from_slice(rest);
                    if self.pending.len() > LINE_MAX {
                        // No newline in sight: written as it is; the
                        // line goes on (unstamped) in the next piece.
                        out.append(&mut self.pending);
                    }
                    rest = &[];
                }
            }
        }
        lines
    }

    /// Bytes without a newline: pending (written out past `LINE_MAX`).
    fn feed_partial(&mut self, data: &[u8], out: &mut Vec<u8>) -> usize {
        self.pending.extend_from_slice(data);
        if self.pending.len() > LINE_MAX {
            out.append(&mut self.pending);
        }
        0
    }

    /// The pending partial line, completed with a newline (nothing if none):
    /// its writer ended without one.
    pub fn flush(&mut self, out: &mut Vec<u8>) -> usize {
        if self.pending.is_empty() {
            return 0;
        }
        self.pending.push(b'\n');
        out.append(&mut self.pending);
        1
    }

    /// Whether a partial line waits for its newline.
    pub fn has_partial(&self) -> bool {
        !self.pending.is_empty()
    }
}

fn memchr(b: u8, s: &[u8]) -> Option<usize> {
    s.iter().position(|c| *c == b)
}

// ---- one file ----------------------------------------------------------------------

/// What the writer says in the supervisor's log: (level, message).
pub type Say = Box<dyn FnMut(&str, &str) + Send>;

/// Whether a write error means "no room" (drop and count, retry later).
fn is_full(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EIO)
    )
}

/// One log file and its rotated ones.
pub struct Sink {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    opts: LogOptions,
    /// Lines dropped since writing stopped (a full disk).
    dropped: u64,
    /// When writing failed last: no new try before `RETRY_EVERY` passed.
    failed_at: Option<Instant>,
    /// The last write stopped inside a line: a newline first on resuming.
    mid_line: bool,
    /// (device, inode) of the open file, and when the path was last
    /// checked to still name it (`WATCH_EVERY`).
    id: (u64, u64),
    watched_at: Instant,
}

impl Sink {
    /// Opens `path` for appending (created 0644); a failure to open is
    /// handled as a failure to write (the lines are counted, retried).
    pub fn open(path: PathBuf, opts: LogOptions) -> Self {
        let mut s = Self {
            path,
            file: None,
            size: 0,
            opts,
            dropped: 0,
            failed_at: None,
            mid_line: false,
            id: (0, 0),
            watched_at: Instant::now(),
        };
        let _ = s.reopen();
        s
    }

    fn reopen(&mut self) -> io::Result<()> {
        self.file = None;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let f = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&self.path)?;
        let meta = f.metadata()?;
        self.size = meta.len();
        self.id = (meta.dev(), meta.ino());
        self.watched_at = Instant::now();
        self.file = Some(f);
        Ok(())
    }

    /// An outside rotation (logrotate's `create`: the file moved away, or
    /// removed) leaves our descriptor on a file the path no longer names:
    /// a new one is opened at the path, as `WatchedFileHandler` does. One
    /// truncated in place (`copytruncate`) is measured again, so that our
    /// own rotation does not come early. Checked before a write, at most
    /// every `WATCH_EVERY`; a path that cannot be looked at for another
    /// reason (a directory made unreadable) keeps the open file.
    fn follow_outside_rotation(&mut self) {
        if self.file.is_none() || self.watched_at.elapsed() < WATCH_EVERY {
            return;
        }
        self.watched_at = Instant::now();
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if (m.dev(), m.ino()) == self.id => self.size = self.size.min(m.len()),
            // Moved, removed or replaced: a later failure to open is a
            // failure to write (counted, retried).
            Ok(_) => self.file = None,
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.file = None,
            Err(_) => {}
        }
    }

    /// Renames `path` to `.1` (and each `.i` to `.i+1`, the oldest `.N`
    /// replaced), as `RotatingFileHandler.doRollover`; with no backups the
    /// file is cut. A new empty file follows.
    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        if self.opts.backup_count == 0 {
            let _ = std::fs::remove_file(&self.path);
        } else {
            for i in (1..self.opts.backup_count).rev() {
                let from = rotated_name(&self.path, i);
                if from.exists() {
                    std::fs::rename(&from, rotated_name(&self.path, i + 1))?;
                }
            }
            if self.path.exists() {
                std::fs::rename(&self.path, rotated_name(&self.path, 1))?;
            }
        }
        self.reopen()
    }

    /// Writes whole lines (`data` ends with a newline), rotating before a
    /// line that would take the file over `max_bytes`. Lines that cannot be
    /// written (a full disk) are dropped and counted; the first failure and
    /// the resumption (with the count) are told through `say`.
    pub fn write(&mut self, data: &[u8], say: &mut dyn FnMut(&str, &str)) {
        if data.is_empty() {
            return;
        }
        if let Some(t) = self.failed_at {
            if t.elapsed() < RETRY_EVERY {
                self.dropped += count_lines(data);
                return;
            }
        }
        self.follow_outside_rotation();
        if self.file.is_none() {
            if let Err(e) = self.reopen() {
                self.fail(e, count_lines(data), say);
                return;
            }
        }
        if self.mid_line {
            if let Err((e, _)) = self.write_raw(b"\n") {
                self.fail(e, count_lines(data), say);
                return;
            }
            self.mid_line = false;
        }
        let cap = self.opts.max_bytes;
        let mut start = 0; // the first byte not yet written
        let mut at = 0; // the end of the lines that fit the current file
        if cap == 0 || self.size + data.len() as u64 <= cap {
            at = data.len(); // all of it fits: no line to look at
        }
        while at < data.len() {
            let end = memchr(b'\n', &data[at..]).map_or(data.len(), |i| at + i + 1);
            let line = (end - at) as u64;
            let in_file = self.size + (at - start) as u64;
            if cap > 0 && in_file > 0 && in_file + line > cap {
                if let Err(e) = self.write_raw(&data[start..at]) {
                    return self.fail_in(e, data, start, say);
                }
                start = at;
                if let Err(e) = self.rotate() {
                    return self.fail_in((e, 0), data, start, say);
                }
            }
            at = end;
        }
        if let Err(e) = self.write_raw(&data[start..]) {
            return self.fail_in(e, data, start, say);
        }
        if self.failed_at.take().is_some() || self.dropped > 0 {
            say(
                "warning",
                &format!(
                    "writing {} again; {} lines were dropped while it could not be written",
                    self.path.display(),
                    self.dropped
                ),
            );
            self.dropped = 0;
        }
    }

    /// Writes all of `buf`; on an error, `buf[..written]` is in the file.
    fn write_raw(&mut self, buf: &[u8]) -> Result<(), (io::Error, usize)> {
        let f = self
            .file
            .as_ref()
            .ok_or((io::Error::from_raw_os_error(libc::EBADF), 0))?;
        let mut done = 0;
        while done < buf.len() {
            match rustix::io::write(f, &buf[done..]) {
                Ok(0) => return Err((io::Error::from_raw_os_error(libc::ENOSPC), done)),
                Ok(n) => {
                    done += n;
                    self.size += n as u64;
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err((e.into(), done)),
            }
        }
        Ok(())
    }

    /// A write of `data[start..]` failed after `written` bytes of it.
    fn fail_in(
        &mut self,
        (e, written): (io::Error, usize),
        data: &[u8],
        start: usize,
        say: &mut dyn FnMut(&str, &str),
    ) {
        let from = start + written;
        self.mid_line = from > 0 && data[from - 1] != b'\n';
        // A line written in part counts as dropped.
        let line_start = data[..from]
            .iter()
            .rposition(|c| *c == b'\n')
            .map_or(0, |i| i + 1);
        self.fail(e, count_lines(&data[line_start..]), say);
    }

    fn fail(&mut self, e: io::Error, lines: u64, say: &mut dyn FnMut(&str, &str)) {
        let first = self.failed_at.is_none() && self.dropped == 0;
        self.dropped += lines;
        self.failed_at = Some(Instant::now());
        if first {
            let why = if is_full(&e) {
                "no room"
            } else {
                "it cannot be written"
            };
            say(
                "warning",
                &format!(
                    "cannot write {} ({why}: {e}): the server's lines are dropped and counted, tried again every {} s",
                    self.path.display(),
                    RETRY_EVERY.as_secs()
                ),
            );
        }
    }

    /// Lines dropped since writing stopped.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Whether writing has stopped (a full disk) and waits for its retry.
    pub fn is_failing(&self) -> bool {
        self.failed_at.is_some()
    }

    /// The file's path (the current one, not a rotated one).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn count_lines(data: &[u8]) -> u64 {
    let n = data.iter().filter(|c| **c == b'\n').count() as u64;
    n + u64::from(data.last().is_some_and(|c| *c != b'\n'))
}

#[cfg(test)]
#[path = "logfile_tests.rs"]
mod tests;
