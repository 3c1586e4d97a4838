//! Ending a server: SIGTERM to its process group and to any marked process
//! that escaped it, a wait on pidfds (no sleep-polling), SIGKILL at the
//! deadline. Nothing is ever signalled through a bare, unverified PID.

use std::time::{Duration, Instant};

use crate::claim::{self, Me};
use crate::error::{Error, Result};
use crate::facts;
use crate::platform::{self, PidFd};

/// How long to wait for processes to vanish after SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(3);
/// The longest single blocking wait, so `tick` (Ctrl-C) runs often enough.
const STEP: Duration = Duration::from_millis(20);

/// The processes that make up one server, pinned by pidfds.
#[derive(Debug)]
pub struct Victims {
    /// Who is signalling, for the `claim::may_signal` rule.
    me: Me,
    /// The process-group leader, when the whole group may be signalled.
    pub leader: Option<(i32, std::sync::Arc<PidFd>)>,
    /// Every member to wait for (leader included).
    pub members: Vec<std::sync::Arc<PidFd>>,
    /// Set once the deadline passed and SIGKILL went out: the stop was not
    /// graceful, and whoever reports it says so.
    pub killed: bool,
}

impl Default for Victims {
    fn default() -> Self {
        Self {
            me: facts::me(),
            leader: None,
            members: Vec::new(),
            killed: false,
        }
    }
}

impl Victims {
    /// Adds a process if it may be signalled and is not already listed.
    pub fn add(&mut self, pid: i32) {
        if self.members.iter().any(|m| m.pid() == pid) {
            return;
        }
        let Some(info) = platform::proc_info(pid) else {
            return;
        };
        if !claim::may_signal(pid, Some(info.uid), &self.me) || !info.is_alive() {
            return;
        }
        if let Ok(fd) = PidFd::open(pid) {
            // Re-read after opening: the pidfd now pins the process we checked.
            if platform::proc_info(pid).is_some_and(|i| i.start_ticks == info.start_ticks) {
                self.members.push(std::sync::Arc::new(fd));
            }
        }
    }

    /// Adds a verified group leader (the group may be signalled as a whole)
    /// and its current descendants.
    pub fn add_group(&mut self, leader: std::sync::Arc<PidFd>) {
        let pid = leader.pid();
        // Defence in depth: callers verify the leader, but a group is only
        // ever signalled when its leader is one we may signal at all.
        let owner = platform::proc_info(pid).map(|i| i.uid);
        if !claim::may_signal(pid, owner, &self.me) {
            return;
        }
        if !self.members.iter().any(|m| m.pid() == pid) {
            self.members.push(leader.clone());
        }
        for d in platform::descendants(pid) {
            self.add(d);
        }
        // Our own group is never signalled as a whole: only its members.
        if claim::may_signal_group(pid, owner, &self.me) {
            self.leader = Some((pid, leader));
        }
    }

    fn signal_all(&self, sig: i32) {
        if let Some((pgid, fd)) = &self.leader {
            // The group number is pinned while its leader exists, even as an
            // unreaped zombie of ours, so killpg cannot hit a newer group.
            // `add_group` checked the leader against `may_signal_group`.
            let pinned = !fd.has_exited() || is_our_unreaped_child(*pgid);
            if pinned {
                platform::signal_group(*pgid, sig);
            }
        }
        for m in &self.members {
            let _ = m.signal(sig);
        }
    }

    fn wait_all(
        &mut self,
        deadline: Instant,
        tick: &mut dyn FnMut() -> Result<()>,
    ) -> Result<bool> {
        loop {
            self.members.retain(|m| !m.has_exited());
            if self.members.is_empty() {
                return Ok(true);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            let refs: Vec<&PidFd> = self.members.iter().map(|m| m.as_ref()).collect();
            platform::pidfd::wait_any(&refs, (deadline - now).min(STEP))
                .map_err(|e| Error::os("waiting for the server to exit", e))?;
            tick()?;
        }
    }

    /// TERM, wait up to `timeout`, then KILL and wait again. `sweep` runs once
    /// after the TERM, while the server shuts down, to find stragglers that
    /// left the group; they get the same treatment. Returns true if all exited.
    pub fn terminate(
        &mut self,
        timeout: Duration,
        sweep: &mut dyn FnMut(&mut Victims),
        tick: &mut dyn FnMut() -> Result<()>,
    ) -> Result<bool> {
        self.signal_all(libc::SIGTERM);
        let before: Vec<i32> = self.members.iter().map(|m| m.pid()).collect();
        sweep(self);
        for m in &self.members {
            if !before.contains(&m.pid()) {
                let _ = m.signal(libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + timeout;
        let graceful = match self.wait_all(deadline, tick) {
            Ok(done) => done,
            Err(e) => {
                // Interrupted: finish the job quickly rather than leave it half done.
                self.killed = true;
                self.signal_all(libc::SIGKILL);
                let _ = self.wait_all(Instant::now() + KILL_GRACE, &mut || Ok(()));
                return Err(e);
            }
        };
        if graceful {
            return Ok(true);
        }
        self.killed = true;
        self.signal_all(libc::SIGKILL);
        self.wait_all(Instant::now() + KILL_GRACE, &mut || Ok(()))
    }
}

fn is_our_unreaped_child(pid: i32) -> bool {
    platform::proc_info(pid).is_some_and(|i| i.ppid == std::process::id() as i32)
}

/// Finds processes of ours that carry `launch_id` in their environment and
/// started no earlier than `since_ticks`: descendants that left the group.
pub fn marked_processes(launch_id: &str, since_ticks: u64) -> Vec<i32> {
    if launch_id.is_empty() {
        return Vec::new();
    }
    sweep::snapshot()
        .iter()
        .filter(|m| m.start_ticks >= since_ticks && m.launch_id == launch_id)
        .map(|m| m.pid)
        .collect()
}

/// One walk over /proc serves every stop that asked before it began: when a
/// group stops a hundred servers at once, their sweeps for stragglers share
/// one or two walks instead of a hundred (each would read every process of
/// the user). A walk that began after a caller asked is as fresh as one the
/// caller would have made itself.
mod sweep {
    use std::sync::Arc;
    use std::time::Instant;

    use parking_lot::{Condvar, Mutex};

    use crate::claim;
    use crate::facts;
    use crate::platform;

    /// A process of ours that carries a launch marker.
    pub struct Marked {
        pub pid: i32,
        pub start_ticks: u64,
        pub launch_id: String,
    }

    #[derive(Default)]
    struct State {
        walking: bool,
        last: Option<(Instant, Arc<Vec<Marked>>)>,
    }

    static STATE: Mutex<State> = Mutex::new(State {
        walking: false,
        last: None,
    });
    static DONE: Condvar = Condvar::new();

    /// Every marked process of ours, as seen by a walk that began after this call.
    pub fn snapshot() -> Arc<Vec<Marked>> {
        let asked = Instant::now();
        let mut state = STATE.lock();
        loop {
            if let Some((began, marked)) = &state.last {
                if *began >= asked {
                    return marked.clone();
                }
            }
            if !state.walking {
                break;
            }
            DONE.wait(&mut state);
        }
        state.walking = true;
        drop(state);
        let began = Instant::now();
        let marked = Arc::new(walk());
        let mut state = STATE.lock();
        state.walking = false;
        state.last = Some((began, marked.clone()));
        DONE.notify_all();
        marked
    }

    fn walk() -> Vec<Marked> {
        let me = facts::me();
        platform::all_pids()
            .into_iter()
            .filter(|&p| claim::may_signal(p, platform::owner_uid(p), &me))
            .filter_map(|pid| {
                let launch_id = platform::environ_value(pid, crate::protocol::LAUNCH_ENV)?;
                let start_ticks = platform::proc_info(pid)?.start_ticks;
                Some(Marked {
                    pid,
                    start_ticks,
                    launch_id,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::process::Command;

    #[test]
    fn terminates_a_group_that_ignores_term() {
        let mut child = Command::new("sh")
            .args(["-c", "trap '' TERM; sleep 30 & sleep 30 & wait"])
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        std::thread::sleep(Duration::from_millis(200));
        let mut v = Victims::default();
        v.add_group(std::sync::Arc::new(PidFd::open(pid).unwrap()));
        assert!(v.members.len() >= 3, "{:?}", v.members);
        let start = Instant::now();
        let done = v
            .terminate(Duration::from_millis(300), &mut |_| {}, &mut || Ok(()))
            .unwrap();
        assert!(done);
        assert!(start.elapsed() >= Duration::from_millis(300));
        child.wait().unwrap();
    }

    #[test]
    fn sweeps_find_marked_processes_and_share_walks() {
        let mut child = Command::new("sleep")
            .arg("30")
            .env(crate::protocol::LAUNCH_ENV, "sweep-test-launch")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut found = Vec::new();
        while found.is_empty() && Instant::now() < deadline {
            found = marked_processes("sweep-test-launch", 0);
        }
        assert_eq!(found, vec![pid]);
        assert!(marked_processes("another-launch", 0).is_empty());
        assert!(marked_processes("sweep-test-launch", u64::MAX).is_empty());
        // Concurrent sweeps all see it.
        let seen: Vec<Vec<i32>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| marked_processes("sweep-test-launch", 0)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(seen.iter().all(|v| v == &vec![pid]));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(marked_processes("sweep-test-launch", 0).is_empty());
    }

    #[test]
    fn never_signals_self_or_init() {
        let mut v = Victims::default();
        v.add(std::process::id() as i32);
        v.add(1);
        assert!(v.members.is_empty());
    }
}
