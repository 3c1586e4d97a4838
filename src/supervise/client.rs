//! The caller's side of a supervisor: spawning one (a small Python process
//! that loads this very extension and runs `daemon::run` with the GIL
//! released), awaiting its first report, and ending supervision.
//!
//! The supervisor process is `python -I -S -c BOOT EXTENSION NAME` in its
//! own session: its stdin carries the `wire::Order`, descriptor 3 the held
//! socket (if any), descriptor 4 the events pipe back to the caller,
//! descriptor 5 the caller's lifeline (with `stop_with_caller`), and its
//! stdout and stderr its log file: nothing else of the caller's
//! (`crate::handover`), so a caller whose output is captured by a pipe is
//! not kept waiting by a supervisor that outlives it.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::handover::Handover;
use crate::platform::{self, PidFd};
use crate::protocol::events::Event;
pub use crate::protocol::EVENTS_FD;
use crate::protocol::{HELD_FD, SUPERVISOR_LIFELINE_FD};

use super::wire::Order;

/// The bootstrap: signals become bytes on the control pipe (Python's wakeup
/// fd, so nothing runs Python code while Rust waits), then the extension is
/// loaded by path with the interpreter's own loader primitives (not through
/// the package or importlib, whose imports it does not need: memory).
pub const BOOT: &str = "\
import os, signal, sys
r, w = os.pipe()
os.set_blocking(r, False)
os.set_blocking(w, False)
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(s, lambda *a: None)
signal.set_wakeup_fd(w)
import _imp
class Spec:
    name, origin = 'upsonic_server_manager._core', sys.argv[1]
core = _imp.create_dynamic(Spec)
_imp.exec_dynamic(core)
sys.exit(core._supervisor_main(r))
";

/// A supervisor just spawned.
pub struct Spawned {
    pub pidfd: PidFd,
    pub events: File,
}

/// Spawns a supervisor with `order`; `socket` is handed over as
/// `HELD_FD`, `lifeline` (the read end) as `SUPERVISOR_LIFELINE_FD`; `log`
/// receives the supervisor's own stdout and stderr.
pub fn spawn(
    order: &Order,
    extension: &Path,
    socket: Option<&OwnedFd>,
    lifeline: Option<std::os::fd::RawFd>,
    log: File,
) -> Result<Spawned> {
    let pipe = || {
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| Error::os("creating the supervisor's pipes", e.into()))
    };
    let (ev_read, ev_write) = pipe()?;
    let (orders_read, orders_write) = pipe()?;
    let err = log
        .try_clone()
        .map_err(|e| Error::os("opening the supervisor log", e))?;
    let mut fds = Handover::new()
        .owned(0, orders_read)?
        .owned(1, log)?
        .owned(2, err)?
        .owned(EVENTS_FD, ev_write)?;
    if let Some(s) = socket {
        fds = fds.borrowed(HELD_FD, s.as_fd())?;
    }
    if let Some(fd) = lifeline {
        // SAFETY: the lifeline is open for this process's lifetime.
        fds = fds.borrowed(SUPERVISOR_LIFELINE_FD, unsafe {
            std::os::fd::BorrowedFd::borrow_raw(fd)
        })?;
    }
    let mut cmd = Command::new(&order.cfg.python);
    cmd.args(["-I", "-S", "-c", BOOT])
        .arg(extension)
        .arg(&order.cfg.name);
    fds.apply(&mut cmd);
    platform::in_new_session(&mut cmd);
    let spawned = cmd.spawn();
    drop(fds);
    let child = spawned.map_err(|e| Error::path("cannot run", &order.cfg.python, e))?;
    let pidfd = PidFd::open(child.id() as i32)
        .map_err(|e| Error::os("opening a pidfd for the supervisor", e))?;
    // The supervisor reads its orders first thing; a failure shows as its
    // exit without a report.
    let _ = File::from(orders_write).write_all(order.to_text().as_bytes());
    // The supervisor outlives us: std's Child must not be waited on, and
    // dropping it neither kills nor reaps. Its exit is reaped by whoever
    // is its parent then (us, while we live: see `reap`).
    drop(child);
    Ok(Spawned {
        pidfd,
        events: File::from(ev_read),
    })
}

/// Reaps a supervisor child of ours that exited, without blocking.
pub fn reap(pid: i32) {
    let _ = nix::sys::wait::waitpid(
        nix::unistd::Pid::from_raw(pid),
        Some(nix::sys::wait::WaitPidFlag::WNOHANG),
    );
}

/// The supervisor's first report.
#[derive(Debug)]
pub struct Ready {
    pub server_pid: i32,
    pub port: u16,
}

/// Waits for the first report: the server is ready, or why it is not.
/// `tick` may interrupt (Ctrl-C): the supervisor is then stopped, which
/// stops the half-started server.
pub fn await_ready(
    sp: &mut Spawned,
    name: &str,
    deadline: Instant,
    tick: crate::Tick<'_>,
) -> Result<Ready> {
    let mut buf = Vec::new();
    loop {
        if let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            match Event::parse(&line[..pos]) {
                Some(Event::Ready { server_pid, port }) => return Ok(Ready { server_pid, port }),
                Some(Event::Error { error }) => {
                    let _ = sp.pidfd.wait_exit(Duration::from_secs(2));
                    reap(sp.pidfd.pid());
                    return Err(error.into_error(name));
                }
                _ => {}
            }
            continue; // a log line before the report
        }
        let exited = platform::pidfd::wait_exit_or_readable(
            &sp.pidfd,
            sp.events.as_raw_fd(),
            Duration::from_millis(20),
        )
        .map_err(|e| Error::os("waiting for the supervisor", e))?;
        let mut chunk = [0u8; 4096];
        let readable = rustix::event::poll(
            &mut [rustix::event::PollFd::new(
                &sp.events,
                rustix::event::PollFlags::IN,
            )],
            Some(&rustix::event::Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            }),
        )
        .unwrap_or(0)
            > 0;
        if readable {
            match sp.events.read(&mut chunk) {
                Ok(0) | Err(_) if exited || sp.pidfd.has_exited() => {
                    return Err(gone(sp, name));
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(_) => {}
            }
            continue;
        }
        if exited {
            return Err(gone(sp, name));
        }
        if let Err(e) = tick().and_then(|()| {
            if Instant::now() >= deadline {
                Err(Error::Supervisor {
                    name: name.to_owned(),
                    message: "the supervisor did not report within start_timeout".into(),
                })
            } else {
                Ok(())
            }
        }) {
            let _ = sp.pidfd.signal(libc::SIGTERM);
            let _ = sp.pidfd.wait_exit(Duration::from_secs(10));
            reap(sp.pidfd.pid());
            return Err(e);
        }
    }
}

fn gone(sp: &Spawned, name: &str) -> Error {
    reap(sp.pidfd.pid());
    Error::Supervisor {
        name: name.to_owned(),
        message: "its supervisor process exited before reporting (is the extension importable by this interpreter?)".into(),
    }
}

/// Ends supervision of a live supervisor: SIGTERM, which makes it stop
/// the server and exit; waits up to `timeout`, then SIGKILL (the caller
/// then stops what is left itself). True if it exited on its own.
pub fn stop(fd: &PidFd, timeout: Duration, tick: crate::Tick<'_>) -> Result<bool> {
    if !fd.signal(libc::SIGTERM).unwrap_or(false) {
        return Ok(true);
    }
    let deadline = Instant::now() + timeout;
    loop {
        if fd.wait_exit(Duration::from_millis(20)).unwrap_or(false) {
            reap(fd.pid());
            return Ok(true);
        }
        if Instant::now() >= deadline {
            let _ = fd.signal(libc::SIGKILL);
            let _ = fd.wait_exit(Duration::from_secs(2));
            reap(fd.pid());
            return Ok(false);
        }
        tick()?;
    }
}
