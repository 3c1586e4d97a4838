//! A point-in-time view of a server: state, resources, workers and logs.

use std::path::{Path, PathBuf};

use crate::platform;
use crate::record::{End, LastRun};
use crate::spawn::LogPaths;
use crate::supervise::state::{self as sup_state, Phase, SupState};

use super::launch::now_secs;
use super::Server;

/// The state reported by `status()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Alive, and a socket of its group listens on the port.
    Running,
    /// Alive, not listening yet.
    Starting,
    /// A record or child remains, but the process is gone.
    Dead,
    /// Nothing of it remains.
    Stopped,
    /// Supervised, between two runs: waiting before the next restart.
    Backoff,
    /// Its supervisor gave up after too many failed runs in a row.
    Failed,
}

impl State {
    /// The lowercase name used in Python and the CLI.
    pub fn as_str(&self) -> &'static str {
        match self {
            State::Running => "running",
            State::Starting => "starting",
            State::Dead => "dead",
            State::Stopped => "stopped",
            State::Backoff => "backoff",
            State::Failed => "failed",
        }
    }
}

/// A point-in-time view of the server.
#[derive(Debug, Clone)]
pub struct Status {
    pub pid: Option<i32>,
    pub state: State,
    /// Seconds since the epoch.
    pub started_at: Option<f64>,
    pub uptime: Option<f64>,
    /// Resident memory of the server and its descendants.
    pub rss_bytes: Option<u64>,
    /// CPU time of the server and its descendants over their lifetime, in
    /// percent of one core.
    pub cpu_percent: Option<f64>,
    pub workers: Vec<i32>,
    pub exit_code: Option<i32>,
    pub stdout_log: Option<PathBuf>,
    pub stderr_log: Option<PathBuf>,
    /// When the last run was seen to end, seconds since the epoch.
    pub ended_at: Option<f64>,
    /// How the last run ended, in words ("stopped", "killed by SIGKILL").
    pub end_reason: Option<String>,
    /// Supervision: the restart policy, restarts so far, how the last run
    /// ended (exit code or minus the signal), the supervisor's PID (None
    /// when none runs, also when a supervised server lost its supervisor)
    /// and the health check's verdict.
    pub restart: &'static str,
    pub restarts: u32,
    pub last_exit: Option<i32>,
    pub supervisor_pid: Option<i32>,
    pub health: Option<String>,
    /// Started with a supervisor (a restart policy or the watcher), as
    /// recorded: with `supervisor_pid` None while it runs, it lost it.
    pub supervised: bool,
}

impl Status {
    /// Not running: dead while a record or an exited child of ours remains,
    /// or when its last run ended other than by `stop()`; else stopped.
    fn not_running(pid: Option<i32>, child_exit: Option<i32>, last: Option<LastRun>) -> Self {
        let end = child_exit.map(End::Exited).or(last.as_ref().map(|l| l.end));
        // A record whose process is gone, and nobody of ours saw it end.
        let end = end.or(pid.map(|_| End::Died));
        let restarts = last.as_ref().map_or(0, |l| l.restarts);
        let dead = pid.is_some() || end.is_some_and(|e| !e.by_stop());
        Status {
            pid,
            state: if dead { State::Dead } else { State::Stopped },
            started_at: None,
            uptime: None,
            rss_bytes: None,
            cpu_percent: None,
            workers: Vec::new(),
            exit_code: end.and_then(End::exit_code),
            stdout_log: None,
            stderr_log: None,
            ended_at: last
                .filter(|_| child_exit.is_none())
                .map(|l| l.ended_ms as f64 / 1000.0),
            end_reason: end.map(End::describe),
            restart: "no",
            restarts,
            last_exit: None,
            supervisor_pid: None,
            health: None,
            supervised: false,
        }
    }

    /// A running server whose supervisor was killed (no live one was
    /// found): the restarts it counted (its state names this run) still are
    /// the server's, until a new supervisor attaches and goes on counting.
    fn counted_by_a_dead_supervisor(mut self, sup_file: Option<SupState>, pid: i32) -> Self {
        if self.supervisor_pid.is_none() {
            if let Some(s) = sup_file.filter(|s| s.server_pid == pid) {
                self.restarts = s.restarts;
                self.last_exit = s.last_exit;
            }
        }
        self
    }

    /// Adds what the supervisor (live, or gone after giving up) says.
    fn supervised_by(
        mut self,
        (policy, supervised): (&'static str, bool),
        sup: Option<SupState>,
        last: Option<&LastRun>,
    ) -> Self {
        self.restart = policy;
        self.supervised = supervised;
        match sup {
            Some(s) => {
                self.supervisor_pid = Some(s.pid);
                self.restarts = s.restarts;
                self.last_exit = s.last_exit;
                self.health = s.health;
                if s.phase == Phase::Starting && self.pid.is_some() {
                    // A held socket listens before the run is ready.
                    self.state = State::Starting;
                } else if policy == crate::supervise::Restart::No.as_str()
                    && s.phase == Phase::Running
                {
                    // A watcher (restart "no") whose run ended is recording
                    // how: nothing comes back, the state is the run's own.
                } else if self.pid.is_none()
                    || self.state != State::Running && self.state != State::Starting
                {
                    self.state = match s.phase {
                        Phase::Backoff => State::Backoff,
                        _ => State::Starting,
                    };
                    if s.phase == Phase::Backoff {
                        self.end_reason = Some(s.reason);
                    }
                }
            }
            None => {
                if let Some(l) = last {
                    self.restarts = l.restarts;
                    self.last_exit = l.end.exit_code();
                    if matches!(l.end, End::GaveUp(_))
                        && self.pid.is_none_or(|_| self.state != State::Running)
                    {
                        self.state = State::Failed;
                    }
                }
            }
        }
        self
    }
}

/// Resident memory and CPU ticks of `pid` and all its descendants.
pub(super) fn tree_usage(pid: i32) -> Option<(u64, u64)> {
    let info = platform::proc_info(pid)?;
    Some(usage(&info, &platform::descendants(pid)))
}

/// Whether a descendant serves requests: multiprocessing's resource tracker
/// is a helper, counted in memory and CPU but not as a worker.
fn is_worker(pid: i32) -> bool {
    !platform::cmdline(pid).is_some_and(|c| {
        c.iter()
            .any(|a| a.contains("multiprocessing.resource_tracker"))
    })
}

/// Resident memory and CPU ticks of a server and its descendants.
fn usage(leader: &platform::ProcInfo, descendants: &[i32]) -> (u64, u64) {
    descendants
        .iter()
        .filter_map(|p| platform::proc_info(*p))
        .fold((leader.rss_bytes, leader.cpu_ticks), |(rss, cpu), i| {
            (rss + i.rss_bytes, cpu + i.cpu_ticks)
        })
}

impl Server {
    /// CPU time used so far by the server and its descendants, in seconds;
    /// `None` when it does not run. Two readings give recent CPU use.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let f = self.find().filter(|f| f.info.is_alive())?;
        let (_, ticks) = usage(&f.info, &platform::descendants(f.pid));
        Some(ticks as f64 / platform::ticks_per_second().max(1) as f64)
    }

    /// A snapshot of the server's state and resources.
    pub fn status(&self) -> Status {
        let found = self
            .find()
            .filter(|f| f.info.is_alive() && !f.pidfd.has_exited());
        let child_exit = self.launched.lock().as_mut().and_then(|l| l.poll());
        // Read once: the live supervisor's, or a killed one's (its count
        // still is the running server's).
        let sup_file = sup_state::read(&self.paths);
        let sup = sup_file.clone().filter(SupState::is_alive);
        // How the last run ended matters only when none runs now.
        let last = found.is_none().then(|| self.last_run()).flatten();
        let policy = self.recorded_policy(found.as_ref(), last.as_ref());
        let Some(f) = found else {
            let mut base = Status::not_running(self.read_pid(), child_exit, last.clone());
            self.add_orphans(&mut base);
            return base.supervised_by(policy, sup, last.as_ref());
        };
        let descendants = platform::descendants(f.pid);
        let workers: Vec<i32> = descendants
            .iter()
            .copied()
            .filter(|p| is_worker(*p))
            .collect();
        let (rss, cpu) = usage(&f.info, &descendants);
        let hz = platform::ticks_per_second().max(1) as f64;
        // To the millisecond: more digits are noise (and print as such).
        let age = platform::uptime_secs()
            .map(|up| ((up - f.info.start_ticks as f64 / hz).max(0.0) * 1000.0).round() / 1000.0);
        let started_at = match (&f.identity, age) {
            (Some(id), _) if id.started_ms > 0 => Some(id.started_ms as f64 / 1000.0),
            (_, Some(a)) => Some(now_secs() - a),
            _ => None,
        };
        let cpu_percent = age
            .filter(|a| *a > 0.0)
            .map(|a| 100.0 * (cpu as f64 / hz) / a);
        let (stdout_log, stderr_log) = match f.identity.as_ref().map(|i| i.log_dir.as_str()) {
            Some(d) if !d.is_empty() => {
                let lp = LogPaths::new(Path::new(d), &self.cfg.name);
                (Some(lp.stdout), Some(lp.stderr))
            }
            _ => (None, None),
        };
        let state = if self.our_group_listens(f.pid) {
            State::Running
        } else {
            State::Starting
        };
        Status {
            pid: Some(f.pid),
            state,
            started_at,
            uptime: age,
            rss_bytes: Some(rss),
            cpu_percent,
            workers,
            exit_code: None,
            stdout_log,
            stderr_log,
            ended_at: None,
            end_reason: None,
            restart: "no",
            restarts: 0,
            last_exit: None,
            supervisor_pid: None,
            health: None,
            supervised: false,
        }
        .supervised_by(policy, sup, None)
        .counted_by_a_dead_supervisor(sup_file, f.pid)
    }

    /// A recorded server whose leader is gone: processes of its launch
    /// that outlived it (uvicorn workers of a SIGKILLed master keep serving)
    /// are listed as its workers and named in `end_reason`, so nobody takes
    /// "dead" for "nothing runs". `stop()` ends them.
    fn add_orphans(&self, status: &mut Status) {
        let Some(id) = self.read_record().and_then(|r| r.identity) else {
            return;
        };
        let orphans: Vec<i32> = crate::terminate::marked_processes(&id.launch_id, id.start_ticks)
            .into_iter()
            .filter(|p| *p != id.pid && is_worker(*p))
            .collect();
        if orphans.is_empty() {
            return;
        }
        let reason = status
            .end_reason
            .take()
            .unwrap_or_else(|| End::Died.describe());
        let n = orphans.len();
        let noun = if n == 1 { "process" } else { "processes" };
        status.end_reason = Some(format!(
            "{reason}; {n} {noun} of it still run (orphaned workers, pid {}): stop() ends them",
            orphans
                .iter()
                .map(i32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ));
        status.workers = orphans;
    }

    /// The restart policy the server runs under: as recorded when it was
    /// started (another process may have started it), else ours.
    fn recorded_policy(
        &self,
        found: Option<&super::Found>,
        last: Option<&LastRun>,
    ) -> (&'static str, bool) {
        let sup = found
            .and_then(|f| f.identity.as_ref())
            .or(last.map(|l| &l.identity))
            .and_then(|id| id.config.as_ref())
            .map_or(&self.cfg.supervision, |c| &c.spec.supervision);
        (sup.policy.restart.as_str(), sup.is_supervised())
    }
}
