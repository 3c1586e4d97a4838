//! Launching uvicorn: the command line, the environment marker, the new
//! session, and where its output goes.

use std::fs::{self, File, OpenOptions};
use std::os::fd::{BorrowedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use crate::error::{Error, Result};
use crate::handover::Handover;
use crate::protocol;

/// What to launch.
#[derive(Debug, Clone)]
pub struct LaunchSpec<'a> {
    pub python: &'a Path,
    pub app_path: &'a str,
    pub host: &'a str,
    pub port: u16,
    pub workers: u32,
    pub uvicorn_args: &'a [String],
    pub graceful_timeout_secs: Option<u64>,
    pub cwd: Option<&'a Path>,
    pub env: &'a [(String, String)],
    pub launch_id: &'a str,
    /// A listening socket the manager holds, handed over as descriptor
    /// `protocol::HELD_FD` to our launcher (which gives it to uvicorn), with the name
    /// of the socket readiness is reported on.
    pub held: Option<(RawFd, &'a str)>,
    /// The ready socket's name when there is no held socket (a warm
    /// server): our code in the server reports there why it failed.
    pub report: Option<&'a str>,
    /// The read end of a pipe, handed over as `protocol::LIFELINE_FD`:
    /// when every write end is closed (its holder died), our launcher stops
    /// the server. With the PID file, whose record it then removes.
    pub lifeline: Option<(RawFd, &'a Path)>,
}

/// The log files of a redirected server.
#[derive(Debug, Clone)]
pub struct LogPaths {
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl LogPaths {
    /// `{log_dir}/{name}_server.log` and `{log_dir}/{name}_server_error.log`.
    pub fn new(log_dir: &Path, name: &str) -> Self {
        Self {
            stdout: log_dir.join(format!("{name}_server.log")),
            stderr: log_dir.join(format!("{name}_server_error.log")),
        }
    }
}

/// The argument vector after the interpreter: the original's exact
/// `-m uvicorn APP --host H --port P ...`, or, with a held socket or a
/// lifeline, the same uvicorn arguments behind our launcher.
pub fn uvicorn_argv(spec: &LaunchSpec<'_>) -> Vec<String> {
    let held = match spec.held {
        Some(_) => Some(protocol::HELD_FD.to_string()),
        None if spec.lifeline.is_some() => Some(protocol::NO_HELD_FD.to_owned()),
        None => None,
    };
    let mut argv = match held {
        None => vec!["-m".to_owned(), "uvicorn".to_owned()],
        Some(fd) => vec![
            "-m".to_owned(),
            protocol::LAUNCHER_MODULE.to_owned(),
            fd,
            "--".to_owned(),
        ],
    };
    argv.extend([
        spec.app_path.to_owned(),
        "--host".to_owned(),
        spec.host.to_owned(),
        "--port".to_owned(),
        spec.port.to_string(),
    ]);
    if spec.workers > 1 {
        argv.push("--workers".to_owned());
        argv.push(spec.workers.to_string());
    }
    argv.extend(spec.uvicorn_args.iter().cloned());
    let user_set_graceful = spec
        .uvicorn_args
        .iter()
        .any(|a| a.starts_with("--timeout-graceful-shutdown"));
    if let (Some(secs), false) = (spec.graceful_timeout_secs, user_set_graceful) {
        argv.push("--timeout-graceful-shutdown".to_owned());
        argv.push(secs.to_string());
    }
    argv
}

fn open_log(path: &Path) -> Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| Error::path("cannot open the log file", path, e))
}

/// Creates the log directory and opens both logs for appending. Returns the
/// files and the stderr log's length before launch (where this run begins).
pub fn open_logs(logs: &LogPaths) -> Result<(File, File, u64)> {
    if let Some(dir) = logs.stdout.parent() {
        fs::create_dir_all(dir)
            .map_err(|e| Error::path("cannot create the log directory", dir, e))?;
    }
    let out = open_log(&logs.stdout)?;
    let err = open_log(&logs.stderr)?;
    let offset = err.metadata().map(|m| m.len()).unwrap_or(0);
    Ok((out, err, offset))
}

/// Spawns the server in a new session (its own process group), through
/// the one hand-over (`crate::handover`): stdin from /dev/null, `logs` (if
/// given, else our own stdout and stderr), the held socket and the
/// lifeline, and nothing else of ours. The logs are closed here once the
/// child has them, so the caller keeps no copy.
pub fn spawn(spec: &LaunchSpec<'_>, logs: Option<(File, File)>) -> Result<Child> {
    let mut cmd = Command::new(spec.python);
    cmd.args(uvicorn_argv(spec));
    if let Some(dir) = spec.cwd {
        cmd.current_dir(dir);
    }
    for (k, v) in spec.env {
        cmd.env(k, v);
    }
    cmd.env(protocol::LAUNCH_ENV, spec.launch_id);
    let mut fds = Handover::new().stdin_null()?.output(logs)?;
    if let Some((fd, ready)) = spec.held {
        cmd.env(protocol::READY_ENV, ready);
        // SAFETY: the held socket is open while the spec borrows it.
        fds = fds.borrowed(protocol::HELD_FD, unsafe { BorrowedFd::borrow_raw(fd) })?;
    }
    if let Some((fd, pid_file)) = spec.lifeline {
        cmd.env(protocol::LIFELINE_ENV, protocol::LIFELINE_FD.to_string());
        cmd.env(protocol::RECORD_ENV, pid_file);
        // SAFETY: the lifeline is open for this process's lifetime.
        fds = fds.borrowed(protocol::LIFELINE_FD, unsafe { BorrowedFd::borrow_raw(fd) })?;
    }
    fds.apply(&mut cmd);
    crate::platform::in_new_session(&mut cmd);
    let spawned = cmd.spawn();
    drop(fds);
    spawned.map_err(|e| {
        if let (Some(dir), std::io::ErrorKind::NotFound) = (spec.cwd, e.kind()) {
            if !dir.is_dir() {
                return Error::path("cannot start the server in", dir, e);
            }
        }
        Error::path("cannot run", spec.python, e)
    })
}

/// A fresh random launch identifier (hex).
pub fn new_launch_id() -> String {
    // Without random bytes, the PID and time below still tell launches apart.
    let mut buf = [0u8; 12];
    crate::platform::random_bytes(&mut buf);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut s: String = buf.iter().map(|b| format!("{b:02x}")).collect();
    s.push_str(&format!(
        "-{}-{:x}",
        std::process::id(),
        nanos & 0xffff_ffff
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec<'a>(args: &'a [String]) -> LaunchSpec<'a> {
        LaunchSpec {
            python: Path::new("python3"),
            app_path: "m:app",
            host: "127.0.0.1",
            port: 8123,
            workers: 3,
            uvicorn_args: args,
            graceful_timeout_secs: Some(4),
            cwd: None,
            env: &[],
            launch_id: "x",
            held: None,
            report: None,
            lifeline: None,
        }
    }

    #[test]
    fn argv_has_workers_and_graceful_timeout() {
        let args = vec!["--log-level".to_owned(), "error".to_owned()];
        let argv = uvicorn_argv(&spec(&args));
        assert_eq!(&argv[..3], ["-m", "uvicorn", "m:app"]);
        assert!(argv.windows(2).any(|w| w == ["--workers", "3"]));
        assert!(argv
            .windows(2)
            .any(|w| w == ["--timeout-graceful-shutdown", "4"]));
        let mut held = spec(&args);
        held.held = Some((7, "r"));
        let with_socket = uvicorn_argv(&held);
        assert_eq!(
            &with_socket[..5],
            ["-m", "upsonic_server_manager._launch", "3", "--", "m:app"]
        );
        assert_eq!(&with_socket[4..], &argv[2..]);
        let mut tied = spec(&args);
        tied.lifeline = Some((9, Path::new("/p.pid")));
        assert_eq!(
            &uvicorn_argv(&tied)[..4],
            ["-m", protocol::LAUNCHER_MODULE, "-", "--"]
        );
        let args = vec!["--timeout-graceful-shutdown=1".to_owned()];
        let argv = uvicorn_argv(&spec(&args));
        assert_eq!(
            argv.iter()
                .filter(|a| a.starts_with("--timeout-graceful"))
                .count(),
            1
        );
    }
}
