//! The PID record: `{pid_dir}/.upsonic_{name}_server.pid` holds the bare PID
//! (what upsonic's own reader expects), and `.upsonic_{name}_server.id` beside
//! it holds what makes that PID unambiguous (start time, boot, launch marker)
//! and the configuration it was started with (`saved`); `last` keeps how a
//! run ended once the record is gone.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::spec::key;

mod last;
mod saved;

pub use last::{clean_exit, read_last, remove_last, signal_name, write_last, End, LastRun};
pub use saved::{escape, unescape, SavedConfig};

/// The longest PID file we read; anything longer is not a PID.
const MAX_PID_FILE: u64 = 64;
/// The longest identity file we read.
pub(crate) const MAX_ID_FILE: u64 = 16 * 1024;

/// The files that belong to one server name.
#[derive(Debug, Clone)]
pub struct Paths {
    pub pid_file: PathBuf,
    pub id_file: PathBuf,
    pub lock_file: PathBuf,
    pub last_file: PathBuf,
    /// The supervisor's state (`supervise::state`), while one runs.
    pub sup_file: PathBuf,
}

const PREFIX: &str = ".upsonic_";
const PID_SUFFIX: &str = "_server.pid";
const LAST_SUFFIX: &str = "_server.last";
const SUP_SUFFIX: &str = "_server.sup";

impl Paths {
    /// Paths for `name` in `pid_dir`; `name` must already be validated.
    pub fn new(pid_dir: &Path, name: &str) -> Self {
        Self::for_pid_file(&pid_dir.join(format!("{PREFIX}{name}{PID_SUFFIX}")))
    }

    /// Paths beside a PID file the program chose (the original's assignable
    /// `_pid_file`): `X.pid` has `X.id`, `X.lock`, ... beside it; a name
    /// without `.pid` gets the suffixes appended.
    pub fn for_pid_file(pid_file: &Path) -> Self {
        use std::os::unix::ffi::{OsStrExt, OsStringExt};
        let bytes = pid_file.as_os_str().as_bytes();
        let stem = bytes.strip_suffix(b".pid").unwrap_or(bytes);
        let sibling = |ext: &str| {
            let mut v = stem.to_vec();
            v.push(b'.');
            v.extend_from_slice(ext.as_bytes());
            PathBuf::from(std::ffi::OsString::from_vec(v))
        };
        Self {
            pid_file: pid_file.to_path_buf(),
            id_file: sibling("id"),
            lock_file: sibling("lock"),
            last_file: sibling("last"),
            sup_file: sibling("sup"),
        }
    }
}

/// The server name a PID file's name stands for, if it is one.
pub fn name_of_pid_file(file_name: &str) -> Option<&str> {
    let name = file_name.strip_prefix(PREFIX)?.strip_suffix(PID_SUFFIX)?;
    (!name.is_empty()).then_some(name)
}

/// The names of every server with a PID file (or a supervisor between two
/// runs) in `pid_dir`, sorted; with `with_last_runs`, also those only a
/// kept last run remembers.
pub fn list_names(pid_dir: &Path, with_last_runs: bool) -> Vec<String> {
    let Ok(entries) = fs::read_dir(pid_dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let file = e.file_name();
            let file = file.to_str()?;
            let last = with_last_runs
                .then(|| file.strip_prefix(PREFIX)?.strip_suffix(LAST_SUFFIX))
                .flatten()
                .filter(|n| !n.is_empty());
            let supervised = file
                .strip_prefix(PREFIX)
                .and_then(|f| f.strip_suffix(SUP_SUFFIX))
                .filter(|n| !n.is_empty());
            name_of_pid_file(file)
                .or(supervised)
                .or(last)
                .map(str::to_owned)
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Parses PID-file text: ASCII digits with optional surrounding whitespace,
/// a value in `2..=pid_max`. `0`, `1`, negatives and junk are `None`, so no
/// caller can ever derive a process group like 0 or 1 from a bad file.
pub fn parse_pid(text: &[u8], pid_max: i32) -> Option<i32> {
    let s = std::str::from_utf8(text).ok()?.trim();
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v: i64 = s.parse().ok()?;
    if v < 2 || v > i64::from(pid_max) {
        return None;
    }
    Some(v as i32)
}

/// What we record about a server we launched.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    pub pid: i32,
    pub start_ticks: u64,
    pub boot_id: String,
    pub launch_id: String,
    pub host: String,
    pub port: u16,
    pub app_path: String,
    /// Wall-clock start, milliseconds since the epoch.
    pub started_ms: u64,
    /// Log directory when output was redirected, else empty.
    pub log_dir: String,
    /// The configuration it was started with (`record=3`, or `record=2`
    /// of the release before; absent in records written before those).
    pub config: Option<SavedConfig>,
}

impl Identity {
    /// Serialises as `key=value` lines; values never contain newlines.
    /// `format=1` stays, so that a reader from before `record=2` still reads
    /// the identity (it skips keys it does not know).
    pub fn to_text(&self) -> String {
        let clean = |s: &str| s.replace(['\n', '\r'], " ");
        let config = self
            .config
            .as_ref()
            .map(SavedConfig::to_text)
            .unwrap_or_default();
        format!(
            "format=1\npid={}\nstart_ticks={}\nboot_id={}\nlaunch_id={}\nhost={}\nport={}\napp_path={}\nstarted_ms={}\nlog_dir={}\n{config}",
            self.pid,
            self.start_ticks,
            clean(&self.boot_id),
            clean(&self.launch_id),
            clean(&self.host),
            self.port,
            clean(&self.app_path),
            self.started_ms,
            clean(&self.log_dir),
        )
    }

    /// Parses `to_text` output; `None` if a required field is missing or bad.
    pub fn parse(text: &str) -> Option<Self> {
        let mut id = Identity::default();
        let mut have_pid = false;
        let mut have_ticks = false;
        let mut format_ok = false;
        let mut config: Option<saved::Reader> = None;
        for line in text.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            match k {
                "format" => format_ok = v == "1",
                "pid" => {
                    id.pid = v.parse().ok().filter(|p: &i32| *p > 1)?;
                    have_pid = true;
                }
                "start_ticks" => {
                    id.start_ticks = v.parse().ok()?;
                    have_ticks = true;
                }
                "boot_id" => id.boot_id = v.to_owned(),
                "launch_id" => id.launch_id = v.to_owned(),
                key::HOST => id.host = v.to_owned(),
                key::PORT => id.port = v.parse().ok()?,
                key::APP_PATH => id.app_path = v.to_owned(),
                "started_ms" => id.started_ms = v.parse().ok()?,
                key::LOG_DIR => id.log_dir = v.to_owned(),
                "record" => config = SavedConfig::reader(v),
                _ => {
                    if let Some(c) = config.as_mut() {
                        c.take(k, v)?;
                    }
                }
            }
        }
        id.config = config.map(saved::Reader::finish);
        (format_ok && have_pid && have_ticks).then_some(id)
    }
}

pub(crate) fn read_capped(path: &Path, cap: u64) -> Option<Vec<u8>> {
    // O_NOFOLLOW: a symlink planted at the record path is never read through.
    // O_NONBLOCK: a FIFO planted there cannot block us.
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    read_prefix(&mut file, cap)
}

/// Reads at most `cap + 1` bytes; `None` if there are more than `cap` (a
/// record that long is not ours) or on error. A short read of a regular
/// file is its end, so the usual cost is one `read()`.
fn read_prefix(file: &mut impl Read, cap: u64) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; cap as usize + 1];
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => {
                filled += n;
                if filled < buf.len() {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    if filled as u64 > cap {
        return None;
    }
    buf.truncate(filled);
    Some(buf)
}

/// Reads the PID file: `Some(pid)` only for a well-formed, plausible PID.
pub fn read_pid(paths: &Paths, pid_max: i32) -> Option<i32> {
    read_capped(&paths.pid_file, MAX_PID_FILE).and_then(|b| parse_pid(&b, pid_max))
}

/// Reads the identity file, if present and well-formed.
pub fn read_identity(paths: &Paths) -> Option<Identity> {
    let bytes = read_capped(&paths.id_file, MAX_ID_FILE)?;
    Identity::parse(std::str::from_utf8(&bytes).ok()?)
}

/// Writes `contents` to `path` atomically: a fresh 0600 temporary file in the
/// same directory, then `rename()`, which replaces a planted symlink rather
/// than writing through it.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let base = path
        .file_name()
        .and_then(|s| s.to_str())
        .unwrap_or("record");
    let mut attempt = 0u32;
    let (tmp, mut file): (PathBuf, File) = loop {
        let tmp = dir.join(format!(".{base}.{}.{attempt}.tmp", std::process::id()));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
        {
            Ok(f) => break (tmp, f),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 100 => {
                attempt += 1;
            }
            Err(e) => return Err(Error::path("cannot write the PID record in", dir, e)),
        }
    };
    let result = file
        .write_all(contents)
        .and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(Error::path("cannot write the PID record", path, e));
    }
    Ok(())
}

/// Writes the identity file, then the PID file (readers see the PID last).
pub fn write(paths: &Paths, id: &Identity) -> Result<()> {
    write_atomic(&paths.id_file, id.to_text().as_bytes())?;
    write_atomic(&paths.pid_file, id.pid.to_string().as_bytes())
}

/// Removes both files unconditionally; missing files are fine.
pub fn remove(paths: &Paths) {
    let _ = fs::remove_file(&paths.pid_file);
    let _ = fs::remove_file(&paths.id_file);
}

/// Removes the record only while the PID file still names `pid`, so a record
/// written meanwhile for a newer server survives.
pub fn remove_if_names(paths: &Paths, pid: i32, pid_max: i32) {
    let raw = read_capped(&paths.pid_file, MAX_PID_FILE);
    match raw.as_deref().map(|b| parse_pid(b, pid_max)) {
        Some(Some(p)) if p == pid => remove(paths),
        // No PID file: an identity file alone is meaningless.
        None => {
            let _ = fs::remove_file(&paths.id_file);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_parsing_rejects_junk() {
        let max = 4_194_304;
        assert_eq!(parse_pid(b"1234", max), Some(1234));
        assert_eq!(parse_pid(b" 1234\n", max), Some(1234));
        for bad in [
            &b""[..],
            b"0",
            b"1",
            b"-5",
            b"abc",
            b"12 34",
            b"99999999999",
            b"4194305",
            b"\xff\xfe",
            b"+12",
            b"1e3",
            b"0x10",
        ] {
            assert_eq!(parse_pid(bad, max), None, "{bad:?}");
        }
    }

    #[test]
    fn identity_round_trip() {
        let id = Identity {
            pid: 42,
            start_ticks: 7,
            boot_id: "b".into(),
            launch_id: "l".into(),
            host: "::1".into(),
            port: 8000,
            app_path: "a b:app\nx".into(),
            started_ms: 5,
            log_dir: "/tmp/logs".into(),
            config: None,
        };
        let parsed = Identity::parse(&id.to_text()).unwrap();
        assert_eq!(parsed.pid, 42);
        assert_eq!(parsed.config, None);
        // The whole configuration survives, newlines and backslashes included.
        let mut full = id.clone();
        let mut spec = crate::spec::ServerSpec {
            workers: 2,
            cwd: Some("/srv/a\\b".into()),
            env: vec![("K".into(), "v=1\nx".into())],
            uvicorn_args: vec!["--log-level".into(), "a\\nb".into()],
            python: "/usr/bin/python3".into(),
            hold_socket: true,
            history: true,
            warm: true,
            preload: vec!["numpy".into()],
            ..Default::default()
        };
        spec.supervision.policy.restart = crate::supervision::Restart::OnFailure;
        spec.supervision.policy.limit = None;
        spec.supervision.max_memory = Some(1 << 30);
        spec.supervision.log_max_bytes = Some(1 << 16);
        full.config = Some(SavedConfig {
            spec,
            redirect_output: true,
        });
        assert!(full.to_text().contains("\nrecord=3\n"));
        assert_eq!(
            Identity::parse(&full.to_text()).unwrap().config,
            full.config
        );
        // A reader that knows only format=1 keys still finds the identity.
        assert!(full.to_text().starts_with("format=1\npid=42\n"));
        assert_eq!(parsed.app_path, "a b:app x");
        assert!(Identity::parse("pid=42\n").is_none());
        assert!(Identity::parse("format=1\npid=1\nstart_ticks=3\n").is_none());
    }

    /// A record as the release before the spec wrote it (`record=2`)
    /// still reads, each setting into the spec.
    #[test]
    fn a_record_2_still_reads() {
        let old = "format=1\npid=4242\nstart_ticks=99\nboot_id=b\nlaunch_id=l\nhost=127.0.0.1\nport=8123\napp_path=m:app\nstarted_ms=5\nlog_dir=/tmp/logs\nrecord=2\nworkers=3\ncwd=/srv/a\\\\b\nredirect=1\nstart_timeout_ms=1500\nstop_timeout_ms=2000\npython=/usr/bin/python3\nhold_socket=1\nrestart=on-failure\nrestart_delay_ms=250\nrestart_max_delay_ms=7000\nrestart_limit=\nstable_after_ms=3000\nhealth_check=/h\nhealth_interval_ms=500\nhealth_timeout_ms=300\nhealth_failures=2\nmax_memory=536870912\nsupervise=1\nlog_max_bytes=65536\nlog_backup_count=3\nlog_timestamps=1\nenv=A=1\\n2\narg=--log-level\narg=error\nwarm=1\npreload=numpy\nhistory=1\n";
        let id = Identity::parse(old).unwrap();
        assert_eq!(
            (id.pid, id.port, id.log_dir.as_str()),
            (4242, 8123, "/tmp/logs")
        );
        let c = id.config.unwrap();
        let s = &c.spec;
        assert!(c.redirect_output);
        assert_eq!(s.workers, 3);
        assert_eq!(s.cwd.as_deref(), Some(Path::new("/srv/a\\b")));
        assert_eq!(s.env, [("A".to_owned(), "1\n2".to_owned())]);
        assert_eq!(s.uvicorn_args, ["--log-level", "error"]);
        assert_eq!(s.start_timeout, std::time::Duration::from_millis(1500));
        assert_eq!(s.stop_timeout, std::time::Duration::from_secs(2));
        assert_eq!(s.python, Path::new("/usr/bin/python3"));
        assert!(s.hold_socket && s.warm && s.history);
        assert_eq!(s.preload, ["numpy"]);
        let p = &s.supervision.policy;
        assert_eq!(p.restart, crate::supervision::Restart::OnFailure);
        assert_eq!(p.limit, None);
        assert_eq!(p.delay, std::time::Duration::from_millis(250));
        let h = s.supervision.health.as_ref().unwrap();
        assert_eq!((h.path.as_str(), h.failures), ("/h", 2));
        assert_eq!(s.supervision.max_memory, Some(512 << 20));
        assert!(s.supervision.supervise && s.supervision.log_timestamps);
        assert_eq!(s.supervision.log_max_bytes, Some(65536));
        assert_eq!(s.supervision.log_backup_count, Some(3));
        // Without a policy, record=2 wrote no supervision line: the defaults.
        let plain = Identity::parse("format=1\npid=42\nstart_ticks=1\nrecord=2\nworkers=1\ncwd=\n")
            .unwrap();
        let s = plain.config.unwrap().spec;
        assert_eq!((s.cwd, s.uvicorn_args.len()), (None, 0));
        assert!(!s.supervision.is_supervised());
        // A version this release does not know is no configuration.
        assert!(
            Identity::parse("format=1\npid=42\nstart_ticks=1\nrecord=9\nspec={}\n")
                .unwrap()
                .config
                .is_none()
        );
    }

    fn tempdir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "usm-record-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn atomic_write_replaces_a_symlink_instead_of_following_it() {
        let d = tempdir();
        let victim = d.join("victim");
        fs::write(&victim, "precious").unwrap();
        let paths = Paths::new(&d, "x");
        std::os::unix::fs::symlink(&victim, &paths.pid_file).unwrap();
        assert_eq!(read_pid(&paths, 1 << 22), None);
        let id = Identity {
            pid: 77,
            start_ticks: 1,
            ..Default::default()
        };
        write(&paths, &id).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(read_pid(&paths, 1 << 22), Some(77));
        assert_eq!(read_identity(&paths).unwrap().pid, 77);
        remove_if_names(&paths, 78, 1 << 22);
        assert!(paths.pid_file.exists());
        remove_if_names(&paths, 77, 1 << 22);
        assert!(!paths.pid_file.exists() && !paths.id_file.exists());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn names_come_back_from_file_names() {
        let d = tempdir();
        for n in ["b", "a.x"] {
            write(
                &Paths::new(&d, n),
                &Identity {
                    pid: 9,
                    start_ticks: 1,
                    ..Default::default()
                },
            )
            .unwrap();
        }
        fs::write(d.join(".upsonic__server.pid"), "1").unwrap();
        fs::write(d.join("unrelated"), "1").unwrap();
        assert_eq!(list_names(&d, false), ["a.x", "b"]);
        assert_eq!(name_of_pid_file(".upsonic_x_server.id"), None);
        assert!(list_names(&d.join("missing"), true).is_empty());
        let gone = Paths::new(&d, "c");
        let last = LastRun {
            identity: Identity {
                pid: 9,
                start_ticks: 1,
                ..Default::default()
            },
            end: End::Exited(-9),
            ended_ms: 5,
            restarts: 0,
        };
        write_last(&gone, &last).unwrap();
        assert_eq!(read_last(&gone), Some(last));
        assert_eq!(list_names(&d, true), ["a.x", "b", "c"]);
        assert_eq!(list_names(&d, false), ["a.x", "b"]);
        remove_last(&gone);
        assert_eq!(read_last(&gone), None);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn oversized_pid_file_is_ignored() {
        let d = tempdir();
        let paths = Paths::new(&d, "big");
        fs::write(&paths.pid_file, "1".repeat(1 << 20)).unwrap();
        assert_eq!(read_pid(&paths, 1 << 22), None);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn paths_beside_a_chosen_pid_file() {
        let d = Path::new("/d");
        let named = Paths::new(d, "api");
        assert_eq!(named.pid_file, Path::new("/d/.upsonic_api_server.pid"));
        assert_eq!(named.id_file, Path::new("/d/.upsonic_api_server.id"));
        assert_eq!(named.last_file, Path::new("/d/.upsonic_api_server.last"));
        let chosen = Paths::for_pid_file(Path::new("/run/api"));
        assert_eq!(chosen.pid_file, Path::new("/run/api"));
        assert_eq!(chosen.lock_file, Path::new("/run/api.lock"));
        assert_eq!(chosen.sup_file, Path::new("/run/api.sup"));
    }
}
