//! A process handle that cannot be confused with a later process given the
//! same PID: signals go through the pidfd, and exit is a readable event.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};

/// An open pidfd for one process.
#[derive(Debug)]
pub struct PidFd {
    pid: i32,
    fd: OwnedFd,
}

impl PidFd {
    /// Opens a pidfd for `pid`; fails with `ESRCH` if no such process exists.
    pub fn open(pid: i32) -> io::Result<Self> {
        let p = Pid::from_raw(pid).ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))?;
        let fd = pidfd_open(p, PidfdFlags::empty())?;
        Ok(Self { pid, fd })
    }

    /// The PID this handle was opened for.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends `sig` to exactly this process; `Ok(false)` if it already exited.
    pub fn signal(&self, sig: i32) -> io::Result<bool> {
        let sig = Signal::from_named_raw(sig)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        match pidfd_send_signal(&self.fd, sig) {
            Ok(()) => Ok(true),
            Err(e) if e == rustix::io::Errno::SRCH => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// True once the process has exited (it may still be an unreaped zombie).
    pub fn has_exited(&self) -> bool {
        wait_any(&[self], Duration::ZERO).unwrap_or(false)
    }

    /// Blocks up to `timeout` for the process to exit; true if it did.
    pub fn wait_exit(&self, timeout: Duration) -> io::Result<bool> {
        wait_any(&[self], timeout)
    }
}

/// Blocks up to `timeout` until the process exits (true) or `fd` becomes
/// readable (false, also on timeout): one poll over both.
pub fn wait_exit_or_readable(
    pidfd: &PidFd,
    fd: std::os::fd::RawFd,
    timeout: Duration,
) -> io::Result<bool> {
    // SAFETY: `fd` is open for the duration of this call (the caller owns it).
    let other = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let mut polls = [
        PollFd::new(&pidfd.fd, PollFlags::IN),
        PollFd::new(&other, PollFlags::IN),
    ];
    let ts = Timespec {
        tv_sec: timeout.as_secs() as _,
        tv_nsec: timeout.subsec_nanos() as _,
    };
    match poll(&mut polls, Some(&ts)) {
        Ok(_) => Ok(!polls[0].revents().is_empty()),
        Err(e) if e == rustix::io::Errno::INTR => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Blocks up to `timeout` until at least one of `fds` has exited; true if one did.
pub fn wait_any(fds: &[&PidFd], timeout: Duration) -> io::Result<bool> {
    if fds.is_empty() {
        return Ok(false);
    }
    let mut polls: Vec<PollFd<'_>> = fds
        .iter()
        .map(|p| PollFd::new(&p.fd, PollFlags::IN))
        .collect();
    let ts = Timespec {
        tv_sec: timeout.as_secs() as _,
        tv_nsec: timeout.subsec_nanos() as _,
    };
    // EINTR counts as "not yet": callers loop with their own deadline.
    match poll(&mut polls, Some(&ts)) {
        Ok(n) => Ok(n > 0),
        Err(e) if e == rustix::io::Errno::INTR => Ok(false),
        Err(e) => Err(e.into()),
    }
}

impl AsFd for PidFd {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn sees_exit_and_refuses_signal_after_reap() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let fd = PidFd::open(child.id() as i32).unwrap();
        assert!(!fd.has_exited());
        assert!(fd.signal(libc::SIGTERM).unwrap());
        assert!(fd.wait_exit(Duration::from_secs(5)).unwrap());
        child.wait().unwrap();
        // Reaped: the pidfd still names the old process, never a newcomer.
        assert!(!fd.signal(libc::SIGTERM).unwrap());
    }
}
