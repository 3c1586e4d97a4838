//! What /proc says about a process: identity (PID plus start time in clock
//! ticks), state, owner, group and session, name, command line, sockets.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;

use procfs::process::Process;

/// A snapshot of one process, read through a single /proc directory handle so
/// that every field belongs to the same process even if its PID is reused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    /// One-letter state from /proc/PID/stat (`Z` is a zombie, `X` dead).
    pub state: char,
    /// Start time since boot, in clock ticks: with the PID, the identity.
    pub start_ticks: u64,
    pub uid: u32,
    pub name: String,
    pub rss_bytes: u64,
    /// User plus system CPU time, in clock ticks.
    pub cpu_ticks: u64,
}

impl ProcInfo {
    /// True unless the process is a zombie or being torn down.
    pub fn is_alive(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// State and start time of `pid` from a single read of /proc/PID/stat: the
/// cheapest identity check, used on the `is_running()` path.
pub fn state_and_start(pid: i32) -> Option<(char, u64)> {
    use procfs::FromRead;
    use std::io::Read;
    if pid <= 0 {
        return None;
    }
    // One open and one read into a fixed buffer (a stat line is < 1 KiB),
    // then the library's parser.
    let mut f = fs::File::open(format!("/proc/{pid}/stat")).ok()?;
    let mut buf = [0u8; 2048];
    let n = f.read(&mut buf).ok()?;
    let stat = procfs::process::Stat::from_read(&buf[..n]).ok()?;
    Some((stat.state, stat.starttime))
}

/// Reads the snapshot of `pid`, or `None` if it does not exist (or is unreadable).
pub fn proc_info(pid: i32) -> Option<ProcInfo> {
    if pid <= 0 {
        return None;
    }
    let p = Process::new(pid).ok()?;
    let stat = p.stat().ok()?;
    let uid = p.uid().ok()?;
    Some(ProcInfo {
        pid,
        ppid: stat.ppid,
        pgid: stat.pgrp,
        sid: stat.session,
        state: stat.state,
        start_ticks: stat.starttime,
        uid,
        name: stat.comm,
        rss_bytes: stat.rss.saturating_mul(procfs::page_size()),
        cpu_ticks: stat.utime.saturating_add(stat.stime),
    })
}

/// The command line of `pid` (empty for kernel threads and zombies).
pub fn cmdline(pid: i32) -> Option<Vec<String>> {
    Process::new(pid).ok()?.cmdline().ok()
}

/// True if `pid`'s environment holds `key=value`. Only readable for our own
/// processes (or as root), which is exactly the set we may act on.
pub fn environ_has(pid: i32, key: &str, value: &str) -> bool {
    environ_value(pid, key).as_deref() == Some(value)
}

/// The value of `key` in `pid`'s environment, if readable and set.
pub fn environ_value(pid: i32, key: &str) -> Option<String> {
    let raw = fs::read(format!("/proc/{pid}/environ")).ok()?;
    raw.split(|b| *b == 0).find_map(|entry| {
        let rest = entry.strip_prefix(key.as_bytes())?.strip_prefix(b"=")?;
        String::from_utf8(rest.to_vec()).ok()
    })
}

/// Direct children of `pid`, from every thread's `children` list.
pub fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let path = task.path().join("children");
        if let Ok(text) = fs::read_to_string(path) {
            out.extend(
                text.split_ascii_whitespace()
                    .filter_map(|s| s.parse::<i32>().ok()),
            );
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Every descendant of `pid` (children, grandchildren, ...), not `pid` itself.
pub fn descendants(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut stack = vec![pid];
    let mut seen = HashSet::new();
    while let Some(p) = stack.pop() {
        for c in children(p) {
            if seen.insert(c) {
                out.push(c);
                stack.push(c);
            }
        }
    }
    out
}

/// Inodes of the sockets `pid` has open (empty if unreadable).
pub fn socket_inodes(pid: i32) -> HashSet<u64> {
    let mut out = HashSet::new();
    let entries = read_socket_links(&format!("/proc/{pid}/fd"), &mut out);
    // A zombie thread-group leader whose other threads live on shows no
    // descriptors of its own; the live threads still hold them.
    if entries == Some(0) && proc_info(pid).is_some_and(|i| i.state == 'Z') {
        if let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) {
            for task in tasks.flatten() {
                read_socket_links(&task.path().join("fd").to_string_lossy(), &mut out);
            }
        }
    }
    out
}

/// Adds the socket inodes behind the descriptor links in `dir`; returns how
/// many descriptors it saw (`None` if the directory is unreadable). One
/// `readlink` per descriptor: cheaper than a general-purpose parser.
fn read_socket_links(dir: &str, out: &mut HashSet<u64>) -> Option<usize> {
    let entries = fs::read_dir(dir).ok()?;
    let mut n = 0;
    for e in entries.flatten() {
        n += 1;
        if let Ok(target) = fs::read_link(e.path()) {
            if let Some(inode) = target.to_str().and_then(socket_inode_from_link) {
                out.insert(inode);
            }
        }
    }
    Some(n)
}

/// Parses a descriptor link target such as `socket:[12345]`.
fn socket_inode_from_link(target: &str) -> Option<u64> {
    target
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Calls `f` with each PID in /proc, in ascending order, reading the
/// directory a small batch at a time so that a caller that stops early (by
/// returning false) never pays for listing the rest.
pub fn for_each_pid(mut f: impl FnMut(i32) -> bool) {
    use std::mem::MaybeUninit;
    let Ok(dir) = rustix::fs::open(
        "/proc",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) else {
        return;
    };
    let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
    let mut entries = rustix::fs::RawDir::new(&dir, &mut buf);
    while let Some(Ok(entry)) = entries.next() {
        let Ok(name) = entry.file_name().to_str() else {
            continue;
        };
        if let Ok(pid) = name.parse::<i32>() {
            if !f(pid) {
                return;
            }
        }
    }
}

/// The thread-group (process) ID of `pid`. /proc/TID answers for a thread
/// too, though readdir lists only processes; this maps a thread to its
/// process.
pub fn tgid(pid: i32) -> Option<i32> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The PID most recently handed out in this PID namespace.
pub fn last_pid() -> Option<i32> {
    fs::read_to_string("/proc/sys/kernel/ns_last_pid")
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// Every PID on the machine. Used only as a last resort: callers narrow by
/// process group or by owner first.
pub fn all_pids() -> Vec<i32> {
    let mut pids = Vec::new();
    for_each_pid(|pid| {
        pids.push(pid);
        true
    });
    pids
}

/// The owner of `pid` from one `stat()` of its /proc directory: the cheapest
/// way to narrow a search to one user's processes.
pub fn owner_uid(pid: i32) -> Option<u32> {
    fs::metadata(format!("/proc/{pid}")).ok().map(|m| m.uid())
}

/// This boot's random identifier; with the start time it makes a recorded
/// identity unambiguous across reboots.
pub fn boot_id() -> Option<&'static String> {
    static BOOT_ID: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    BOOT_ID
        .get_or_init(|| {
            fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .ok()
                .map(|s| s.trim().to_owned())
        })
        .as_ref()
}

/// Clock ticks per second, the unit of `start_ticks` and `cpu_ticks`.
pub fn ticks_per_second() -> u64 {
    procfs::ticks_per_second()
}

/// Seconds since boot, from /proc/uptime.
pub fn uptime_secs() -> Option<f64> {
    let text = fs::read_to_string("/proc/uptime").ok()?;
    text.split_ascii_whitespace().next()?.parse().ok()
}

/// The largest PID the kernel hands out.
pub fn pid_max() -> i32 {
    fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4_194_304)
}

/// Whether a plain `bind()` to `::` also takes the IPv4 wildcard.
pub fn ipv6_binds_dual_stack() -> bool {
    fs::read_to_string("/proc/sys/net/ipv6/bindv6only")
        .map(|s| s.trim() == "0")
        .unwrap_or(true)
}

/// The user name for `uid`, or the number as text when it has none.
pub fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => u.name,
        _ => uid.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn reads_own_identity_and_children() {
        let me = std::process::id() as i32;
        let info = proc_info(me).unwrap();
        assert!(info.is_alive());
        assert_eq!(info.uid, nix::unistd::getuid().as_raw());
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let cpid = child.id() as i32;
        assert!(children(me).contains(&cpid));
        assert!(descendants(me).contains(&cpid));
        let cinfo = proc_info(cpid).unwrap();
        assert_eq!(cinfo.ppid, me);
        assert!(cinfo.start_ticks >= info.start_ticks);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(proc_info(cpid).is_none());
    }

    #[test]
    fn zombie_is_not_alive() {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        let fd = crate::platform::PidFd::open(pid).unwrap();
        fd.wait_exit(std::time::Duration::from_secs(5)).unwrap();
        let info = proc_info(pid).unwrap();
        assert_eq!(info.state, 'Z');
        assert!(!info.is_alive());
        child.wait().unwrap();
    }

    #[test]
    fn environ_marker_is_found() {
        let mut child = Command::new("sleep")
            .arg("30")
            .env("UPSONIC_TEST_MARK", "abc")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        // Until exec the child still shows the parent's environment.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !environ_has(pid, "UPSONIC_TEST_MARK", "abc") && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(environ_has(pid, "UPSONIC_TEST_MARK", "abc"));
        assert!(!environ_has(pid, "UPSONIC_TEST_MARK", "ab"));
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
