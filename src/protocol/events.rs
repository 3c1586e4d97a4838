//! The supervisor's events: what a supervisor says to the process that
//! spawned it (the events pipe, `EVENTS_FD`), or to `run --restart`'s own
//! reader. JSON, one object per line (serde_json escapes every control
//! character, so a message with a newline or a tab stays one line and
//! arrives unchanged). Written by `supervise::channels::Events`, read by
//! `supervise::client::await_ready` (the first report) and by
//! `_supervision.py` / `_foreground.py`, which take every key and kind
//! name from `_core` (`NAMES` below), never spelling them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// One event line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// The first run serves: the server's PID and port.
    Ready { server_pid: i32, port: u16 },
    /// Supervision could not begin (bad orders, the first run failed to
    /// start): the caller raises this error.
    Error { error: StartError },
    /// A message for the caller's logger.
    Log { level: Level, message: String },
    /// The server ended and the policy restarts it no more.
    Done,
    /// The supervisor gave up after too many failures in a row.
    Failed,
    /// Supervision ended as asked (`stop()`, SIGTERM).
    Stopped,
}

/// How loud a `Log` event is (the caller maps it to a `logging` level).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Info,
    Warning,
}

impl Level {
    /// "info" or "warning": the same word the JSON carries.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => LEVEL_INFO,
            Level::Warning => LEVEL_WARNING,
        }
    }

    /// The level named `word`; anything but "warning" is `Info`.
    pub fn from_word(word: &str) -> Self {
        if word == LEVEL_WARNING {
            Level::Warning
        } else {
            Level::Info
        }
    }
}

/// Why supervision could not begin, as the caller rebuilds it into the
/// same `Error` (the supervisor's `StartFailed`/`StartTimeout` raise in the
/// caller exactly as an unsupervised start's would). Durations in
/// milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StartError {
    StartFailed {
        address: String,
        exit_code: Option<i32>,
        stderr_tail: Option<String>,
        output_captured: bool,
        reason: Option<String>,
        worker: Option<i32>,
    },
    StartTimeout {
        port: u16,
        timeout_ms: u64,
        grace_ms: u64,
        stderr_tail: Option<String>,
        reason: Option<String>,
    },
    /// Any other error, by its message (the caller raises it as a
    /// supervisor error).
    Other { message: String },
}

impl StartError {
    /// The wire form of `e` (the server's name is the caller's already).
    pub fn of(e: &Error) -> Self {
        match e {
            Error::StartFailed {
                address,
                exit_code,
                stderr_tail,
                output_captured,
                reason,
                worker,
                ..
            } => StartError::StartFailed {
                address: address.clone(),
                exit_code: *exit_code,
                stderr_tail: stderr_tail.clone(),
                output_captured: *output_captured,
                reason: reason.clone(),
                worker: *worker,
            },
            Error::StartTimeout {
                port,
                timeout,
                grace,
                stderr_tail,
                reason,
                ..
            } => StartError::StartTimeout {
                port: *port,
                timeout_ms: timeout.as_millis() as u64,
                grace_ms: grace.as_millis() as u64,
                stderr_tail: stderr_tail.clone(),
                reason: reason.clone(),
            },
            other => StartError::Other {
                message: other.to_string(),
            },
        }
    }

    /// The error it describes, for server `name`.
    pub fn into_error(self, name: &str) -> Error {
        let name = name.to_owned();
        match self {
            StartError::StartFailed {
                address,
                exit_code,
                stderr_tail,
                output_captured,
                reason,
                worker,
            } => Error::StartFailed {
                name,
                address,
                exit_code,
                stderr_tail,
                output_captured,
                reason,
                worker,
            },
            StartError::StartTimeout {
                port,
                timeout_ms,
                grace_ms,
                stderr_tail,
                reason,
            } => Error::StartTimeout {
                name,
                port,
                timeout: Duration::from_millis(timeout_ms),
                grace: Duration::from_millis(grace_ms),
                stderr_tail,
                reason,
            },
            StartError::Other { message } => Error::Supervisor { name, message },
        }
    }
}

impl Event {
    /// The `Error` event for `e`.
    pub fn error(e: &Error) -> Self {
        Event::Error {
            error: StartError::of(e),
        }
    }

    /// The line written for this event, newline included.
    pub fn to_line(&self) -> String {
        // An enum of plain fields always serializes.
        let mut line = serde_json::to_string(self).unwrap_or_default();
        line.push('\n');
        line
    }

    /// The event on one line (without its newline); None for anything
    /// else (a line of a newer kind, junk).
    pub fn parse(line: &[u8]) -> Option<Self> {
        serde_json::from_slice(line).ok()
    }
}

// ---- the names Python reads events by (exported as `_core` attributes) ----------

/// The key every event has: which kind it is.
pub const KIND: &str = "kind";
pub const READY: &str = "ready";
pub const ERROR: &str = "error";
pub const LOG: &str = "log";
pub const DONE: &str = "done";
pub const FAILED: &str = "failed";
pub const STOPPED: &str = "stopped";
/// `Ready`'s fields.
pub const SERVER_PID: &str = "server_pid";
pub const PORT: &str = "port";
/// `Log`'s fields and its levels.
pub const LEVEL: &str = "level";
pub const MESSAGE: &str = "message";
pub const LEVEL_INFO: &str = "info";
pub const LEVEL_WARNING: &str = "warning";

/// (attribute of `_core`, value) for each name above.
pub const NAMES: [(&str, &str); 13] = [
    ("EVENT_KIND", KIND),
    ("EVENT_READY", READY),
    ("EVENT_ERROR", ERROR),
    ("EVENT_LOG", LOG),
    ("EVENT_DONE", DONE),
    ("EVENT_FAILED", FAILED),
    ("EVENT_STOPPED", STOPPED),
    ("EVENT_SERVER_PID", SERVER_PID),
    ("EVENT_PORT", PORT),
    ("EVENT_LEVEL", LEVEL),
    ("EVENT_MESSAGE", MESSAGE),
    ("EVENT_LEVEL_INFO", LEVEL_INFO),
    ("EVENT_LEVEL_WARNING", LEVEL_WARNING),
];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const AWKWARD: [&str; 8] = [
        "",
        "a\tb",
        "line one\nline two\r\n",
        "back\\slash \\n not a newline",
        "\"quoted\" 'single'",
        "non-ASCII: é ü 日本 🚀",
        "\u{0}nul and \u{1b}[31m escape",
        "{\"kind\":\"done\"}",
    ];

    fn all_events(text: &str) -> Vec<Event> {
        vec![
            Event::Ready {
                server_pid: 4_194_304,
                port: 65_535,
            },
            Event::Log {
                level: Level::Info,
                message: text.into(),
            },
            Event::Log {
                level: Level::Warning,
                message: text.into(),
            },
            Event::Done,
            Event::Failed,
            Event::Stopped,
            Event::Error {
                error: StartError::StartFailed {
                    address: text.into(),
                    exit_code: Some(-9),
                    stderr_tail: Some(text.into()),
                    output_captured: true,
                    reason: Some(text.into()),
                    worker: Some(7),
                },
            },
            Event::Error {
                error: StartError::StartFailed {
                    address: text.into(),
                    exit_code: None,
                    stderr_tail: None,
                    output_captured: false,
                    reason: None,
                    worker: None,
                },
            },
            Event::Error {
                error: StartError::StartTimeout {
                    port: 8000,
                    timeout_ms: 1500,
                    grace_ms: 1000,
                    stderr_tail: Some(text.into()),
                    reason: None,
                },
            },
            Event::Error {
                error: StartError::Other {
                    message: text.into(),
                },
            },
        ]
    }

    #[test]
    fn every_event_round_trips_on_one_line_whatever_its_text() {
        for text in AWKWARD {
            for ev in all_events(text) {
                let line = ev.to_line();
                assert_eq!(line.matches('\n').count(), 1, "{line:?}");
                assert!(line.ends_with('\n') && !line.contains('\t'));
                assert_eq!(Event::parse(line.trim_end().as_bytes()), Some(ev));
            }
        }
        assert_eq!(Event::parse(b"ready 12 8000"), None);
        assert_eq!(Event::parse(br#"{"kind":"news"}"#), None);
    }

    #[test]
    fn the_exported_names_are_the_ones_serde_writes() {
        let kind_of = |ev: &Event| {
            let v: Value = serde_json::from_str(&ev.to_line()).unwrap();
            v[KIND].as_str().unwrap().to_owned()
        };
        let events = all_events("x");
        let kinds: Vec<String> = events.iter().map(kind_of).collect();
        for k in [READY, ERROR, LOG, DONE, FAILED, STOPPED] {
            assert!(kinds.iter().any(|x| x == k), "{k}");
        }
        let ready: Value = serde_json::from_str(&events[0].to_line()).unwrap();
        assert_eq!(ready[SERVER_PID], 4_194_304);
        assert_eq!(ready[PORT], 65_535);
        let log: Value = serde_json::from_str(&events[2].to_line()).unwrap();
        assert_eq!(log[LEVEL], LEVEL_WARNING);
        assert_eq!(log[MESSAGE], "x");
        let info: Value = serde_json::from_str(&events[1].to_line()).unwrap();
        assert_eq!(info[LEVEL], LEVEL_INFO);
        for level in [Level::Info, Level::Warning] {
            assert_eq!(Level::from_word(level.as_str()), level);
        }
        let mut attrs: Vec<_> = NAMES.iter().map(|(a, _)| *a).collect();
        attrs.sort_unstable();
        attrs.dedup();
        assert_eq!(attrs.len(), NAMES.len());
    }

    #[test]
    fn start_errors_come_back_as_the_same_error() {
        let failed = Error::StartFailed {
            name: "api".into(),
            address: "127.0.0.1:8000".into(),
            exit_code: Some(1),
            stderr_tail: Some("Traceback\n\tboom \\ \"é\"".into()),
            output_captured: true,
            reason: Some("RuntimeError: a\tb".into()),
            worker: Some(7),
        };
        let timeout = Error::StartTimeout {
            name: "api".into(),
            port: 8000,
            timeout: Duration::from_millis(1500),
            grace: Duration::from_secs(1),
            stderr_tail: None,
            reason: Some("x".into()),
        };
        for e in [failed, timeout] {
            let line = Event::error(&e).to_line();
            let Some(Event::Error { error }) = Event::parse(line.trim_end().as_bytes()) else {
                panic!("{line}");
            };
            let back = error.into_error("api");
            assert_eq!(back.to_string(), e.to_string());
            assert_eq!(StartError::of(&back), StartError::of(&e));
        }
        let other = Error::NotRunning { name: "api".into() };
        let back = StartError::of(&other).into_error("api");
        assert!(
            matches!(&back, Error::Supervisor { message, .. } if message.contains("api is not running"))
        );
    }
}
