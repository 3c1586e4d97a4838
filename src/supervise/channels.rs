//! The supervisor's two channels: `Control`, the pipe on which signals
//! arrive as bytes (Python's wakeup fd), and `Events`, what it says to the
//! caller (the events pipe, while the caller lives) and to its log file.

use std::fs::File;
use std::io::Write;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags, Timespec};

use crate::platform::PidFd;
use crate::protocol::events::{Event, Level};

/// Where the supervisor's words go: the caller's logger (through the
/// events pipe, while the caller lives) and, for redirected output,
/// `{log_dir}/{name}_supervisor.log`.
pub struct Events {
    pipe: Option<File>,
    log: Option<File>,
}

impl Events {
    pub fn new(pipe: Option<OwnedFd>, log: Option<File>) -> Self {
        if let Some(p) = &pipe {
            // A caller that stopped reading must never block the supervisor.
            let _ = rustix::fs::fcntl_setfl(p, rustix::fs::OFlags::NONBLOCK);
        }
        Self {
            pipe: pipe.map(File::from),
            log,
        }
    }

    /// A second descriptor of the events pipe (to report after `run`).
    pub fn clone_pipe(&self) -> Option<OwnedFd> {
        self.pipe
            .as_ref()
            .and_then(|p| p.try_clone().ok())
            .map(OwnedFd::from)
    }

    /// Passes on what warm starts had to say (a fallback to a cold start,
    /// a new preloader): the supervisor has no logger of its own.
    pub fn warm_notes(&mut self) {
        for (warning, msg) in crate::warm::take_notes() {
            self.say(if warning { "warning" } else { "info" }, &msg);
        }
    }

    /// What the log writer's thread says (issue 20): to the supervisor's
    /// log, else to stderr; the caller's pipe is this thread's alone.
    pub fn log_sink(&self) -> super::logwriter::Say {
        let mut log = self.log.as_ref().and_then(|l| l.try_clone().ok());
        Box::new(move |level: &str, msg: &str| match &mut log {
            Some(l) => {
                let _ = writeln!(l, "{} {level}: {msg}", timestamp());
            }
            None => eprintln!("{level}: {msg}"),
        })
    }

    /// One event to the caller (`crate::protocol::events`: a JSON line).
    pub fn report(&mut self, event: &Event) {
        if let Some(p) = &mut self.pipe {
            if p.write_all(event.to_line().as_bytes()).is_err() {
                self.pipe = None; // the caller is gone: nobody to tell
            }
        }
    }

    /// Tells the caller why supervision could not begin.
    pub fn report_error(&mut self, e: &crate::error::Error) {
        self.report(&Event::error(e));
    }

    /// A message for the logger: `level` is "info" or "warning"
    /// (`Level::as_str`).
    pub fn say(&mut self, level: &str, msg: &str) {
        let level = Level::from_word(level);
        self.report(&Event::Log {
            level,
            message: msg.to_owned(),
        });
        if let Some(l) = &mut self.log {
            let _ = writeln!(l, "{} {}: {msg}", timestamp(), level.as_str());
        }
    }
}

/// UTC, as "2026-11-27 15:24:05.123Z": `logwriter::stamp` with a space for the T.
fn timestamp() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    // The log writer's stamp (one civil-date routine), with a space for the T.
    super::logwriter::stamp(ms).trim_end().replacen('T', " ", 1)
}

/// What the control pipe asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ask {
    Nothing,
    Stop,
    Replace,
}

/// The control pipe: bytes are signal numbers.
pub(super) struct Control(pub(super) RawFd);

impl Control {
    pub(super) fn take(&self) -> Ask {
        let mut buf = [0u8; 64];
        let mut ask = Ask::Nothing;
        // SAFETY: the fd is open for the supervisor's lifetime (its owner
        // is the Python bootstrap, which waits for us).
        let fd = unsafe { BorrowedFd::borrow_raw(self.0) };
        while let Ok(n) = rustix::io::read(fd, &mut buf) {
            if n == 0 {
                break;
            }
            for b in &buf[..n] {
                match i32::from(*b) {
                    libc::SIGTERM | libc::SIGINT => ask = Ask::Stop,
                    libc::SIGHUP if ask == Ask::Nothing => ask = Ask::Replace,
                    _ => {}
                }
            }
            if n < buf.len() {
                break;
            }
        }
        ask
    }

    /// Waits up to `timeout` for the control pipe or the pidfd (if any).
    /// Returns (control readable, server exited).
    pub(super) fn wait(&self, pidfd: Option<&PidFd>, timeout: Duration) -> (bool, bool) {
        // SAFETY: as in `take`.
        let ctl = unsafe { BorrowedFd::borrow_raw(self.0) };
        let ts = Timespec {
            tv_sec: timeout.as_secs().min(86_400) as _,
            tv_nsec: timeout.subsec_nanos() as _,
        };
        let mut fds = vec![PollFd::new(&ctl, PollFlags::IN)];
        if let Some(p) = pidfd {
            fds.push(PollFd::new(p, PollFlags::IN));
        }
        match poll(&mut fds, Some(&ts)) {
            Ok(_) => (
                !fds[0].revents().is_empty(),
                fds.get(1).is_some_and(|f| !f.revents().is_empty()),
            ),
            Err(_) => (false, false),
        }
    }
}
