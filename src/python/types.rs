//! Typed values handed to Python: a server's status, a port holder, a
//! parsed uvicorn command line. Immutable, with named fields.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::cmdline::Uvicorn;
use crate::port::Holder;
use crate::server::Status;

/// A snapshot of one server, as returned by `ServerManager.status()`.
#[pyclass(
    module = "upsonic_server_manager",
    name = "ServerStatus",
    frozen,
    get_all,
    eq
)]
#[derive(Debug, Clone, PartialEq)]
pub struct ServerStatus {
    name: String,
    pid: Option<i32>,
    host: String,
    port: u16,
    state: String,
    started_at: Option<f64>,
    uptime: Option<f64>,
    memory_rss: Option<u64>,
    cpu_percent: Option<f64>,
    workers: Vec<i32>,
    exit_code: Option<i32>,
    stdout_log: Option<String>,
    stderr_log: Option<String>,
    ended_at: Option<f64>,
    end_reason: Option<String>,
    restart: String,
    restarts: u32,
    last_exit: Option<i32>,
    supervisor_pid: Option<i32>,
    health: Option<String>,
    /// Whether it was started with a supervisor (a restart policy, or the
    /// watcher: `supervise=True`, the CLI's default).
    supervised: bool,
}

const STATUS_FIELDS: [&str; 22] = [
    "name",
    "pid",
    "host",
    "port",
    "state",
    "started_at",
    "uptime",
    "memory_rss",
    "cpu_percent",
    "workers",
    "exit_code",
    "stdout_log",
    "stderr_log",
    "ended_at",
    "end_reason",
    "restart",
    "restarts",
    "last_exit",
    "supervisor_pid",
    "health",
    "supervised",
    "unsupervised",
];

impl ServerStatus {
    /// The status of server `name` on (host, port), from the core's view.
    pub fn from_core(name: &str, host: &str, port: u16, st: Status) -> Self {
        let path = |p: Option<std::path::PathBuf>| p.map(|p| p.display().to_string());
        Self {
            name: name.to_owned(),
            pid: st.pid,
            host: host.to_owned(),
            port,
            state: st.state.as_str().to_owned(),
            started_at: st.started_at,
            uptime: st.uptime,
            memory_rss: st.rss_bytes,
            cpu_percent: st.cpu_percent,
            workers: st.workers,
            exit_code: st.exit_code,
            stdout_log: path(st.stdout_log),
            stderr_log: path(st.stderr_log),
            ended_at: st.ended_at,
            end_reason: st.end_reason,
            restart: st.restart.to_owned(),
            restarts: st.restarts,
            last_exit: st.last_exit,
            supervisor_pid: st.supervisor_pid,
            health: st.health,
            supervised: st.supervised,
        }
    }
}

#[pymethods]
impl ServerStatus {
    #[new]
    #[pyo3(signature = (name, pid, host, port, state, started_at, uptime, memory_rss, cpu_percent, workers=None, exit_code=None, stdout_log=None, stderr_log=None, ended_at=None, end_reason=None, restart="no".to_owned(), restarts=0, last_exit=None, supervisor_pid=None, health=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        name: String,
        pid: Option<i32>,
        host: String,
        port: u16,
        state: String,
        started_at: Option<f64>,
        uptime: Option<f64>,
        memory_rss: Option<u64>,
        cpu_percent: Option<f64>,
        workers: Option<Vec<i32>>,
        exit_code: Option<i32>,
        stdout_log: Option<String>,
        stderr_log: Option<String>,
        ended_at: Option<f64>,
        end_reason: Option<String>,
        restart: String,
        restarts: u32,
        last_exit: Option<i32>,
        supervisor_pid: Option<i32>,
        health: Option<String>,
    ) -> Self {
        Self {
            supervised: restart != "no",
            name,
            pid,
            host,
            port,
            state,
            started_at,
            uptime,
            memory_rss,
            cpu_percent,
            workers: workers.unwrap_or_default(),
            exit_code,
            stdout_log,
            stderr_log,
            ended_at,
            end_reason,
            restart,
            restarts,
            last_exit,
            supervisor_pid,
            health,
        }
    }

    /// True for a server started with a supervisor (a restart policy, or
    /// the watcher) that is not there (it was killed): it serves, unsupervised.
    #[getter]
    fn unsupervised(&self) -> bool {
        self.supervised && self.supervisor_pid.is_none() && self.state == "running"
    }

    /// The status as a JSON-ready dict.
    fn as_dict<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(slf.py());
        for k in STATUS_FIELDS {
            d.set_item(k, slf.getattr(k)?)?;
        }
        Ok(d)
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let mut parts = Vec::new();
        for k in STATUS_FIELDS {
            parts.push(format!("{k}={}", slf.getattr(k)?.repr()?));
        }
        Ok(format!("ServerStatus({})", parts.join(", ")))
    }
}

/// A process holding a listening socket that clashes with the port. Reads
/// like the named tuple `(pid, name, user, address, same_user, uid)` it
/// replaces: fields by name, index and unpacking, and equal to that tuple.
#[pyclass(
    module = "upsonic_server_manager",
    name = "PortHolder",
    frozen,
    get_all,
    sequence
)]
#[derive(Debug, Clone)]
pub struct PortHolder {
    pid: i32,
    name: String,
    user: String,
    address: String,
    same_user: bool,
    uid: u32,
    /// The managed server it belongs to, when known (not part of the tuple).
    server: Option<String>,
}

impl From<&Holder> for PortHolder {
    fn from(h: &Holder) -> Self {
        Self {
            pid: h.pid,
            name: h.name.clone(),
            user: h.user.clone(),
            address: h.address.clone(),
            same_user: h.same_user,
            uid: h.uid,
            server: h.server.clone(),
        }
    }
}

const HOLDER_FIELDS: [&str; 6] = ["pid", "name", "user", "address", "same_user", "uid"];

impl PortHolder {
    fn as_tuple<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        (
            self.pid,
            self.name.as_str(),
            self.user.as_str(),
            self.address.as_str(),
            self.same_user,
            self.uid,
        )
            .into_pyobject(py)
    }
}

#[pymethods]
impl PortHolder {
    #[new]
    #[pyo3(signature = (pid, name, user, address, same_user, uid, server=None))]
    fn new(
        pid: i32,
        name: String,
        user: String,
        address: String,
        same_user: bool,
        uid: u32,
        server: Option<String>,
    ) -> Self {
        Self {
            pid,
            name,
            user,
            address,
            same_user,
            uid,
            server,
        }
    }

    #[classattr]
    fn _fields() -> (
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
    ) {
        let [a, b, c, d, e, f] = HOLDER_FIELDS;
        (a, b, c, d, e, f)
    }

    /// The fields as a dict.
    fn _asdict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in HOLDER_FIELDS.iter().zip(self.as_tuple(py)?.iter()) {
            d.set_item(k, v)?;
        }
        Ok(d)
    }

    fn __len__(&self) -> usize {
        HOLDER_FIELDS.len()
    }

    fn __getitem__<'py>(
        &self,
        py: Python<'py>,
        index: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.as_tuple(py)?.as_any().get_item(index)
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(self.as_tuple(py)?.as_any().try_iter()?.into_any())
    }

    fn __eq__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<bool> {
        let other = match other.extract::<PyRef<'_, PortHolder>>() {
            Ok(h) => h.as_tuple(py)?.into_any(),
            Err(_) => other.clone(),
        };
        self.as_tuple(py)?.eq(other)
    }

    fn __hash__(&self, py: Python<'_>) -> PyResult<isize> {
        self.as_tuple(py)?.hash()
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let mut parts = Vec::new();
        for (k, v) in HOLDER_FIELDS.iter().zip(self.as_tuple(py)?.iter()) {
            parts.push(format!("{k}={}", v.repr()?));
        }
        Ok(format!("PortHolder({})", parts.join(", ")))
    }

    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        Ok((slf.get_type().into_any(), slf.get().as_tuple(slf.py())?))
    }
}

/// What a uvicorn command line serves, from `parse_uvicorn_cmdline`.
#[pyclass(
    module = "upsonic_server_manager._core",
    name = "UvicornCommand",
    frozen,
    get_all
)]
#[derive(Debug, Clone)]
pub struct UvicornCommand {
    app: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    workers: Option<u32>,
}

impl From<Uvicorn> for UvicornCommand {
    fn from(u: Uvicorn) -> Self {
        Self {
            app: u.app,
            host: u.host,
            port: u.port,
            workers: u.workers,
        }
    }
}

#[pymethods]
impl UvicornCommand {
    fn __repr__(&self) -> String {
        format!(
            "UvicornCommand(app={:?}, host={:?}, port={:?}, workers={:?})",
            self.app, self.host, self.port, self.workers
        )
    }
}
