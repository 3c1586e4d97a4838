//! The PyO3 layer, and the only module that knows Python: argument
//! conversion (`args`), the `Core` class (`core`), typed values (`types`)
//! and the error mapping (`errors`).

mod args;
mod core;
mod errors;
mod spec;
mod types;
mod warm;

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::cmdline::Uvicorn;
use crate::error::Error;
use crate::platform;
use crate::port;
use crate::record;
use crate::spawn::LogPaths;
use crate::spec::key;
use crate::validate;

use self::core::{run, Core};
use self::errors::to_py;
use self::types::{PortHolder, ServerStatus, UvicornCommand};

/// Holders of sockets that clash with a bind to (host, port).
#[pyfunction]
#[pyo3(signature = (port, host = "0.0.0.0".to_owned()))]
fn port_holders(
    py: Python<'_>,
    port: &Bound<'_, PyAny>,
    host: String,
) -> PyResult<Vec<PortHolder>> {
    let port = args::port(py, port)?;
    let addrs = validate::host(&host).map_err(|e| to_py(py, e))?;
    let holders = run(py, move |_| {
        let ls = port::conflicting_listeners(&addrs, port)
            .map_err(|e| Error::os("reading the port table", e))?;
        Ok(crate::server::conflict::holders_named(
            &platform::home_dir(),
            &ls,
            &[],
        ))
    })?;
    Ok(holders.iter().map(PortHolder::from).collect())
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

/// The identity as a dict, with the recorded configuration under "config"
/// (None for records written before it was kept).
fn identity_dict<'py>(
    py: Python<'py>,
    d: &Bound<'py, PyDict>,
    id: record::Identity,
) -> PyResult<()> {
    d.set_item(key::HOST, id.host)?;
    d.set_item(key::PORT, id.port)?;
    d.set_item(key::APP_PATH, id.app_path)?;
    d.set_item(key::LOG_DIR, (!id.log_dir.is_empty()).then_some(id.log_dir))?;
    d.set_item("started_ms", id.started_ms)?;
    // The options `from_record` takes back, with the output mode and the
    // interpreter (not options: the start and the caller chose them).
    let config = match id.config {
        Some(c) => {
            let cd = spec::values(py, &c.spec, |o| o.restored)?;
            cd.set_item("redirect_output", c.redirect_output)?;
            cd.set_item("python", c.spec.python.display().to_string())?;
            Some(cd)
        }
        None => None,
    };
    d.set_item("config", config)
}

/// The PID record of server `name` in `pid_dir` (default: home), as a dict,
/// or None. With `last_run`, a server whose record is gone is described by
/// how its last run ended (its pid is then None, and "end" and "ended_ms" say
/// how and when).
#[pyfunction]
#[pyo3(signature = (pid_dir, name, last_run = false))]
fn read_record<'py>(
    py: Python<'py>,
    pid_dir: Option<PathBuf>,
    name: String,
    last_run: bool,
) -> PyResult<Option<Bound<'py, PyDict>>> {
    validate::name(&name).map_err(|e| to_py(py, e))?;
    let paths = record::Paths::new(&args::dir_or_home(pid_dir), &name);
    let pid = record::read_pid(&paths, platform::pid_max());
    let d = PyDict::new(py);
    d.set_item("pid", pid)?;
    match record::read_identity(&paths).filter(|id| Some(id.pid) == pid) {
        Some(id) => identity_dict(py, &d, id)?,
        None if pid.is_some() => {}
        None => match record::read_last(&paths).filter(|_| last_run) {
            Some(last) => {
                identity_dict(py, &d, last.identity)?;
                d.set_item("end", last.end.describe())?;
                d.set_item("ended_ms", last.ended_ms)?;
            }
            None => return Ok(None),
        },
    }
    Ok(Some(d))
}

/// Names of every server with a PID file in `pid_dir` (default: home); with
/// `last_runs`, also stopped servers whose last run is kept.
#[pyfunction]
#[pyo3(signature = (pid_dir=None, last_runs=false))]
fn list_records(pid_dir: Option<PathBuf>, last_runs: bool) -> Vec<String> {
    record::list_names(&args::dir_or_home(pid_dir), last_runs)
}

/// Removes what is left of server `name` in `pid_dir` when nothing it names
/// lives: a record whose process is gone, a dead supervisor's state, the
/// kept last run. For names no manager can be rebuilt for (no app known).
/// True if something was removed; False (nothing touched) while a process
/// it names lives.
#[pyfunction]
#[pyo3(signature = (pid_dir, name))]
fn forget_leftovers(py: Python<'_>, pid_dir: Option<PathBuf>, name: String) -> PyResult<bool> {
    validate::name(&name).map_err(|e| to_py(py, e))?;
    let paths = record::Paths::new(&args::dir_or_home(pid_dir), &name);
    Ok(forget_files_of_the_dead(&paths))
}

/// For our launcher, once its lifeline ended: removes the record at
/// `pid_file` while it names this process, keeping the run as "stopped"
/// when history was asked for (`lifeline::release_record`). True if it was
/// this process's record.
#[pyfunction]
fn release_record(py: Python<'_>, pid_file: PathBuf) -> bool {
    py.detach(|| crate::lifeline::release_record(&pid_file))
}

/// Removes a name's record, supervisor state, kept last run and lock file,
/// unless the record or the state names a live process (a reused PID counts
/// as alive unless its start tick says otherwise: when in doubt, keep).
fn forget_files_of_the_dead(paths: &record::Paths) -> bool {
    let recorded_alive = record::read_pid(paths, i32::MAX).is_some_and(|pid| {
        let Some(info) = platform::proc_info(pid).filter(|i| i.is_alive()) else {
            return false;
        };
        record::read_identity(paths)
            .filter(|id| id.pid == pid)
            .is_none_or(|id| id.start_ticks == info.start_ticks)
    });
    let supervised = crate::supervise::state::live(paths).is_some();
    if recorded_alive || supervised {
        return false;
    }
    // A start or stop under way holds the lock: leave it to finish.
    let Ok(Some(lock)) = crate::lock::try_acquire(&paths.lock_file) else {
        return false;
    };
    let mut removed = false;
    for f in [
        &paths.pid_file,
        &paths.id_file,
        &paths.sup_file,
        &paths.last_file,
    ] {
        removed |= std::fs::remove_file(f).is_ok();
    }
    lock.release_and_remove();
    removed
}

/// (PID file, identity file, lock file) of server `name` in `pid_dir`.
#[pyfunction]
fn record_paths(
    py: Python<'_>,
    pid_dir: Option<PathBuf>,
    name: String,
) -> PyResult<(PathBuf, PathBuf, PathBuf)> {
    validate::name(&name).map_err(|e| to_py(py, e))?;
    let p = record::Paths::new(&args::dir_or_home(pid_dir), &name);
    Ok((p.pid_file, p.id_file, p.lock_file))
}

/// (stdout log, stderr log) of server `name` in `log_dir`.
#[pyfunction]
fn log_paths(py: Python<'_>, log_dir: PathBuf, name: String) -> PyResult<(PathBuf, PathBuf)> {
    validate::name(&name).map_err(|e| to_py(py, e))?;
    let l = LogPaths::new(&log_dir, &name);
    Ok((l.stdout, l.stderr))
}

/// What a uvicorn command line serves, or None if it is not uvicorn.
#[pyfunction]
fn parse_uvicorn_cmdline(argv: Vec<String>) -> Option<UvicornCommand> {
    Uvicorn::parse(&argv).map(UvicornCommand::from)
}

/// The directory PID records live in by default.
#[pyfunction]
fn home_dir() -> PathBuf {
    platform::home_dir()
}

/// Bytes of memory available to new processes.
#[pyfunction]
fn memory_available() -> u64 {
    platform::memory_available()
}

/// The pids of every descendant of `pid`.
#[pyfunction]
fn descendants(pid: i64) -> PyResult<Vec<i32>> {
    let pid = i32::try_from(pid)
        .map_err(|_| pyo3::exceptions::PyTypeError::new_err("pid out of range"))?;
    Ok(platform::descendants(pid))
}

/// Panics on purpose, so that tests can check that a Rust panic reaches
/// Python as an exception instead of aborting the interpreter.
#[pyfunction]
fn _panic_for_tests(message: String) -> PyResult<()> {
    // Inside a detached section as well, as every real call is.
    Python::attach(|py| py.detach(|| -> PyResult<()> { panic!("{message}") }))
}

/// The supervisor process's body (see `supervise::client::BOOT`): reads
/// its orders from stdin and supervises, the GIL released throughout.
#[pyfunction]
fn _supervisor_main(py: Python<'_>, control_fd: i32) -> i32 {
    py.detach(|| crate::server::supervisor_main(control_fd))
}

/// The bytes a supervisor writes on its events pipe for `event` (the JSON
/// text of a `protocol::events::Event`, re-encoded by the same writer), so
/// that tests feed what Rust writes to the Python reader. Raises
/// ValueError for anything that is not an event.
#[pyfunction]
fn _event_line<'py>(py: Python<'py>, event: &str) -> PyResult<Bound<'py, pyo3::types::PyBytes>> {
    let event: crate::protocol::events::Event = serde_json::from_str(event)
        .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
    Ok(pyo3::types::PyBytes::new(py, event.to_line().as_bytes()))
}

/// The datagram a process of launch `launch` (its `LAUNCH_ENV` value)
/// sends the ready socket once it serves (`why::Report`).
#[pyfunction]
fn ready_report<'py>(
    py: Python<'py>,
    launch: String,
    pid: i32,
) -> Bound<'py, pyo3::types::PyBytes> {
    let report = crate::why::Report::Ready { launch, pid };
    pyo3::types::PyBytes::new(py, &report.to_datagram())
}

/// The datagram a process of launch `launch` sends the ready socket when
/// it failed before serving: `text` (its error records and traceback),
/// cut to its last `why::REPORT_LIMIT` bytes or so.
#[pyfunction]
fn failed_report<'py>(
    py: Python<'py>,
    launch: String,
    pid: i32,
    text: String,
) -> Bound<'py, pyo3::types::PyBytes> {
    let report = crate::why::Report::Failed { launch, pid, text };
    pyo3::types::PyBytes::new(py, &report.to_datagram())
}

/// Bytes in a memory size: an int, or a string like "512MiB" or "1GiB".
#[pyfunction]
fn memory_size(py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<u64> {
    args::memory(py, value)
}

/// Makes each `source` descriptor this process's `target` (every source
/// moved out of the way first), closing every other descriptor from 3 up:
/// the set-up of a server the warm-start preloader forked (`_preload.py`).
/// `pairs`: (target, source) tuples. Raises OSError.
#[pyfunction]
fn hand_over_fds(pairs: Vec<(i32, i32)>) -> PyResult<()> {
    crate::handover::place_here(&pairs)
        .map_err(|e| pyo3::exceptions::PyOSError::new_err(e.to_string()))
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // The exception classes are resolved on first use when the package is
    // not importable (the supervisor process loads this file by path).
    let _ = errors::init(m.py());
    if let Ok(file) = m.filename() {
        let _ = crate::server::EXTENSION.set(PathBuf::from(file.to_string()));
    }
    // The package's one version (Cargo.toml's; pyproject.toml reads it too).
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<Core>()?;
    m.add_class::<ServerStatus>()?;
    m.add_class::<PortHolder>()?;
    m.add_class::<UvicornCommand>()?;
    m.add_function(wrap_pyfunction!(port_holders, m)?)?;
    m.add_function(wrap_pyfunction!(process_info, m)?)?;
    m.add_function(wrap_pyfunction!(memory_available, m)?)?;
    m.add_function(wrap_pyfunction!(descendants, m)?)?;
    m.add_function(wrap_pyfunction!(read_record, m)?)?;
    m.add_function(wrap_pyfunction!(list_records, m)?)?;
    m.add_function(wrap_pyfunction!(record_paths, m)?)?;
    m.add_function(wrap_pyfunction!(forget_leftovers, m)?)?;
    m.add_function(wrap_pyfunction!(release_record, m)?)?;
    m.add_function(wrap_pyfunction!(log_paths, m)?)?;
    m.add_function(wrap_pyfunction!(parse_uvicorn_cmdline, m)?)?;
    m.add_function(wrap_pyfunction!(home_dir, m)?)?;
    m.add_function(wrap_pyfunction!(_panic_for_tests, m)?)?;
    m.add_function(wrap_pyfunction!(_supervisor_main, m)?)?;
    m.add_function(wrap_pyfunction!(_event_line, m)?)?;
    m.add_function(wrap_pyfunction!(ready_report, m)?)?;
    m.add_function(wrap_pyfunction!(failed_report, m)?)?;
    m.add_function(wrap_pyfunction!(memory_size, m)?)?;
    m.add_function(wrap_pyfunction!(hand_over_fds, m)?)?;
    warm::register(m)?;
    // Every option of a server, its default and help (`crate::spec`): the
    // facade's signature and the CLI's options are built from it.
    m.add("OPTIONS", spec::table(m.py())?)?;
    // The names and descriptor numbers shared between our processes
    // (`crate::protocol`): Python imports them, never spells them.
    for (name, value) in crate::protocol::NUMBERS {
        m.add(name, value)?;
    }
    for (name, value) in crate::protocol::NAMES {
        m.add(name, value)?;
    }
    for (name, value) in crate::protocol::events::NAMES {
        m.add(name, value)?;
    }
    m.add(
        "WARM_FDS",
        PyDict::from_sequence(&crate::protocol::WARM_FDS.into_pyobject(m.py())?)?,
    )?;
    Ok(())
}
