//! Supervision: keeping a server up. A small supervisor process per server
//! (never a thread in the caller, never one daemon for all) starts it,
//! waits on its pidfd, and after it ends asks `policy::decide` what to do.
//! It probes health (`health`), watches the memory of the server and its
//! workers, publishes what it does in a state file (`state`), and ends
//! supervision on a deliberate stop from any process.
//!
//! - `policy`  the pure decision (restart after a wait, done, give up)
//! - `health`  the HTTP probe
//! - `state`   the `.upsonic_{name}_server.sup` file: who supervises, how it goes
//! - `wire`    the orders handed to a supervisor process (the spec, as JSON)
//! - `machine` the supervisor as a pure state machine: `step(event) -> actions`
//! - `daemon`  its driver: the I/O (pidfd, control pipe, timers) on a `Supervised`
//! - `channels` its control pipe (signals as bytes) and what it says (events, log)
//! - `client`  the caller's side: spawn a supervisor, await its report, stop it

mod channels;
pub mod client;
pub mod daemon;
pub mod health;
pub mod logfile;
pub mod logwriter;
pub mod machine;
pub mod policy;
pub mod state;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

pub use health::HealthCheck;
pub use machine::Settings;
pub use policy::{Policy, Restart};

use crate::platform::PidFd;
use crate::record::{End, Paths};
use crate::{Result, Tick};

/// What the supervisor needs of the server it supervises (`server::Server`
/// implements it): the supervisor depends on this, never on `server`.
pub trait Supervised {
    /// The name, the supervision, the held socket, the stop timeout.
    fn settings(&self) -> Settings;
    /// Where the state file and the records live.
    fn paths(&self) -> &Paths;
    /// The port it serves on (for the ready report).
    fn port(&self) -> u16;
    /// Its log files (the log writer writes them).
    fn log_paths(&self) -> crate::spawn::LogPaths;
    /// Launches a run and waits until it is ready; its pidfd.
    fn launch(&self, redirect_output: bool, tick: Tick<'_>) -> Result<Arc<PidFd>>;
    /// Takes over the running server `pid` (its supervisor died).
    fn attach(&self, pid: i32) -> Option<Arc<PidFd>>;
    /// Replaces the run with a new generation on the held socket, the old
    /// one stopped with `grace` once the new one is ready; the new pidfd.
    /// `confirm` is asked once the new one is ready: false stops it and
    /// keeps the old run (None).
    fn reload(
        &self,
        redirect_output: bool,
        grace: Duration,
        confirm: &mut dyn FnMut() -> bool,
        tick: Tick<'_>,
    ) -> Result<Option<Arc<PidFd>>>;
    /// Stops a run (SIGTERM, SIGKILL after `grace`); its exit code if known.
    fn stop_run(
        &self,
        run: &Arc<PidFd>,
        grace: Duration,
        tick: Tick<'_>,
    ) -> (Result<()>, Option<i32>);
    /// After a run ended: stragglers stopped, how it ended kept, record removed.
    fn end_run(&self, run: &PidFd, exit: Option<i32>);
    /// The exit code of a run that ended (code, minus the signal), if known.
    fn exit_code(&self, run: &PidFd) -> Option<i32>;
    /// Rewrites how the last run ended once supervision is over.
    fn note_final(&self, end: End, restarts: u32);
    /// Resident memory of run `pid` and its workers, in bytes.
    fn memory(&self, pid: i32) -> u64;
    /// One health probe: Err(why) when it failed.
    fn probe(&self, check: &HealthCheck) -> std::result::Result<(), String>;
    /// Closes the listening socket held for the runs (supervision ends:
    /// the port must be free once the state file is gone).
    fn release_socket(&self);
}

pub use crate::supervision::Supervision;

/// The size a log file is rotated at when `log_max_bytes` is not given:
/// 50 MiB, as supervisord's `stdout_logfile_maxbytes`.
pub const LOG_MAX_BYTES: u64 = 50 << 20;

/// The rotated files kept when `log_backup_count` is not given (supervisord's 10).
pub const LOG_BACKUP_COUNT: u32 = 10;

/// How often the memory of a server with a limit is read: a crossing is
/// acted on within this (the goal is one second).
pub const MEMORY_EVERY: Duration = Duration::from_millis(250);

impl Supervision {
    /// True when a supervisor process runs the server.
    /// `supervise=True`, a restart policy, or any log option asks for it
    /// (the log writer is the supervisor's).
    pub fn is_supervised(&self) -> bool {
        self.supervise
            || self.policy.restart != Restart::No
            || self.log_max_bytes.is_some()
            || self.log_backup_count.is_some()
            || self.log_timestamps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips() {
        let s = Supervision {
            policy: Policy {
                restart: Restart::Always,
                delay: Duration::from_millis(250),
                max_delay: Duration::from_secs(7),
                limit: None,
                stable_after: Duration::from_secs(3),
            },
            health: Some(HealthCheck {
                path: "/h?x=1\n".into(),
                interval: Duration::from_millis(500),
                timeout: Duration::from_millis(300),
                failures: 2,
            }),
            max_memory: Some(512 << 20),
            supervise: true,
            log_max_bytes: Some(65536),
            log_backup_count: Some(3),
            log_timestamps: true,
        };
        let text = serde_json::to_string(&s).unwrap();
        assert!(text.contains(r#""restart":"always""#), "{text}");
        assert_eq!(serde_json::from_str::<Supervision>(&text).unwrap(), s);
        assert!(
            serde_json::from_str::<Supervision>(r#"{"policy":{"restart":"sometimes"}}"#).is_err()
        );
        assert!(!Supervision::default().is_supervised());
        let implied = [
            Supervision {
                supervise: true,
                ..Supervision::default()
            },
            Supervision {
                log_max_bytes: Some(0),
                ..Supervision::default()
            },
            Supervision {
                log_backup_count: Some(3),
                ..Supervision::default()
            },
            Supervision {
                log_timestamps: true,
                ..Supervision::default()
            },
        ];
        for s in implied {
            assert!(s.is_supervised(), "{s:?}");
        }
    }
}
