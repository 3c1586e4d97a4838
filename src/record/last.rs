//! How a server's last run ended, kept after its record is gone
//! (`.upsonic_{name}_server.last`): a stopped server stays listed, with its
//! configuration, until it is forgotten or started again.

use std::fs;

use crate::error::Result;

use super::{read_capped, write_atomic, Identity, Paths, MAX_ID_FILE};

/// How a server's last run ended, kept after its record is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// `stop()` ended it.
    Stopped,
    /// `stop()` ended it, but only with SIGKILL: it (or one of its
    /// processes) ignored SIGTERM until `stop_timeout`.
    StoppedKilled,
    /// It exited on its own with this code (minus the signal number when a
    /// signal ended it), as its parent saw.
    Exited(i32),
    /// It was gone when we looked; nobody of ours saw its exit status.
    Died,
    /// It never became ready.
    FailedToStart(Option<i32>),
    /// Its supervisor gave up after too many failed runs in a row; how the
    /// last one ended.
    GaveUp(Option<i32>),
}

impl End {
    fn to_text(self) -> String {
        match self {
            End::Stopped => "stopped".into(),
            End::StoppedKilled => "stoppedkill".into(),
            End::Exited(c) => format!("exited {c}"),
            End::Died => "died".into(),
            End::FailedToStart(Some(c)) => format!("failed {c}"),
            End::FailedToStart(None) => "failed".into(),
            End::GaveUp(Some(c)) => format!("gaveup {c}"),
            End::GaveUp(None) => "gaveup".into(),
        }
    }

    fn parse(text: &str) -> Option<Self> {
        let (kind, code) = match text.split_once(' ') {
            Some((k, c)) => (k, Some(c.parse().ok()?)),
            None => (text, None),
        };
        Some(match (kind, code) {
            ("stopped", None) => End::Stopped,
            ("stoppedkill", None) => End::StoppedKilled,
            ("exited", Some(c)) => End::Exited(c),
            ("died", None) => End::Died,
            ("failed", c) => End::FailedToStart(c),
            ("gaveup", c) => End::GaveUp(c),
            _ => return None,
        })
    }

    /// Whether `stop()` ended it (gracefully or not), rather than its own
    /// exit, a crash or its supervisor giving up.
    pub fn by_stop(self) -> bool {
        matches!(self, End::Stopped | End::StoppedKilled)
    }

    /// Whether the run ended as asked, not by a failure: a stop, or an exit
    /// with code 0 or by a signal a stop sends (the supervisor's rule,
    /// `supervise::policy::RunEnd::clean`). A library manager keeps only the other
    /// ends on disk, unless history was asked for.
    pub fn is_clean(self) -> bool {
        match self {
            End::Stopped => true,
            End::Exited(c) => crate::supervise::policy::RunEnd::Exited(Some(c)).clean(),
            _ => false,
        }
    }

    /// The exit code, when known.
    pub fn exit_code(self) -> Option<i32> {
        match self {
            End::Exited(c) | End::FailedToStart(Some(c)) | End::GaveUp(Some(c)) => Some(c),
            _ => None,
        }
    }

    /// In the operator's words: "stopped", "exited with code 1", "killed by SIGKILL".
    pub fn describe(self) -> String {
        let code = |c: i32| {
            if c < 0 {
                format!("killed by {}", signal_name(-c))
            } else {
                format!("exited with code {c}")
            }
        };
        match self {
            End::Stopped => "stopped".into(),
            End::StoppedKilled => {
                "stopped with SIGKILL (it did not exit within stop_timeout of SIGTERM)".into()
            }
            End::Exited(c) => code(c),
            End::Died => "died (exit status unknown: it was not our child)".into(),
            End::FailedToStart(Some(c)) => format!("failed to start ({})", code(c)),
            End::FailedToStart(None) => "failed to start".into(),
            End::GaveUp(Some(c)) => format!("failed: restarts gave up (last run {})", code(c)),
            End::GaveUp(None) => "failed: restarts gave up".into(),
        }
    }
}

/// `SIGKILL` for 9, and so on; `signal N` for numbers without a name.
pub fn signal_name(n: i32) -> String {
    nix::sys::signal::Signal::try_from(n)
        .map(|s| s.as_str().to_owned())
        .unwrap_or_else(|_| format!("signal {n}"))
}

/// What is kept of a server's last run once its record is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastRun {
    pub identity: Identity,
    pub end: End,
    /// When the end was seen, milliseconds since the epoch.
    pub ended_ms: u64,
    /// Restarts its supervisor made (0 without one).
    pub restarts: u32,
}

/// Keeps how the last run ended (`.upsonic_{name}_server.last`), with its
/// configuration, so that a stopped server stays listed and can be started
/// again the same way.
pub fn write_last(paths: &Paths, last: &LastRun) -> Result<()> {
    let text = format!(
        "{}end={}\nended_ms={}\nrestarts={}\n",
        last.identity.to_text(),
        last.end.to_text(),
        last.ended_ms,
        last.restarts
    );
    write_atomic(&paths.last_file, text.as_bytes())
}

/// Reads how the last run ended, if kept.
pub fn read_last(paths: &Paths) -> Option<LastRun> {
    let bytes = read_capped(&paths.last_file, MAX_ID_FILE)?;
    let text = std::str::from_utf8(&bytes).ok()?;
    let identity = Identity::parse(text)?;
    let mut end = None;
    let mut ended_ms = 0;
    let mut restarts = 0;
    for (k, v) in text.lines().filter_map(|l| l.split_once('=')) {
        match k {
            "end" => end = End::parse(v),
            "ended_ms" => ended_ms = v.parse().ok()?,
            "restarts" => restarts = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    Some(LastRun {
        identity,
        end: end?,
        ended_ms,
        restarts,
    })
}

/// Forgets the last run.
pub fn remove_last(paths: &Paths) {
    let _ = fs::remove_file(&paths.last_file);
}

#[cfg(test)]
mod tests {
    use super::super::saved::{escape, unescape};
    use super::*;

    #[test]
    fn ends_in_words() {
        assert_eq!(End::Exited(-9).describe(), "killed by SIGKILL");
        assert_eq!(End::Exited(1).describe(), "exited with code 1");
        assert_eq!(
            End::parse(&End::FailedToStart(Some(3)).to_text()),
            Some(End::FailedToStart(Some(3)))
        );
        assert_eq!(End::parse("exited x"), None);
        assert_eq!(
            End::parse(&End::GaveUp(Some(-9)).to_text()),
            Some(End::GaveUp(Some(-9)))
        );
        assert_eq!(
            End::GaveUp(Some(1)).describe(),
            "failed: restarts gave up (last run exited with code 1)"
        );
        assert_eq!(unescape(&escape("a\\n\nb\r")), "a\\n\nb\r");
    }

    #[test]
    fn clean_ends_are_stops_and_the_signals_a_stop_sends() {
        assert!(End::Stopped.is_clean());
        assert!(End::Exited(0).is_clean());
        assert!(End::Exited(-15).is_clean());
        assert!(!End::Exited(1).is_clean());
        assert!(!End::Exited(-9).is_clean());
        assert!(!End::Died.is_clean());
        assert!(!End::FailedToStart(Some(0)).is_clean());
    }
}
