//! `upsonic-server warm`: the preloaders of a directory, each asked for its
//! status or to stop, each with a deadline (a hung preloader is reported as
//! not answering, never waited for).

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::platform::{self, PidFd};

use super::preloader;
use super::request::{Ask, Reply, Status};

/// One preloader socket found.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// Its socket.
    pub socket: PathBuf,
    /// The PID listening there (from the kernel), None if unknown.
    pub pid: Option<i32>,
    /// What it said, or why it said nothing usable.
    pub status: Result<Status, String>,
}

/// What asking one preloader to stop did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// It exited; this many of its servers run on.
    Ended(u32),
    /// It was asked and is still exiting after the deadline.
    Exiting(u32),
    /// Not stopped: it serves this many live servers (no force).
    Busy(u32),
    /// Not stopped: it did not answer (the reason).
    NoAnswer(String),
    /// It did not answer, and was killed (force).
    Killed,
}

/// The directory `dir` (default: the one warm starts use), if it exists
/// and is private; None when it does not exist (no preloader ever ran).
fn existing(dir: Option<&Path>) -> Result<Option<PathBuf>, String> {
    let d = dir.map_or_else(preloader::default_dir, Path::to_path_buf);
    if std::fs::symlink_metadata(&d).is_err() {
        return Ok(None);
    }
    preloader::private_dir(d).map(Some)
}

/// The preloader sockets in `dir`, sorted.
fn sockets(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|it| {
            it.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "sock"))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// Sends `ask` and reads one reply, within `deadline`.
fn exchange(conn: &mut UnixStream, ask: &Ask, deadline: Instant) -> Result<Reply, String> {
    let left = deadline.saturating_duration_since(Instant::now());
    conn.set_write_timeout(Some(left.max(Duration::from_millis(1))))
        .map_err(|e| e.to_string())?;
    conn.write_all(&ask.encode())
        .map_err(|e| format!("sending: {e}"))?;
    let mut buf = Vec::new();
    let line = super::read_line(conn, &mut buf, deadline).ok_or("no answer in time")?;
    Reply::decode(&line)
}

/// Connects to the preloader at `sock`: None when nothing listens (a
/// socket left behind), else the stream (or why not) and the listener's PID.
fn connect(sock: &Path) -> Option<(Result<UnixStream, String>, Option<i32>)> {
    match platform::connect_unix_now(sock) {
        Ok(c) => {
            let pid = platform::peer_pid(&c);
            Some((Ok(c), pid))
        }
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
            Some((Err("its backlog is full (hung?)".to_owned()), None))
        }
        Err(_) => None,
    }
}

/// Every preloader in `dir` (default: the warm-start directory), each
/// asked for its status within `timeout`.
pub fn list(dir: Option<&Path>, timeout: Duration) -> Result<Vec<Found>, String> {
    let Some(dir) = existing(dir)? else {
        return Ok(Vec::new());
    };
    Ok(sockets(&dir)
        .into_iter()
        .filter_map(|socket| {
            let (conn, pid) = connect(&socket)?;
            let status = conn.and_then(|mut c| {
                match exchange(&mut c, &Ask::Status, Instant::now() + timeout)? {
                    Reply::Status(s) => Ok(s),
                    other => Err(format!("it answered {other:?}")),
                }
            });
            Some(Found {
                socket,
                pid: status.as_ref().map(|s| s.pid).ok().or(pid),
                status,
            })
        })
        .collect())
}

/// Asks the preloader `found` to stop, within `timeout`. Without `force`
/// one that serves live servers is left running, and one that does not
/// answer is left alone; with `force` the first exits (its servers run
/// on) and the second is killed.
pub fn stop(found: &Found, force: bool, timeout: Duration) -> Stopped {
    let deadline = Instant::now() + timeout;
    let pidfd = found.pid.and_then(|p| PidFd::open(p).ok());
    let answer = match connect(&found.socket) {
        None => return Stopped::Ended(0),
        Some((conn, _)) => conn.and_then(|mut c| exchange(&mut c, &Ask::Stop { force }, deadline)),
    };
    let left = match answer {
        Ok(Reply::Stopping(n)) => n,
        Ok(Reply::Busy(n)) => return Stopped::Busy(n),
        Ok(other) => return Stopped::NoAnswer(format!("it answered {other:?}")),
        Err(reason) => {
            return match (force, &pidfd) {
                (true, Some(p)) if p.signal(libc::SIGKILL).is_ok() => Stopped::Killed,
                _ => Stopped::NoAnswer(reason),
            }
        }
    };
    let gone = pidfd.is_none_or(|p| {
        p.wait_exit(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or(true)
    });
    if gone {
        Stopped::Ended(left)
    } else {
        Stopped::Exiting(left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::os::unix::net::UnixListener;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("usm-warm-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        preloader::private_dir(d).unwrap()
    }

    #[test]
    fn a_missing_directory_lists_nothing() {
        let d = std::env::temp_dir().join(format!("usm-warm-none-{}", std::process::id()));
        assert_eq!(list(Some(&d), Duration::from_millis(50)).unwrap(), vec![]);
        assert!(!d.exists(), "listing must not create it");
    }

    #[test]
    fn a_silent_preloader_is_reported_not_waited_for() {
        let d = scratch("silent");
        let sock = d.join("k.sock");
        let _listener = UnixListener::bind(&sock).unwrap(); // never accepts
        let _stale = std::fs::write(d.join("gone.sock"), b""); // nothing listens
        let found = list(Some(&d), Duration::from_millis(100)).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].socket, sock);
        assert_eq!(found[0].pid, Some(std::process::id() as i32));
        assert!(found[0].status.is_err());
        let stopped = stop(&found[0], false, Duration::from_millis(100));
        assert!(matches!(stopped, Stopped::NoAnswer(_)), "{stopped:?}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn status_and_stop_answers_are_read() {
        let d = scratch("answers");
        let sock = d.join("k.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let status = Status {
            pid: 1,
            python: "/py".into(),
            live: 2,
            forked: 5,
            idle_seconds: 0.5,
            idle_limit: 300.0,
            modules: vec!["uvicorn".into()],
        };
        let answers = [Reply::Status(status.clone()), Reply::Busy(2)];
        let server = std::thread::spawn(move || {
            let mut asked = Vec::new();
            for answer in answers {
                let (mut c, _) = listener.accept().unwrap();
                let mut line = Vec::new();
                BufReader::new(&c).read_until(b'\n', &mut line).unwrap();
                asked.push(Ask::decode(&line).unwrap());
                c.write_all(&answer.encode()).unwrap();
            }
            asked
        });
        let found = list(Some(&d), Duration::from_secs(5)).unwrap();
        assert_eq!(found[0].status, Ok(status));
        assert_eq!(found[0].pid, Some(1));
        let mut me = found[0].clone();
        me.pid = None;
        assert_eq!(stop(&me, false, Duration::from_secs(5)), Stopped::Busy(2));
        let asked = server.join().unwrap();
        assert_eq!(asked, vec![Ask::Status, Ask::Stop { force: false }]);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
