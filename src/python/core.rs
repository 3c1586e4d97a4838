//! `Core`, the native half of a `ServerManager`: every call releases the
//! GIL while it works and checks for Ctrl-C every few tens of milliseconds.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use pyo3::exceptions::PyKeyboardInterrupt;
use pyo3::prelude::*;

use crate::error::Error;
use crate::server::{Config, Server};
use crate::spec::key;

use super::args;
use super::errors::to_py;
use super::types::{PortHolder, ServerStatus};

/// Runs a core call with the GIL released; Ctrl-C is checked every few tens
/// of milliseconds and, once the core has cleaned up, re-raised as is.
pub fn run<T: Send>(
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
    log_warm_notes(py);
    match result {
        Ok(v) => Ok(v),
        Err(Error::Interrupted) => Err(pending
            .lock()
            .take()
            .unwrap_or_else(|| PyKeyboardInterrupt::new_err(()))),
        Err(e) => Err(to_py(py, e)),
    }
}

/// What warm starts had to say (fallbacks, preloader starts), to the
/// `upsonic_server_manager` logger: the library never prints.
fn log_warm_notes(py: Python<'_>) {
    let notes = crate::warm::take_notes();
    if notes.is_empty() {
        return;
    }
    let Ok(logger) = py
        .import("logging")
        .and_then(|m| m.call_method1("getLogger", ("upsonic_server_manager",)))
    else {
        return;
    };
    for (warning, message) in notes {
        let level = if warning { "warning" } else { "info" };
        let _ = logger.call_method1(level, (message,));
    }
}

/// The native half of a `ServerManager`.
#[pyclass(module = "upsonic_server_manager._core", frozen)]
pub struct Core {
    /// The server; replaced whole when the program assigns a new
    /// configuration (`replace_server`). Calls clone the `Arc` and work on
    /// that, so a replacement sees a call under way in its count.
    inner: RwLock<Arc<Server>>,
    /// The output mode of the last `start()`, which `restart()` reuses.
    redirect_output: AtomicBool,
    /// `workers=None`: the count is `$UPSONIC_WORKERS_AMOUNT`, read at each start.
    workers_from_env: AtomicBool,
}

impl Core {
    fn server(&self) -> Arc<Server> {
        self.inner.read().clone()
    }

    /// `workers=None`: reads `$UPSONIC_WORKERS_AMOUNT` now (a bad value is a
    /// `ValueError` naming it) and, when it changed and nothing runs, starts
    /// with it. A running server keeps its count (the start is a no-op).
    fn refresh_workers(&self, py: Python<'_>) -> PyResult<()> {
        if !self.workers_from_env.load(Ordering::Relaxed) {
            return Ok(());
        }
        let workers = crate::validate::workers_from_env().map_err(|e| to_py(py, e))?;
        let mut slot = self.inner.write();
        if slot.config().workers == workers || Arc::strong_count(&slot) > 1 {
            return Ok(());
        }
        let mut cfg = slot.config().clone();
        cfg.workers = workers;
        match slot.replaced(cfg, crate::spec::key::WORKERS) {
            Ok(new) => *slot = Arc::new(new),
            Err(Error::Running { .. }) => {}
            Err(e) => return Err(to_py(py, e)),
        }
        Ok(())
    }
}

#[pymethods]
impl Core {
    /// Every keyword is required: the facade passes each option, its
    /// default filled from `_core.OPTIONS` (`crate::spec`), so no default is
    /// spelled here and `None` always means what the option says it means.
    #[new]
    #[pyo3(signature = (app_path, host, port, name, *, python, workers, log_dir, pid_dir, cwd, env, start_timeout, stop_timeout, uvicorn_args, hold_socket, stop_with_caller, restart, restart_delay, restart_max_delay, restart_limit, stable_after, health_check, health_interval, health_timeout, health_failures, max_memory, supervise, log_max_bytes, log_backup_count, log_timestamps, warm, preload, pid_file, history))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        app_path: &Bound<'_, PyAny>,
        host: &Bound<'_, PyAny>,
        port: &Bound<'_, PyAny>,
        name: &Bound<'_, PyAny>,
        python: PathBuf,
        workers: Option<&Bound<'_, PyAny>>,
        log_dir: PathBuf,
        pid_dir: Option<PathBuf>,
        cwd: Option<PathBuf>,
        env: Option<&Bound<'_, PyAny>>,
        start_timeout: &Bound<'_, PyAny>,
        stop_timeout: &Bound<'_, PyAny>,
        uvicorn_args: &Bound<'_, PyAny>,
        hold_socket: Option<bool>,
        stop_with_caller: Option<&Bound<'_, PyAny>>,
        restart: &Bound<'_, PyAny>,
        restart_delay: &Bound<'_, PyAny>,
        restart_max_delay: &Bound<'_, PyAny>,
        restart_limit: &Bound<'_, PyAny>,
        stable_after: &Bound<'_, PyAny>,
        health_check: &Bound<'_, PyAny>,
        health_interval: &Bound<'_, PyAny>,
        health_timeout: &Bound<'_, PyAny>,
        health_failures: &Bound<'_, PyAny>,
        max_memory: &Bound<'_, PyAny>,
        supervise: &Bound<'_, PyAny>,
        log_max_bytes: &Bound<'_, PyAny>,
        log_backup_count: &Bound<'_, PyAny>,
        log_timestamps: &Bound<'_, PyAny>,
        warm: Option<&Bound<'_, PyAny>>,
        preload: Option<&Bound<'_, PyAny>>,
        pid_file: Option<PathBuf>,
        history: Option<bool>,
    ) -> PyResult<Self> {
        let port = args::server_port(py, port)?;
        let flag = |name: &str, v: Option<&Bound<'_, PyAny>>| match v.filter(|w| !w.is_none()) {
            None => Ok(false),
            Some(w) if w.is_instance_of::<pyo3::types::PyBool>() => w.extract(),
            Some(w) => Err(super::errors::type_error(name, "True or False", w)),
        };
        let warm = flag(key::WARM, warm)?;
        let stop_with_caller = flag(key::STOP_WITH_CALLER, stop_with_caller)?;
        let supervision = args::SupervisionArgs {
            restart,
            restart_delay,
            restart_max_delay,
            restart_limit,
            stable_after,
            health_check,
            health_interval,
            health_timeout,
            health_failures,
            max_memory,
            supervise,
            log_max_bytes,
            log_backup_count,
            log_timestamps,
        }
        .parse(py)?;
        let workers = args::workers(py, workers)?;
        let cfg = Config {
            app_path: args::string(
                key::APP_PATH,
                "a string like 'package.module:app'",
                app_path,
            )?,
            host: args::string(key::HOST, "a string", host)?,
            port,
            name: args::string(key::NAME, "a string", name)?,
            // Until a start reads it (`refresh_workers`), a bad value is 1.
            workers: workers.unwrap_or_else(|| crate::validate::workers_from_env().unwrap_or(1)),
            log_dir,
            pid_dir: args::dir_or_home(pid_dir),
            cwd,
            env: args::env(py, env)?,
            start_timeout: args::seconds(py, key::START_TIMEOUT, start_timeout)?,
            stop_timeout: args::seconds(py, key::STOP_TIMEOUT, stop_timeout)?,
            uvicorn_args: args::uvicorn_args(uvicorn_args)?,
            python,
            // Held by default where it is needed: the kernel picks the port,
            // or a supervisor restarts the server (connections then wait in
            // the socket's queue instead of being refused, and nobody can
            // take the port between two runs).
            hold_socket: hold_socket.unwrap_or(port == 0 || supervision.is_supervised()),
            stop_with_caller,
            supervision: supervision.clone(),
            warm,
            preload: args::preload(preload)?,
            pid_file,
            history: history.unwrap_or(false),
        };
        let server = Server::new(cfg).map_err(|e| to_py(py, e))?;
        Ok(Self {
            inner: RwLock::new(Arc::new(server)),
            redirect_output: AtomicBool::new(false),
            workers_from_env: AtomicBool::new(workers.is_none()),
        })
    }

    /// Takes `other`'s configuration (built and validated by its
    /// constructor) for this manager's server, from the next start on:
    /// the original's attributes are assignable. Refused while the server
    /// runs, or while another thread is in a call on this manager.
    fn replace_server(&self, py: Python<'_>, other: &Core, what: &str) -> PyResult<()> {
        let cfg = other.server().config().clone();
        let mut slot = self.inner.write();
        if Arc::strong_count(&slot) > 1 {
            return Err(super::errors::manager_error(
                py,
                format!(
                    "Cannot change {what} of {}: another call on this manager is under way; try again once it returned",
                    slot.config().name
                ),
            ));
        }
        let new = slot.replaced(cfg, what).map_err(|e| to_py(py, e))?;
        *slot = Arc::new(new);
        self.workers_from_env.store(
            other.workers_from_env.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        Ok(())
    }

    /// The keywords that build this manager's configuration again (the
    /// configured port: 0 stays 0), for a copy or a changed configuration.
    fn arguments<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
        let s = self.server();
        let c = s.config();
        let d = super::spec::values(py, c, |_| true)?;
        // `workers=None` stays None: the count is read at each start.
        if self.workers_from_env.load(Ordering::Relaxed) {
            d.set_item(crate::spec::key::WORKERS, py.None())?;
        }
        d.set_item("python", &c.python)?;
        Ok(d)
    }

    /// Starts the server unless it already runs; True if it launched one.
    fn start(&self, py: Python<'_>, redirect_output: bool, force: bool) -> PyResult<bool> {
        self.refresh_workers(py)?;
        let s = self.server();
        // A supervised server's output always goes to its log files (it
        // outlives the caller: docs/OWNER.md).
        let redirected = redirect_output || s.config().supervision.is_supervised();
        self.redirect_output.store(redirected, Ordering::Relaxed);
        run(py, move |tick| s.start(redirect_output, force, tick))
    }

    /// Sets the output mode `restart()` reuses (a manager rebuilt from a
    /// record takes the recorded one).
    fn remember_output(&self, redirect_output: bool) {
        self.redirect_output
            .store(redirect_output, Ordering::Relaxed);
    }

    /// Stop and start again; a held socket stays open in between.
    fn restart(&self, py: Python<'_>, redirect_output: bool, force: bool) -> PyResult<bool> {
        self.refresh_workers(py)?;
        self.redirect_output
            .store(redirect_output, Ordering::Relaxed);
        let s = self.server();
        run(py, move |tick| s.restart(redirect_output, force, tick))
    }

    /// A new generation on the held socket, then the old one stops.
    fn reload(&self, py: Python<'_>) -> PyResult<()> {
        let redirect_output = self.redirect_output.load(Ordering::Relaxed);
        let s = self.server();
        run(py, move |tick| s.reload(redirect_output, tick))
    }

    /// Stops the server's whole process group; quiet when nothing runs.
    fn stop(&self, py: Python<'_>) -> PyResult<()> {
        let s = self.server();
        run(py, move |tick| s.stop(tick))
    }

    /// Forgets a stopped server's record and last run; False if it runs.
    fn forget(&self, py: Python<'_>) -> PyResult<bool> {
        let s = self.server();
        run(py, move |tick| s.forget(tick))
    }

    /// True only for our own server, alive and verified.
    fn is_running(&self, py: Python<'_>) -> bool {
        let s = self.server();
        py.detach(move || s.is_running())
    }

    /// Whether a bind to (host, port) would fail now.
    fn port_in_use(&self, py: Python<'_>) -> PyResult<bool> {
        let s = self.server();
        run(py, move |_| s.port_in_use())
    }

    /// Stops same-user holders of the port; True if it stopped something.
    fn kill_port_holders(&self, py: Python<'_>) -> PyResult<bool> {
        let s = self.server();
        run(py, move |tick| s.kill_port_holders(tick))
    }

    /// Frees the port or raises PortInUseError.
    fn force_cleanup_port(&self, py: Python<'_>) -> PyResult<()> {
        let s = self.server();
        run(py, move |tick| s.force_cleanup_port(tick))
    }

    /// The processes whose sockets clash with (host, port).
    fn port_holders(&self, py: Python<'_>) -> PyResult<Vec<PortHolder>> {
        let s = self.server();
        let holders = run(py, move |_| s.port_holders())?;
        Ok(holders.iter().map(PortHolder::from).collect())
    }

    fn read_pid(&self) -> Option<i32> {
        self.server().read_pid()
    }

    fn write_pid(&self, py: Python<'_>) -> PyResult<bool> {
        let s = self.server();
        run(py, move |_| s.write_pid())
    }

    fn cleanup_pid(&self) {
        self.server().cleanup_pid()
    }

    /// Supervises the server from this process (`run` with a restart
    /// policy) until a stop; the exit status. `control_fd` receives signal
    /// numbers (Python's wakeup fd); `events_fd` (taken over, closed here)
    /// receives the supervisor's protocol lines.
    fn supervise_here(
        &self,
        py: Python<'_>,
        redirect_output: bool,
        force: bool,
        control_fd: i32,
        events_fd: i32,
    ) -> PyResult<i32> {
        use std::os::fd::FromRawFd;
        if events_fd < 0 {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "events_fd must be a descriptor",
            ));
        }
        // SAFETY: the caller hands this descriptor over (documented above).
        let events = unsafe { std::os::fd::OwnedFd::from_raw_fd(events_fd) };
        self.refresh_workers(py)?;
        self.redirect_output
            .store(redirect_output, Ordering::Relaxed);
        let s = self.server();
        run(py, move |tick| {
            s.supervise_here(redirect_output, force, control_fd, events, tick)
        })
    }

    /// The supervisor this manager spawned: (its PID, the read end of its
    /// events pipe as a descriptor the caller now owns); once.
    fn take_supervisor_link(&self) -> Option<(i32, i32)> {
        use std::os::fd::IntoRawFd;
        self.server()
            .take_supervisor_link()
            .map(|l| (l.pid, l.events.into_raw_fd()))
    }

    #[getter]
    fn restart_policy(&self) -> &'static str {
        self.server().config().supervision.policy.restart.as_str()
    }

    /// True when a supervisor process runs the server (`supervise=True`, a
    /// restart policy or a log option).
    #[getter]
    fn supervised(&self) -> bool {
        self.server().config().supervision.is_supervised()
    }

    fn child_pid(&self) -> Option<i32> {
        self.server().child_pid()
    }

    fn child_poll(&self) -> Option<i32> {
        self.server().child_poll()
    }

    /// `poll()` of our child `pid`: None while it runs, its exit code once
    /// it ended; `unknown` when this manager let go of it (`_process = None`).
    #[pyo3(signature = (pid, unknown=None))]
    fn poll_pid(&self, pid: i32, unknown: Option<i32>) -> Option<i32> {
        self.server().poll_pid(pid).unwrap_or(unknown)
    }

    /// `wait(timeout)` for our child `pid` (seconds; None: as long as it
    /// takes), GIL released, Ctrl-C checked: its exit code, or None when the
    /// timeout passed first.
    #[pyo3(signature = (pid, timeout=None))]
    fn wait_pid(&self, py: Python<'_>, pid: i32, timeout: Option<f64>) -> PyResult<Option<i32>> {
        let timeout = timeout.map(|t| std::time::Duration::from_secs_f64(t.clamp(0.0, 1e9)));
        let s = self.server();
        run(py, move |tick| s.wait_pid(pid, timeout, tick))
    }

    /// `send_signal(sig)` to our child `pid` through its pidfd; False (and
    /// nothing sent) once it ended or when it is not ours.
    fn signal_pid(&self, py: Python<'_>, pid: i32, sig: i32) -> PyResult<bool> {
        self.server().signal_pid(pid, sig).map_err(|e| to_py(py, e))
    }

    /// The command line of our child `pid` while it is unreaped.
    fn child_cmdline(&self, pid: i32) -> Option<Vec<String>> {
        self.server().child_cmdline(pid)
    }

    /// Whether `pid` (an overridden `_read_pid`'s answer) is our server, alive.
    fn pid_is_ours(&self, py: Python<'_>, pid: i32) -> bool {
        let s = self.server();
        py.detach(move || s.pid_is_ours(pid))
    }

    /// Stops `pid` (an overridden `_read_pid`'s answer) if it is our server.
    fn stop_pid(&self, py: Python<'_>, pid: i32) -> PyResult<bool> {
        let s = self.server();
        run(py, move |tick| s.stop_pid(pid, tick))
    }

    fn forget_child(&self) {
        self.server().forget_child()
    }

    /// A snapshot of state and resources.
    fn status(&self, py: Python<'_>) -> ServerStatus {
        let s = self.server();
        let server = s.clone();
        let st = py.detach(move || s.status());
        let c = server.config();
        ServerStatus::from_core(&c.name, &c.host, server.port(), st)
    }

    /// CPU seconds used so far by the server and its workers, or None.
    fn cpu_time(&self, py: Python<'_>) -> Option<f64> {
        let s = self.server();
        py.detach(move || s.cpu_seconds())
    }

    /// (stdout log, stderr log) for redirected output.
    fn log_paths(&self) -> (PathBuf, PathBuf) {
        let l = self.server().log_paths();
        (l.stdout, l.stderr)
    }

    // ---- the configuration, owned here ------------------------------------------

    #[getter]
    fn app_path(&self) -> String {
        self.server().config().app_path.clone()
    }
    #[getter]
    fn host(&self) -> String {
        self.server().config().host.clone()
    }
    #[getter]
    fn port(&self) -> u16 {
        self.server().port()
    }
    #[getter]
    fn hold_socket(&self) -> bool {
        self.server().config().hold_socket
    }
    #[getter]
    fn warm(&self) -> bool {
        self.server().config().warm
    }
    #[getter]
    fn preload(&self) -> Vec<String> {
        self.server().config().preload.clone()
    }
    #[getter]
    fn name(&self) -> String {
        self.server().config().name.clone()
    }
    #[getter]
    fn workers(&self) -> u32 {
        self.server().config().workers
    }
    #[getter]
    fn log_dir(&self) -> PathBuf {
        self.server().config().log_dir.clone()
    }
    #[getter]
    fn pid_dir(&self) -> PathBuf {
        self.server().config().pid_dir.clone()
    }
    #[getter]
    fn cwd(&self) -> Option<PathBuf> {
        self.server().config().cwd.clone()
    }
    #[getter]
    fn env(&self) -> Vec<(String, String)> {
        self.server().config().env.clone()
    }
    #[getter]
    fn start_timeout(&self) -> f64 {
        self.server().config().start_timeout.as_secs_f64()
    }
    #[getter]
    fn stop_timeout(&self) -> f64 {
        self.server().config().stop_timeout.as_secs_f64()
    }
    #[getter]
    fn uvicorn_args(&self) -> Vec<String> {
        self.server().config().uvicorn_args.clone()
    }
    /// "https" when uvicorn's arguments give it TLS, else "http".
    #[getter]
    fn scheme(&self) -> &'static str {
        self.server().config().speaks().scheme()
    }
    #[getter]
    fn redirect_output(&self) -> bool {
        self.redirect_output.load(Ordering::Relaxed)
    }
    #[getter]
    fn pid_file(&self) -> PathBuf {
        self.server().paths().pid_file.clone()
    }
    #[getter]
    fn id_file(&self) -> PathBuf {
        self.server().paths().id_file.clone()
    }
    #[getter]
    fn lock_file(&self) -> PathBuf {
        self.server().paths().lock_file.clone()
    }
}
