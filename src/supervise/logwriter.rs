//! The supervisor writes its server's logs (issue 20). The server's stdout
//! and stderr are two pipes the supervisor creates once (every run, every
//! generation of a reload, their workers and a warm child all write into
//! the same pipes, so no line is lost between runs), and a thread reads
//! them and appends to `{log_dir}/{name}_server.log` and
//! `{name}_server_error.log` with size-capped rotation named as Python's
//! `RotatingFileHandler` names it (`.1` newest ... `.N` oldest).
//!
//! Here: `LogWriter`, the pipes and the thread; `stdio()` hands a run its
//! ends. One file (`Sink`), lines (`LineAssembler`), stamps and rotated
//! names are `logfile`, re-exported.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::logfile::{now_ms, RETRY_EVERY};
pub use super::logfile::{rotated_name, stamp, LineAssembler, LogOptions, Say, Sink};
use crate::platform;
use crate::spawn::LogPaths;

/// At the supervisor's exit, how long the writer waits for processes still
/// holding the pipes (stragglers) before it flushes and ends.
const FINISH_WAIT: Duration = Duration::from_secs(3);
/// How long a run's end waits for the writer to catch up with the pipes.
const SETTLE_WAIT: Duration = Duration::from_secs(2);

// ---- the pipes and the thread -----------------------------------------------------

#[derive(Default)]
struct SyncState {
    asked: u64,
    done: u64,
    flush_partial: bool,
    finish: bool,
}

struct Shared {
    state: Mutex<SyncState>,
    cv: Condvar,
}

/// The supervisor's log writer: the write ends a run's stdout and stderr
/// get, and the thread that reads the other ends.
pub struct LogWriter {
    out_w: Option<OwnedFd>,
    err_w: Option<OwnedFd>,
    wake_w: OwnedFd,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl LogWriter {
    /// Creates the pipes and starts the thread writing `logs`.
    pub fn start(logs: &LogPaths, opts: LogOptions, say: Say) -> io::Result<Self> {
        let (out_r, out_w) = platform::output_pipe()?;
        let (err_r, err_w) = platform::output_pipe()?;
        let (wake_r, wake_w) = platform::output_pipe()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(SyncState::default()),
            cv: Condvar::new(),
        });
        let streams = [
            Stream::new(out_r, Sink::open(logs.stdout.clone(), opts)),
            Stream::new(err_r, Sink::open(logs.stderr.clone(), opts)),
        ];
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name("logwriter".into())
            .spawn(move || writer_loop(streams, wake_r, opts.timestamps, sh, say))?;
        Ok(Self {
            out_w: Some(out_w),
            err_w: Some(err_w),
            wake_w,
            shared,
            thread: Some(thread),
        })
    }

    /// Descriptors of the write ends for one run (stdout, stderr).
    pub fn stdio(&self) -> io::Result<(File, File)> {
        let dup = |fd: &Option<OwnedFd>| -> io::Result<File> {
            let fd = fd
                .as_ref()
                .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))?;
            Ok(File::from(fd.try_clone()?))
        };
        Ok((dup(&self.out_w)?, dup(&self.err_w)?))
    }

    fn wake(&self) {
        let _ = rustix::io::write(&self.wake_w, b"w");
    }

    /// Waits (up to 2 s) until everything in the pipes now is written;
    /// with `flush_partial`, a partial last line too (its writer ended).
    pub fn settle(&self, flush_partial: bool) {
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        st.asked += 1;
        st.flush_partial |= flush_partial;
        let want = st.asked;
        self.wake();
        let deadline = Instant::now() + SETTLE_WAIT;
        while st.done < want {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            st = match self.shared.cv.wait_timeout(st, left) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }

    /// Closes our write ends and waits for the thread: it writes until no
    /// process holds the pipes (or 3 s after this), then the partial lines.
    pub fn finish(mut self) {
        self.out_w = None;
        self.err_w = None;
        self.shared
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .finish = true;
        self.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Stream {
    fd: Option<OwnedFd>,
    lines: LineAssembler,
    sink: Sink,
}

impl Stream {
    fn new(fd: OwnedFd, sink: Sink) -> Self {
        Self {
            fd: Some(fd),
            lines: LineAssembler::default(),
            sink,
        }
    }

    /// Reads all the pipe holds now and writes the whole lines.
    fn drain(&mut self, buf: &mut [u8], timestamps: bool, say: &mut dyn FnMut(&str, &str)) {
        let mut out = Vec::new();
        while let Some(fd) = &self.fd {
            match platform::read_nonblocking(fd, buf) {
                Ok(Some(0)) | Err(_) => {
                    self.fd = None; // every writer is gone
                    self.lines.flush(&mut out);
                }
                Ok(Some(n)) => {
                    let st = timestamps.then(|| stamp(now_ms()));
                    self.lines.feed(&buf[..n], st.as_deref(), &mut out);
                    if out.len() >= 256 << 10 {
                        self.sink.write(&out, say);
                        out.clear();
                    }
                }
                Ok(None) => break,
            }
        }
        self.sink.write(&out, say);
    }

    fn flush_partial(&mut self, say: &mut dyn FnMut(&str, &str)) {
        let mut out = Vec::new();
        self.lines.flush(&mut out);
        self.sink.write(&out, say);
    }
}

fn writer_loop(
    mut streams: [Stream; 2],
    wake_r: OwnedFd,
    timestamps: bool,
    shared: Arc<Shared>,
    mut say: Say,
) {
    let mut buf = vec![0u8; 64 << 10];
    let mut finish_since: Option<Instant> = None;
    loop {
        let mut fds = vec![wake_r.as_fd()];
        fds.extend(
            streams
                .iter()
                .filter_map(|s| s.fd.as_ref().map(|f| f.as_fd())),
        );
        let timeout = if finish_since.is_some() {
            Duration::from_millis(100)
        } else if streams.iter().any(|s| s.sink.is_failing()) {
            RETRY_EVERY
        } else {
            Duration::from_secs(3600) // idle: nothing is periodic
        };
        let _ = platform::wait_readable(&fds, timeout);
        let mut scratch = [0u8; 64];
        while matches!(platform::read_nonblocking(&wake_r, &mut scratch), Ok(Some(n)) if n > 0) {}
        // What was asked before these reads: the reads below cover it.
        let (asked, flush, finish) = {
            let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            let flush = std::mem::take(&mut st.flush_partial);
            (st.asked, flush, st.finish)
        };
        for s in streams.iter_mut() {
            s.drain(&mut buf, timestamps, &mut say);
            if flush {
                s.flush_partial(&mut say);
            }
        }
        {
            let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            st.done = asked;
            shared.cv.notify_all();
        }
        if finish {
            let since = *finish_since.get_or_insert_with(Instant::now);
            let all_closed = streams.iter().all(|s| s.fd.is_none());
            if all_closed || since.elapsed() >= FINISH_WAIT {
                for s in streams.iter_mut() {
                    s.flush_partial(&mut say);
                    if s.sink.dropped() > 0 {
                        say(
                            "warning",
                            &format!(
                                "{} lines for {} were dropped (it could not be written)",
                                s.sink.dropped(),
                                s.sink.path().display()
                            ),
                        );
                    }
                }
                return;
            }
        }
    }
}

// ---- the supervisor's one writer ---------------------------------------------------

static ACTIVE: Mutex<Option<Arc<LogWriter>>> = Mutex::new(None);

/// The write ends for a run's output while this process's supervisor
/// writes the logs; None otherwise (the run gets the files directly).
pub fn stdio() -> Option<io::Result<(File, File)>> {
    let active = ACTIVE.lock().unwrap_or_else(|e| e.into_inner()).clone();
    active.map(|w| w.stdio())
}

/// Whether this process writes its runs' logs (a supervisor that began one).
pub fn is_active() -> bool {
    ACTIVE.lock().unwrap_or_else(|e| e.into_inner()).is_some()
}

/// After a run ended (or failed to start): waits until what it wrote is in
/// the files, its partial last line completed. No-op without a writer.
pub fn settle() {
    let active = ACTIVE.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if let Some(w) = active {
        w.settle(true);
    }
}

/// The supervisor's writer while it supervises: started by `begin`,
/// drained and ended when dropped.
pub struct Active(());

/// Starts writing `logs` for this process's runs; a failure to create the
/// pipes is told and the runs write their files directly.
pub fn begin(logs: &LogPaths, opts: LogOptions, say: Say) -> Active {
    match LogWriter::start(logs, opts, say) {
        Ok(w) => *ACTIVE.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(w)),
        Err(e) => eprintln!(
            "the supervisor cannot write the logs itself ({e}): the server writes its files"
        ),
    }
    Active(())
}

impl Drop for Active {
    fn drop(&mut self) {
        let taken = ACTIVE.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(w) = taken.and_then(|a| Arc::try_unwrap(a).ok()) {
            w.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("usm-logw-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn the_writer_keeps_every_line_across_runs() {
        let d = dir("thread");
        let logs = LogPaths::new(&d, "t");
        let opts = LogOptions {
            max_bytes: 4096,
            backup_count: 50,
            timestamps: true,
        };
        let w = LogWriter::start(&logs, opts, Box::new(|_: &str, _: &str| {})).unwrap();
        for run in 0..3 {
            let (mut out, mut err) = w.stdio().unwrap();
            use std::io::Write;
            for i in 0..500 {
                writeln!(out, "run {run} line {i}").unwrap();
            }
            write!(err, "partial of run {run}").unwrap();
            drop((out, err));
            w.settle(true);
        }
        w.finish();
        let mut text = String::new();
        for n in (1..=50).rev() {
            if let Ok(t) = std::fs::read_to_string(rotated_name(&logs.stdout, n)) {
                text.push_str(&t);
            }
        }
        text.push_str(&std::fs::read_to_string(&logs.stdout).unwrap());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1500);
        assert!(lines.iter().all(|l| l.len() > 25 && &l[23..25] == "Z "));
        assert!(lines[1499].ends_with("run 2 line 499"));
        let err = std::fs::read_to_string(&logs.stderr).unwrap();
        let err: Vec<&str> = err.lines().map(|l| &l[25..]).collect();
        assert_eq!(
            err,
            ["partial of run 0", "partial of run 1", "partial of run 2"]
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
