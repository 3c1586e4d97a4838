//! The PyO3 layer: argument conversion, GIL release around every wait, and
//! the one place where core errors become Python exceptions.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use pyo3::exceptions::{PyKeyboardInterrupt, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use crate::error::Error;
use crate::platform;
use crate::port::{self, Holder};
use crate::server::{Config, Server};
use crate::validate;

/// Builds the Python exception for a core error.
fn to_py(py: Python<'_>, err: Error) -> PyErr {
    let errors = match py.import("upsonic_server_manager._errors") {
        Ok(m) => m,
        Err(e) => return e,
    };
    let build = |cls: &str, args: Bound<'_, PyTuple>, kwargs: Option<Bound<'_, PyDict>>| -> PyErr {
        match errors
            .getattr(cls)
            .and_then(|c| c.call(args, kwargs.as_ref()))
        {
            Ok(obj) => PyErr::from_value(obj),
            Err(e) => e,
        }
    };
    let msg = err.to_string();
    let result: PyResult<PyErr> = (|| {
        Ok(match err {
            Error::InvalidArgument(m) => PyValueError::new_err(m),
            Error::PortInUse { port, holders, .. } => {
                let kw = PyDict::new(py);
                kw.set_item("port", port)?;
                kw.set_item("holders", holders_to_py(py, &holders)?)?;
                build("PortInUseError", PyTuple::new(py, [msg])?, Some(kw))
            }
            Error::StartFailed {
                exit_code,
                stderr_tail,
                ..
            } => {
                let kw = PyDict::new(py);
                kw.set_item("exit_code", exit_code)?;
                kw.set_item("stderr_tail", stderr_tail)?;
                build("StartError", PyTuple::new(py, [msg])?, Some(kw))
            }
            Error::StartTimeout { stderr_tail, .. } => {
                let kw = PyDict::new(py);
                kw.set_item("stderr_tail", stderr_tail)?;
                build("StartTimeoutError", PyTuple::new(py, [msg])?, Some(kw))
            }
            Error::Interrupted => PyKeyboardInterrupt::new_err(()),
            Error::Path { .. }
            | Error::Os { .. }
            | Error::StopFailed(_)
            | Error::NameTaken(_)
            | Error::LockTimeout(_) => build("ServerManagerError", PyTuple::new(py, [msg])?, None),
        })
    })();
    result.unwrap_or_else(|e| e)
}

fn holders_to_py<'py>(py: Python<'py>, holders: &[Holder]) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for h in holders {
        list.append((
            h.pid,
            h.name.as_str(),
            h.user.as_str(),
            h.address.as_str(),
            h.same_user,
            h.uid,
        ))?;
    }
    Ok(list)
}

/// Runs a core call with the GIL released; Ctrl-C is checked every few tens
/// of milliseconds and, once the core has cleaned up, re-raised as is.
fn run<T: Send>(
    py: Python<'_>,
    f: impl FnOnce(&mut dyn FnMut() -> crate::Result<()>) -> crate::Result<T> + Send,
) -> PyResult<T> {
    let pending: Mutex<Option<PyErr>> = Mutex::new(None);
    let result = py.detach(|| {
        let mut tick = || -> crate::Result<()> {
            Python::attach(|py| py.check_signals()).map_err(|e| {
                *pending.lock() = Some(e);
                Error::Interrupted
            })
        };
        f(&mut tick)
    });
    match result {
        Ok(v) => Ok(v),
        Err(Error::Interrupted) => Err(pending
            .lock()
            .take()
            .unwrap_or_else(|| PyKeyboardInterrupt::new_err(()))),
        Err(e) => Err(to_py(py, e)),
    }
}

fn secs(name: &str, v: f64) -> PyResult<Duration> {
    if !v.is_finite() || v <= 0.0 || v > 1e9 {
        return Err(PyValueError::new_err(format!(
            "{name} must be a positive number of seconds, got {v}"
        )));
    }
    Ok(Duration::from_secs_f64(v))
}

/// The native half of a `ServerManager`.
#[pyclass(module = "upsonic_server_manager._core", frozen)]
pub struct Core {
    inner: Arc<Server>,
}

#[pymethods]
impl Core {
    #[new]
    #[pyo3(signature = (app_path, host, port, name, workers, log_dir, pid_dir, cwd, env, start_timeout, stop_timeout, uvicorn_args, python))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        app_path: String,
        host: String,
        port: i64,
        name: String,
        workers: i64,
        log_dir: PathBuf,
        pid_dir: PathBuf,
        cwd: Option<PathBuf>,
        env: Vec<(String, String)>,
        start_timeout: f64,
        stop_timeout: f64,
        uvicorn_args: Vec<String>,
        python: PathBuf,
    ) -> PyResult<Self> {
        let port = validate::port(port).map_err(|e| PyValueError::new_err(e.to_string()))?;
        if !(1..=4096).contains(&workers) {
            return Err(PyValueError::new_err(format!(
                "workers must be between 1 and 4096, got {workers}"
            )));
        }
        for (k, v) in &env {
            if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
                return Err(PyValueError::new_err(format!(
                    "env has an invalid entry {k:?}"
                )));
            }
        }
        let cfg = Config {
            app_path,
            host,
            port,
            name,
            workers: workers as u32,
            log_dir,
            pid_dir,
            cwd,
            env,
            start_timeout: secs("start_timeout", start_timeout)?,
            stop_timeout: secs("stop_timeout", stop_timeout)?,
            uvicorn_args,
            python,
        };
        let server = Server::new(cfg).map_err(|e| match e {
            Error::InvalidArgument(m) => PyValueError::new_err(m),
            other => PyRuntimeError::new_err(other.to_string()),
        })?;
        Ok(Self {
            inner: Arc::new(server),
        })
    }

    /// Starts the server unless it already runs; True if it launched one.
    fn start(&self, py: Python<'_>, redirect_output: bool, force: bool) -> PyResult<bool> {
        let s = self.inner.clone();
        run(py, move |tick| s.start(redirect_output, force, tick))
    }

    /// Stops the server's whole process group; quiet when nothing runs.
    fn stop(&self, py: Python<'_>) -> PyResult<()> {
        let s = self.inner.clone();
        run(py, move |tick| s.stop(tick))
    }

    /// True only for our own server, alive and verified.
    fn is_running(&self, py: Python<'_>) -> bool {
        let s = self.inner.clone();
        py.detach(move || s.is_running())
    }

    /// Whether a bind to (host, port) would fail now.
    fn port_in_use(&self, py: Python<'_>) -> PyResult<bool> {
        let s = self.inner.clone();
        run(py, move |_| s.port_in_use())
    }

    /// Stops same-user holders of the port; True if it stopped something.
    fn kill_port_holders(&self, py: Python<'_>) -> PyResult<bool> {
        let s = self.inner.clone();
        run(py, move |tick| s.kill_port_holders(tick))
    }

    /// Frees the port or raises PortInUseError.
    fn force_cleanup_port(&self, py: Python<'_>) -> PyResult<()> {
        let s = self.inner.clone();
        run(py, move |tick| s.force_cleanup_port(tick))
    }

    /// The processes whose sockets clash with (host, port).
    fn port_holders<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let s = self.inner.clone();
        let holders = run(py, move |_| s.port_holders())?;
        holders_to_py(py, &holders)
    }

    fn read_pid(&self) -> Option<i32> {
        self.inner.read_pid()
    }

    fn write_pid(&self, py: Python<'_>) -> PyResult<bool> {
        let s = self.inner.clone();
        run(py, move |_| s.write_pid())
    }

    fn cleanup_pid(&self) {
        self.inner.cleanup_pid()
    }

    fn child_pid(&self) -> Option<i32> {
        self.inner.child_pid()
    }

    fn child_poll(&self) -> Option<i32> {
        self.inner.child_poll()
    }

    fn forget_child(&self) {
        self.inner.forget_child()
    }

    #[getter]
    fn pid_file(&self) -> PathBuf {
        self.inner.paths().pid_file.clone()
    }

    #[getter]
    fn id_file(&self) -> PathBuf {
        self.inner.paths().id_file.clone()
    }

    #[getter]
    fn lock_file(&self) -> PathBuf {
        self.inner.paths().lock_file.clone()
    }

    /// (stdout log, stderr log) for redirected output.
    fn log_paths(&self) -> (PathBuf, PathBuf) {
        let l = self.inner.log_paths();
        (l.stdout, l.stderr)
    }

    /// The status as a dict of plain values.
    fn status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.clone();
        let st = py.detach(move || s.status());
        let d = PyDict::new(py);
        d.set_item("pid", st.pid)?;
        d.set_item("state", st.state.as_str())?;
        d.set_item("started_at", st.started_at)?;
        d.set_item("uptime", st.uptime)?;
        d.set_item("rss_bytes", st.rss_bytes)?;
        d.set_item("cpu_percent", st.cpu_percent)?;
        d.set_item("workers", st.workers)?;
        d.set_item("exit_code", st.exit_code)?;
        d.set_item("stdout_log", st.stdout_log)?;
        d.set_item("stderr_log", st.stderr_log)?;
        Ok(d)
    }
}

/// Holders of sockets that clash with a bind to (host, port).
#[pyfunction]
#[pyo3(signature = (port, host = "0.0.0.0".to_owned()))]
fn port_holders<'py>(py: Python<'py>, port: i64, host: String) -> PyResult<Bound<'py, PyList>> {
    let port = validate::port(port).map_err(|e| PyValueError::new_err(e.to_string()))?;
    let addrs = validate::host(&host).map_err(|e| PyValueError::new_err(e.to_string()))?;
    let holders = run(py, move |_| {
        let ls = port::conflicting_listeners(&addrs, port)
            .map_err(|e| Error::os("reading the port table", e))?;
        Ok(port::holders_of(&ls, &[]))
    })?;
    holders_to_py(py, &holders)
}

/// What /proc says about `pid`, or None.
#[pyfunction]
fn process_info<'py>(py: Python<'py>, pid: i64) -> PyResult<Option<Bound<'py, PyDict>>> {
    let Ok(pid) = i32::try_from(pid) else {
        return Ok(None);
    };
    let Some(info) = platform::proc_info(pid) else {
        return Ok(None);
    };
    let d = PyDict::new(py);
    d.set_item("pid", info.pid)?;
    d.set_item("ppid", info.ppid)?;
    d.set_item("pgid", info.pgid)?;
    d.set_item("sid", info.sid)?;
    d.set_item("state", info.state.to_string())?;
    d.set_item("alive", info.is_alive())?;
    d.set_item("start_ticks", info.start_ticks)?;
    d.set_item("uid", info.uid)?;
    d.set_item("user", platform::user_name(info.uid))?;
    d.set_item("name", info.name)?;
    d.set_item("cmdline", platform::cmdline(pid).unwrap_or_default())?;
    d.set_item("rss_bytes", info.rss_bytes)?;
    Ok(Some(d))
}

/// The identity recorded for server `name` in `pid_dir`, as a dict, or None.
#[pyfunction]
fn read_record<'py>(
    py: Python<'py>,
    pid_dir: PathBuf,
    name: String,
) -> PyResult<Option<Bound<'py, PyDict>>> {
    validate::name(&name).map_err(|e| PyValueError::new_err(e.to_string()))?;
    let paths = crate::record::Paths::new(&pid_dir, &name);
    let pid = crate::record::read_pid(&paths, platform::pid_max());
    let d = PyDict::new(py);
    d.set_item("pid", pid)?;
    match crate::record::read_identity(&paths).filter(|id| Some(id.pid) == pid) {
        Some(id) => {
            d.set_item("host", id.host)?;
            d.set_item("port", id.port)?;
            d.set_item("app_path", id.app_path)?;
            d.set_item("log_dir", (!id.log_dir.is_empty()).then_some(id.log_dir))?;
            d.set_item("started_ms", id.started_ms)?;
        }
        None if pid.is_none() => return Ok(None),
        None => {}
    }
    Ok(Some(d))
}

/// Bytes of memory available to new processes.
#[pyfunction]
fn memory_available() -> u64 {
    match sysinfo::System::new() {
        Ok(mut sys) => {
            sys.refresh_memory();
            sys.available_memory()
        }
        Err(_) => 0,
    }
}

/// The pids of every descendant of `pid`.
#[pyfunction]
fn descendants(pid: i64) -> PyResult<Vec<i32>> {
    let pid = i32::try_from(pid).map_err(|_| PyTypeError::new_err("pid out of range"))?;
    Ok(platform::descendants(pid))
}

/// Panics on purpose, so that tests can check that a Rust panic reaches
/// Python as an exception instead of aborting the interpreter.
#[pyfunction]
fn _panic_for_tests(message: String) -> PyResult<()> {
    // Inside a detached section as well, as every real call is.
    Python::attach(|py| py.detach(|| -> PyResult<()> { panic!("{message}") }))
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Core>()?;
    m.add_function(wrap_pyfunction!(port_holders, m)?)?;
    m.add_function(wrap_pyfunction!(process_info, m)?)?;
    m.add_function(wrap_pyfunction!(memory_available, m)?)?;
    m.add_function(wrap_pyfunction!(descendants, m)?)?;
    m.add_function(wrap_pyfunction!(read_record, m)?)?;
    m.add_function(wrap_pyfunction!(_panic_for_tests, m)?)?;
    Ok(())
}
