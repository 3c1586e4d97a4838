//! The rest of what the core asks the system: who we are, signals to whole
//! process groups, who holds a file lock, random bytes, memory, the home
//! directory, and starting a child in a session of its own.

use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// The effective user ID of this process.
pub fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// This process's ID.
pub fn own_pid() -> i32 {
    std::process::id() as i32
}

/// This process's process-group ID.
pub fn own_pgid() -> i32 {
    nix::unistd::getpgrp().as_raw()
}

/// Sends `sig` to every member of process group `pgid`. Callers decide
/// whether they may (see `claim::may_signal_group`); this only delivers.
pub fn signal_group(pgid: i32, sig: i32) -> bool {
    match Signal::try_from(sig) {
        Ok(s) => killpg(Pid::from_raw(pgid), s).is_ok(),
        Err(_) => false,
    }
}

/// Whether process group `pgid` still has members (zombies included): a
/// group ID stays taken while it has any, so it cannot have been reused.
pub fn group_has_members(pgid: i32) -> bool {
    pgid > 1 && killpg(Pid::from_raw(pgid), None).is_ok()
}

/// Takes an exclusive `flock` on `file` without waiting: `Ok(false)` while
/// another open file description holds it. It is released when `file` (and
/// any duplicate of it) is closed, or by the kernel when the holder dies.
pub fn try_lock_exclusive(file: &fs::File) -> std::io::Result<bool> {
    use rustix::fs::{flock, FlockOperation};
    match flock(file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK || e == rustix::io::Errno::INTR => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The PID holding a `flock` on `path`, from /proc/locks (matched by inode).
pub fn flock_holder(path: &Path) -> Option<i32> {
    let ino = fs::metadata(path).ok()?.ino();
    let locks = fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|line| parse_lock_line(line, ino))
}

/// One /proc/locks line, e.g. `1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF`:
/// the holder's PID when it is a flock on inode `ino`.
fn parse_lock_line(line: &str, ino: u64) -> Option<i32> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let line_ino: u64 = fields.get(5)?.rsplit(':').next()?.parse().ok()?;
    if fields.get(1) != Some(&"FLOCK") || line_ino != ino {
        return None;
    }
    fields.get(4)?.parse().ok()
}

/// Fills `buf` from the kernel's random source; false if it could not.
pub fn random_bytes(buf: &mut [u8]) -> bool {
    fs::File::open("/dev/urandom").is_ok_and(|mut f| f.read_exact(buf).is_ok())
}

/// Bytes of memory available to new processes (0 if unknown).
pub fn memory_available() -> u64 {
    match sysinfo::System::new() {
        Ok(mut sys) => {
            sys.refresh_memory();
            sys.available_memory()
        }
        Err(_) => 0,
    }
}

/// The user's home directory: `$HOME` when it is absolute, else the
/// password database's entry, else the current directory.
pub fn home_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("HOME").map(PathBuf::from) {
        if home.is_absolute() {
            return home;
        }
    }
    if let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::getuid()) {
        return user.dir;
    }
    std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."))
}

/// Makes `cmd` start its child in a new session (and so a new process
/// group), detached from our terminal and our signals to our group.
pub fn in_new_session(cmd: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and only calls
    // setsid(2), which is async-signal-safe and touches no parent state.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
}

/// Makes `cmd`'s child get exactly the descriptors `map` names (stdio
/// included when mapped), every other one closed at exec; see `handover`.
/// std's own stdio set-up is turned off so that it cannot overwrite a
/// source before the map is applied.
pub fn hand_over(cmd: &mut Command, map: super::handover::FdMap) {
    use std::process::Stdio;
    cmd.stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    // SAFETY: `place` allocates nothing and makes only async-signal-safe
    // system calls (fcntl, dup2, close, close_range).
    unsafe {
        cmd.pre_exec(move || super::handover::place(&map, super::handover::Others::CloseOnExec));
    }
}

/// As PID 1 (a container's init), reaps exited children other than `keep`
/// (whose status its owner collects through its pidfd): orphans the
/// kernel re-parented to us, which would stay zombies otherwise.
pub fn reap_orphans(keep: i32) {
    use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
    loop {
        let peek = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        let pid = match waitid(Id::All, peek) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(s) => match s.pid() {
                Some(p) => p,
                None => return,
            },
        };
        if pid.as_raw() == keep || waitpid(pid, Some(WaitPidFlag::WNOHANG)).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_lines() {
        let l = "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF";
        assert_eq!(parse_lock_line(l, 5678), Some(1234));
        assert_eq!(parse_lock_line(l, 5679), None);
        let posix = "2: POSIX  ADVISORY  WRITE 99 08:01:5678 0 EOF";
        assert_eq!(parse_lock_line(posix, 5678), None);
        assert_eq!(parse_lock_line("junk", 1), None);
    }

    #[test]
    fn random_and_identity() {
        let mut a = [0u8; 16];
        let mut b = [0u8; 16];
        assert!(random_bytes(&mut a) && random_bytes(&mut b));
        assert_ne!(a, b);
        assert_eq!(own_pid(), std::process::id() as i32);
        assert!(group_has_members(own_pgid()) || own_pgid() <= 1);
        assert!(!group_has_members(1));
        assert!(home_dir().is_absolute() || home_dir() == Path::new("."));
    }
}
