//! The configuration a server was started with, kept in its record: the
//! spec serialized (`record=3`, one `spec=` line of JSON). Records written
//! by the release before it (`record=2`: one escaped `key=value` line per
//! setting) still read (`Legacy`).

use std::time::Duration;

use crate::spec::key;
use crate::spec::ServerSpec;
use crate::supervision::{HealthCheck, Restart};

/// The record version this release writes.
pub const RECORD: &str = "3";

/// The configuration a server was started with, beyond what `Identity`
/// always held: what `restart` needs to start it again the same way.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SavedConfig {
    /// The spec it was started with; `cwd` is the absolute directory it
    /// really started in, `python` the interpreter that ran it.
    pub spec: ServerSpec,
    /// Whether its output went to the log files.
    pub redirect_output: bool,
}

/// Escapes a value for one `key=value` line.
pub fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
        .replace('\t', "\\t")
}

/// Undoes `escape`.
pub fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

impl SavedConfig {
    pub(super) fn to_text(&self) -> String {
        format!(
            "record={RECORD}\nredirect={}\nspec={}\n",
            u8::from(self.redirect_output),
            self.spec.to_json()
        )
    }

    /// A reader for the record version `v`, None for one it cannot read.
    pub(super) fn reader(v: &str) -> Option<Reader> {
        match v {
            RECORD => Some(Reader::Spec(SavedConfig::default())),
            "2" => Some(Reader::Legacy(Legacy::new())),
            _ => None,
        }
    }
}

/// Reads the configuration lines of a record, of either version.
#[derive(Debug)]
pub(super) enum Reader {
    Spec(SavedConfig),
    Legacy(Legacy),
}

impl Reader {
    /// Takes one `key=value` line; None if ours but malformed.
    pub(super) fn take(&mut self, k: &str, v: &str) -> Option<()> {
        match self {
            Reader::Spec(c) => match k {
                "redirect" => c.redirect_output = v == "1",
                "spec" => c.spec = ServerSpec::from_json(v).ok()?,
                _ => {}
            },
            Reader::Legacy(l) => {
                l.take(k, v)?;
            }
        }
        Some(())
    }

    pub(super) fn finish(self) -> SavedConfig {
        match self {
            Reader::Spec(c) => c,
            Reader::Legacy(l) => l.finish(),
        }
    }
}

/// A `record=2` record being read: the spec starts from the defaults the
/// writer of that release left out (no restart policy, no health check).
#[derive(Debug)]
pub(super) struct Legacy {
    saved: SavedConfig,
    health: Option<HealthCheck>,
}

impl Legacy {
    /// Its uvicorn arguments were written one `arg=` line each: the list
    /// starts empty.
    fn new() -> Self {
        let mut saved = SavedConfig::default();
        saved.spec.uvicorn_args.clear();
        Self {
            saved,
            health: None,
        }
    }

    /// Takes one `key=value` line of a `record=2` record; false if unknown.
    fn take(&mut self, k: &str, v: &str) -> Option<bool> {
        let s = &mut self.saved.spec;
        let ms = |v: &str| v.parse::<u64>().ok().map(Duration::from_millis);
        let health = || HealthCheck {
            path: String::new(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            failures: 3,
        };
        let p = &mut s.supervision.policy;
        match k {
            key::WORKERS => s.workers = v.parse().ok()?,
            key::CWD => {
                s.cwd = Some(unescape(v).into())
                    .filter(|d: &std::path::PathBuf| !d.as_os_str().is_empty())
            }
            "redirect" => self.saved.redirect_output = v == "1",
            "start_timeout_ms" => s.start_timeout = ms(v)?,
            "stop_timeout_ms" => s.stop_timeout = ms(v)?,
            "python" => s.python = unescape(v).into(),
            key::HOLD_SOCKET => s.hold_socket = v == "1",
            key::ENV => {
                let (ek, ev) = v.split_once('=')?;
                s.env.push((unescape(ek), unescape(ev)));
            }
            "arg" => s.uvicorn_args.push(unescape(v)),
            key::WARM => s.warm = v == "1",
            key::PRELOAD => s.preload.push(unescape(v)),
            key::HISTORY => s.history = v == "1",
            key::RESTART => p.restart = Restart::parse(v)?,
            "restart_delay_ms" => p.delay = ms(v)?,
            "restart_max_delay_ms" => p.max_delay = ms(v)?,
            key::RESTART_LIMIT => {
                p.limit = if v.is_empty() {
                    None
                } else {
                    Some(v.parse().ok()?)
                }
            }
            "stable_after_ms" => p.stable_after = ms(v)?,
            key::HEALTH_CHECK => self.health.get_or_insert_with(health).path = unescape(v),
            "health_interval_ms" => self.health.get_or_insert_with(health).interval = ms(v)?,
            "health_timeout_ms" => self.health.get_or_insert_with(health).timeout = ms(v)?,
            key::HEALTH_FAILURES => {
                self.health.get_or_insert_with(health).failures = v.parse().ok()?
            }
            key::MAX_MEMORY => s.supervision.max_memory = Some(v.parse().ok()?),
            key::SUPERVISE => s.supervision.supervise = v == "1",
            key::LOG_MAX_BYTES => s.supervision.log_max_bytes = Some(v.parse().ok()?),
            key::LOG_BACKUP_COUNT => s.supervision.log_backup_count = Some(v.parse().ok()?),
            key::LOG_TIMESTAMPS => s.supervision.log_timestamps = v == "1",
            _ => return Some(false),
        }
        Some(true)
    }

    fn finish(mut self) -> SavedConfig {
        self.saved.spec.supervision.health = self.health;
        self.saved
    }
}
