//! The server process this `Server` launched itself: reaping it, and the
//! exit code as Python's `subprocess` reports it. A warm server is not our
//! child: the preloader that forked it reaps it and reports its code.

use std::process::Child;
use std::sync::Arc;

use crate::platform::PidFd;
use crate::record::Identity;

use super::Server;

/// How the server was started, which says who reaps it.
#[derive(Debug)]
pub(super) enum Proc {
    /// Spawned: our child.
    Own(Child),
    /// Forked by the warm-start preloader, its parent.
    Warm(crate::warm::Forked),
}

/// How long the preloader gets to report the code of a server that exited.
const WARM_REPORT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The server process we launched ourselves.
#[derive(Debug)]
pub(super) struct Launched {
    pub child: Proc,
    pub pidfd: Arc<PidFd>,
    pub identity: Identity,
    pub exit: Option<i32>,
}

impl Launched {
    /// Reaps without blocking; the exit code, negative for a signal.
    pub fn poll(&mut self) -> Option<i32> {
        if let (None, Proc::Warm(f)) = (self.exit, &mut self.child) {
            if self.pidfd.has_exited() {
                self.exit = Some(f.exit_code(WARM_REPORT_WAIT));
            }
        }
        if let (None, Proc::Own(child)) = (self.exit, &mut self.child) {
            match child.try_wait() {
                Ok(Some(st)) => self.exit = Some(exit_code(st)),
                Ok(None) => {}
                // Someone else reaped it (e.g. os.waitpid in the caller): the
                // code is lost; report 0 as subprocess.Popen does.
                Err(_) if self.pidfd.has_exited() => self.exit = Some(0),
                Err(_) => {}
            }
        }
        self.exit
    }

    /// Reaps, blocking: only called once the pidfd says it exited.
    pub fn reap(&mut self) -> i32 {
        let child = &mut self.child;
        *self.exit.get_or_insert_with(|| match child {
            // Reaped elsewhere (ECHILD): 0, as subprocess.Popen reports.
            Proc::Own(c) => c.wait().map(exit_code).unwrap_or(0),
            Proc::Warm(f) => f.exit_code(WARM_REPORT_WAIT),
        })
    }
}

/// The exit code, or minus the signal number that ended the process.
fn exit_code(st: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    st.code().or_else(|| st.signal().map(|s| -s)).unwrap_or(-1)
}

impl Server {
    /// Our own child, if we launched one that has not been stopped: its
    /// pidfd, identity and exit code (None while it runs).
    pub(super) fn own_child(&self) -> Option<(Arc<PidFd>, Identity, Option<i32>)> {
        let mut guard = self.launched.lock();
        let l = guard.as_mut()?;
        let exit = l.poll();
        Some((l.pidfd.clone(), l.identity.clone(), exit))
    }

    /// Reaps the children the program let go of that have exited.
    pub(super) fn reap_released(&self) {
        self.released.lock().retain_mut(|l| match l.poll() {
            Some(code) => {
                *self.reaped.lock() = Some((l.identity.pid, code));
                false
            }
            None => true,
        });
    }

    /// Reaps and forgets a child of ours that has exited.
    pub(super) fn forget_exited_child(&self) {
        self.reap_released();
        let mut guard = self.launched.lock();
        if let Some(l) = guard.as_mut() {
            if let Some(code) = l.poll() {
                *self.reaped.lock() = Some((l.identity.pid, code));
                *guard = None;
            }
        }
    }

    /// The exit code of our child `pid`, if it was ours and has exited.
    pub(super) fn child_exit_of(&self, pid: i32) -> Option<i32> {
        let mut guard = self.launched.lock();
        let l = guard.as_mut().filter(|l| l.identity.pid == pid)?;
        l.poll()
    }

    /// Reaps and forgets our child after a stop, if it is gone (`stopped`:
    /// the stop reported success, so the wait cannot block for long).
    pub(super) fn settle_child(&self, pidfd: &PidFd, stopped: bool) {
        let mut guard = self.launched.lock();
        if let Some(l) = guard.as_mut() {
            if pidfd.has_exited() || stopped {
                l.reap();
            }
            if let Some(code) = l.exit {
                *self.reaped.lock() = Some((l.identity.pid, code));
                *guard = None;
            }
        }
    }

    /// Reaps our child after the pidfd said it exited; its exit code.
    pub(super) fn reap_child(&self) -> Option<i32> {
        self.launched.lock().as_mut().map(Launched::reap)
    }
}
