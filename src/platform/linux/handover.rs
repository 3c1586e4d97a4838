//! Putting descriptors where a child expects them, in the child: every
//! source is first moved above every target, then each target is set, and
//! nothing else stays inheritable. Applying `dup2` one mapping at a time is
//! wrong whenever a source sits on another mapping's target (the caller's
//! socket at 4 and its lifeline at 3: moving the socket to 3 overwrites the
//! lifeline); moving all sources out of the way first is right for every
//! layout.
//!
//! `place` runs between fork and exec (or in a forked Python child), so it
//! allocates nothing and calls only async-signal-safe system calls.

use std::io;
use std::os::fd::RawFd;

/// The most descriptors one child is handed (stdio and a few more).
pub const MAX_HANDED: usize = 8;

/// Which descriptor becomes which in the child: (target, source) pairs,
/// in a fixed array (copied into the child, never allocated there).
#[derive(Debug, Clone, Copy)]
pub struct FdMap {
    pairs: [(RawFd, RawFd); MAX_HANDED],
    len: usize,
}

impl Default for FdMap {
    fn default() -> Self {
        Self {
            pairs: [(-1, -1); MAX_HANDED],
            len: 0,
        }
    }
}

impl FdMap {
    /// Makes `source` (a descriptor of this process) the child's `target`.
    /// Errors on a negative number, a target given twice, or too many.
    pub fn set(&mut self, target: RawFd, source: RawFd) -> io::Result<()> {
        let bad = |m: &str| Err(io::Error::new(io::ErrorKind::InvalidInput, m.to_owned()));
        if target < 0 || source < 0 {
            return bad("descriptor numbers are not negative");
        }
        if self.targets().any(|t| t == target) {
            return bad("a descriptor target given twice");
        }
        if self.len == MAX_HANDED {
            return bad("too many descriptors for one child");
        }
        self.pairs[self.len] = (target, source);
        self.len += 1;
        Ok(())
    }

    /// The (target, source) pairs.
    pub fn pairs(&self) -> &[(RawFd, RawFd)] {
        &self.pairs[..self.len]
    }

    fn targets(&self) -> impl Iterator<Item = RawFd> + '_ {
        self.pairs().iter().map(|(t, _)| *t)
    }
}

/// What becomes of the descriptors the map does not name (from 3 up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Others {
    /// Marked close-on-exec (between fork and exec: std's own error pipe
    /// must survive until exec, which then closes them all).
    CloseOnExec,
    /// Closed now (a forked child that runs on without exec).
    Close,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Applies `map` in this process and deals with every other descriptor
/// from 3 up as `others` says; 0, 1 and 2 stay as they are unless mapped.
/// Async-signal-safe.
pub fn place(map: &FdMap, others: Others) -> io::Result<()> {
    // Above every target (and stdio): no target can land on a moved source.
    let floor = map.targets().fold(2, RawFd::max) + 1;
    let mut moved = [-1 as RawFd; MAX_HANDED];
    let n = map.len;
    let result = (|| -> io::Result<()> {
        for (i, (_, source)) in map.pairs().iter().enumerate() {
            // SAFETY: fcntl on a descriptor number; no memory is touched.
            moved[i] = cvt(unsafe { libc::fcntl(*source, libc::F_DUPFD_CLOEXEC, floor) })?;
        }
        for (i, (target, _)) in map.pairs().iter().enumerate() {
            // dup2 clears close-on-exec on the target.
            // SAFETY: as above.
            cvt(unsafe { libc::dup2(moved[i], *target) })?;
        }
        Ok(())
    })();
    for fd in moved.iter().take(n).filter(|fd| **fd >= 0) {
        // SAFETY: our own duplicates, closed once.
        unsafe { libc::close(*fd) };
    }
    result?;
    for fd in 3..floor {
        if !map.targets().any(|t| t == fd) {
            dispose(fd, others);
        }
    }
    dispose_from(floor, others);
    Ok(())
}

fn dispose(fd: RawFd, others: Others) {
    // SAFETY: fcntl/close on a descriptor number; an unused one gives EBADF.
    unsafe {
        match others {
            Others::CloseOnExec => {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
                    libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
                }
            }
            Others::Close => {
                libc::close(fd);
            }
        }
    }
}

/// Every descriptor from `first` up: close_range(2) (Linux 5.9; the
/// close-on-exec flag 5.11), else one at a time up to the descriptor limit.
fn dispose_from(first: RawFd, others: Others) {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    let flags = match others {
        Others::CloseOnExec => CLOSE_RANGE_CLOEXEC,
        Others::Close => 0,
    };
    // SAFETY: a plain system call on descriptor numbers.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            flags,
        )
    };
    if r == 0 {
        return;
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    let limit = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur.min(1 << 20) as RawFd
    } else {
        65536
    };
    for fd in first..limit {
        dispose(fd, others);
    }
}
