//! `ServerSpec`: a server's configuration written once. Every option a
//! server is started with, its default, its help text, its CLI flag and its
//! validation live here; the Python signature, the CLI options, the PID
//! record (`record::saved`) and the supervisor's orders (`supervise::wire`)
//! are derived from it, so no entry point spells an option or a default
//! again.
//!
//! `OPTIONS` is the table (exported through `_core` as `OPTIONS`); each row
//! reads its value from a spec (`Opt::get`), so the keyword view of a spec
//! (`ServerSpec::options`) needs no list of keys beside the table.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::supervision::Supervision;
use crate::validate;

/// Everything a server is launched with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerSpec {
    pub app_path: String,
    pub host: String,
    pub port: u16,
    pub name: String,
    pub workers: u32,
    pub log_dir: PathBuf,
    pub pid_dir: PathBuf,
    pub cwd: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    pub start_timeout: Duration,
    pub stop_timeout: Duration,
    pub uvicorn_args: Vec<String>,
    /// The interpreter that runs the server (the caller's).
    pub python: PathBuf,
    /// Bind and hold the listening socket here and hand it to the server
    /// (required for port 0; makes `reload()` possible).
    pub hold_socket: bool,
    /// The server (and its supervisor, if any) stops when the process that
    /// started it ends, however it ends (`crate::lifeline`).
    pub stop_with_caller: bool,
    /// Restart policy, health check, memory limit (`crate::supervise`);
    /// the default means no supervisor at all.
    pub supervision: Supervision,
    /// Fork servers from a preloader (`crate::warm`) instead of starting
    /// an interpreter; falls back to a cold start, never fails because of it.
    pub warm: bool,
    /// Modules the preloader imports besides its defaults.
    pub preload: Vec<String>,
    /// The PID file's path, when the program chose one (the original's
    /// assignable `_pid_file`); the other files go beside it. `None`:
    /// `{pid_dir}/.upsonic_{name}_server.pid`.
    pub pid_file: Option<PathBuf>,
    /// Keep how every run ended on disk (`.last`), clean stops included:
    /// operators asked for it (the CLI's starts). A supervised server always
    /// does; otherwise only runs that failed are kept there, and this
    /// manager remembers its own last run in memory.
    pub history: bool,
}

/// uvicorn's arguments when none are given: quiet, as upsonic's original.
pub const DEFAULT_UVICORN_ARGS: &[&str] = &["--log-level", "error", "--no-access-log"];

impl Default for ServerSpec {
    /// The defaults of every option (`OPTIONS` shows the same ones); the
    /// four positional ones are empty and must be given.
    fn default() -> Self {
        Self {
            app_path: String::new(),
            host: String::new(),
            port: 0,
            name: String::new(),
            workers: 1,
            log_dir: PathBuf::from("logs"),
            pid_dir: PathBuf::new(),
            cwd: None,
            env: Vec::new(),
            start_timeout: Duration::from_secs(30),
            stop_timeout: Duration::from_secs(5),
            uvicorn_args: DEFAULT_UVICORN_ARGS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            python: PathBuf::new(),
            hold_socket: false,
            stop_with_caller: false,
            supervision: Supervision::default(),
            warm: false,
            preload: Vec::new(),
            pid_file: None,
            history: false,
        }
    }
}

impl ServerSpec {
    /// Checks every field (the one validation every entry point shares) and
    /// returns the addresses the host resolves to.
    pub fn validate(&self) -> Result<Vec<IpAddr>> {
        validate::name(&self.name)?;
        validate::app_path(&self.app_path)?;
        let addrs = validate::host(&self.host)?;
        if self.port == 0 && !self.hold_socket {
            return Err(Error::invalid(
                "port",
                Some("0".into()),
                "needs hold_socket=True (the manager binds the socket and the kernel picks the port)",
            ));
        }
        if self.port != 0 {
            validate::port(i64::from(self.port))?;
        }
        validate::supervision(&self.supervision)?;
        validate::workers(i64::from(self.workers))?;
        validate::seconds("start_timeout", self.start_timeout.as_secs_f64())?;
        validate::seconds("stop_timeout", self.stop_timeout.as_secs_f64())?;
        for (k, v) in &self.env {
            validate::env_entry(k, v)?;
        }
        validate::preload(&self.preload)?;
        if let Some(f) = &self.pid_file {
            if f.as_os_str().is_empty() || f.file_name().is_none() {
                return Err(Error::invalid(
                    "_pid_file",
                    Some(format!("{:?}", f.display().to_string())),
                    "must name a file",
                ));
            }
            if self.supervision.is_supervised() {
                return Err(Error::invalid(
                    "_pid_file",
                    None,
                    "cannot be combined with a restart policy (a supervisor and the CLI find the server by its name in pid_dir)",
                ));
            }
        }
        crate::cmdline::speaks(&self.uvicorn_args, &self.env).map_err(|r| {
            Error::invalid(
                r.arg,
                Some(format!("{:?}", r.given)),
                format!("is refused: {}", r.why),
            )
        })?;
        Ok(addrs)
    }

    /// How the server speaks, from its uvicorn arguments (`cmdline::speaks`;
    /// validated, so refusals cannot occur here).
    pub fn speaks(&self) -> crate::cmdline::Speaks {
        crate::cmdline::speaks(&self.uvicorn_args, &self.env).unwrap_or_default()
    }

    /// The spec as one line of JSON (no newline inside: it fits a
    /// `key=value` line of the record).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a spec always serializes")
    }

    /// Parses `to_json`; options missing from the text take their default.
    pub fn from_json(text: &str) -> std::result::Result<Self, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    /// Every option of the table with its value in this spec, as the
    /// keyword arguments that build it again.
    pub fn options(&self) -> Vec<(&'static Opt, Value)> {
        OPTIONS.iter().map(|o| (o, (o.get)(self))).collect()
    }
}

/// An option's value as the keyword API gives it (seconds as floats, a
/// memory size in bytes, the environment as pairs).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Strs(Vec<String>),
    Pairs(Vec<(String, String)>),
}

/// A default as written in the table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Default_ {
    /// No default: the argument is required (the four positional ones).
    Required,
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'static str),
    Strs(&'static [&'static str]),
}

/// One option of `ServerManager`, `upsonic-server start/run/systemd-unit`
/// and a set's server entry.
#[derive(Debug)]
pub struct Opt {
    /// The keyword (also the set file's key).
    pub name: &'static str,
    /// The Python annotation shown by `inspect.signature`.
    pub annotation: &'static str,
    pub default: Default_,
    /// One line of help (the CLI's).
    pub help: &'static str,
    /// The CLI flag, `None` for an option the command line gives otherwise
    /// (positional arguments, `--env KEY=VALUE`, arguments after `--`) or
    /// not at all.
    pub flag: Option<&'static str>,
    /// The CLI's metavar.
    pub metavar: Option<&'static str>,
    /// The CLI's group title (empty: the command's own options).
    pub group: &'static str,
    /// Positional in the drop-in signature (app_path, host, port, name).
    pub positional: bool,
    /// An attribute the program may assign while the server does not run.
    pub assignable: bool,
    /// Taken back from the PID record by `from_record`.
    pub restored: bool,
    /// Reads the option's value from a spec.
    pub get: fn(&ServerSpec) -> Value,
}

const SUPERVISION: &str = "supervision (a supervisor process keeps the server up)";

fn secs(d: Duration) -> Value {
    Value::Float(d.as_secs_f64())
}

fn path(p: &std::path::Path) -> Value {
    Value::Str(p.display().to_string())
}

fn health<T>(s: &ServerSpec, f: impl Fn(&crate::supervision::HealthCheck) -> T) -> Option<T> {
    s.supervision.health.as_ref().map(f)
}

macro_rules! opt {
    ($name:expr, $ann:literal, $default:expr, $help:literal, flag: $flag:expr, metavar: $mv:expr,
     group: $group:expr, positional: $pos:literal, assignable: $asg:literal, restored: $res:literal,
     get: $get:expr) => {
        Opt {
            name: $name,
            annotation: $ann,
            default: $default,
            help: $help,
            flag: $flag,
            metavar: $mv,
            group: $group,
            positional: $pos,
            assignable: $asg,
            restored: $res,
            get: $get,
        }
    };
}

/// Every option's name (the keyword, the set file's key, the record's
/// field), spelled here once: the table, the checks, the binding's argument
/// errors and the `record=2` reader name an option through these.
pub mod key {
    pub const APP_PATH: &str = "app_path";
    pub const HOST: &str = "host";
    pub const PORT: &str = "port";
    pub const NAME: &str = "name";
    pub const WORKERS: &str = "workers";
    pub const LOG_DIR: &str = "log_dir";
    pub const PID_DIR: &str = "pid_dir";
    pub const CWD: &str = "cwd";
    pub const ENV: &str = "env";
    pub const START_TIMEOUT: &str = "start_timeout";
    pub const STOP_TIMEOUT: &str = "stop_timeout";
    pub const UVICORN_ARGS: &str = "uvicorn_args";
    pub const HOLD_SOCKET: &str = "hold_socket";
    pub const STOP_WITH_CALLER: &str = "stop_with_caller";
    pub const RESTART: &str = "restart";
    pub const RESTART_DELAY: &str = "restart_delay";
    pub const RESTART_MAX_DELAY: &str = "restart_max_delay";
    pub const RESTART_LIMIT: &str = "restart_limit";
    pub const STABLE_AFTER: &str = "stable_after";
    pub const HEALTH_CHECK: &str = "health_check";
    pub const HEALTH_INTERVAL: &str = "health_interval";
    pub const HEALTH_TIMEOUT: &str = "health_timeout";
    pub const HEALTH_FAILURES: &str = "health_failures";
    pub const MAX_MEMORY: &str = "max_memory";
    pub const SUPERVISE: &str = "supervise";
    pub const LOG_MAX_BYTES: &str = "log_max_bytes";
    pub const LOG_BACKUP_COUNT: &str = "log_backup_count";
    pub const LOG_TIMESTAMPS: &str = "log_timestamps";
    pub const WARM: &str = "warm";
    pub const PRELOAD: &str = "preload";
    pub const PID_FILE: &str = "pid_file";
    pub const HISTORY: &str = "history";
}

/// Every option, in the drop-in signature's order.
pub static OPTIONS: &[Opt] = &[
    opt!(key::APP_PATH, "str", Default_::Required, "the ASGI app, as 'package.module:app'",
        flag: None, metavar: Some("APP"), group: "", positional: true, assignable: true, restored: false,
        get: |s| Value::Str(s.app_path.clone())),
    opt!(key::HOST, "str", Default_::Required, "the address to bind",
        flag: Some("--host"), metavar: None, group: "", positional: true, assignable: true, restored: false,
        get: |s| Value::Str(s.host.clone())),
    opt!(key::PORT, "int", Default_::Required, "the port to bind (0: the kernel picks one)",
        flag: Some("--port"), metavar: None, group: "", positional: true, assignable: true, restored: false,
        get: |s| Value::Int(i64::from(s.port))),
    opt!(key::NAME, "str", Default_::Required, "the server's name (its PID record and log files)",
        flag: Some("--name"), metavar: None, group: "", positional: true, assignable: true, restored: false,
        get: |s| Value::Str(s.name.clone())),
    opt!(key::WORKERS, "Optional[int]", Default_::None,
        "uvicorn worker processes (None: $UPSONIC_WORKERS_AMOUNT, read at each start)",
        flag: Some("--workers"), metavar: Some("N"), group: "", positional: false, assignable: false, restored: true,
        get: |s| Value::Int(i64::from(s.workers))),
    opt!(key::LOG_DIR, "PathLike", Default_::Str("logs"),
        "where redirected output goes (relative: under the server's working directory)",
        flag: Some("--log-dir"), metavar: None, group: "", positional: false, assignable: false, restored: false,
        get: |s| path(&s.log_dir)),
    opt!(key::PID_DIR, "Optional[PathLike]", Default_::None,
        "where PID records live (None: your home directory)",
        flag: None, metavar: None, group: "", positional: false, assignable: false, restored: false,
        get: |s| path(&s.pid_dir)),
    opt!(key::CWD, "Optional[PathLike]", Default_::None,
        "the server's working directory (None: the caller's)",
        flag: Some("--cwd"), metavar: None, group: "", positional: false, assignable: false, restored: true,
        get: |s| s.cwd.as_deref().map_or(Value::None, path)),
    opt!(key::ENV, "Optional[Mapping[str, str]]", Default_::None,
        "extra environment variables of the server",
        flag: Some("--env"), metavar: Some("KEY=VALUE"), group: "", positional: false, assignable: false, restored: true,
        get: |s| Value::Pairs(s.env.clone())),
    opt!(key::START_TIMEOUT, "float", Default_::Float(30.0), "seconds to wait for the server to accept",
        flag: Some("--start-timeout"), metavar: Some("SECONDS"), group: "", positional: false, assignable: false, restored: true,
        get: |s| secs(s.start_timeout)),
    opt!(key::STOP_TIMEOUT, "float", Default_::Float(5.0), "seconds of graceful shutdown before SIGKILL",
        flag: Some("--stop-timeout"), metavar: Some("SECONDS"), group: "", positional: false, assignable: false, restored: true,
        get: |s| secs(s.stop_timeout)),
    opt!(key::UVICORN_ARGS, "Sequence[str]", Default_::Strs(DEFAULT_UVICORN_ARGS),
        "uvicorn's extra arguments (the CLI's are those after --)",
        flag: None, metavar: None, group: "", positional: false, assignable: false, restored: true,
        get: |s| Value::Strs(s.uvicorn_args.clone())),
    opt!(key::HOLD_SOCKET, "Optional[bool]", Default_::None,
        "bind and hold the listening socket here, so that `reload` and restarts refuse no connection (default: on for port 0 and a restart policy)",
        flag: Some("--hold-socket"), metavar: None, group: "", positional: false, assignable: false, restored: true,
        get: |s| Value::Bool(s.hold_socket)),
    opt!(key::STOP_WITH_CALLER, "bool", Default_::Bool(false),
        "stop the server when the process that started it ends, however it ends",
        flag: None, metavar: None, group: "", positional: false, assignable: false, restored: false,
        get: |s| Value::Bool(s.stop_with_caller)),
    opt!(key::RESTART, "str", Default_::Str("no"),
        "restart it when it ends: after a crash, or after any end but a stop",
        flag: Some("--restart"), metavar: None, group: SUPERVISION, positional: false, assignable: false, restored: true,
        get: |s| Value::Str(s.supervision.policy.restart.as_str().to_owned())),
    opt!(key::RESTART_DELAY, "float", Default_::Float(0.1),
        "first wait before a restart; doubles on each failure in a row",
        flag: Some("--restart-delay"), metavar: Some("SECONDS"), group: SUPERVISION, positional: false, assignable: false, restored: true,
        get: |s| secs(s.supervision.policy.delay)),
    opt!(key::RESTART_MAX_DELAY, "float", Default_::Float(30.0), "the longest wait before a restart",
        flag: Some("--restart-max-delay"), metavar: Some("SECONDS"), group: SUPERVISION, positional: false, assignable: false, restored: true,
        get: |s| secs(s.supervision.policy.max_delay)),
    opt!(key::RESTART_LIMIT, "Optional[int]", Default_::Int(10),
        "failed runs in a row before giving up (None, 'none' on the CLI: never)",
        flag: Some("--restart-limit"), metavar: Some("N"), group: SUPERVISION, positional: false, assignable: false, restored: true,
        get: |s| s.supervision.policy.limit.map_or(Value::None, |l| Value::Int(i64::from(l)))),
    opt!(key::STABLE_AFTER, "float", Default_::Float(10.0),
        "uptime after which the failure count starts again",
        flag: Some("--stable-after"), metavar: Some("SECONDS"), group: SUPERVISION, positional: false, assignable: false, restored: true,
        get: |s| secs(s.supervision.policy.stable_after)),
    opt!(key::HEALTH_CHECK, "Optional[str]", Default_::None,
        "HTTP GET this path on the server; failures in a row replace it",
        flag: Some("--health-check"), metavar: Some("PATH"), group: SUPERVISION, positional: false, assignable: false, restored: true,
        get: |s| health(s, |h| Value::Str(h.path.clone())).unwrap_or(Value::None)),
    opt!(key::HEALTH_INTERVAL, "float", Default_::Float(5.0), "seconds between checks",
        flag: Some("--health-interval"), metavar: Some("SECONDS"), group: SUPERVISION, positional: false, assignable: false, restored: true,
        get: |s| health(s, |h| secs(h.interval)).unwrap_or(Value::Float(5.0))),
    opt!(key::HEALTH_TIMEOUT, "float", Default_::Float(2.0), "a check slower than this (seconds) fails",
        flag: Some("--health-timeout"), metavar: Some("SECONDS"), group: SUPERVISION, positional: false, assignable: false, restored: true,
        get: |s| health(s, |h| secs(h.timeout)).unwrap_or(Value::Float(2.0))),
    opt!(key::HEALTH_FAILURES, "int", Default_::Int(3), "failed checks in a row that replace the server",
        flag: Some("--health-failures"), metavar: Some("N"), group: SUPERVISION, positional: false, assignable: false, restored: true,
        get: |s| health(s, |h| Value::Int(i64::from(h.failures))).unwrap_or(Value::Int(3))),
    opt!(key::MAX_MEMORY, "Union[int, str, None]", Default_::None,
        "replace the server when it and its workers use more (bytes, or a size such as 512MiB, 1GiB)",
        flag: Some("--max-memory"), metavar: Some("SIZE"), group: SUPERVISION, positional: false, assignable: false, restored: true,
        get: |s| s.supervision.max_memory.map_or(Value::None, |m| Value::Int(i64::try_from(m).unwrap_or(i64::MAX)))),
    opt!(key::SUPERVISE, "bool", Default_::Bool(false),
        "run the per-server supervisor even without a restart policy: it records how each run ended and writes the logs",
        flag: Some("--supervise"), metavar: None, group: SUPERVISION, positional: false, assignable: false, restored: true,
        get: |s| Value::Bool(s.supervision.supervise)),
    opt!(key::LOG_MAX_BYTES, "Union[int, str, None]", Default_::None,
        "rotate a log file at this size (bytes, or a size such as 64KiB; None: 50MiB; 0: never)",
        flag: Some("--log-max-bytes"), metavar: Some("SIZE"), group: SUPERVISION, positional: false, assignable: false, restored: true,
        get: |s| s.supervision.log_max_bytes.map_or(Value::None, |b| Value::Int(i64::try_from(b).unwrap_or(i64::MAX)))),
    opt!(key::LOG_BACKUP_COUNT, "Optional[int]", Default_::None,
        "rotated log files kept (.1 newest; None: 10)",
        flag: Some("--log-backup-count"), metavar: Some("N"), group: SUPERVISION, positional: false, assignable: false, restored: true,
        get: |s| s.supervision.log_backup_count.map_or(Value::None, |n| Value::Int(i64::from(n)))),
    opt!(key::LOG_TIMESTAMPS, "bool", Default_::Bool(false),
        "start every log line with an ISO 8601 UTC timestamp",
        flag: Some("--log-timestamps"), metavar: None, group: SUPERVISION, positional: false, assignable: false, restored: true,
        get: |s| Value::Bool(s.supervision.log_timestamps)),
    opt!(key::WARM, "bool", Default_::Bool(false),
        "fork the server from a preloader with uvicorn and FastAPI already imported (falls back to a normal start when it cannot)",
        flag: Some("--warm"), metavar: None, group: "", positional: false, assignable: false, restored: true,
        get: |s| Value::Bool(s.warm)),
    opt!(key::PRELOAD, "Optional[Sequence[str]]", Default_::None,
        "with warm: modules the preloader imports too",
        flag: Some("--preload"), metavar: Some("MODULE"), group: "", positional: false, assignable: false, restored: true,
        get: |s| Value::Strs(s.preload.clone())),
    opt!(key::PID_FILE, "Optional[PathLike]", Default_::None,
        "the PID file's path (None: {pid_dir}/.upsonic_{name}_server.pid); the other record files go beside it",
        flag: None, metavar: None, group: "", positional: false, assignable: true, restored: false,
        get: |s| s.pid_file.as_deref().map_or(Value::None, path)),
    opt!(key::HISTORY, "bool", Default_::Bool(false),
        "keep how every run ended on disk, clean stops included",
        flag: None, metavar: None, group: "", positional: false, assignable: false, restored: true,
        get: |s| Value::Bool(s.history)),
];

/// The row of option `name`.
pub fn option(name: &str) -> Option<&'static Opt> {
    OPTIONS.iter().find(|o| o.name == name)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::supervision::{HealthCheck, Restart};

    /// A spec with every kind of field set, for the tests of what carries it.
    pub(crate) fn sample() -> ServerSpec {
        let mut s = ServerSpec {
            app_path: "m:app".into(),
            host: "127.0.0.1".into(),
            port: 8123,
            name: "api".into(),
            workers: 2,
            log_dir: "/tmp/l\nx".into(),
            pid_dir: "/tmp/p".into(),
            cwd: Some("/srv".into()),
            env: vec![("A".into(), "1=2\n\t".into())],
            start_timeout: Duration::from_millis(1500),
            python: "/usr/bin/python3".into(),
            hold_socket: true,
            warm: true,
            preload: vec!["numpy".into()],
            ..ServerSpec::default()
        };
        s.supervision.policy.restart = Restart::OnFailure;
        s.supervision.policy.limit = None;
        s.supervision.health = Some(HealthCheck {
            path: "/h".into(),
            interval: Duration::from_millis(500),
            timeout: Duration::from_millis(300),
            failures: 2,
        });
        s.supervision.max_memory = Some(512 << 20);
        s
    }

    #[test]
    fn json_round_trips_on_one_line() {
        let s = sample();
        let text = s.to_json();
        assert!(!text.contains('\n'), "{text}");
        assert_eq!(ServerSpec::from_json(&text).unwrap(), s);
        // Options a newer writer added, or an older one did not know, are
        // skipped or defaulted.
        let old: ServerSpec = ServerSpec::from_json(r#"{"name":"x","port":9}"#).unwrap();
        assert_eq!((old.workers, old.port), (1, 9));
        assert!(ServerSpec::from_json("{").is_err());
    }

    #[test]
    fn table_matches_the_defaults() {
        let d = ServerSpec::default();
        for o in OPTIONS {
            let want = match o.default {
                Default_::Required => continue,
                Default_::None => continue, // decided at construction
                Default_::Bool(b) => Value::Bool(b),
                Default_::Int(i) => Value::Int(i),
                Default_::Float(f) => Value::Float(f),
                Default_::Str(s) => Value::Str(s.into()),
                Default_::Strs(v) => Value::Strs(v.iter().map(|s| (*s).to_owned()).collect()),
            };
            assert_eq!((o.get)(&d), want, "{}", o.name);
        }
    }

    #[test]
    fn table_is_consistent() {
        let mut names: Vec<_> = OPTIONS.iter().map(|o| o.name).collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n, "a name appears twice");
        let positional: Vec<_> = OPTIONS
            .iter()
            .take_while(|o| o.positional)
            .map(|o| o.name)
            .collect();
        assert_eq!(positional, ["app_path", "host", "port", "name"]);
        assert!(OPTIONS.iter().skip(4).all(|o| !o.positional));
        for o in OPTIONS {
            if let Some(f) = o.flag {
                assert_eq!(f, format!("--{}", o.name.replace('_', "-")), "{}", o.name);
            }
            assert!(!o.help.is_empty() && !o.annotation.is_empty(), "{}", o.name);
            assert_eq!(o.default == Default_::Required, o.positional, "{}", o.name);
        }
        assert!(option("workers").is_some() && option("nope").is_none());
    }

    #[test]
    fn options_read_every_field() {
        let s = sample();
        let got: std::collections::HashMap<_, _> =
            s.options().into_iter().map(|(o, v)| (o.name, v)).collect();
        assert_eq!(got["workers"], Value::Int(2));
        assert_eq!(got["restart"], Value::Str("on-failure".into()));
        assert_eq!(got["restart_limit"], Value::None);
        assert_eq!(got["health_interval"], Value::Float(0.5));
        assert_eq!(got["max_memory"], Value::Int(512 << 20));
        assert_eq!(got["cwd"], Value::Str("/srv".into()));
        assert_eq!(got["pid_file"], Value::None);
    }

    #[test]
    fn validation_names_the_argument() {
        let mut s = sample();
        assert!(s.validate().is_ok());
        s.port = 0;
        s.hold_socket = false;
        assert!(s.validate().unwrap_err().to_string().contains("port"));
        let mut s = sample();
        s.workers = 0;
        assert!(s.validate().unwrap_err().to_string().contains("workers"));
    }
}
