//! The one place where core errors become Python exceptions. The classes
//! live in `upsonic_server_manager._errors` and are resolved once, when the
//! extension is imported.

use pyo3::exceptions::{PyKeyboardInterrupt, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyType};

use crate::error::Error;

use super::types::PortHolder;

/// The exception classes, resolved at import.
struct Classes {
    server_manager_error: Py<PyType>,
    port_in_use: Py<PyType>,
    start_error: Py<PyType>,
    start_timeout: Py<PyType>,
}

static CLASSES: PyOnceLock<Classes> = PyOnceLock::new();

/// Resolves the exception classes; called from the module's initialiser.
pub fn init(py: Python<'_>) -> PyResult<()> {
    CLASSES.get_or_try_init(py, || -> PyResult<Classes> {
        let m = py.import("upsonic_server_manager._errors")?;
        let class = |name: &str| -> PyResult<Py<PyType>> {
            Ok(m.getattr(name)?.cast_into::<PyType>()?.unbind())
        };
        Ok(Classes {
            server_manager_error: class("ServerManagerError")?,
            port_in_use: class("PortInUseError")?,
            start_error: class("StartError")?,
            start_timeout: class("StartTimeoutError")?,
        })
    })?;
    Ok(())
}

/// A `TypeError` naming the argument and what it must be.
pub fn type_error(arg: &str, what: &str, got: &Bound<'_, PyAny>) -> PyErr {
    let got = got
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "object".to_owned());
    PyTypeError::new_err(format!("{arg} must be {what}, got {got}"))
}

/// A `ServerManagerError` with this message (for the binding's own refusals).
pub fn manager_error(py: Python<'_>, msg: String) -> PyErr {
    let made = || -> PyResult<PyErr> {
        if CLASSES.get(py).is_none() {
            init(py)?;
        }
        let cls = &CLASSES
            .get(py)
            .expect("initialised above")
            .server_manager_error;
        Ok(PyErr::from_value(cls.bind(py).call1((msg.clone(),))?))
    };
    made().unwrap_or_else(|e| e)
}

/// Builds the Python exception for a core error. OS errors keep their
/// errno, as the exception's `errno` attribute and as an `OSError` cause.
pub fn to_py(py: Python<'_>, err: Error) -> PyErr {
    build(py, &err).unwrap_or_else(|e| e)
}

fn build(py: Python<'_>, err: &Error) -> PyResult<PyErr> {
    let msg = err.to_string();
    let classes = match CLASSES.get(py) {
        Some(c) => c,
        None => {
            init(py)?;
            CLASSES.get(py).expect("initialised above")
        }
    };
    let instance = |cls: &Py<PyType>, kw: Option<Bound<'_, PyDict>>| -> PyResult<PyErr> {
        let obj = cls.bind(py).call((msg.clone(),), kw.as_ref())?;
        Ok(PyErr::from_value(obj))
    };
    Ok(match err {
        Error::InvalidArgument { .. } => PyValueError::new_err(msg),
        Error::Interrupted => PyKeyboardInterrupt::new_err(()),
        Error::PortInUse { port, holders, .. } => {
            let kw = PyDict::new(py);
            kw.set_item("port", port)?;
            let list = PyList::empty(py);
            for h in holders {
                list.append(PortHolder::from(h))?;
            }
            kw.set_item("holders", list)?;
            instance(&classes.port_in_use, Some(kw))?
        }
        Error::StartFailed {
            exit_code,
            stderr_tail,
            reason,
            ..
        } => {
            let kw = PyDict::new(py);
            kw.set_item("exit_code", exit_code)?;
            kw.set_item("stderr_tail", stderr_tail)?;
            kw.set_item("reason", reason)?;
            instance(&classes.start_error, Some(kw))?
        }
        Error::AppTarget { .. } => {
            let kw = PyDict::new(py);
            kw.set_item("exit_code", py.None())?;
            instance(&classes.start_error, Some(kw))?
        }
        Error::StartTimeout {
            stderr_tail,
            reason,
            ..
        } => {
            let kw = PyDict::new(py);
            kw.set_item("stderr_tail", stderr_tail)?;
            kw.set_item("reason", reason)?;
            instance(&classes.start_timeout, Some(kw))?
        }
        Error::Path { source, .. } | Error::Os { source, .. } => {
            let e = instance(&classes.server_manager_error, None)?;
            if let Some(errno) = source.raw_os_error() {
                let value = e.value(py);
                value.setattr("errno", errno)?;
                let cause = pyo3::exceptions::PyOSError::new_err((errno, source.to_string()));
                e.set_cause(py, Some(cause));
            }
            e
        }
        Error::StopFailed { .. }
        | Error::NameTaken { .. }
        | Error::LockTimeout { .. }
        | Error::NotRunning { .. }
        | Error::Running { .. }
        | Error::NoHeldSocket { .. }
        | Error::Supervisor { .. } => instance(&classes.server_manager_error, None)?,
    })
}
