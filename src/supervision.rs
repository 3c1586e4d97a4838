//! How a server is supervised, as settings: the restart policy, the health
//! check, the memory limit, the watcher and the log options. Plain data
//! shared by the spec (`crate::spec`), the record (`crate::record`) and the
//! supervisor (`crate::supervise`, which holds what acts on them and
//! re-exports them), so that the record needs nothing of the supervisor.

use std::time::Duration;

/// When a server that ended is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    /// Never (the original's behaviour; no supervisor at all).
    #[default]
    No,
    /// After an exit other than code 0, a signal, a failed start, or a replacement.
    OnFailure,
    /// After any end that was not a deliberate stop.
    Always,
}

/// The restart policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Policy {
    pub restart: Restart,
    /// The first wait before a restart.
    pub delay: Duration,
    /// The cap of the doubling wait.
    pub max_delay: Duration,
    /// Failed runs in a row before giving up; None: never give up.
    pub limit: Option<u32>,
    /// Uptime after which a run counts as stable (the failure count resets).
    pub stable_after: Duration,
}

/// The health check of a supervised server.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HealthCheck {
    /// The path requested, e.g. "/healthz".
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// Failures in a row that replace the server.
    pub failures: u32,
}

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
