//! Pipes for a server's output that the supervisor reads: large (so a
//! server rarely waits on a slow writer), the read end non-blocking, and
//! a poll over several read ends.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::pipe::{fcntl_setpipe_size, pipe_with, PipeFlags};

/// The pipe size asked for: 1 MiB, the default `/proc/sys/fs/pipe-max-size`
/// (an unprivileged process gets at most that; the kernel default is 64 KiB).
pub const OUTPUT_PIPE_SIZE: usize = 1 << 20;

/// A pipe (read end, write end), both close-on-exec, the read end
/// non-blocking, its buffer made `OUTPUT_PIPE_SIZE` where the system allows
/// it (else the kernel's default stays: not an error).
pub fn output_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = pipe_with(PipeFlags::CLOEXEC)?;
    rustix::fs::fcntl_setfl(&r, rustix::fs::OFlags::NONBLOCK)?;
    let _ = fcntl_setpipe_size(&r, OUTPUT_PIPE_SIZE).or_else(|_| fcntl_setpipe_size(&r, 256 << 10));
    Ok((r, w))
}

/// The size of a pipe's buffer, in bytes.
pub fn pipe_size(fd: impl AsFd) -> io::Result<usize> {
    Ok(rustix::pipe::fcntl_getpipe_size(fd)?)
}

/// Waits up to `timeout` until one of `fds` is readable (or hung up);
/// which ones, in the order given. Interrupted: none.
pub fn wait_readable(fds: &[BorrowedFd<'_>], timeout: Duration) -> io::Result<Vec<bool>> {
    let ts = Timespec {
        tv_sec: timeout.as_secs().min(86_400) as _,
        tv_nsec: timeout.subsec_nanos() as _,
    };
    let mut polled: Vec<PollFd<'_>> = fds.iter().map(|f| PollFd::new(f, PollFlags::IN)).collect();
    match poll(&mut polled, Some(&ts)) {
        Ok(_) => Ok(polled.iter().map(|p| !p.revents().is_empty()).collect()),
        Err(rustix::io::Errno::INTR) => Ok(vec![false; fds.len()]),
        Err(e) => Err(e.into()),
    }
}

/// Reads what `fd` (non-blocking) holds into `buf`: Some(n) bytes (0 at
/// end of file), None when nothing is there now.
pub fn read_nonblocking(fd: impl AsFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        match rustix::io::read(&fd, &mut *buf) {
            Ok(n) => return Ok(Some(n)),
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::AGAIN) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_nonblocking_pipe() {
        let (r, w) = output_pipe().unwrap();
        assert!(pipe_size(&r).unwrap() >= 64 << 10);
        let mut buf = [0u8; 16];
        assert_eq!(read_nonblocking(&r, &mut buf).unwrap(), None);
        assert_eq!(
            wait_readable(&[r.as_fd()], Duration::ZERO).unwrap(),
            vec![false]
        );
        rustix::io::write(&w, b"hi\n").unwrap();
        assert_eq!(
            wait_readable(&[r.as_fd()], Duration::from_secs(1)).unwrap(),
            vec![true]
        );
        assert_eq!(read_nonblocking(&r, &mut buf).unwrap(), Some(3));
        drop(w);
        assert_eq!(read_nonblocking(&r, &mut buf).unwrap(), Some(0));
    }
}
