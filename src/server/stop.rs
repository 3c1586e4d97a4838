//! Ending a launch: our own child, a recorded server, or what is left of a
//! launch whose leader died, each through `terminate::Victims`; then the
//! check that the port was released.

use std::sync::Arc;
use std::time::Duration;

use crate::claim::Claim;
use crate::error::{Error, Result, StopFailure};
use crate::facts::Live;
use crate::platform::{self, PidFd};
use crate::port;
use crate::record::{self, End, Identity};
use crate::terminate::{self, Victims};

use super::{Server, Tick};

impl Server {
    fn stop_failed(&self, failure: StopFailure) -> Error {
        Error::StopFailed {
            name: self.cfg.name.clone(),
            failure,
        }
    }

    /// Stops our launched child (if any) and forgets it. Caller holds the
    /// lock. True when it took SIGKILL (it ignored SIGTERM for `grace`).
    pub(super) fn stop_launched(&self, grace: Duration, tick: Tick<'_>) -> Result<bool> {
        let Some((pidfd, identity, _)) = self.own_child() else {
            return Ok(false);
        };
        let result = self.terminate_server(pidfd.clone(), Some(&identity), grace, tick);
        self.settle_child(&pidfd, result.is_ok());
        record::remove_if_names(&self.paths, identity.pid, self.pid_max);
        result
    }

    /// Under the lock: stops what is left of a recorded launch whose leader
    /// died (e.g. uvicorn workers whose master was SIGKILLed: they keep
    /// serving), found by the launch marker, so that its record can go and
    /// its port is free again. How the launch ended is kept (`.last`): a
    /// stop of a dead server does not erase that it died. Returns how many
    /// orphaned processes it stopped.
    pub(super) fn stop_recorded_orphans(&self, tick: Tick<'_>) -> Result<usize> {
        let Some(rec) = self.read_record() else {
            return Ok(0);
        };
        let Some(id) = &rec.identity else {
            return Ok(0);
        };
        if !matches!(self.claim_of(&rec, &Live::new()), Claim::Orphaned { .. }) {
            return Ok(0);
        }
        let mut victims = Victims::default();
        for p in terminate::marked_processes(&id.launch_id, id.start_ticks) {
            victims.add(p);
        }
        let orphans = victims.members.len();
        if !victims.members.is_empty()
            && !victims.terminate(self.cfg.stop_timeout, &mut |_| {}, tick)?
        {
            return Err(self.stop_failed(StopFailure::LaunchSurvived));
        }
        // Everything alive of that launch is gone; a zombie leader may still
        // hold its group number (its parent has not reaped it), but it tracks
        // nothing any more.
        let end = self.child_exit_of(id.pid).map_or(End::Died, End::Exited);
        self.note_end(id, end);
        record::remove_if_names(&self.paths, rec.pid, self.pid_max);
        Ok(orphans)
    }

    /// Stops a server's whole process group, plus processes of its launch
    /// that left the group, then confirms the port was released. True when
    /// it took SIGKILL (something ignored SIGTERM for `grace`).
    pub(super) fn terminate_server(
        &self,
        leader: Arc<PidFd>,
        identity: Option<&Identity>,
        grace: Duration,
        tick: Tick<'_>,
    ) -> Result<bool> {
        let mut victims = Victims::default();
        victims.add_group(leader.clone());
        let launch = identity.map(|i| (i.launch_id.clone(), i.start_ticks));
        let mut sweep = |v: &mut Victims| {
            if let Some((id, since)) = &launch {
                for p in terminate::marked_processes(id, *since) {
                    v.add(p);
                }
            }
        };
        if !victims.terminate(grace, &mut sweep, tick)? {
            return Err(self.stop_failed(StopFailure::GroupSurvived));
        }
        // Confirm the port is released: a socket still listening there from
        // a process of this launch (one that appeared during the stop) is
        // stopped too. Anyone else's listener is not ours to touch.
        if let Some((id, _)) = &launch {
            let listeners = self.conflicting_listeners()?;
            if !listeners.is_empty() {
                let mut late = Victims::default();
                for h in port::holders_of(&listeners, &[]) {
                    if platform::environ_has(h.pid, crate::protocol::LAUNCH_ENV, id) {
                        late.add(h.pid);
                    }
                }
                if !late.members.is_empty()
                    && !late.terminate(self.cfg.stop_timeout, &mut |_| {}, tick)?
                {
                    return Err(self.stop_failed(StopFailure::PortStillHeld(self.port())));
                }
            }
        }
        Ok(victims.killed)
    }
}
