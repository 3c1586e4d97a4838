//! How a server's last run ended, kept after its record is gone
//! (`.upsonic_{name}_server.last`): a stopped server stays listed, with its
//! configuration, until it is forgotten or started again.
//!
//! The file is one JSON object (serde): how the run ended, when, its
//! restarts, and its PID record verbatim (`record`: the identity file's
//! text, in whatever form the record codec writes it). A file in the
//! `key=value` form of the release before it still reads (`legacy`).

use std::fs;

use serde::{Deserialize, Serialize};

use crate::error::Result;

use super::{read_capped, write_atomic, Identity, Paths, MAX_ID_FILE};

/// How a server's last run ended, kept after its record is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "code", rename_all = "snake_case")]
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
    /// Whether `stop()` ended it (gracefully or not), rather than its own
    /// exit, a crash or its supervisor giving up.
    pub fn by_stop(self) -> bool {
        matches!(self, End::Stopped | End::StoppedKilled)
    }

    /// Whether the run ended as asked, not by a failure: a stop, or a
    /// `clean_exit`. A library manager keeps only the other ends on disk,
    /// unless history was asked for.
    pub fn is_clean(self) -> bool {
        match self {
            End::Stopped => true,
            End::Exited(c) => clean_exit(c),
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

/// Whether exit status `code` (minus the signal number for a signal)
/// means the server ended as asked: code 0 or, as systemd counts it, death
/// by SIGTERM, SIGINT, SIGHUP or SIGPIPE (uvicorn re-raises the signal that
/// stopped it after its graceful shutdown). The one home of this rule: the
/// restart policy (`supervise::policy::RunEnd::clean`) asks it too.
pub fn clean_exit(code: i32) -> bool {
    code == 0 || [libc::SIGHUP, libc::SIGINT, libc::SIGPIPE, libc::SIGTERM].contains(&-code)
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

/// The `.last` file as written: `LastRun` with its identity as the PID
/// record's own text.
#[derive(Serialize, Deserialize)]
struct LastFile {
    end: End,
    ended_ms: u64,
    #[serde(default)]
    restarts: u32,
    /// The identity file's text (`Identity::to_text`).
    record: String,
}

impl LastRun {
    /// The file's contents: one JSON object and a newline.
    fn to_json(&self) -> Vec<u8> {
        let file = LastFile {
            end: self.end,
            ended_ms: self.ended_ms,
            restarts: self.restarts,
            record: self.identity.to_text(),
        };
        // Plain fields: serialization cannot fail.
        let mut out = serde_json::to_vec(&file).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Reads either form: JSON, or the `key=value` lines of the release
    /// before it.
    fn parse(text: &str) -> Option<Self> {
        if !text.trim_start().starts_with('{') {
            return legacy::parse(text);
        }
        let file: LastFile = serde_json::from_str(text).ok()?;
        Some(LastRun {
            identity: Identity::parse(&file.record)?,
            end: file.end,
            ended_ms: file.ended_ms,
            restarts: file.restarts,
        })
    }
}

/// Keeps how the last run ended (`.upsonic_{name}_server.last`), with its
/// configuration, so that a stopped server stays listed and can be started
/// again the same way.
pub fn write_last(paths: &Paths, last: &LastRun) -> Result<()> {
    write_atomic(&paths.last_file, &last.to_json())
}

/// Reads how the last run ended, if kept.
pub fn read_last(paths: &Paths) -> Option<LastRun> {
    let bytes = read_capped(&paths.last_file, MAX_ID_FILE)?;
    LastRun::parse(std::str::from_utf8(&bytes).ok()?)
}

/// The form written before the file was JSON: the identity's `key=value`
/// lines followed by `end=` (a word and maybe a code), `ended_ms=` and
/// `restarts=`.
mod legacy {
    use super::{End, Identity, LastRun};

    fn end(text: &str) -> Option<End> {
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

    pub(super) fn parse(text: &str) -> Option<LastRun> {
        let identity = Identity::parse(text)?;
        let mut end_seen = None;
        let mut ended_ms = 0;
        let mut restarts = 0;
        for (k, v) in text.lines().filter_map(|l| l.split_once('=')) {
            match k {
                "end" => end_seen = end(v),
                "ended_ms" => ended_ms = v.parse().ok()?,
                "restarts" => restarts = v.parse().unwrap_or(0),
                _ => {}
            }
        }
        Some(LastRun {
            identity,
            end: end_seen?,
            ended_ms,
            restarts,
        })
    }
}

/// Forgets the last run.
pub fn remove_last(paths: &Paths) {
    let _ = fs::remove_file(&paths.last_file);
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENDS: [End; 10] = [
        End::Stopped,
        End::StoppedKilled,
        End::Exited(0),
        End::Exited(-9),
        End::Died,
        End::FailedToStart(Some(3)),
        End::FailedToStart(None),
        End::GaveUp(Some(-9)),
        End::GaveUp(None),
        End::Exited(i32::MIN),
    ];

    fn identity(app_path: &str) -> Identity {
        Identity {
            pid: 4242,
            start_ticks: 99,
            boot_id: "b".into(),
            launch_id: "l".into(),
            host: "::1".into(),
            port: 8000,
            app_path: app_path.into(),
            started_ms: 17,
            log_dir: "/tmp/l".into(),
            config: None,
        }
    }

    #[test]
    fn ends_in_words() {
        assert_eq!(End::Exited(-9).describe(), "killed by SIGKILL");
        assert_eq!(End::Exited(1).describe(), "exited with code 1");
        assert_eq!(
            End::GaveUp(Some(1)).describe(),
            "failed: restarts gave up (last run exited with code 1)"
        );
    }

    #[test]
    fn every_end_and_field_round_trips() {
        for (i, end) in ENDS.into_iter().enumerate() {
            // The identity's own codec flattens newlines; the rest of the
            // awkward strings come back as they were.
            for app in ["m:app", "a\tb:app", "q\"uo'te\\:app", "é日本:app", ""] {
                let last = LastRun {
                    identity: identity(app),
                    end,
                    ended_ms: u64::MAX - i as u64,
                    restarts: u32::MAX - i as u32,
                };
                let bytes = last.to_json();
                assert_eq!(bytes.iter().filter(|b| **b == b'\n').count(), 1);
                let text = std::str::from_utf8(&bytes).unwrap();
                assert_eq!(LastRun::parse(text), Some(last), "{text}");
            }
        }
        assert_eq!(LastRun::parse("{\"end\":{\"kind\":\"exploded\"}}"), None);
        assert_eq!(LastRun::parse("{"), None);
    }

    #[test]
    fn a_last_file_of_the_release_before_still_reads() {
        // Written by the release before this one: the identity's lines,
        // then how the run ended.
        let head = "format=1\npid=4242\nstart_ticks=99\nboot_id=b\nlaunch_id=l\nhost=::1\nport=8000\napp_path=m:app\nstarted_ms=17\nlog_dir=/tmp/l\n";
        for (word, end) in [
            ("stopped", End::Stopped),
            ("stoppedkill", End::StoppedKilled),
            ("exited -9", End::Exited(-9)),
            ("died", End::Died),
            ("failed 3", End::FailedToStart(Some(3))),
            ("failed", End::FailedToStart(None)),
            ("gaveup -9", End::GaveUp(Some(-9))),
            ("gaveup", End::GaveUp(None)),
        ] {
            let old = format!("{head}end={word}\nended_ms=1700000000000\nrestarts=4\n");
            assert_eq!(
                LastRun::parse(&old),
                Some(LastRun {
                    identity: identity("m:app"),
                    end,
                    ended_ms: 1_700_000_000_000,
                    restarts: 4,
                }),
                "{word}"
            );
        }
        assert_eq!(LastRun::parse(&format!("{head}end=exited x\n")), None);
        // The escaping the old key=value forms used (the legacy readers rely on it).
        use super::super::saved::{escape, unescape};
        assert_eq!(unescape(&escape("a\\n\nb\r\t")), "a\\n\nb\r\t");
        assert_eq!(LastRun::parse(&format!("{head}ended_ms=5\n")), None);
    }

    #[test]
    fn clean_ends_are_stops_and_the_signals_a_stop_sends() {
        assert!(End::Stopped.is_clean());
        assert!(End::Exited(0).is_clean());
        assert!(End::Exited(-15).is_clean());
        for sig in [1, 2, 13, 15] {
            assert!(clean_exit(-sig));
        }
        assert!(!End::Exited(1).is_clean());
        assert!(!End::Exited(-9).is_clean());
        assert!(!End::Died.is_clean());
        assert!(!End::FailedToStart(Some(0)).is_clean());
        assert!(!End::StoppedKilled.is_clean());
    }
}
