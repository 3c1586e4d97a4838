//! The supervisor's state file, `.upsonic_{name}_server.sup` beside the PID
//! record: which process supervises the server (PID + start tick + boot, so
//! a reused PID is never taken for it) and how supervision goes. Written
//! atomically by the supervisor on every change; read by `status()`,
//! `stop()` and `start()` in any process. The PID file keeps naming the
//! server itself, as upsonic's original expects.
//!
//! The file is `SupState` as one JSON object (serde). A file in the
//! `key=value` form of releases before it still reads (`legacy`), so a
//! server supervised before an upgrade stays visible and stoppable.

use serde::{Deserialize, Serialize};

use crate::platform::{self, PidFd};
use crate::record::{self, Paths};

/// Where supervision stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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
    fn from_word(s: &str) -> Option<Self> {
        Some(match s {
            "starting" => Phase::Starting,
            "running" => Phase::Running,
            "backoff" => Phase::Backoff,
            _ => return None,
        })
    }
}

/// What the state file says. Fields missing from a file take their
/// default; fields this release does not know are skipped.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
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

    /// The file's contents: one JSON object and a newline.
    fn to_json(&self) -> Vec<u8> {
        // Plain fields: serialization cannot fail.
        let mut out = serde_json::to_vec(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Reads either form: JSON, or the `key=value` lines of a release
    /// before it. None unless it names a plausible supervisor PID.
    fn parse(text: &str) -> Option<Self> {
        let s = if text.trim_start().starts_with('{') {
            serde_json::from_str::<SupState>(text).ok()?
        } else {
            legacy::parse(text)?
        };
        (s.pid > 1).then_some(s)
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
    record::write_atomic(&paths.sup_file, &s.to_json())
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

/// The `key=value` form written before the state file was JSON (one
/// `key=value` line each, `reason` and `replace_error` escaped as
/// `record::escape` does, `supervisor=1` marking the file).
mod legacy {
    use super::{Phase, SupState};
    use crate::record;

    pub(super) fn parse(text: &str) -> Option<SupState> {
        let mut s = SupState::default();
        let mut ours = false;
        for (k, v) in text.lines().filter_map(|l| l.split_once('=')) {
            match k {
                "supervisor" => ours = v == "1",
                "pid" => s.pid = v.parse().ok().filter(|p: &i32| *p > 1)?,
                "start_ticks" => s.start_ticks = v.parse().ok()?,
                "boot_id" => s.boot_id = v.to_owned(),
                "phase" => s.phase = Phase::from_word(v)?,
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
        ours.then_some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AWKWARD: [&str; 7] = [
        "",
        "a\tb",
        "killed by SIGKILL\nsecond line\r\n",
        "back\\slash \\n not a newline",
        "\"quoted\" 'single' =equals=",
        "non-ASCII: é ü 日本 🚀",
        "{\"pid\": 1}",
    ];

    #[test]
    fn round_trips_every_field_and_knows_itself() {
        for text in AWKWARD {
            for phase in [Phase::Starting, Phase::Running, Phase::Backoff] {
                let mut s = SupState::for_self();
                s.phase = phase;
                s.restarts = u32::MAX;
                s.last_exit = Some(-9);
                s.health = Some(text.into());
                s.reason = text.into();
                s.server_pid = 4_194_304;
                s.replaced = 3;
                s.replace_error = text.into();
                s.boot_id = format!("boot {text}");
                let bytes = s.to_json();
                assert_eq!(bytes.iter().filter(|b| **b == b'\n').count(), 1);
                let back = SupState::parse(std::str::from_utf8(&bytes).unwrap());
                assert_eq!(back, Some(s.clone()), "{text:?}");
            }
        }
        let mut s = SupState::for_self();
        s.last_exit = None;
        s.health = None;
        let back = SupState::parse(std::str::from_utf8(&s.to_json()).unwrap()).unwrap();
        assert_eq!(back, s);
        assert!(s.is_alive());
        assert!(s.pin().is_some());
        let mut other = s.clone();
        other.start_ticks += 1;
        assert!(!other.is_alive(), "a reused PID is not the supervisor");
        for bad in ["pid=5\n", "{\"pid\":1}", "{\"pid\":\"x\"}", "{", "", "{}"] {
            assert_eq!(SupState::parse(bad), None, "{bad:?}");
        }
        // Newer fields are skipped, missing ones take their default.
        let sparse = SupState::parse("{\"pid\":77,\"start_ticks\":5,\"future\":[1]}").unwrap();
        assert_eq!(
            (sparse.pid, sparse.start_ticks, sparse.phase),
            (77, 5, Phase::Starting)
        );
    }

    #[test]
    fn a_state_file_of_the_release_before_still_reads() {
        // Written by the release before this one (key=value lines), as a
        // supervisor started before an upgrade left it.
        let old = "supervisor=1\npid=4242\nstart_ticks=123456\nboot_id=3f1c0a9e-1d2b-4c5d-8e9f-0a1b2c3d4e5f\nphase=backoff\nrestarts=2\nlast_exit=-9\nhealth=failing\nreason=killed by SIGKILL\\nafter\\ta tab \\\\ backslash\nserver_pid=0\nreplaced=1\nreplace_error=\n";
        let s = SupState::parse(old).unwrap();
        assert_eq!(
            s,
            SupState {
                pid: 4242,
                start_ticks: 123_456,
                boot_id: "3f1c0a9e-1d2b-4c5d-8e9f-0a1b2c3d4e5f".into(),
                phase: Phase::Backoff,
                restarts: 2,
                last_exit: Some(-9),
                health: Some("failing".into()),
                reason: "killed by SIGKILL\nafter\ta tab \\ backslash".into(),
                server_pid: 0,
                replaced: 1,
                replace_error: String::new(),
            }
        );
        // The running phase with no exit yet and no health probe.
        let old = "supervisor=1\npid=99\nstart_ticks=7\nboot_id=\nphase=running\nrestarts=0\nlast_exit=\nhealth=\nreason=\nserver_pid=100\nreplaced=0\nreplace_error=\n";
        let s = SupState::parse(old).unwrap();
        assert_eq!(
            (s.phase, s.last_exit, s.health, s.server_pid),
            (Phase::Running, None, None, 100)
        );
        // Not a supervisor's file.
        assert_eq!(SupState::parse("pid=99\nstart_ticks=7\n"), None);
    }
}
