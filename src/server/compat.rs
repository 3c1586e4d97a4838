//! The original's private helpers (`_read_pid`, `_write_pid`,
//! `_cleanup_pid`, `_process`), with the same names and results, and what a
//! `subprocess.Popen`-like `_process` and overridden hooks need: every
//! signal goes to our own child through its pidfd (never a reused PID), and
//! the core alone reaps it.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::record;

use super::{Recorded, Server, Tick};

/// How long one wait on the child's pidfd lasts before `tick` runs.
const WAIT_STEP: Duration = Duration::from_millis(20);

impl Server {
    /// `_read_pid()`.
    pub fn read_pid(&self) -> Option<i32> {
        record::read_pid(&self.paths, self.pid_max)
    }

    /// `_write_pid()`: records our launched child, if any.
    pub fn write_pid(&self) -> Result<bool> {
        let id = self.launched.lock().as_ref().map(|l| l.identity.clone());
        match id {
            Some(id) => record::write(&self.paths, &id).map(|()| true),
            None => Ok(false),
        }
    }

    /// `_cleanup_pid()`: removes the record.
    pub fn cleanup_pid(&self) {
        record::remove(&self.paths);
    }

    /// `_process.pid`: the PID of our launched child, if any.
    pub fn child_pid(&self) -> Option<i32> {
        self.launched.lock().as_ref().map(|l| l.identity.pid)
    }

    /// `_process.poll()`: reaps our child without blocking; `None` while it runs.
    pub fn child_poll(&self) -> Option<i32> {
        self.launched.lock().as_mut().and_then(|l| l.poll())
    }

    /// `poll()` of the child `pid` this manager launched: `Some(None)`
    /// while it runs, `Some(code)` once it ended (also after a stop reaped
    /// and forgot it); `None` when `pid` is not a child of this manager any
    /// more and its end is not known (`_process = None` let go of it).
    pub fn poll_pid(&self, pid: i32) -> Option<Option<i32>> {
        let mut guard = self.launched.lock();
        if let Some(l) = guard.as_mut().filter(|l| l.identity.pid == pid) {
            return Some(l.poll());
        }
        drop(guard);
        self.reap_released();
        if self.released.lock().iter().any(|l| l.identity.pid == pid) {
            return Some(None);
        }
        match *self.reaped.lock() {
            Some((p, code)) if p == pid => Some(Some(code)),
            _ => None,
        }
    }

    /// `wait(timeout)` for our child `pid`: its exit code, or `None` when
    /// `timeout` passed first (or its end is not known: see `poll_pid`).
    /// Waits on the pidfd; the core reaps.
    pub fn wait_pid(
        &self,
        pid: i32,
        timeout: Option<Duration>,
        tick: Tick<'_>,
    ) -> Result<Option<i32>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            // Ended (or unknown): its code. Running: the pidfd to wait on,
            // ours or of a child the program let go of.
            match self.poll_pid(pid) {
                Some(Some(code)) => return Ok(Some(code)),
                None => return Ok(None),
                Some(None) => {}
            }
            let pidfd = {
                let launched = self.launched.lock();
                let released = self.released.lock();
                let found = launched
                    .iter()
                    .chain(released.iter())
                    .find(|l| l.identity.pid == pid)
                    .map(|l| l.pidfd.clone());
                match found {
                    Some(fd) => fd,
                    None => continue,
                }
            };
            let step = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(None);
                    }
                    left.min(WAIT_STEP)
                }
                None => WAIT_STEP,
            };
            pidfd
                .wait_exit(step)
                .map_err(|e| Error::os("waiting for the server", e))?;
            tick()?;
        }
    }

    /// `send_signal(sig)` to our child `pid` through its pidfd; nothing when
    /// it has ended or is not our child (as `Popen.send_signal` does once the
    /// process is known to be gone). True if the signal was sent.
    pub fn signal_pid(&self, pid: i32, sig: i32) -> Result<bool> {
        // Ended (or not ours): nothing is sent. A child the program let go
        // of is still pinned by its pidfd until it is reaped.
        if self.poll_pid(pid) != Some(None) {
            return Ok(false);
        }
        let launched = self.launched.lock();
        let released = self.released.lock();
        let Some(l) = launched
            .iter()
            .chain(released.iter())
            .find(|l| l.identity.pid == pid)
        else {
            return Ok(false);
        };
        if sig == 0 {
            // Only asks whether it exists, as kill(pid, 0) does.
            return Ok(!l.pidfd.has_exited());
        }
        l.pidfd
            .signal(sig)
            .map_err(|e| Error::os("sending a signal to the server", e))
    }

    /// The command line of our child `pid` while it is unreaped (its PID
    /// cannot be reused before then): `Popen.args`.
    pub fn child_cmdline(&self, pid: i32) -> Option<Vec<String>> {
        let guard = self.launched.lock();
        guard.as_ref().filter(|l| l.identity.pid == pid)?;
        crate::platform::cmdline(pid)
    }

    /// Whether `pid` (from an overridden `_read_pid`) is our server, alive
    /// and verified as a PID record would be.
    pub fn pid_is_ours(&self, pid: i32) -> bool {
        self.pin_if_ours(self.recorded_as(pid))
            .is_some_and(|f| f.info.is_alive())
    }

    /// Stops the server `pid` (from an overridden `_read_pid`) if it is
    /// ours, verified as a PID record would be; true if it stopped one.
    /// Anything else is left alone.
    pub fn stop_pid(&self, pid: i32, tick: Tick<'_>) -> Result<bool> {
        let lock = crate::lock::acquire(&self.paths.lock_file, self.lock_deadline(), tick)?;
        let stopped = self.stop_pid_locked(pid, tick);
        // As after any other stop: no lock file is left for the name (taking
        // the lock made one, even when there was nothing to stop).
        lock.release_and_remove();
        stopped
    }

    fn stop_pid_locked(&self, pid: i32, tick: Tick<'_>) -> Result<bool> {
        let Some(found) = self.pin_if_ours(self.recorded_as(pid)) else {
            return Ok(false);
        };
        self.terminate_server(
            found.pidfd.clone(),
            found.identity.as_ref(),
            self.cfg.stop_timeout,
            tick,
        )?;
        record::remove_if_names(&self.paths, pid, self.pid_max);
        Ok(true)
    }

    /// `pid` as if the PID file named it, with our identity file when it
    /// describes that PID.
    fn recorded_as(&self, pid: i32) -> Recorded {
        let identity = record::read_identity(&self.paths).filter(|id| id.pid == pid);
        Recorded { pid, identity }
    }

    /// `_process = None`: lets go of our child; it keeps running, tracked
    /// by the record, and is still reaped here once it exits (a stop, the
    /// next start, a poll), so it never stays a zombie.
    pub fn forget_child(&self) {
        let Some(mut l) = self.launched.lock().take() else {
            return;
        };
        match l.poll() {
            Some(code) => *self.reaped.lock() = Some((l.identity.pid, code)),
            None => self.released.lock().push(l),
        }
    }
}
