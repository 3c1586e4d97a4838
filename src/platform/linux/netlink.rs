//! Who listens on a TCP port, answered by the kernel through a sock_diag
//! (`NETLINK_SOCK_DIAG`) dump filtered to LISTEN sockets on that port.

use std::io;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_sock_diag::{
    constants::{AF_INET, AF_INET6, IPPROTO_TCP},
    inet::{nlas::Nla, ExtensionFlags, InetRequest, SocketId, StateFlags},
    SockDiagMessage,
};
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr};

use std::net::IpAddr;

/// One listening TCP socket, as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub addr: IpAddr,
    pub port: u16,
    pub inode: u64,
    /// The socket's owner.
    pub uid: u32,
    /// For IPv6 sockets: true when `IPV6_V6ONLY` is set (no IPv4 traffic).
    pub v6only: bool,
}

/// Every TCP socket in LISTEN state on `port`, IPv4 and IPv6. A dual-stack
/// `::` listener appears once, in the IPv6 answer, with `v6only == false`.
pub fn tcp_listeners(port: u16) -> io::Result<Vec<Listener>> {
    DiagSocket::new()?.listeners(port, true, true)
}

/// A sock_diag socket and its receive buffer, kept for repeated queries
/// (readiness asks every millisecond: no socket set-up or buffer per poll).
pub struct DiagSocket {
    socket: Socket,
    buf: Vec<u8>,
}

impl DiagSocket {
    /// Opens a connected `NETLINK_SOCK_DIAG` socket.
    pub fn new() -> io::Result<Self> {
        let socket = Socket::new(NETLINK_SOCK_DIAG)?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Self {
            socket,
            buf: vec![0u8; 32 * 1024],
        })
    }

    /// The LISTEN sockets on `port` in the families asked for.
    pub fn listeners(&mut self, port: u16, v4: bool, v6: bool) -> io::Result<Vec<Listener>> {
        let mut out = Vec::new();
        for (family, wanted) in [(AF_INET, v4), (AF_INET6, v6)] {
            if wanted {
                self.dump_family(family, port, &mut out)?;
            }
        }
        Ok(out)
    }

    fn dump_family(&mut self, family: u8, port: u16, out: &mut Vec<Listener>) -> io::Result<()> {
        let mut socket_id = if family == AF_INET {
            SocketId::new_v4()
        } else {
            SocketId::new_v6()
        };
        // The kernel applies the source-port filter to listening sockets during
        // a dump, so a free port costs one short round trip whatever the socket
        // count.
        socket_id.source_port = port;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        let mut packet = NetlinkMessage::new(
            header,
            SockDiagMessage::InetRequest(InetRequest {
                family,
                protocol: IPPROTO_TCP,
                extensions: ExtensionFlags::empty(),
                states: StateFlags::LISTEN,
                socket_id,
            })
            .into(),
        );
        packet.finalize();
        let mut req = [0u8; 128];
        let len = packet.buffer_len();
        packet.serialize(&mut req[..len]);
        self.socket.send(&req[..len], 0)?;

        loop {
            let size = self.socket.recv(&mut &mut self.buf[..], 0)?;
            if size == 0 {
                return Ok(());
            }
            let mut offset = 0;
            while offset < size {
                let msg = <NetlinkMessage<SockDiagMessage>>::deserialize(&self.buf[offset..size])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = msg.header.length as usize;
                match msg.payload {
                    NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(resp)) => {
                        let h = &resp.header;
                        if h.socket_id.source_port == port {
                            let v6only = resp.nlas.iter().any(|n| matches!(n, Nla::SkV6Only(true)));
                            out.push(Listener {
                                addr: h.socket_id.source_address,
                                port,
                                inode: u64::from(h.inode),
                                uid: h.uid,
                                v6only,
                            });
                        }
                    }
                    NetlinkPayload::Done(_) => return Ok(()),
                    NetlinkPayload::Error(err) => {
                        // An IPv6-less kernel answers the AF_INET6 dump with an error.
                        if family == AF_INET6 {
                            return Ok(());
                        }
                        return Err(io::Error::other(format!("sock_diag: {err:?}")));
                    }
                    _ => {}
                }
                if len == 0 {
                    break;
                }
                offset += len;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr, TcpListener};

    #[test]
    fn finds_a_listener_and_nothing_on_a_free_port() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let found = tcp_listeners(port).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].addr, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert!(found[0].inode > 0);
        drop(l);
        assert!(tcp_listeners(port).unwrap().is_empty());
    }
}
