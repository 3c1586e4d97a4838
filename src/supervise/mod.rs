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
//! - `wire`    the configuration handed to a supervisor process
//! - `machine` the supervisor as a pure state machine: `step(event) -> actions`
//! - `daemon`  its driver: the I/O (pidfd, control pipe, timers) on a `Supervised`
//! - `channels` its control pipe (signals as bytes) and what it says (events, log)
//! - `client`  the caller's side: spawn a supervisor, await its report, stop it

mod channels;
pub mod client;
pub mod daemon;
pub mod health;
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
    /// Launches a run and waits until it is ready; its pidfd.
    fn launch(&self, redirect_output: bool, tick: Tick<'_>) -> Result<Arc<PidFd>>;
    /// Takes over the running server `pid` (its supervisor died).
    fn attach(&self, pid: i32) -> Option<Arc<PidFd>>;
    /// Replaces the run with a new generation on the held socket, the old
    /// one stopped with `grace` once the new one is ready; the new pidfd.
    fn reload(&self, redirect_output: bool, grace: Duration, tick: Tick<'_>) -> Result<Arc<PidFd>>;
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

/// How a server is supervised: the restart policy, the health check and
/// the memory limit. The default (restart "no", nothing else) means no
/// supervisor at all: the original's behaviour.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Supervision {
    pub policy: Policy,
    pub health: Option<HealthCheck>,
    /// Resident memory of the server and all its workers, in bytes.
    pub max_memory: Option<u64>,
    /// Run a supervisor even without a restart policy: a watcher that is
    /// the server's parent and records how each run ended (`supervise=True`).
    pub supervise: bool,
    /// Rotate a log file when a line would take it over this many bytes
    /// (`None`: `LOG_MAX_BYTES`; 0: never rotate).
    pub log_max_bytes: Option<u64>,
    /// Rotated files kept (`.1` newest ... `.N`; `None`: `LOG_BACKUP_COUNT`).
    pub log_backup_count: Option<u32>,
    /// Start every log line with an ISO 8601 UTC timestamp.
    pub log_timestamps: bool,
}

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

    /// As `key=value` lines (for the record and the supervisor's wire).
    pub fn to_text(&self) -> String {
        let p = &self.policy;
        let mut t = format!(
            "restart={}\nrestart_delay_ms={}\nrestart_max_delay_ms={}\nrestart_limit={}\nstable_after_ms={}\n",
            p.restart.as_str(),
            p.delay.as_millis(),
            p.max_delay.as_millis(),
            p.limit.map(|l| l.to_string()).unwrap_or_default(),
            p.stable_after.as_millis(),
        );
        if let Some(h) = &self.health {
            t.push_str(&format!(
                "health_check={}\nhealth_interval_ms={}\nhealth_timeout_ms={}\nhealth_failures={}\n",
                crate::record::escape(&h.path),
                h.interval.as_millis(),
                h.timeout.as_millis(),
                h.failures
            ));
        }
        if let Some(m) = self.max_memory {
            t.push_str(&format!("max_memory={m}\n"));
        }
        if self.supervise {
            t.push_str("supervise=1\n");
        }
        if let Some(b) = self.log_max_bytes {
            t.push_str(&format!("log_max_bytes={b}\n"));
        }
        if let Some(n) = self.log_backup_count {
            t.push_str(&format!("log_backup_count={n}\n"));
        }
        if self.log_timestamps {
            t.push_str("log_timestamps=1\n");
        }
        t
    }

    /// Takes one line written by `to_text`: Some(true) if it was one of
    /// ours, Some(false) if not, None if ours but malformed.
    pub fn take(&mut self, k: &str, v: &str) -> Option<bool> {
        let ms = |v: &str| v.parse::<u64>().ok().map(Duration::from_millis);
        let health = || HealthCheck {
            path: String::new(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            failures: 3,
        };
        match k {
            "restart" => self.policy.restart = Restart::parse(v)?,
            "restart_delay_ms" => self.policy.delay = ms(v)?,
            "restart_max_delay_ms" => self.policy.max_delay = ms(v)?,
            "restart_limit" => {
                self.policy.limit = if v.is_empty() {
                    None
                } else {
                    Some(v.parse().ok()?)
                }
            }
            "stable_after_ms" => self.policy.stable_after = ms(v)?,
            "health_check" => {
                self.health.get_or_insert_with(health).path = crate::record::unescape(v)
            }
            "health_interval_ms" => self.health.get_or_insert_with(health).interval = ms(v)?,
            "health_timeout_ms" => self.health.get_or_insert_with(health).timeout = ms(v)?,
            "health_failures" => {
                self.health.get_or_insert_with(health).failures = v.parse().ok()?
            }
            "max_memory" => self.max_memory = Some(v.parse().ok()?),
            "supervise" => self.supervise = v == "1",
            "log_max_bytes" => self.log_max_bytes = Some(v.parse().ok()?),
            "log_backup_count" => self.log_backup_count = Some(v.parse().ok()?),
            "log_timestamps" => self.log_timestamps = v == "1",
            _ => return Some(false),
        }
        Some(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips() {
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
        let mut back = Supervision::default();
        for (k, v) in s.to_text().lines().filter_map(|l| l.split_once('=')) {
            assert_eq!(back.take(k, v), Some(true), "{k}");
        }
        assert_eq!(back, s);
        assert_eq!(back.take("port", "1"), Some(false));
        assert_eq!(back.take("restart", "sometimes"), None);
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
