//! Finding and starting the preloader: its private directory, its socket,
//! and the on-demand start (`python -m upsonic_server_manager._preload`).

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::platform::{self, PidFd};
use crate::protocol::LAUNCH_ENV;

use super::Failed;

/// Where the preloaders' sockets go instead of the default directory.
pub const DIR_ENV: &str = "UPSONIC_WARM_DIR";
/// Seconds a preloader waits unused before it exits (default `IDLE_SECS`).
pub const IDLE_ENV: &str = "UPSONIC_WARM_IDLE";
const IDLE_SECS: f64 = 300.0;
/// The preloader's launch marker: as long as any real marker, so that a
/// forked server can write its own into the environment the kernel shows.
const MARKER_ROOM: usize = 64;
/// Room in the preloader's arguments for a forked server's command line.
const ARGV_ROOM: usize = 4096;

/// The per-user directory of preloader sockets: created private (0700),
/// and refused unless it is a real directory of ours that only we can use.
pub fn dir() -> Result<PathBuf, String> {
    let uid = platform::euid();
    private_dir(match std::env::var_os(DIR_ENV) {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => match std::env::var_os("XDG_RUNTIME_DIR") {
            Some(x) if !x.is_empty() && Path::new(&x).is_dir() => {
                Path::new(&x).join("upsonic-warm")
            }
            _ => std::env::temp_dir().join(format!("upsonic-warm-{uid}")),
        },
    })
}

/// `d`, created 0700 if missing, if it is a real directory only we can use.
fn private_dir(d: PathBuf) -> Result<PathBuf, String> {
    let uid = platform::euid();
    if let Err(e) = fs::DirBuilder::new().mode(0o700).create(&d) {
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            return Err(format!("cannot create {}: {e}", d.display()));
        }
    }
    let meta = fs::symlink_metadata(&d).map_err(|e| format!("{}: {e}", d.display()))?;
    if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o077 != 0 {
        return Err(format!(
            "{} is not a private directory of this user (mode {:o}, owner {})",
            d.display(),
            meta.mode() & 0o777,
            meta.uid()
        ));
    }
    Ok(d)
}

/// The idle time a new preloader gets.
fn idle_secs() -> f64 {
    std::env::var(IDLE_ENV)
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(IDLE_SECS)
}

/// Connects to the preloader listening at `sock`, if one does.
pub fn connect(sock: &Path) -> Option<UnixStream> {
    UnixStream::connect(sock).ok()
}

/// How starting a preloader ended.
pub enum Started {
    /// It listens now.
    Listening,
    /// Another manager's preloader holds the name (it listens, or will).
    Busy,
}

/// Starts a preloader for `sock` and waits until it listens or refuses.
/// It runs with the server's environment (what it imports depends on it).
pub fn start(
    python: &Path,
    sock: &Path,
    env: &[(OsString, OsString)],
    preload: &[String],
    deadline: Instant,
    tick: &mut dyn FnMut() -> crate::Result<()>,
) -> Result<Started, Failed> {
    let log = sock.with_extension("log");
    let out = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&log)
        .map_err(|e| Failed::Reason(format!("cannot open {}: {e}", log.display())))?;
    let err = out
        .try_clone()
        .map_err(|e| Failed::Reason(format!("{e}")))?;
    let mut cmd = Command::new(python);
    cmd.args(["-m", "upsonic_server_manager._preload"])
        .arg(sock)
        .arg(idle_secs().to_string())
        .arg("-".repeat(ARGV_ROOM))
        .arg("--")
        .args(preload)
        .current_dir("/")
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env(LAUNCH_ENV, format!("preloader{}", ".".repeat(MARKER_ROOM)));
    // It outlives us: stdin from /dev/null, output to its log, nothing
    // else of ours (the one hand-over).
    let fds = crate::handover::Handover::new()
        .stdin_null()
        .and_then(|h| h.output(Some((out, err))))
        .map_err(|e| Failed::Reason(e.to_string()))?;
    fds.apply(&mut cmd);
    for var in [
        crate::protocol::READY_ENV,
        crate::protocol::LIFELINE_ENV,
        crate::protocol::RECORD_ENV,
    ] {
        cmd.env_remove(var);
    }
    platform::in_new_session(&mut cmd);
    let spawned = cmd.spawn();
    drop(fds);
    let mut child =
        spawned.map_err(|e| Failed::Reason(format!("cannot run {}: {e}", python.display())))?;
    // The command forks the preloader proper and exits once it listens.
    let pidfd = PidFd::open(child.id() as i32).map_err(|e| Failed::Reason(e.to_string()))?;
    loop {
        if pidfd.wait_exit(Duration::from_millis(20)).unwrap_or(false) {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Failed::Reason(
                "the preloader did not start in time".to_owned(),
            ));
        }
        if tick().is_err() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Failed::Interrupted);
        }
    }
    let status = child.wait().map_err(|e| Failed::Reason(e.to_string()))?;
    if status.success() {
        return Ok(Started::Listening);
    }
    let said = fs::read_to_string(&log).unwrap_or_default();
    let reason = said
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("it exited while starting")
        .to_owned();
    if reason.starts_with("busy") {
        return Ok(Started::Busy);
    }
    Err(Failed::Disabled(format!("the preloader refused: {reason}")))
}

/// The interpreter's file identity (device-independent inode and mtime):
/// a replaced interpreter at the same path gets a new preloader.
pub fn python_stamp(python: &Path) -> (u64, i64) {
    let resolved = if python.components().count() == 1 {
        std::env::var_os("PATH")
            .and_then(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join(python))
                    .find(|c| c.is_file())
            })
            .unwrap_or_else(|| python.to_path_buf())
    } else {
        python.to_path_buf()
    };
    fs::metadata(resolved)
        .map(|m| (m.ino(), m.mtime_nsec() + m.mtime() * 1_000_000_000))
        .unwrap_or((0, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_must_be_private() {
        let base = std::env::temp_dir().join(format!("usm-warm-dir-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        assert_eq!(private_dir(base.clone()).unwrap(), base);
        let mode = fs::metadata(&base).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&base, fs::Permissions::from_mode(0o755)).unwrap();
        let err = private_dir(base.clone()).unwrap_err();
        assert!(err.contains("not a private directory"), "{err}");
        fs::remove_dir_all(&base).unwrap();
    }
}
