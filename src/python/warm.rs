//! Warm-start preloaders for Python: the wire format the preloader
//! (`_preload*.py`) reads and writes, decoded and encoded here so that
//! Python spells none of it, and the `upsonic-server warm` queries.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::warm::{self, Ask, Found, Reply, Request, Status, Stopped};

/// The message kinds, as `WarmAsk.kind` and `warm_decode_reply` name them
/// (the serde names: a test checks they match).
pub const ASK_KINDS: [(&str, &str); 4] = [
    ("WARM_FORK", "fork"),
    ("WARM_PINNED", "pinned"),
    ("WARM_STATUS", "status"),
    ("WARM_STOP", "stop"),
];

fn ask_kind(ask: &Ask) -> &'static str {
    match ask {
        Ask::Fork(_) => ASK_KINDS[0].1,
        Ask::Pinned => ASK_KINDS[1].1,
        Ask::Status => ASK_KINDS[2].1,
        Ask::Stop { .. } => ASK_KINDS[3].1,
    }
}

/// One message to a preloader, decoded (`warm_decode_ask`).
#[pyclass(module = "upsonic_server_manager", name = "WarmAsk", frozen)]
#[derive(Debug, Clone)]
pub struct WarmAsk {
    #[pyo3(get)]
    kind: &'static str,
    #[pyo3(get)]
    umask: u32,
    #[pyo3(get)]
    fd_names: Vec<String>,
    #[pyo3(get)]
    argv: Vec<String>,
    #[pyo3(get)]
    force: bool,
    req: Option<Request>,
}

#[pymethods]
impl WarmAsk {
    /// The working directory of a fork (empty otherwise).
    #[getter]
    fn cwd<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.req.as_ref().map_or(&[][..], |r| &r.cwd))
    }

    /// The interpreter a cold start would run (empty unless a fork).
    #[getter]
    fn python<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.req.as_ref().map_or(&[][..], |r| &r.python))
    }

    /// The server's environment (empty unless a fork).
    #[getter]
    fn env<'py>(&self, py: Python<'py>) -> HashMap<Vec<u8>, Bound<'py, PyBytes>> {
        self.req
            .iter()
            .flat_map(|r| r.env.iter())
            .map(|(k, v)| (k.clone(), PyBytes::new(py, v)))
            .collect()
    }

    fn __repr__(&self) -> String {
        format!("WarmAsk(kind={:?})", self.kind)
    }
}

/// Decodes one line a manager sent a preloader. Raises ValueError (another
/// protocol version, not a message).
#[pyfunction]
fn warm_decode_ask(line: &Bound<'_, PyBytes>) -> PyResult<WarmAsk> {
    let ask = Ask::decode(line.as_bytes()).map_err(PyValueError::new_err)?;
    let kind = ask_kind(&ask);
    Ok(match ask {
        Ask::Fork(req) => WarmAsk {
            kind,
            umask: req.umask,
            fd_names: req.fd_names.clone(),
            argv: req.argv.clone(),
            force: false,
            req: Some(req),
        },
        Ask::Stop { force } => WarmAsk {
            kind,
            umask: 0,
            fd_names: vec![],
            argv: vec![],
            force,
            req: None,
        },
        Ask::Pinned | Ask::Status => WarmAsk {
            kind,
            umask: 0,
            fd_names: vec![],
            argv: vec![],
            force: false,
            req: None,
        },
    })
}

/// Encodes a message to a preloader (what the manager sends; for tests).
/// Raises ValueError for an unknown `kind`.
#[pyfunction]
#[pyo3(signature = (kind, *, cwd = Vec::new(), umask = 0o022, fd_names = Vec::new(),
    python = Vec::new(), argv = Vec::new(), env = Vec::new(), force = false))]
#[allow(clippy::too_many_arguments)]
fn warm_encode_ask<'py>(
    py: Python<'py>,
    kind: &str,
    cwd: Vec<u8>,
    umask: u32,
    fd_names: Vec<String>,
    python: Vec<u8>,
    argv: Vec<String>,
    env: Vec<(Vec<u8>, Vec<u8>)>,
    force: bool,
) -> PyResult<Bound<'py, PyBytes>> {
    let ask = match ASK_KINDS.iter().position(|(_, k)| *k == kind) {
        Some(0) => Ask::Fork(Request {
            cwd,
            umask,
            fd_names,
            python,
            argv,
            env,
        }),
        Some(1) => Ask::Pinned,
        Some(2) => Ask::Status,
        Some(3) => Ask::Stop { force },
        _ => return Err(PyValueError::new_err(format!("no message {kind:?}"))),
    };
    Ok(PyBytes::new(py, &ask.encode()))
}

fn reply<'py>(py: Python<'py>, r: Reply) -> Bound<'py, PyBytes> {
    PyBytes::new(py, &r.encode())
}

/// The line saying a server was forked as `pid`.
#[pyfunction]
fn warm_reply_pid(py: Python<'_>, pid: i32) -> Bound<'_, PyBytes> {
    reply(py, Reply::Pid(pid))
}

/// The line saying a server exited (`code`: minus the signal for a signal).
#[pyfunction]
fn warm_reply_exit(py: Python<'_>, code: i32) -> Bound<'_, PyBytes> {
    reply(py, Reply::Exit(code))
}

/// The line saying a request was refused, and why.
#[pyfunction]
fn warm_reply_error(py: Python<'_>, reason: String) -> Bound<'_, PyBytes> {
    reply(py, Reply::Error(reason))
}

/// The line answering a status request (seconds for the times).
#[pyfunction]
#[pyo3(signature = (*, pid, python, live, forked, idle_seconds, idle_limit, modules))]
#[allow(clippy::too_many_arguments)]
fn warm_reply_status(
    py: Python<'_>,
    pid: i32,
    python: String,
    live: u32,
    forked: u32,
    idle_seconds: f64,
    idle_limit: f64,
    modules: Vec<String>,
) -> Bound<'_, PyBytes> {
    reply(
        py,
        Reply::Status(Status {
            pid,
            python,
            live,
            forked,
            idle_seconds,
            idle_limit,
            modules,
        }),
    )
}

/// The line answering a stop request: the preloader exits, `live` servers
/// run on.
#[pyfunction]
fn warm_reply_stopping(py: Python<'_>, live: u32) -> Bound<'_, PyBytes> {
    reply(py, Reply::Stopping(live))
}

/// The line refusing a stop without force: `live` servers are served.
#[pyfunction]
fn warm_reply_busy(py: Python<'_>, live: u32) -> Bound<'_, PyBytes> {
    reply(py, Reply::Busy(live))
}

/// Decodes a preloader's line as (kind, value): ("pid", int), ("exit",
/// int), ("error", str), ("status", Preloader), ("stopping", int),
/// ("busy", int). Raises ValueError.
#[pyfunction]
fn warm_decode_reply(py: Python<'_>, line: &Bound<'_, PyBytes>) -> PyResult<(String, Py<PyAny>)> {
    let r = Reply::decode(line.as_bytes()).map_err(PyValueError::new_err)?;
    let (kind, value) = match r {
        Reply::Pid(n) => ("pid", n.into_pyobject(py)?.into_any().unbind()),
        Reply::Exit(n) => ("exit", n.into_pyobject(py)?.into_any().unbind()),
        Reply::Error(s) => ("error", s.into_pyobject(py)?.into_any().unbind()),
        Reply::Stopping(n) => ("stopping", n.into_pyobject(py)?.into_any().unbind()),
        Reply::Busy(n) => ("busy", n.into_pyobject(py)?.into_any().unbind()),
        Reply::Status(s) => {
            let p = Preloader::from(Found {
                socket: PathBuf::new(),
                pid: Some(s.pid),
                status: Ok(s),
            });
            ("status", Py::new(py, p)?.into_any())
        }
    };
    Ok((kind.to_owned(), value))
}

/// A warm-start preloader, as `preloaders()` found it. When it did not
/// answer (`answering` False, `error` says why) only `socket` and maybe
/// `pid` are known.
#[pyclass(
    module = "upsonic_server_manager",
    name = "Preloader",
    frozen,
    get_all,
    eq
)]
#[derive(Debug, Clone, PartialEq)]
pub struct Preloader {
    /// Its socket (str).
    socket: String,
    /// Its PID, None if unknown.
    pid: Option<i32>,
    /// Whether it answered the status request in time.
    answering: bool,
    /// Why it did not answer, else None.
    error: Option<String>,
    /// The interpreter it runs.
    python: Option<String>,
    /// Servers it forked that still run.
    live: Option<u32>,
    /// Servers it forked since it started.
    forked: Option<u32>,
    /// Seconds since its last request or server exit.
    idle_seconds: Option<f64>,
    /// Seconds idle (with no live server) after which it exits.
    idle_limit: Option<f64>,
    /// The modules it imported.
    modules: Vec<String>,
}

impl From<Found> for Preloader {
    fn from(f: Found) -> Self {
        let socket = f.socket.display().to_string();
        match f.status {
            Ok(s) => Self {
                socket,
                pid: Some(s.pid),
                answering: true,
                error: None,
                python: Some(s.python),
                live: Some(s.live),
                forked: Some(s.forked),
                idle_seconds: Some(s.idle_seconds),
                idle_limit: Some(s.idle_limit),
                modules: s.modules,
            },
            Err(e) => Self {
                socket,
                pid: f.pid,
                answering: false,
                error: Some(e),
                python: None,
                live: None,
                forked: None,
                idle_seconds: None,
                idle_limit: None,
                modules: vec![],
            },
        }
    }
}

#[pymethods]
impl Preloader {
    fn __repr__(&self) -> String {
        let show = |v: Option<String>| v.unwrap_or_else(|| "None".to_owned());
        format!(
            "Preloader(pid={}, socket={:?}, live={}, forked={})",
            show(self.pid.map(|p| p.to_string())),
            self.socket,
            show(self.live.map(|n| n.to_string())),
            show(self.forked.map(|n| n.to_string())),
        )
    }
}

/// What `stop_preloader` did: `outcome` is "ended" (it exited),
/// "exiting" (asked, not yet gone after the timeout), "busy" (left running:
/// it serves `servers` live servers), "no answer" (left running, `reason`
/// says why) or "killed" (it did not answer; force). `servers`: its
/// servers that run on (ended, exiting) or that kept it (busy).
#[pyclass(
    module = "upsonic_server_manager",
    name = "PreloaderStop",
    frozen,
    get_all,
    eq
)]
#[derive(Debug, Clone, PartialEq)]
pub struct PreloaderStop {
    socket: String,
    pid: Option<i32>,
    outcome: &'static str,
    servers: u32,
    reason: Option<String>,
}

/// Every warm-start preloader of this user in `dir` (default: the
/// directory warm starts use, `$UPSONIC_WARM_DIR` if set), each asked for
/// its status within `timeout` seconds (default 2.0): one that does not
/// answer is listed with `answering` False, never waited for. Raises
/// ValueError when the directory is not private to this user.
#[pyfunction]
#[pyo3(signature = (dir = None, timeout = 2.0))]
fn preloaders(py: Python<'_>, dir: Option<PathBuf>, timeout: f64) -> PyResult<Vec<Preloader>> {
    let timeout = Duration::try_from_secs_f64(timeout)
        .map_err(|_| PyValueError::new_err("timeout must be a number of seconds >= 0"))?;
    let found = py
        .detach(|| warm::list(dir.as_deref(), timeout))
        .map_err(PyValueError::new_err)?;
    Ok(found.into_iter().map(Preloader::from).collect())
}

/// Asks `preloader` to exit, waiting up to `timeout` seconds (default
/// 5.0). Without `force` (default) one serving live servers, or not
/// answering, is left running; with it the first exits (its servers run
/// on, their exit codes no longer reported) and the second is killed.
#[pyfunction]
#[pyo3(signature = (preloader, force = false, timeout = 5.0))]
fn stop_preloader(
    py: Python<'_>,
    preloader: &Preloader,
    force: bool,
    timeout: f64,
) -> PyResult<PreloaderStop> {
    let timeout = Duration::try_from_secs_f64(timeout)
        .map_err(|_| PyValueError::new_err("timeout must be a number of seconds >= 0"))?;
    let found = Found {
        socket: PathBuf::from(&preloader.socket),
        pid: preloader.pid,
        status: Err(String::new()),
    };
    let stopped = py.detach(|| warm::stop(&found, force, timeout));
    let (outcome, servers, reason) = match stopped {
        Stopped::Ended(n) => ("ended", n, None),
        Stopped::Exiting(n) => ("exiting", n, None),
        Stopped::Busy(n) => ("busy", n, None),
        Stopped::NoAnswer(r) => ("no answer", 0, Some(r)),
        Stopped::Killed => ("killed", 0, None),
    };
    Ok(PreloaderStop {
        socket: preloader.socket.clone(),
        pid: preloader.pid,
        outcome,
        servers,
        reason,
    })
}

/// Adds the classes, functions and `WARM_*` names to `_core`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<WarmAsk>()?;
    m.add_class::<Preloader>()?;
    m.add_class::<PreloaderStop>()?;
    m.add_function(wrap_pyfunction!(warm_decode_ask, m)?)?;
    m.add_function(wrap_pyfunction!(warm_encode_ask, m)?)?;
    m.add_function(wrap_pyfunction!(warm_reply_pid, m)?)?;
    m.add_function(wrap_pyfunction!(warm_reply_exit, m)?)?;
    m.add_function(wrap_pyfunction!(warm_reply_error, m)?)?;
    m.add_function(wrap_pyfunction!(warm_reply_status, m)?)?;
    m.add_function(wrap_pyfunction!(warm_reply_stopping, m)?)?;
    m.add_function(wrap_pyfunction!(warm_reply_busy, m)?)?;
    m.add_function(wrap_pyfunction!(warm_decode_reply, m)?)?;
    m.add_function(wrap_pyfunction!(preloaders, m)?)?;
    m.add_function(wrap_pyfunction!(stop_preloader, m)?)?;
    for (name, value) in ASK_KINDS {
        m.add(name, value)?;
    }
    m.add("WARM_VERSION", warm::VERSION)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_are_the_wire_names() {
        let asks = [
            Ask::Fork(Request {
                cwd: vec![],
                umask: 0,
                fd_names: vec![],
                python: vec![],
                argv: vec![],
                env: vec![],
            }),
            Ask::Pinned,
            Ask::Status,
            Ask::Stop { force: false },
        ];
        for a in asks {
            let line = String::from_utf8(a.encode()).unwrap();
            assert!(line.contains(&format!("\"{}\"", ask_kind(&a))), "{line}");
        }
    }
}
