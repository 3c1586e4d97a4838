//! The supervisor's state file, `.upsonic_{name}_server.sup` beside the PID
//! record: which process supervises the server (PID + start tick + boot, so
//! a reused PID is never taken for it) and how supervision goes. Written
//! atomically by the supervisor on every change; read by `status()`,
//! `stop()` and `start()` in any process. The PID file keeps naming the
//! server itself, as upsonic's original expects.

use crate::platform::{self, PidFd};
use crate::record::{self, Paths};

/// Where supervision stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    /// Starting a run (the first or a restart).
    #[default]
    Starting,
    /// A run is serving.
    Running,
    /// Waiting before the next restart.
    Backoff,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Running => "running",
            Phase::Backoff => "backoff",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "starting" => Phase::Starting,
            "running" => Phase::Running,
            "backoff" => Phase::Backoff,
            _ => return None,
        })
    }
}

/// What the state file says.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SupState {
    pub pid: i32,
    pub start_ticks: u64,
    pub boot_id: String,
    pub phase: Phase,
    /// Restarts so far (runs started after the first).
    pub restarts: u32,
    /// How the last run ended: exit code, minus the signal, None if unknown.
    pub last_exit: Option<i32>,
    /// "ok" / "failing" once a health check ran.
    pub health: Option<String>,
    /// Why the last restart happened, in words.
    pub reason: String,
    /// The PID of the run that serves (0 between runs).
    pub server_pid: i32,
    /// Replacements asked for (SIGHUP: `restart()`/`reload()`) that have
    /// finished, and why the last one failed ("" if it did not): the asker
    /// waits for the count to move and reports the failure at once.
    pub replaced: u32,
    pub replace_error: String,
}

impl SupState {
    /// A fresh state for the calling process as the supervisor.
    pub fn for_self() -> Self {
        let pid = platform::own_pid();
        Self {
            pid,
            start_ticks: platform::proc_info(pid).map_or(0, |i| i.start_ticks),
            boot_id: platform::boot_id().cloned().unwrap_or_default(),
            ..Self::default()
        }
    }

    fn to_text(&self) -> String {
        format!(
            "supervisor=1\npid={}\nstart_ticks={}\nboot_id={}\nphase={}\nrestarts={}\nlast_exit={}\nhealth={}\nreason={}\nserver_pid={}\nreplaced={}\nreplace_error={}\n",
            self.pid,
            self.start_ticks,
            self.boot_id,
            self.phase.as_str(),
            self.restarts,
            self.last_exit.map(|c| c.to_string()).unwrap_or_default(),
            self.health.as_deref().unwrap_or(""),
            record::escape(&self.reason),
            self.server_pid,
            self.replaced,
            record::escape(&self.replace_error),
        )
    }

    fn parse(text: &str) -> Option<Self> {
        let mut s = SupState::default();
        let mut ours = false;
        for (k, v) in text.lines().filter_map(|l| l.split_once('=')) {
            match k {
                "supervisor" => ours = v == "1",
                "pid" => s.pid = v.parse().ok().filter(|p: &i32| *p > 1)?,
                "start_ticks" => s.start_ticks = v.parse().ok()?,
                "boot_id" => s.boot_id = v.to_owned(),
                "phase" => s.phase = Phase::parse(v)?,
                "restarts" => s.restarts = v.parse().ok()?,
                "last_exit" => s.last_exit = v.parse().ok(),
                "health" => s.health = (!v.is_empty()).then(|| v.to_owned()),
                "reason" => s.reason = record::unescape(v),
                "server_pid" => s.server_pid = v.parse().ok()?,
                "replaced" => s.replaced = v.parse().ok()?,
                "replace_error" => s.replace_error = record::unescape(v),
                _ => {}
            }
        }
        (ours && s.pid > 1).then_some(s)
    }

    /// Whether the process it names is that supervisor, alive: same start
    /// tick and boot, and the same user as us (or we are root).
    pub fn is_alive(&self) -> bool {
        let Some(info) = platform::proc_info(self.pid) else {
            return false;
        };
        let same_boot =
            self.boot_id.is_empty() || platform::boot_id().is_none_or(|b| b == &self.boot_id);
        info.is_alive()
            && info.start_ticks == self.start_ticks
            && same_boot
            && (info.uid == platform::euid() || platform::euid() == 0)
    }

    /// A pidfd on the supervisor, verified after opening (it pins the
    /// process, so the check cannot go stale).
    pub fn pin(&self) -> Option<PidFd> {
        let fd = PidFd::open(self.pid).ok()?;
        self.is_alive().then_some(fd)
    }
}

/// Writes the state atomically.
pub fn write(paths: &Paths, s: &SupState) -> crate::Result<()> {
    record::write_atomic(&paths.sup_file, s.to_text().as_bytes())
}

/// Reads the state file, if present and well-formed.
pub fn read(paths: &Paths) -> Option<SupState> {
    let bytes = record::read_capped(&paths.sup_file, record::MAX_ID_FILE)?;
    SupState::parse(std::str::from_utf8(&bytes).ok()?)
}

/// The live supervisor of this name, if one runs.
pub fn live(paths: &Paths) -> Option<SupState> {
    read(paths).filter(SupState::is_alive)
}

/// Removes the state file only while it names supervisor `pid`.
pub fn remove_if_names(paths: &Paths, pid: i32) {
    if read(paths).is_none_or(|s| s.pid == pid) {
        let _ = std::fs::remove_file(&paths.sup_file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_knows_itself() {
        let mut s = SupState::for_self();
        s.phase = Phase::Backoff;
        s.restarts = 3;
        s.last_exit = Some(-9);
        s.health = Some("failing".into());
        s.reason = "killed by SIGKILL\nx".into();
        assert_eq!(SupState::parse(&s.to_text()), Some(s.clone()));
        assert!(s.is_alive());
        assert!(s.pin().is_some());
        let mut other = s.clone();
        other.start_ticks += 1;
        assert!(!other.is_alive(), "a reused PID is not the supervisor");
        assert_eq!(SupState::parse("pid=5\n"), None);
    }
}
