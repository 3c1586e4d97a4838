//! The port table: which listening sockets would clash with a `bind()` to
//! (host, port), and which processes hold them.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::IpAddr;

use crate::platform;

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

/// A process that holds a listening socket on the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: i32,
    pub name: String,
    pub uid: u32,
    pub user: String,
    pub pgid: i32,
    pub start_ticks: u64,
    /// The listening address, e.g. `0.0.0.0:8000` or `[::]:8000`.
    pub address: String,
    pub same_user: bool,
}

/// Would a `bind()` to `bind` on the listener's port fail because of `l`?
///
/// `dual_stack_bind` says whether a bind to `::` would also claim IPv4 (the
/// Linux default, `net.ipv6.bindv6only = 0`).
pub fn conflicts(bind: IpAddr, l: &Listener, dual_stack_bind: bool) -> bool {
    match (bind, l.addr) {
        (IpAddr::V4(b), IpAddr::V4(a)) => a.is_unspecified() || b.is_unspecified() || a == b,
        (IpAddr::V6(b), IpAddr::V6(a)) => a.is_unspecified() || b.is_unspecified() || a == b,
        (IpAddr::V4(b), IpAddr::V6(a)) => {
            (a.is_unspecified() && !l.v6only) || a.to_ipv4_mapped() == Some(b)
        }
        (IpAddr::V6(b), IpAddr::V4(_)) => {
            (b.is_unspecified() && dual_stack_bind)
                || b.to_ipv4_mapped().is_some_and(|m| IpAddr::V4(m) == l.addr)
        }
    }
}

/// Formats a socket address the way users type it.
pub fn format_addr(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// Listeners on `port` that clash with binding any of `addrs`.
pub fn conflicting_listeners(addrs: &[IpAddr], port: u16) -> io::Result<Vec<Listener>> {
    let all = platform::tcp_listeners(port)?;
    if all.is_empty() {
        return Ok(all);
    }
    // Only a bind to `::` next to an IPv4 listener depends on the sysctl.
    let dual = addrs.iter().any(|a| a.is_ipv6() && a.is_unspecified())
        && platform::ipv6_binds_dual_stack();
    Ok(all
        .into_iter()
        .filter(|l| addrs.iter().any(|a| conflicts(*a, l, dual)))
        .collect())
}

/// Maps listening sockets to the processes that hold them.
///
/// Looks first among `likely` (e.g. a known server's process group), then
/// among processes owned by each socket's uid, and only then everywhere, so
/// that the common cases never read every process's descriptors. Within one
/// owner, processes with more than the three standard descriptors are read
/// first (one `stat()` each tells the count); the rest only if a socket is
/// still unaccounted for.
///
/// Once every socket has a holder the search stops, after reading the
/// holders' relatives: a socket is shared by inheritance, so pre-fork
/// workers are the descendants of a holder (or of its parent, when the
/// parent holds the socket too). A socket passed to an unrelated process
/// over a Unix socket is the one case this can miss.
pub fn holders_of(listeners: &[Listener], likely: &[i32]) -> Vec<Holder> {
    if listeners.is_empty() {
        return Vec::new();
    }
    let mut scan = Scan {
        by_inode: listeners.iter().map(|l| (l.inode, l)).collect(),
        my_uid: nix::unistd::geteuid().as_raw(),
        found: HashMap::new(),
        seen_inodes: HashSet::new(),
        visited: HashSet::new(),
    };

    // 1. The likely processes and their descendants (pre-fork workers).
    for &p in likely {
        scan.visit(p);
        for d in platform::descendants(p) {
            scan.visit(d);
        }
    }

    if scan.missing() {
        // 2. Processes owned by the sockets' owners: busy ones first.
        let uids: HashSet<u32> = listeners.iter().map(|l| l.uid).collect();
        let mut quiet = Vec::new();
        let mut others = Vec::new();
        let mut busy = Vec::new();
        for pid in platform::all_pids() {
            if scan.visited.contains(&pid) {
                continue;
            }
            match platform::fd_dir_stat(pid) {
                Some((uid, n)) if uids.contains(&uid) => {
                    if n == 0 || n > 3 {
                        busy.push(pid);
                    } else {
                        quiet.push(pid);
                    }
                }
                _ => others.push(pid),
            }
        }
        // 3. Everyone else only for sockets still unaccounted for (a socket
        // handed from one user's process to another's).
        for stage in [busy, quiet, others] {
            for pid in stage {
                if !scan.missing() {
                    break;
                }
                scan.visit(pid);
            }
        }
    }
    scan.visit_relatives();
    let mut out: Vec<Holder> = scan.found.into_values().collect();
    out.sort_by_key(|h| h.pid);
    out
}

struct Scan<'a> {
    by_inode: HashMap<u64, &'a Listener>,
    my_uid: u32,
    found: HashMap<i32, Holder>,
    seen_inodes: HashSet<u64>,
    visited: HashSet<i32>,
}

impl Scan<'_> {
    fn missing(&self) -> bool {
        self.seen_inodes.len() < self.by_inode.len()
    }

    /// Reads the holders' relatives that could share their sockets: their
    /// descendants, and their parent's when the parent holds one too.
    fn visit_relatives(&mut self) {
        let mut queue: Vec<i32> = self.found.keys().copied().collect();
        let mut expanded = HashSet::new();
        while let Some(pid) = queue.pop() {
            if !expanded.insert(pid) {
                continue;
            }
            let mut relatives = platform::descendants(pid);
            if let Some(info) = platform::proc_info(pid) {
                if info.ppid > 1 {
                    relatives.push(info.ppid);
                }
            }
            for r in relatives {
                let before = self.found.len();
                self.visit(r);
                if self.found.len() > before || self.found.contains_key(&r) {
                    queue.push(r);
                }
            }
        }
    }

    fn visit(&mut self, pid: i32) {
        if !self.visited.insert(pid) {
            return;
        }
        for inode in platform::socket_inodes(pid) {
            let Some(l) = self.by_inode.get(&inode) else {
                continue;
            };
            self.seen_inodes.insert(inode);
            if self.found.contains_key(&pid) {
                continue;
            }
            if let Some(info) = platform::proc_info(pid) {
                self.found.insert(
                    pid,
                    Holder {
                        pid,
                        name: info.name.clone(),
                        uid: info.uid,
                        user: platform::user_name(info.uid),
                        pgid: info.pgid,
                        start_ticks: info.start_ticks,
                        address: format_addr(l.addr, l.port),
                        same_user: info.uid == self.my_uid,
                    },
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn l(addr: &str, v6only: bool) -> Listener {
        Listener {
            addr: addr.parse().unwrap(),
            port: 1,
            inode: 1,
            uid: 0,
            v6only,
        }
    }

    #[test]
    fn v4_conflicts() {
        let any4 = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(conflicts(lo, &l("0.0.0.0", false), true));
        assert!(conflicts(any4, &l("127.0.0.1", false), true));
        assert!(conflicts(lo, &l("127.0.0.1", false), true));
        assert!(!conflicts(other, &l("127.0.0.1", false), true));
    }

    #[test]
    fn v6_and_dual_stack_conflicts() {
        let any4 = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        let lo4 = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let any6 = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
        let lo6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        // A dual-stack `::` listener takes IPv4 too; a v6-only one does not.
        assert!(conflicts(lo4, &l("::", false), true));
        assert!(!conflicts(lo4, &l("::", true), true));
        assert!(conflicts(lo6, &l("::", true), true));
        // A specific IPv6 address does not clash with IPv4.
        assert!(!conflicts(any4, &l("::1", false), true));
        // A dual-stack bind to `::` clashes with any IPv4 listener.
        assert!(conflicts(any6, &l("127.0.0.1", false), true));
        assert!(!conflicts(any6, &l("127.0.0.1", false), false));
        assert!(!conflicts(lo6, &l("127.0.0.1", false), true));
    }

    #[test]
    fn formats_addresses() {
        assert_eq!(format_addr("::".parse().unwrap(), 80), "[::]:80");
        assert_eq!(format_addr("0.0.0.0".parse().unwrap(), 80), "0.0.0.0:80");
    }

    #[test]
    fn finds_self_as_holder() {
        let sock = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = sock.local_addr().unwrap().port();
        let ls = conflicting_listeners(&[IpAddr::V4(Ipv4Addr::UNSPECIFIED)], port).unwrap();
        assert_eq!(ls.len(), 1);
        let hs = holders_of(&ls, &[]);
        assert_eq!(hs.len(), 1);
        assert_eq!(hs[0].pid, std::process::id() as i32);
        assert!(hs[0].same_user);
        let none = conflicting_listeners(&["127.0.0.2".parse().unwrap()], port).unwrap();
        assert!(none.is_empty());
    }
}
