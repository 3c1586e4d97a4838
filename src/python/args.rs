//! Python arguments to core values: type checks that name the argument
//! (`TypeError`); every value check is `crate::validate`'s (`ValueError`).

use std::path::PathBuf;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyFloat, PyInt, PyString};

use crate::validate;

use super::errors::{to_py, type_error};

/// A `str` argument.
pub fn string(arg: &str, what: &str, obj: &Bound<'_, PyAny>) -> PyResult<String> {
    if !obj.is_instance_of::<PyString>() {
        return Err(type_error(arg, what, obj));
    }
    obj.extract()
}

/// An `int` argument (a `bool` is not one).
pub fn int(arg: &str, what: &str, obj: &Bound<'_, PyAny>) -> PyResult<i64> {
    if obj.is_instance_of::<PyBool>() || !obj.is_instance_of::<PyInt>() {
        return Err(type_error(arg, what, obj));
    }
    // Beyond i64 is out of any range we accept: let validation say so.
    Ok(obj.extract::<i64>().unwrap_or(i64::MAX))
}

/// A port number.
pub fn port(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<u16> {
    validate::port(int("port", "an int", obj)?).map_err(|e| to_py(py, e))
}

/// A server's port: 1..65535, or 0 for "the kernel picks" (checked against
/// hold_socket by the configuration's validation).
pub fn server_port(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<u16> {
    match int("port", "an int", obj)? {
        0 => Ok(0),
        p => validate::port(p).map_err(|e| to_py(py, e)),
    }
}

/// A number of seconds (`int` or `float`, not `bool`).
pub fn seconds(py: Python<'_>, arg: &'static str, obj: &Bound<'_, PyAny>) -> PyResult<Duration> {
    let number = !obj.is_instance_of::<PyBool>()
        && (obj.is_instance_of::<PyInt>() || obj.is_instance_of::<PyFloat>());
    if !number {
        return Err(type_error(arg, "a number of seconds", obj));
    }
    validate::seconds(arg, obj.extract::<f64>()?).map_err(|e| to_py(py, e))
}

/// The worker count: an `int`, or `None` for `$UPSONIC_WORKERS_AMOUNT` (else 1).
pub fn workers(py: Python<'_>, obj: Option<&Bound<'_, PyAny>>) -> PyResult<u32> {
    match obj.filter(|o| !o.is_none()) {
        None => validate::workers_from_env(),
        Some(o) => validate::workers(int("workers", "an int or None", o)?),
    }
    .map_err(|e| to_py(py, e))
}

/// uvicorn's extra arguments: a sequence of strings (not one string).
pub fn uvicorn_args(obj: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    if obj.is_instance_of::<PyString>() {
        return Err(pyo3::exceptions::PyTypeError::new_err(
            "uvicorn_args must be a sequence of strings, not one string",
        ));
    }
    let mut out = Vec::new();
    for item in obj.try_iter()? {
        out.push(string("each uvicorn_args item", "a string", &item?)?);
    }
    Ok(out)
}

/// The preloader's extra modules: a sequence of strings, or `None`.
pub fn preload(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<String>> {
    match obj.filter(|o| !o.is_none()) {
        None => Ok(Vec::new()),
        Some(o) if o.is_instance_of::<PyString>() => Err(pyo3::exceptions::PyTypeError::new_err(
            "preload must be a sequence of module names, not one string",
        )),
        Some(o) => o
            .try_iter()?
            .map(|item| string("each preload item", "a module name", &item?))
            .collect(),
    }
}

/// The server's extra environment: a mapping whose keys and values are
/// turned into strings, as `os.environ` would need them.
pub fn env(py: Python<'_>, obj: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<(String, String)>> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for item in obj.call_method0("items")?.try_iter()? {
        let (k, v): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item?.extract()?;
        let (k, v) = (k.str()?.to_string(), v.str()?.to_string());
        validate::env_entry(&k, &v).map_err(|e| to_py(py, e))?;
        out.push((k, v));
    }
    Ok(out)
}

/// A directory argument, or `None` for the home directory.
pub fn dir_or_home(obj: Option<PathBuf>) -> PathBuf {
    obj.unwrap_or_else(crate::platform::home_dir)
}
