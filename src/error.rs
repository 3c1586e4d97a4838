//! Every failure the core can report, as a kind plus the facts behind it;
//! the message is built here, in `Display`, and nowhere else. The Python
//! layer maps each variant to one exception class in a single place.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::port::Holder;

/// A failure of a lifecycle call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An argument was rejected.
    #[error("{arg}{} {problem}", value.as_ref().map(|v| format!(" {v}")).unwrap_or_default())]
    InvalidArgument {
        /// The argument's name, as the caller spells it.
        arg: &'static str,
        /// The rejected value, as the user wrote it (quoted where a string).
        value: Option<String>,
        /// What is wrong with it.
        problem: String,
    },

    /// Something we may not or cannot stop holds the port.
    #[error("Port {port} {situation}: held by {}", who(holders))]
    PortInUse {
        port: u16,
        holders: Vec<Holder>,
        situation: PortSituation,
    },

    /// The server exited (or could not be spawned) before it was ready.
    #[error("{}", start_failed(self))]
    StartFailed {
        name: String,
        address: String,
        /// uvicorn's exit code (None: unknown, or it still ran: a worker failed).
        exit_code: Option<i32>,
        /// Its error output, led by `reason` (`crate::why::tail_led_by`).
        stderr_tail: Option<String>,
        /// False when the output went to the caller's terminal.
        output_captured: bool,
        /// The server's own error (`crate::why::reason`), e.g.
        /// `ModuleNotFoundError: No module named 'x'`.
        reason: Option<String>,
        /// The worker that failed, when it was not uvicorn's main process
        /// (the start failed at once; the rest was stopped).
        worker: Option<i32>,
    },

    /// `app_path` is not uvicorn's `module:attribute` form; nothing was launched.
    #[error("Failed to start {name} server: app_path {app_path:?} is not in uvicorn's 'module:attribute' form (for example 'myapi.main:app'); nothing was launched")]
    AppTarget { name: String, app_path: String },

    /// The server did not listen within `start_timeout`; it was stopped.
    #[error("Failed to start {name} server: not listening on port {port} after {:.1} s (start_timeout); it was stopped, with {:.1} s to exit. If it needs longer to start, raise start_timeout{}", timeout.as_secs_f64(), grace.as_secs_f64(), reason.as_ref().map(|r| format!(". Its last error: {r}")).unwrap_or_default())]
    StartTimeout {
        name: String,
        port: u16,
        timeout: Duration,
        /// How long it was then given to exit before SIGKILL.
        grace: Duration,
        stderr_tail: Option<String>,
        /// The last error in its output, if any (`crate::why::reason`).
        reason: Option<String>,
    },

    /// A file system operation failed on `path`.
    #[error("{what} {}: {source}", path.display())]
    Path {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    /// Any other operating-system failure.
    #[error("{what}: {source}")]
    Os {
        what: &'static str,
        source: std::io::Error,
    },

    /// The waiting call was interrupted (Ctrl-C); cleanup already ran.
    #[error("interrupted")]
    Interrupted,

    /// The per-name lock stayed taken past any legitimate start or stop.
    #[error("{} has held the lock {} longer than a start or stop can take; is another manager hung or stopped?",
        holder.map(|p| format!("process {p}")).unwrap_or_else(|| "another process".to_owned()),
        lock_file.display())]
    LockTimeout {
        lock_file: PathBuf,
        holder: Option<i32>,
    },

    /// The name is recorded for a different, running server.
    #[error(
        "Failed to start {name} server: the name {name:?} is taken by a running server \
             (pid {pid}, {app_path} on {host}:{port}); stop it or choose another name"
    )]
    NameTaken {
        name: String,
        pid: i32,
        app_path: String,
        host: String,
        port: u16,
    },

    /// The configuration of a running server cannot change under it.
    #[error("Cannot change {what} of {name} while it runs{}: stop() it first; the new value takes effect at the next start()", pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Running {
        name: String,
        pid: Option<i32>,
        what: String,
    },

    /// The call needs a running server and there is none.
    #[error("{name} is not running")]
    NotRunning { name: String },

    /// `reload()` needs a listening socket held apart from the server.
    #[error("Cannot reload {name}: its listening socket is not held by the manager; create it with hold_socket=True (a server on port 0 holds one)")]
    NoHeldSocket { name: String },

    /// The supervisor of a supervised server failed (not the server itself).
    #[error("Cannot supervise {name}: {message}")]
    Supervisor { name: String, message: String },

    /// A stop could not end every process of the server.
    #[error("{}", match failure {
        StopFailure::GroupSurvived => format!("Failed to stop {name} server: some of its processes survived SIGKILL"),
        StopFailure::LaunchSurvived => format!("Failed to stop {name}: processes of its last launch survived SIGKILL"),
        StopFailure::PortStillHeld(port) => format!("Failed to stop {name}: port {port} is still held by its processes"),
    })]
    StopFailed { name: String, failure: StopFailure },
}

/// Why a port counts as taken, for `Error::PortInUse`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortSituation {
    /// `start()` found it taken; `force_hint` adds how to stop own holders.
    AlreadyInUse { force_hint: bool },
    /// Holders we may not stop (other users, PID 1, ourselves).
    HeldByUnstoppable,
    /// Still taken after `_force_cleanup_port()`.
    StillInUseAfterCleanup,
    /// Still taken after its holders were stopped.
    StillInUseAfterStopping,
}

impl fmt::Display for PortSituation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PortSituation::AlreadyInUse { force_hint: true } => {
                "is already in use (start(force=True) stops holders owned by you)"
            }
            PortSituation::AlreadyInUse { force_hint: false } => "is already in use",
            PortSituation::HeldByUnstoppable => "is held by processes that may not be stopped",
            PortSituation::StillInUseAfterCleanup => "is still in use after cleanup",
            PortSituation::StillInUseAfterStopping => "is still in use after stopping its holders",
        })
    }
}

/// What survived a stop, for `Error::StopFailed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopFailure {
    /// Members of the server's process group outlived SIGKILL.
    GroupSurvived,
    /// Marked processes of a launch whose leader had died outlived SIGKILL.
    LaunchSurvived,
    /// A process of the launch kept the port after SIGKILL.
    PortStillHeld(u16),
}

fn who(holders: &[Holder]) -> String {
    if holders.is_empty() {
        return "an unidentified process".to_owned();
    }
    let names: Vec<String> = holders
        .iter()
        .map(|h| {
            let server = h
                .server
                .as_ref()
                .map(|n| format!(", the managed server '{n}'"))
                .unwrap_or_default();
            format!(
                "pid {} ({}, user {}) on {}{server}",
                h.pid, h.name, h.user, h.address
            )
        })
        .collect();
    names.join("; ")
}

fn start_failed(e: &Error) -> String {
    let Error::StartFailed {
        name,
        address,
        exit_code,
        stderr_tail,
        output_captured,
        reason,
        worker,
    } = e
    else {
        return String::new();
    };
    let cause = match worker {
        Some(pid) => {
            format!("its worker pid {pid} failed before serving on {address}; it was stopped")
        }
        None => format!(
            "uvicorn exited with code {} before listening on {address}",
            exit_code.map_or("unknown".to_owned(), |c| c.to_string()),
        ),
    };
    // The server's own error first, then how it ended.
    let mut message = match reason {
        Some(r) => format!("Failed to start {name} server: {r} ({cause})"),
        None if !output_captured && stderr_tail.is_none() => format!(
            "Failed to start {name} server: {cause} (its output went to the terminal; start(redirect_output=True) captures it)"
        ),
        None => format!("Failed to start {name} server: {cause}"),
    };
    // Output that went to the terminal was seen there: only captured
    // output is repeated in the message.
    if let Some(t) = stderr_tail.as_ref().filter(|_| *output_captured) {
        // The tail leads with the reason: show the lines behind it, unless
        // that was all there was.
        let rest = match (reason, t.split_once('\n')) {
            (Some(r), Some((first, rest))) if first.trim() == r.trim() => rest,
            (Some(r), None) if t.trim() == r.trim() => "",
            _ => t.as_str(),
        };
        // Nothing but the reason again (as a log line): said once is enough.
        let only_reason = rest
            .lines()
            .map(|l| crate::why::unprefixed(l).trim())
            .filter(|l| !l.is_empty())
            .all(|l| Some(l) == reason.as_deref().map(str::trim));
        if !only_reason {
            message.push_str(&format!("\n--- the last lines of its stderr ---\n{rest}"));
        }
    }
    message
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn path(
        what: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::Path {
            what,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn os(what: &'static str, source: std::io::Error) -> Self {
        Error::Os { what, source }
    }

    pub(crate) fn invalid(
        arg: &'static str,
        value: Option<String>,
        problem: impl Into<String>,
    ) -> Self {
        Error::InvalidArgument {
            arg,
            value,
            problem: problem.into(),
        }
    }

    /// The operating system's error number behind this error, if any.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Path { source, .. } | Error::Os { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_built_from_fields() {
        let e = Error::invalid(
            crate::spec::key::PORT,
            Some("0".into()),
            "is outside 1..65535",
        );
        assert_eq!(e.to_string(), "port 0 is outside 1..65535");
        let e = Error::invalid(crate::spec::key::APP_PATH, None, "must not be empty");
        assert_eq!(e.to_string(), "app_path must not be empty");
        let e = Error::PortInUse {
            port: 80,
            holders: vec![],
            situation: PortSituation::AlreadyInUse { force_hint: true },
        };
        assert!(e
            .to_string()
            .starts_with("Port 80 is already in use (start(force=True)"));
        assert!(e.to_string().ends_with("held by an unidentified process"));
        let e = Error::StartFailed {
            name: "api".into(),
            address: "127.0.0.1:80".into(),
            exit_code: Some(1),
            stderr_tail: Some("ImportError: x\nTraceback\nImportError: x".into()),
            output_captured: true,
            reason: Some("ImportError: x".into()),
            worker: None,
        };
        assert!(e.to_string().starts_with(
            "Failed to start api server: ImportError: x (uvicorn exited with code 1 before listening on 127.0.0.1:80)\n"
        ));
        assert!(e.to_string().ends_with("---\nTraceback\nImportError: x"));
        let e = Error::StartFailed {
            name: "api".into(),
            address: "127.0.0.1:80".into(),
            exit_code: Some(3),
            stderr_tail: Some("Error loading ASGI app.\nERROR:    Error loading ASGI app.".into()),
            output_captured: true,
            reason: Some("Error loading ASGI app.".into()),
            worker: None,
        };
        assert!(!e.to_string().contains('\n'), "said once: {e}");
        let e = Error::StartFailed {
            name: "api".into(),
            address: "127.0.0.1:80".into(),
            exit_code: None,
            stderr_tail: Some("RuntimeError: boom".into()),
            output_captured: false,
            reason: Some("RuntimeError: boom".into()),
            worker: Some(12),
        };
        assert_eq!(
            e.to_string(),
            "Failed to start api server: RuntimeError: boom (its worker pid 12 failed before serving on 127.0.0.1:80; it was stopped)"
        );
        let e = Error::os("x", std::io::Error::from_raw_os_error(libc::EACCES));
        assert_eq!(e.errno(), Some(libc::EACCES));
        let e = Error::LockTimeout {
            lock_file: "/l".into(),
            holder: Some(7),
        };
        assert!(e.to_string().starts_with("process 7 has held the lock /l"));
    }
}
