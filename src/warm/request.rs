//! What the manager and the preloader say to each other (no I/O here): the
//! fork request, the reply lines, and which preloader serves a server.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;

/// The protocol both sides speak; `_preload.py` checks it.
pub const VERSION: &str = "usm-warm 1";

/// One server to fork: everything a cold spawn gives the process.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The absolute working directory.
    pub cwd: &'a [u8],
    pub umask: u32,
    /// The names of the descriptors attached, in order (`stdout`, `stderr`,
    /// `held`, `lifeline`).
    pub fd_names: Vec<&'static str>,
    /// The interpreter a cold start runs (for the command line it shows).
    pub python: &'a [u8],
    /// The arguments after the interpreter (`-m MODULE ...`).
    pub argv: &'a [String],
    pub env: &'a [(OsString, OsString)],
}

impl Request<'_> {
    /// The bytes on the wire: a 4-byte big-endian length, then NUL-separated
    /// fields (version, cwd, umask, descriptor names, interpreter, argc,
    /// argv..., KEY=VALUE...). NUL cannot occur inside any of them.
    pub fn encode(&self) -> Vec<u8> {
        let mut fields: Vec<Vec<u8>> = vec![
            VERSION.as_bytes().to_vec(),
            self.cwd.to_vec(),
            self.umask.to_string().into_bytes(),
            self.fd_names.join(",").into_bytes(),
            self.python.to_vec(),
            self.argv.len().to_string().into_bytes(),
        ];
        fields.extend(self.argv.iter().map(|a| a.as_bytes().to_vec()));
        fields.extend(self.env.iter().map(|(k, v)| {
            let mut e = k.as_bytes().to_vec();
            e.push(b'=');
            e.extend_from_slice(v.as_bytes());
            e
        }));
        let payload = fields.join(&0u8);
        let mut out = (payload.len() as u32).to_be_bytes().to_vec();
        out.extend(payload);
        out
    }
}

/// A line from the preloader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The server was forked with this PID.
    Pid(i32),
    /// The server exited: the code, minus the signal number for a signal.
    Exit(i32),
    /// The preloader refused, with its reason.
    Error(String),
}

impl Reply {
    /// Parses one line (without its newline); None for anything else.
    pub fn parse(line: &str) -> Option<Self> {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "pid" => rest.parse().ok().filter(|p| *p > 0).map(Reply::Pid),
            "exit" => rest.parse().ok().map(Reply::Exit),
            "error" => Some(Reply::Error(rest.to_owned())),
            _ => None,
        }
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

    #[test]
    fn request_round_trips_field_by_field() {
        let argv = vec!["-m".to_owned(), "uvicorn".to_owned(), "m:app".to_owned()];
        let env = vec![(os(b"A"), os(b"1=2")), (os(b"B"), os(b""))];
        let r = Request {
            cwd: b"/srv",
            umask: 0o22,
            fd_names: vec!["stdout", "stderr", "held"],
            python: b"/usr/bin/python3",
            argv: &argv,
            env: &env,
        };
        let bytes = r.encode();
        let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
        assert_eq!(len, bytes.len() - 4);
        let fields: Vec<&[u8]> = bytes[4..].split(|b| *b == 0).collect();
        assert_eq!(fields[0], VERSION.as_bytes());
        assert_eq!(fields[1], b"/srv");
        assert_eq!(fields[2], b"18");
        assert_eq!(fields[3], b"stdout,stderr,held");
        assert_eq!(fields[5], b"3");
        assert_eq!(&fields[6..9], [&b"-m"[..], b"uvicorn", b"m:app"]);
        assert_eq!(&fields[9..], [&b"A=1=2"[..], b"B="]);
    }

    #[test]
    fn replies() {
        assert_eq!(Reply::parse("pid 42"), Some(Reply::Pid(42)));
        assert_eq!(Reply::parse("pid 0"), None);
        assert_eq!(Reply::parse("exit -15"), Some(Reply::Exit(-15)));
        assert_eq!(
            Reply::parse("error cannot run"),
            Some(Reply::Error("cannot run".into()))
        );
        assert_eq!(Reply::parse("pinned"), None);
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
