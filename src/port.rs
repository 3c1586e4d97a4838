//! The port table: which listening sockets would clash with a `bind()` to
//! (host, port), and which processes hold them.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::IpAddr;

use crate::platform;
pub use crate::platform::Listener;

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
    /// The name of the managed server (in the same PID directory) whose
    /// launch this process belongs to, when one was looked up and found.
    pub server: Option<String>,
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
/// that the common cases never read every process's descriptors.
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
        my_uid: platform::euid(),
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
        let uids: HashSet<u32> = listeners.iter().map(|l| l.uid).collect();
        if uids.len() == 1 && uids.contains(&scan.my_uid) {
            // 2. Our own sockets: every process we can read is a candidate,
            // and reading one costs about as much as classifying it would.
            scan.visit_oldest_and_newest();
        } else {
            let mut pids = platform::all_pids();
            pids.retain(|p| !scan.visited.contains(p));
            pids.sort_unstable();
            // 2. Another user's socket (we are root): that user's processes
            // first, found with one stat() each, then everyone else, for a
            // socket handed from one user's process to another's.
            let (owned, others): (Vec<i32>, Vec<i32>) = pids
                .into_iter()
                .partition(|p| platform::owner_uid(*p).is_some_and(|u| uids.contains(&u)));
            scan.visit_until_found(ends_first(&owned));
            scan.visit_until_found(ends_first(&others));
        }
    }
    scan.visit_relatives();
    let mut out: Vec<Holder> = scan.found.into_values().collect();
    out.sort_by_key(|h| h.pid);
    out
}

/// `pids` (sorted) from both ends inwards: oldest, newest, second oldest...
/// Long-running servers tend to be among the oldest processes or the newest
/// ones; crowds of idle processes accumulate in between. Every PID is still
/// visited if need be, so the order only changes how soon a holder is met.
fn ends_first(pids: &[i32]) -> impl Iterator<Item = i32> + '_ {
    let n = pids.len();
    (0..n).map(move |i| {
        if i % 2 == 0 {
            pids[i / 2]
        } else {
            pids[n - 1 - i / 2]
        }
    })
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

    fn visit_until_found(&mut self, pids: impl Iterator<Item = i32>) {
        for pid in pids {
            if !self.missing() {
                return;
            }
            self.visit(pid);
        }
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
        let inodes = platform::socket_inodes(pid);
        self.record(pid, inodes);
    }

    /// Reads processes from both ends of the PID range at once, until every
    /// socket has a holder: one thread streams /proc upwards from the oldest
    /// PID, another steps down from the newest one handed out, until they
    /// meet. Long-running servers tend to be among the oldest or the newest
    /// processes, with idle crowds in between; no full listing of /proc is
    /// made unless the holder really is in the middle.
    fn visit_oldest_and_newest(&mut self) {
        use std::sync::atomic::{AtomicBool, AtomicI32, Ordering::Relaxed};
        let newest = platform::last_pid();
        let done = AtomicBool::new(!self.missing());
        let frontier = AtomicI32::new(0);
        let state = parking_lot::Mutex::new(self);
        let visit = |pid: i32| {
            if state.lock().visited.contains(&pid) {
                return;
            }
            let inodes = platform::socket_inodes(pid);
            let mut scan = state.lock();
            if scan.visited.insert(pid) {
                scan.record(pid, inodes);
                if !scan.missing() {
                    done.store(true, Relaxed);
                }
            }
        };
        std::thread::scope(|s| {
            if let Some(newest) = newest {
                let (visit, done, frontier) = (&visit, &done, &frontier);
                s.spawn(move || {
                    let mut pid = newest;
                    while pid > 1 && pid > frontier.load(Relaxed) && !done.load(Relaxed) {
                        visit(pid);
                        pid -= 1;
                    }
                });
            }
            platform::for_each_pid(|pid| {
                if done.load(Relaxed) {
                    return false;
                }
                frontier.store(pid, Relaxed);
                visit(pid);
                true
            });
        });
    }

    /// Notes which of `pid`'s socket inodes are ones we look for.
    fn record(&mut self, pid: i32, inodes: HashSet<u64>) {
        if !inodes.iter().any(|i| self.by_inode.contains_key(i)) {
            return;
        }
        // A PID probed by number may be a thread: credit its process.
        let pid = match platform::tgid(pid) {
            Some(tgid) if tgid != pid => {
                self.visited.insert(tgid);
                tgid
            }
            _ => pid,
        };
        for inode in inodes {
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
                        server: None,
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
    fn ends_first_visits_every_pid_once() {
        let pids: Vec<i32> = (1..=7).collect();
        let order: Vec<i32> = ends_first(&pids).collect();
        assert_eq!(order, vec![1, 7, 2, 6, 3, 5, 4]);
        let even: Vec<i32> = ends_first(&pids[..6]).collect();
        assert_eq!(even, vec![1, 6, 2, 5, 3, 4]);
        assert_eq!(ends_first(&[]).count(), 0);
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
