//! The caller's lifeline (`stop_with_caller`): one pipe per process, whose
//! write end only this process holds (close-on-exec, never handed to a
//! child) and whose read end every server or supervisor started with
//! `stop_with_caller` gets. When this process ends, however it ends (exit,
//! SIGTERM, SIGKILL, Ctrl-C), the kernel closes the write end, the readers
//! see end-of-file, and stop: the launcher (`_launch.py`) stops its server's
//! whole group, a supervisor ends supervision (`daemon.rs`).
//!
//! A process forked from this one without exec (`os.fork()`,
//! multiprocessing's fork start method) inherits the write end: servers it
//! starts get a lifeline of its own, but those of the parent then also live
//! until the fork ends.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use parking_lot::Mutex;

use crate::error::{Error, Result};

/// (the process that made it, read end, write end).
static PIPE: Mutex<Option<(u32, OwnedFd, OwnedFd)>> = Mutex::new(None);

/// The read end of this process's lifeline, made on first use.
pub fn read_end() -> Result<RawFd> {
    let mut pipe = PIPE.lock();
    let me = std::process::id();
    if let Some((pid, r, _)) = pipe.as_ref() {
        if *pid == me {
            return Ok(r.as_raw_fd());
        }
    }
    // None yet, or one made by the process we were forked from: ours must
    // end with us, not with it. (The inherited copies are kept open: a
    // forked child closing them would not change when the parent's end.)
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| Error::os("creating the lifeline pipe", e.into()))?;
    let fd = r.as_raw_fd();
    if let Some(old) = pipe.replace((me, r, w)) {
        std::mem::forget(old);
    }
    Ok(fd)
}

/// Called by a server's launcher once its lifeline ended (the caller is
/// gone and the server is stopping with it): removes the record at
/// `pid_file` while it names this process, as a stop would, and keeps the
/// run as "stopped" when its configuration asked for history. Without it a
/// server that ended with its caller was listed as "died" until `forget`.
/// Returns whether the record was ours.
pub fn release_record(pid_file: &std::path::Path) -> bool {
    use crate::record::{self, End, LastRun};
    let paths = record::Paths::for_pid_file(pid_file);
    let me = crate::platform::own_pid();
    let Some(identity) = record::read_identity(&paths).filter(|id| id.pid == me) else {
        return false;
    };
    // A supervisor that ended outright (`upsonic-server run` killed with
    // SIGKILL: the lifeline was its) left its state naming this server; its
    // count of restarts belongs to the run kept below.
    use crate::supervise::state;
    let sup = state::read(&paths).filter(|s| s.server_pid == me);
    if identity.config.as_ref().is_some_and(|c| c.spec.history) {
        let ended_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let last = LastRun {
            identity,
            end: End::Stopped,
            ended_ms,
            restarts: sup.as_ref().map_or(0, |s| s.restarts),
        };
        let _ = record::write_last(&paths, &last);
    }
    // Under the name's lock when it is free (a start or stop of the name
    // under way decides for itself), which then goes too, as after a stop.
    let lock = crate::lock::try_acquire(&paths.lock_file).ok().flatten();
    record::remove_if_names(&paths, me, i32::MAX);
    // Nothing of that run may be left behind: its state goes too (under the
    // lock only, so that a start attaching a new supervisor keeps its own).
    if let Some(sup) = sup.filter(|_| lock.is_some()) {
        // Its end is what ended our lifeline, but it may still be being torn
        // down (descriptors close before the process is gone): wait a little.
        if let Some(fd) = sup.pin() {
            let _ = fd.wait_exit(std::time::Duration::from_secs(1));
        }
        if !sup.is_alive() {
            state::remove_if_names(&paths, sup.pid);
        }
    }
    if let Some(lock) = lock {
        lock.release_and_remove();
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pipe_per_process_and_nobody_else_writes() {
        let a = read_end().unwrap();
        assert_eq!(read_end().unwrap(), a);
        // The write end is close-on-exec: no child we spawn keeps it.
        let guard = PIPE.lock();
        let (_, _, w) = guard.as_ref().unwrap();
        let flags = rustix::io::fcntl_getfd(w).unwrap();
        assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
    }
}
