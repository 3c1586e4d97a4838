//! Listening sockets the manager holds for its servers: binding one (port 0
//! included), reading its port back, taking a running server's copy of it
//! (pidfd_getfd), and the datagram socket a launched server reports
//! readiness on.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};

use rustix::net::{
    bind, getsockname, listen, socket_with, sockopt, AddressFamily, SocketFlags, SocketType,
};
use rustix::process::{pidfd_getfd, PidfdGetfdFlags};

use super::PidFd;

/// A listening TCP socket bound to (addr, port); port 0 lets the kernel
/// choose. Close-on-exec: a child gets it only when handed over explicitly.
pub fn listen_tcp(addr: IpAddr, port: u16, backlog: i32) -> io::Result<OwnedFd> {
    let family = if addr.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let fd = socket_with(family, SocketType::STREAM, SocketFlags::CLOEXEC, None)?;
    // As uvicorn does: a restart may bind while old connections linger.
    sockopt::set_socket_reuseaddr(&fd, true)?;
    bind(&fd, &SocketAddr::new(addr, port))?;
    listen(&fd, backlog)?;
    Ok(fd)
}

/// The local port a socket is bound to.
pub fn local_port(fd: impl AsFd) -> io::Result<u16> {
    let addr = getsockname(fd)?;
    SocketAddr::try_from(addr)
        .map(|a| a.port())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "not an internet socket"))
}

/// Whether `fd` is a listening TCP socket on `port`.
pub fn is_tcp_listener_on(fd: impl AsFd, port: u16) -> bool {
    let fd = fd.as_fd();
    sockopt::socket_acceptconn(fd).unwrap_or(false)
        && sockopt::socket_type(fd).is_ok_and(|t| t == SocketType::STREAM)
        && local_port(fd).is_ok_and(|p| p == port)
}

/// A copy of descriptor `target` of the process behind `pidfd` (Linux 5.6+;
/// needs the right to ptrace it: the same user, or root).
pub fn take_fd(pidfd: &PidFd, target: RawFd) -> io::Result<OwnedFd> {
    Ok(pidfd_getfd(pidfd, target, PidfdGetfdFlags::empty())?)
}

/// Where launched servers report readiness: an abstract-namespace datagram
/// socket (nothing on disk to clean up), named by the launch.
pub struct ReadySocket {
    sock: UnixDatagram,
    name: String,
}

impl ReadySocket {
    /// Binds `upsonic-ready-{tag}` in the abstract namespace.
    pub fn bind(tag: &str) -> io::Result<Self> {
        let name = format!("upsonic-ready-{tag}");
        let addr = UnixAddr::from_abstract_name(name.as_bytes())?;
        let sock = UnixDatagram::bind_addr(&addr)?;
        sock.set_nonblocking(true)?;
        Ok(Self { sock, name })
    }

    /// The name a server sends to (without the leading NUL).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The descriptor to poll for incoming reports.
    pub fn raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// The next datagram, if one is waiting (at most `limit` bytes).
    pub fn try_recv(&self, limit: usize) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; limit];
        let n = self.sock.recv(&mut buf).ok()?;
        buf.truncate(n);
        Some(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_port_zero_and_reads_it_back() {
        let fd = listen_tcp("127.0.0.1".parse().unwrap(), 0, 16).unwrap();
        let port = local_port(&fd).unwrap();
        assert!(port > 0);
        assert!(is_tcp_listener_on(&fd, port));
        assert!(!is_tcp_listener_on(&fd, port.wrapping_add(1)));
        // It really listens.
        std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        // A second bind to the same port fails while it is held.
        assert!(listen_tcp("127.0.0.1".parse().unwrap(), port, 16).is_err());
    }

    #[test]
    fn ready_reports_arrive() {
        let r = ReadySocket::bind(&format!("test-{}", std::process::id())).unwrap();
        assert!(r.try_recv(64).is_none());
        let tx = UnixDatagram::unbound().unwrap();
        let addr = UnixAddr::from_abstract_name(r.name().as_bytes()).unwrap();
        tx.send_to_addr(b"ready x 1", &addr).unwrap();
        assert_eq!(r.try_recv(64).as_deref(), Some(&b"ready x 1"[..]));
    }

    #[test]
    fn takes_a_descriptor_of_another_process() {
        let me = PidFd::open(std::process::id() as i32).unwrap();
        let fd = listen_tcp("127.0.0.1".parse().unwrap(), 0, 16).unwrap();
        let port = local_port(&fd).unwrap();
        let copy = take_fd(&me, fd.as_raw_fd()).unwrap();
        assert!(is_tcp_listener_on(&copy, port));
    }
}
