//! Warm starts: a server forked from a preloader that has uvicorn and the
//! heavy libraries imported, instead of a fresh interpreter (see
//! docs/WARM.md). `fork` asks the preloader (`_preload.py`) for a server
//! built from the same `LaunchSpec` a cold spawn uses; the result is pinned
//! with a pidfd before the preloader may reap it, and its exit code arrives
//! later on the same connection (`Forked`). Whenever the preloader cannot
//! be used, `fork` says why and the caller spawns cold.

mod preloader;
mod request;

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::platform::{self, PidFd};
use crate::spawn::{self, LaunchSpec};

pub use preloader::{DIR_ENV, IDLE_ENV};
pub use request::{Reply, Request};

/// How long the preloader may take to answer a request.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a warm start waits for a preloader to start.
const START_LIMIT: Duration = Duration::from_secs(30);

/// Why no warm start happened.
#[derive(Debug)]
pub enum Failed {
    /// Ctrl-C (the caller's tick) while waiting for the preloader.
    Interrupted,
    /// This time only: start cold and say why.
    Reason(String),
    /// Not for this interpreter in this process again (a preloader that
    /// refuses would refuse the next start too): start cold and say why.
    Disabled(String),
}

/// What warm starting told the user: (is a warning, message). The binding
/// drains it into Python's logging after each call.
static NOTES: Mutex<Vec<(bool, String)>> = Mutex::new(Vec::new());
/// Preloaders that refused, by socket path, with the reason.
static DISABLED: Mutex<Option<HashMap<String, String>>> = Mutex::new(None);

fn note(warning: bool, message: String) {
    NOTES.lock().push((warning, message));
}

/// Takes what warm starts have to tell since the last call.
pub fn take_notes() -> Vec<(bool, String)> {
    std::mem::take(&mut *NOTES.lock())
}

/// A server the preloader forked: not our child; its exit code comes from
/// the preloader, which is its parent.
#[derive(Debug)]
pub struct Forked {
    pid: i32,
    conn: UnixStream,
    buf: Vec<u8>,
    code: Option<i32>,
}

impl Forked {
    /// The server's PID.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The exit code once the server has exited (call it then), waiting up
    /// to `wait` for the preloader's report. When the report cannot come
    /// (the preloader died, so nobody knows), 0, as `subprocess` reports a
    /// child reaped elsewhere.
    pub fn exit_code(&mut self, wait: Duration) -> i32 {
        if let Some(c) = self.code {
            return c;
        }
        let deadline = Instant::now() + wait;
        let code = loop {
            match read_line(&mut self.conn, &mut self.buf, deadline) {
                Some(line) => {
                    if let Some(Reply::Exit(c)) = Reply::parse(&line) {
                        break c;
                    }
                }
                None => break 0,
            }
        };
        self.code = Some(code);
        code
    }
}

/// Reads one line (blocking until `deadline`); None at end of file,
/// timeout or error.
fn read_line(conn: &mut UnixStream, buf: &mut Vec<u8>, deadline: Instant) -> Option<String> {
    loop {
        if let Some(at) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=at).collect();
            return Some(String::from_utf8_lossy(&line[..at]).into_owned());
        }
        let left = deadline.checked_duration_since(Instant::now())?;
        conn.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .ok()?;
        let mut chunk = [0u8; 256];
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// What a warm start needs beyond the cold `LaunchSpec`.
pub struct Options<'a> {
    pub preload: &'a [String],
    pub start_timeout: Duration,
}

/// Forks the server `spec` describes from the preloader for its
/// interpreter (starting one if none runs), with `stdio` (the log files)
/// or else our own stdout and stderr. The server is pinned with the
/// returned pidfd before the preloader may reap it.
pub fn fork(
    spec: &LaunchSpec<'_>,
    stdio: Option<(&File, &File)>,
    opts: &Options<'_>,
    tick: &mut dyn FnMut() -> crate::Result<()>,
) -> Result<(Forked, Arc<PidFd>), Failed> {
    let mut launch_vars = vec![(crate::protocol::LAUNCH_ENV, spec.launch_id)];
    let lifeline_fd = crate::protocol::LIFELINE_FD.to_string();
    if let Some(ready) = spec.held.map(|h| h.1).or(spec.report) {
        launch_vars.push((crate::protocol::READY_ENV, ready));
    }
    let pid_file = spec.lifeline.map(|(_, f)| f.to_string_lossy());
    if let Some(f) = pid_file.as_deref() {
        launch_vars.push((crate::protocol::LIFELINE_ENV, lifeline_fd.as_str()));
        launch_vars.push((crate::protocol::RECORD_ENV, f));
    }
    let env = request::server_env(std::env::vars_os(), spec.env, &launch_vars);
    let here = std::env::current_dir().map_err(|e| Failed::Reason(e.to_string()))?;
    let cwd = match spec.cwd {
        Some(d) => here.join(d),
        None => here,
    };
    if !cwd.is_dir() {
        // A cold spawn reports this as the error it is.
        return Err(Failed::Reason(format!(
            "{} is not a directory",
            cwd.display()
        )));
    }
    let dir = preloader::dir().map_err(Failed::Reason)?;
    let key = request::preloader_key(
        spec.python.as_os_str().as_bytes(),
        preloader::python_stamp(spec.python),
        &env,
        opts.preload,
        &std::fs::read("/proc/self/cgroup").unwrap_or_default(),
    );
    let sock = dir.join(format!("{key}.sock"));
    let sock_name = sock.display().to_string();
    if let Some(reason) = DISABLED.lock().as_ref().and_then(|d| d.get(&sock_name)) {
        return Err(Failed::Reason(reason.clone()));
    }
    if sock.as_os_str().len() >= 108 {
        return Err(Failed::Reason(format!(
            "the socket path {} is too long for a unix socket",
            sock.display()
        )));
    }

    // SAFETY: descriptors 1 and 2 stay open for the duration of this call
    // (the process's own standard output and error).
    let (out, err) = unsafe { (BorrowedFd::borrow_raw(1), BorrowedFd::borrow_raw(2)) };
    let mut fds = match stdio {
        Some((o, e)) => vec![o.as_fd(), e.as_fd()],
        None => vec![out, err],
    };
    let [stdout, stderr, held, lifeline] = crate::protocol::WARM_FDS.map(|(name, _)| name);
    let mut names = vec![stdout, stderr];
    if let Some((fd, _)) = spec.held {
        // SAFETY: the held socket is open while the spec borrows it.
        fds.push(unsafe { BorrowedFd::borrow_raw(fd) });
        names.push(held);
    }
    if let Some((fd, _)) = spec.lifeline {
        // SAFETY: the lifeline is open for the manager's lifetime.
        fds.push(unsafe { BorrowedFd::borrow_raw(fd) });
        names.push(lifeline);
    }
    let argv = spawn::uvicorn_argv(spec);
    let req = Request {
        cwd: cwd.as_os_str().as_bytes(),
        umask: platform::own_umask().unwrap_or(0o022),
        fd_names: names,
        python: spec.python.as_os_str().as_bytes(),
        argv: &argv,
        env: &env,
    };
    let wire = req.encode();

    let deadline = Instant::now() + opts.start_timeout.min(START_LIMIT);
    let mut started_one = false;
    loop {
        match preloader::connect(&sock) {
            Some(conn) => match ask(conn, &wire, &fds) {
                Ok(forked) => return Ok(forked),
                // A preloader that retired (stale packages) or died answers
                // nothing usable: replace it, once.
                Err(reason) if !started_one && Instant::now() < deadline => {
                    note(false, format!("replacing the preloader: {reason}"));
                }
                Err(reason) => return Err(Failed::Reason(reason)),
            },
            None if started_one => {
                return Err(Failed::Reason("the new preloader does not answer".into()))
            }
            None => note(
                false,
                format!("starting a preloader for {}", spec.python.display()),
            ),
        }
        started_one = true;
        match preloader::start(spec.python, &sock, &env, opts.preload, deadline, tick) {
            Ok(preloader::Started::Listening) => {}
            Ok(preloader::Started::Busy) => wait_listening(&sock, deadline, tick)?,
            Err(Failed::Disabled(reason)) => {
                DISABLED
                    .lock()
                    .get_or_insert_with(HashMap::new)
                    .insert(sock_name, reason.clone());
                return Err(Failed::Reason(reason));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Waits for another manager's preloader to listen.
fn wait_listening(
    sock: &std::path::Path,
    deadline: Instant,
    tick: &mut dyn FnMut() -> crate::Result<()>,
) -> Result<(), Failed> {
    while preloader::connect(sock).is_none() {
        if Instant::now() >= deadline {
            return Err(Failed::Reason(
                "another preloader is starting and not yet listening".into(),
            ));
        }
        tick().map_err(|_| Failed::Interrupted)?;
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// Sends the request and pins the server it forks.
fn ask(
    mut conn: UnixStream,
    wire: &[u8],
    fds: &[BorrowedFd<'_>],
) -> Result<(Forked, Arc<PidFd>), String> {
    platform::send_with_fds(&conn, wire, fds).map_err(|e| format!("sending the request: {e}"))?;
    let mut buf = Vec::new();
    let line = read_line(&mut conn, &mut buf, Instant::now() + REPLY_TIMEOUT)
        .ok_or("the preloader did not answer")?;
    let pid = match Reply::parse(&line) {
        Some(Reply::Pid(pid)) => pid,
        Some(Reply::Error(e)) => return Err(format!("the preloader refused: {e}")),
        _ => return Err(format!("the preloader said {line:?}")),
    };
    // The preloader reaps only after "pinned": the PID is this server's.
    let pidfd = PidFd::open(pid).map_err(|e| format!("opening a pidfd for the server: {e}"))?;
    conn.write_all(b"pinned\n")
        .map_err(|e| format!("the preloader went away: {e}"))?;
    Ok((
        Forked {
            pid,
            conn,
            buf,
            code: None,
        },
        Arc::new(pidfd),
    ))
}

/// Reports a fallback to a cold start.
pub fn fell_back(reason: &str) {
    note(
        true,
        format!("warm start not possible, starting cold: {reason}"),
    );
}
