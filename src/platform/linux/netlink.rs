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

use crate::port::Listener;

/// Every TCP socket in LISTEN state on `port`, IPv4 and IPv6. A dual-stack
/// `::` listener appears once, in the IPv6 answer, with `v6only == false`.
pub fn tcp_listeners(port: u16) -> io::Result<Vec<Listener>> {
    tcp_listeners_in(port, true, true)
}

/// Like [`tcp_listeners`], asking only for the families wanted: readiness
/// polls for a server bound to an IPv4 address need only the IPv4 table.
pub fn tcp_listeners_in(port: u16, v4: bool, v6: bool) -> io::Result<Vec<Listener>> {
    let socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut out = Vec::new();
    for (family, wanted) in [(AF_INET, v4), (AF_INET6, v6)] {
        if wanted {
            dump_family(&socket, family, port, &mut out)?;
        }
    }
    Ok(out)
}

fn dump_family(socket: &Socket, family: u8, port: u16, out: &mut Vec<Listener>) -> io::Result<()> {
    let mut socket_id = if family == AF_INET {
        SocketId::new_v4()
    } else {
        SocketId::new_v6()
    };
    // The kernel applies the source-port filter to listening sockets during a
    // dump, so a free port costs one short round trip whatever the socket count.
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
    let mut buf = vec![0u8; packet.buffer_len()];
    packet.serialize(&mut buf[..]);
    socket.send(&buf[..], 0)?;

    let mut recv_buf = vec![0u8; 32 * 1024];
    loop {
        let size = socket.recv(&mut &mut recv_buf[..], 0)?;
        if size == 0 {
            return Ok(());
        }
        let mut offset = 0;
        while offset < size {
            let msg = <NetlinkMessage<SockDiagMessage>>::deserialize(&recv_buf[offset..size])
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
