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
//! - `daemon`  the supervisor's event loop (pidfd, control pipe, timers)
//! - `channels` its control pipe (signals as bytes) and what it says (events, log)
//! - `client`  the caller's side: spawn a supervisor, await its report, stop it

mod channels;
pub mod client;
pub mod daemon;
pub mod health;
pub mod logwriter;
pub mod policy;
pub mod state;
pub mod wire;

use std::time::Duration;

pub use health::HealthCheck;
pub use policy::{Policy, Restart};

/// How a server is supervised: the restart policy, the health check and
/// the memory limit. The default (restart "no", nothing else) means no
/// supervisor at all: the original's behaviour.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
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
    pub fn is_supervised(&self) -> bool {
        self.policy.restart != Restart::No
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
    }
}
