//! The port: who holds it, stopping holders we may stop (`force`, the
//! original's `_kill_process_using_port` and `_force_cleanup_port`), and
//! clearing it for a start. Which holders may be stopped is decided by
//! `claim::of_holder`; this file only gathers the holders and acts.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::claim::{self, Facts, HolderFacts};
use crate::error::{Error, PortSituation, Result};
use crate::facts::{self, Live};
use crate::platform::{self, PidFd};
use crate::port::{self, Holder};
use crate::record;
use crate::terminate::Victims;

use super::{Server, Tick};

impl Server {
    /// Listeners that clash with a bind to (host, port).
    pub fn conflicting_listeners(&self) -> Result<Vec<port::Listener>> {
        port::conflicting_listeners(&self.addrs, self.port())
            .map_err(|e| Error::os("reading the port table", e))
    }

    /// Processes holding a socket that clashes with (host, port).
    pub fn port_holders(&self) -> Result<Vec<Holder>> {
        let ls = self.conflicting_listeners()?;
        // Ours first, even when its record names another PID file.
        let ours: Vec<i32> = self.find().map(|f| vec![f.pid]).unwrap_or_default();
        Ok(holders_named(&self.cfg.pid_dir, &ls, &ours))
    }

    /// Whether a bind to (host, port) would fail right now.
    pub fn port_in_use(&self) -> Result<bool> {
        Ok(!self.conflicting_listeners()?.is_empty())
    }

    fn port_in_use_error(&self, mut holders: Vec<Holder>, situation: PortSituation) -> Error {
        name_managed(&self.cfg.pid_dir, &mut holders);
        Error::PortInUse {
            port: self.port(),
            holders,
            situation,
        }
    }

    /// Stops the given holders. A process group whose leader holds the
    /// socket is a server (a master and its workers) and is stopped whole;
    /// any other holder is stopped alone with its descendants, since its
    /// group may be a script or shell job doing other work. Returns how many
    /// groups or processes were stopped.
    fn stop_holders(&self, holders: &[Holder], tick: Tick<'_>) -> Result<usize> {
        let me = facts::me();
        let mut groups = HashSet::new();
        let mut singles = Victims::default();
        // A supervisor first: stopped, it stops its server and supervision
        // ends; its server stopped first would be restarted by it.
        let recorded = Recorded::read(&self.cfg.pid_dir);
        let mut ordered: Vec<&Holder> = holders.iter().collect();
        ordered.sort_by_key(|h| !recorded.is_supervisor(h.pid));
        for h in ordered {
            // Only a leader that holds the socket itself makes a server group.
            let leader_owner = holders.iter().find(|l| l.pid == h.pgid).map(|l| l.uid);
            if claim::may_signal_group(h.pgid, leader_owner, &me) {
                if groups.insert(h.pgid) {
                    if let Ok(fd) = PidFd::open(h.pgid) {
                        // One group per terminate call keeps killpg targets exact.
                        let mut group = Victims::default();
                        group.add_group(Arc::new(fd));
                        group.terminate(self.cfg.stop_timeout, &mut |_| {}, tick)?;
                    }
                }
                continue;
            }
            singles.add(h.pid);
            for d in platform::descendants(h.pid) {
                singles.add(d);
            }
        }
        let n = groups.len() + singles.members.len();
        if !singles.members.is_empty() {
            singles.terminate(self.cfg.stop_timeout, &mut |_| {}, tick)?;
        }
        Ok(n)
    }

    /// Waits briefly for the port to be released after its holders exited.
    fn wait_port_free(&self, tick: Tick<'_>) -> Result<bool> {
        let deadline = Instant::now() + Duration::from_millis(500);
        loop {
            if !self.port_in_use()? {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            tick()?;
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// `_kill_process_using_port()`: stops same-user holders of the port.
    /// True if it stopped something; an error names holders it may not stop.
    pub fn kill_port_holders(&self, tick: Tick<'_>) -> Result<bool> {
        let holders = self.port_holders()?;
        if holders.is_empty() {
            return Ok(false);
        }
        let me = facts::me();
        let (mine, foreign): (Vec<Holder>, Vec<Holder>) = holders
            .into_iter()
            .partition(|h| claim::may_signal(h.pid, Some(h.uid), &me));
        let stopped = if mine.is_empty() {
            0
        } else {
            self.stop_holders(&mine, tick)?
        };
        if !foreign.is_empty() {
            return Err(self.port_in_use_error(foreign, PortSituation::HeldByUnstoppable));
        }
        if stopped > 0 {
            self.wait_port_free(tick)?;
        }
        Ok(stopped > 0)
    }

    /// `_force_cleanup_port()`: frees the port or fails naming who holds it.
    pub fn force_cleanup_port(&self, tick: Tick<'_>) -> Result<()> {
        if !self.port_in_use()? {
            return Ok(());
        }
        self.kill_port_holders(tick)?;
        if self.port_in_use()? {
            let holders = self.port_holders()?;
            return Err(self.port_in_use_error(holders, PortSituation::StillInUseAfterCleanup));
        }
        Ok(())
    }

    /// Before a launch: stops holders of the port that `claim::of_holder`
    /// says may be replaced (leftovers of this server; with `force`, any
    /// holder we may signal), or fails naming those that block it.
    pub(super) fn clear_port_for_start(&self, force: bool, tick: Tick<'_>) -> Result<()> {
        let listeners = self.conflicting_listeners()?;
        if listeners.is_empty() {
            return Ok(());
        }
        let holders = holders_named(&self.cfg.pid_dir, &listeners, &[]);
        let recorded = self.read_record().and_then(|r| r.identity);
        let facts = Live::new();
        let (stoppable, blocking): (Vec<Holder>, Vec<Holder>) =
            holders.into_iter().partition(|h| {
                let hf = HolderFacts {
                    pid: h.pid,
                    uid: h.uid,
                    pgid: h.pgid,
                };
                claim::of_holder(hf, recorded.as_ref(), &self.cfg.app_path, &facts)
                    .replaceable(force)
            });
        if !blocking.is_empty() || stoppable.is_empty() {
            let situation = PortSituation::AlreadyInUse { force_hint: !force };
            return Err(self.port_in_use_error(blocking, situation));
        }
        self.stop_holders(&stoppable, tick)?;
        if !self.wait_port_free(tick)? {
            let holders = self.port_holders()?;
            return Err(self.port_in_use_error(holders, PortSituation::StillInUseAfterStopping));
        }
        Ok(())
    }
}

/// What `pid_dir` records, read once per question: each server's launch
/// marker, PID and name, and each live supervisor's PID and name.
struct Recorded {
    launches: Vec<(String, i32, String)>,
    supervisors: Vec<(i32, String)>,
}

impl Recorded {
    fn read(pid_dir: &std::path::Path) -> Self {
        let mut r = Recorded {
            launches: Vec::new(),
            supervisors: Vec::new(),
        };
        for n in record::list_names(pid_dir, false) {
            let paths = record::Paths::new(pid_dir, &n);
            if let Some(sup) = crate::supervise::state::live(&paths) {
                r.supervisors.push((sup.pid, n.clone()));
            }
            if let Some(id) = record::read_identity(&paths) {
                r.launches.push((id.launch_id, id.pid, n));
            }
        }
        r
    }

    fn is_supervisor(&self, pid: i32) -> bool {
        self.supervisors.iter().any(|(p, _)| *p == pid)
    }

    /// Names each holder that belongs to a recorded server: by its launch
    /// marker, or as the server's live supervisor (it binds the socket
    /// before any run, and keeps it between runs).
    fn name(&self, holders: &mut [Holder]) {
        if self.launches.is_empty() && self.supervisors.is_empty() {
            return;
        }
        let facts = Live::new();
        for h in holders.iter_mut() {
            let leader = if h.pgid > 1 { h.pgid } else { h.pid };
            let marker = facts
                .launch_marker(leader)
                .or_else(|| facts.launch_marker(h.pid));
            let by_launch = marker.and_then(|m| {
                self.launches
                    .iter()
                    .find(|(launch, _, _)| *launch == m)
                    .map(|(_, _, n)| n)
            });
            let by_supervisor = || {
                self.supervisors
                    .iter()
                    .find(|(pid, _)| *pid == h.pid)
                    .map(|(_, n)| n)
            };
            h.server = by_launch.or_else(by_supervisor).cloned();
        }
    }
}

/// Every holder of `listeners`, each named (`name_managed`). The servers
/// and supervisors recorded in `pid_dir` are looked at first with their
/// descendants: a supervisor attached to a running server got its socket
/// from it (`pidfd_getfd`), so neither is the other's relative, and a
/// search that stops at the first holder would miss one of them.
/// `also`: more processes to look at first.
pub fn holders_named(
    pid_dir: &std::path::Path,
    listeners: &[port::Listener],
    also: &[i32],
) -> Vec<Holder> {
    if listeners.is_empty() {
        return Vec::new();
    }
    let recorded = Recorded::read(pid_dir);
    let mut likely: Vec<i32> = also.to_vec();
    likely.extend(recorded.supervisors.iter().map(|(pid, _)| *pid));
    likely.extend(recorded.launches.iter().map(|(_, pid, _)| *pid));
    let mut holders = port::holders_of(listeners, &likely);
    recorded.name(&mut holders);
    holders
}

/// Names, for each holder that belongs to a managed server recorded in
/// `pid_dir`, that server (its launch marker, or its live supervisor): the
/// same answer in `port_holders()`, `PortInUseError` and `diagnose()`.
pub fn name_managed(pid_dir: &std::path::Path, holders: &mut [Holder]) {
    Recorded::read(pid_dir).name(holders);
}
