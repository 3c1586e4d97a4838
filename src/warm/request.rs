//! What the manager and the preloader say to each other (no I/O here): the
//! fork request, the reply lines, and which preloader serves a server.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;

use serde::{Deserialize, Serialize};

/// The protocol both sides speak; every message carries it and the
/// preloader refuses any other (and its key changes with it).
pub const VERSION: &str = "usm-warm 2";

/// One server to fork: everything a cold spawn gives the process. Byte
/// strings (paths, the environment) are arrays of numbers in JSON: they
/// need not be UTF-8.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The absolute working directory.
    pub cwd: Vec<u8>,
    pub umask: u32,
    /// The names of the descriptors attached, in order (`stdout`, `stderr`,
    /// `held`, `lifeline`: `protocol::WARM_FDS`).
    pub fd_names: Vec<String>,
    /// The interpreter a cold start runs (for the command line it shows).
    pub python: Vec<u8>,
    /// The arguments after the interpreter (`-m MODULE ...`).
    pub argv: Vec<String>,
    /// KEY, VALUE pairs.
    pub env: Vec<(Vec<u8>, Vec<u8>)>,
}

/// What a manager (or `upsonic-server warm`) asks a preloader: one JSON
/// line. A fork request carries the server's descriptors (SCM_RIGHTS).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ask {
    /// Fork this server; the answer is `Reply::Pid` (or `Reply::Error`).
    Fork(Request),
    /// After `Reply::Pid`: the manager holds a pidfd for the server, which
    /// may now run (and later be reaped).
    Pinned,
    /// Answered with `Reply::Status`; does not count as use.
    Status,
    /// End the preloader: answered with `Reply::Stopping`, or with
    /// `Reply::Busy` when it serves live servers and `force` is false.
    Stop { force: bool },
}

/// A message on the wire: the version, then what is asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Frame<T> {
    version: String,
    message: T,
}

/// What a preloader says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The preloader's PID.
    pub pid: i32,
    /// The interpreter it runs (`sys.executable`).
    pub python: String,
    /// Servers it forked that still run.
    pub live: u32,
    /// Servers it forked since it started.
    pub forked: u32,
    /// Seconds since the last request or server exit.
    pub idle_seconds: f64,
    /// Seconds of idleness (with no live server) after which it exits.
    pub idle_limit: f64,
    /// The modules it imported, in order.
    pub modules: Vec<String>,
}

/// A line from the preloader.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// The server was forked with this PID.
    Pid(i32),
    /// The server exited: the code, minus the signal number for a signal.
    Exit(i32),
    /// The preloader refused, with its reason.
    Error(String),
    /// The answer to `Ask::Status`.
    Status(Status),
    /// The answer to `Ask::Stop`: it exits now; this many of its servers
    /// run on (no longer its children once it is gone).
    Stopping(u32),
    /// The answer to `Ask::Stop` without force: it serves this many live
    /// servers, and runs on.
    Busy(u32),
}

/// Why a line could not be read.
pub type DecodeError = String;

fn decode<T: serde::de::DeserializeOwned>(line: &[u8]) -> Result<T, DecodeError> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let head: Frame<serde_json::Value> =
        serde_json::from_slice(line).map_err(|e| format!("not a message: {e}"))?;
    if head.version != VERSION {
        return Err(format!(
            "protocol {:?}, this side speaks {VERSION:?}",
            head.version
        ));
    }
    serde_json::from_value(head.message).map_err(|e| format!("not a message: {e}"))
}

fn encode<T: Serialize>(body: T) -> Vec<u8> {
    let frame = Frame {
        version: VERSION.to_owned(),
        message: body,
    };
    // A JSON object has no raw newline: one line per message.
    let mut out = serde_json::to_vec(&frame).expect("serializable");
    out.push(b'\n');
    out
}

impl Ask {
    /// The line on the wire (JSON, then a newline).
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Reads one line (with or without its newline); the error says why
    /// (another version, not JSON, an unknown message).
    pub fn decode(line: &[u8]) -> Result<Self, DecodeError> {
        decode(line)
    }
}

impl Reply {
    /// The line on the wire (JSON, then a newline).
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Reads one line (with or without its newline).
    pub fn decode(line: &[u8]) -> Result<Self, DecodeError> {
        decode(line)
    }
}

/// The environment a cold start would give the server: ours, with the
/// configured entries over it and the launch's own variables last.
pub fn server_env(
    ours: impl IntoIterator<Item = (OsString, OsString)>,
    configured: &[(String, String)],
    launch: &[(&str, &str)],
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = ours.into_iter().collect();
    let pairs = configured
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain(launch.iter().copied());
    for (k, v) in pairs {
        env.retain(|(ek, _)| ek.as_bytes() != k.as_bytes());
        env.push((k.into(), v.into()));
    }
    env
}

/// The variables that change what an interpreter imports: servers whose
/// values differ need different preloaders.
const IMPORT_VARS: &[&str] = &[
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONNOUSERSITE",
    "PYTHONUSERBASE",
    "PYTHONSAFEPATH",
    "PYTHONPLATLIBDIR",
    "VIRTUAL_ENV",
];

/// Names the preloader for an interpreter (its path and the identity of its
/// file), the import-related environment, the modules to preload and the
/// control group (a server forked by a preloader lives in the preloader's
/// cgroup: a systemd unit or container must get its own). A stable hash
/// (FNV-1a), so that every manager of this user finds the same.
pub fn preloader_key(
    python: &[u8],
    python_stamp: (u64, i64),
    env: &[(OsString, OsString)],
    preload: &[String],
    cgroup: &[u8],
) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes.iter().chain([&0xffu8]) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(VERSION.as_bytes());
    eat(python);
    eat(&python_stamp.0.to_le_bytes());
    eat(&python_stamp.1.to_le_bytes());
    for var in IMPORT_VARS {
        let v = env.iter().find(|(k, _)| k.as_bytes() == var.as_bytes());
        eat(v.map(|(_, v)| v.as_bytes()).unwrap_or(b"\0unset"));
    }
    for m in preload {
        eat(m.as_bytes());
    }
    eat(cgroup);
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStringExt;

    fn os(bytes: &[u8]) -> OsString {
        OsString::from_vec(bytes.to_vec())
    }

    fn request() -> Request {
        Request {
            cwd: b"/srv/\xff".to_vec(),
            umask: 0o22,
            fd_names: vec!["stdout".into(), "stderr".into(), "held".into()],
            python: b"/usr/bin/python3".to_vec(),
            argv: vec!["-m".into(), "uvicorn".into(), "m:app".into()],
            env: vec![(b"A".to_vec(), b"1=2\n".to_vec()), (b"B".to_vec(), vec![])],
        }
    }

    #[test]
    fn asks_round_trip_as_one_line() {
        for ask in [
            Ask::Fork(request()),
            Ask::Pinned,
            Ask::Status,
            Ask::Stop { force: true },
            Ask::Stop { force: false },
        ] {
            let line = ask.encode();
            assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
            assert_eq!(line.last(), Some(&b'\n'));
            assert_eq!(Ask::decode(&line).unwrap(), ask);
            assert_eq!(Ask::decode(&line[..line.len() - 1]).unwrap(), ask);
        }
    }

    #[test]
    fn replies_round_trip() {
        let status = Status {
            pid: 7,
            python: "/py".into(),
            live: 1,
            forked: 3,
            idle_seconds: 1.5,
            idle_limit: 300.0,
            modules: vec!["uvicorn".into()],
        };
        for reply in [
            Reply::Pid(42),
            Reply::Exit(-15),
            Reply::Error("cannot\nrun".into()),
            Reply::Status(status),
            Reply::Stopping(2),
            Reply::Busy(1),
        ] {
            assert_eq!(Reply::decode(&reply.encode()).unwrap(), reply);
        }
    }

    #[test]
    fn other_versions_and_garbage_are_refused() {
        let err = Ask::decode(br#"{"version":"usm-warm 1","message":"status"}"#).unwrap_err();
        assert!(err.contains("usm-warm 1"), "{err}");
        assert!(Ask::decode(b"pinned").is_err());
        assert!(Reply::decode(b"pid 42").is_err());
        let unknown = format!(r#"{{"version":"{VERSION}","message":"reboot"}}"#);
        assert!(Ask::decode(unknown.as_bytes()).is_err());
    }

    #[test]
    fn env_is_ours_then_configured_then_launch() {
        let ours = vec![(os(b"A"), os(b"ours")), (os(b"KEEP"), os(b"k"))];
        let cfg = vec![("A".to_owned(), "cfg".to_owned())];
        let env = server_env(
            ours,
            &cfg,
            &[("UPSONIC_SERVER_LAUNCH_ID", "x"), ("A", "launch")],
        );
        assert_eq!(env.len(), 3);
        assert_eq!(env[0], (os(b"KEEP"), os(b"k")));
        assert!(env.contains(&(os(b"A"), os(b"launch"))));
    }

    #[test]
    fn key_changes_with_what_changes_imports() {
        let env = vec![(os(b"PYTHONPATH"), os(b"/a")), (os(b"HOME"), os(b"/h"))];
        let k = preloader_key(b"/py", (1, 2), &env, &[], b"/");
        assert_eq!(k.len(), 16);
        assert_eq!(k, preloader_key(b"/py", (1, 2), &env, &[], b"/"));
        let other_home = vec![(os(b"PYTHONPATH"), os(b"/a")), (os(b"HOME"), os(b"/x"))];
        assert_eq!(k, preloader_key(b"/py", (1, 2), &other_home, &[], b"/"));
        let other_path = vec![(os(b"PYTHONPATH"), os(b"/b"))];
        assert_ne!(k, preloader_key(b"/py", (1, 2), &other_path, &[], b"/"));
        assert_ne!(k, preloader_key(b"/py", (1, 3), &env, &[], b"/"));
        assert_ne!(k, preloader_key(b"/py2", (1, 2), &env, &[], b"/"));
        assert_ne!(
            k,
            preloader_key(b"/py", (1, 2), &env, &["numpy".into()], b"/")
        );
        assert_ne!(
            k,
            preloader_key(b"/py", (1, 2), &env, &[], b"/system.slice/a.service")
        );
    }
}
