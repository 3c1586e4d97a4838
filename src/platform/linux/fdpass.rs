//! Handing descriptors to an unrelated process over a unix socket
//! (SCM_RIGHTS), and this process's umask, for warm starts.

use std::io::{self, IoSlice};
use std::os::fd::BorrowedFd;
use std::os::unix::net::UnixStream;

use rustix::net::{sendmsg, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};

/// The most descriptors one `send_with_fds` carries.
pub const MAX_PASSED_FDS: usize = 8;

/// Sends all of `bytes` on `stream`, with `fds` attached to the first part:
/// the receiver gets its own copies of them.
pub fn send_with_fds(stream: &UnixStream, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if fds.len() > MAX_PASSED_FDS {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut space =
        [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_PASSED_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut sent = sendmsg(
        stream,
        &[IoSlice::new(bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    while sent < bytes.len() {
        let mut none = SendAncillaryBuffer::new(&mut []);
        sent += sendmsg(
            stream,
            &[IoSlice::new(&bytes[sent..])],
            &mut none,
            SendFlags::NOSIGNAL,
        )?;
    }
    Ok(())
}

/// Connects to the unix stream socket at `path` without waiting: a
/// listener whose backlog is full (a hung process) fails with `EAGAIN`
/// instead of blocking. The stream returned blocks again.
pub fn connect_unix_now(path: &std::path::Path) -> io::Result<UnixStream> {
    use rustix::net::{
        connect, socket_with, AddressFamily, SocketAddrUnix, SocketFlags, SocketType,
    };
    let fd = socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    connect(&fd, &SocketAddrUnix::new(path)?)?;
    let stream = UnixStream::from(fd);
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// The PID of the process at the other end of a connected unix socket (for
/// a listener: the process that called listen), as the kernel recorded it.
pub fn peer_pid(stream: &UnixStream) -> Option<i32> {
    rustix::net::sockopt::socket_peercred(stream)
        .ok()
        .map(|c| c.pid.as_raw_nonzero().get())
}

/// This process's file-creation mask, read without changing it (a
/// umask(2) round trip would race with other threads creating files).
pub fn own_umask() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Umask:"))?;
    u32::from_str_radix(line["Umask:".len()..].trim(), 8).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsFd;

    #[test]
    fn descriptors_travel_with_the_bytes() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let (mut r, w) = UnixStream::pair().unwrap();
        send_with_fds(&a, b"hello", &[w.as_fd()]).unwrap();
        drop(w);
        // The copy in flight keeps the other end open: no end-of-file yet...
        r.set_nonblocking(true).unwrap();
        let err = r.read(&mut [0u8; 1]).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
        let mut buf = [0u8; 5];
        b.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello");
        // ...until a plain read takes the bytes and the kernel drops the copy.
        assert_eq!(r.read(&mut [0u8; 1]).unwrap(), 0);
        assert!(own_umask().is_some_and(|m| m <= 0o777));
    }
}
