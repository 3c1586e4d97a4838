//! Python arguments to core values: type checks that name the argument
//! (`TypeError`); every value check is `crate::validate`'s (`ValueError`).

use std::path::PathBuf;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyFloat, PyInt, PyString};

use crate::spec::key;
use crate::supervise::{HealthCheck, Policy, Restart, Supervision};
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
    validate::port(int(key::PORT, "an int", obj)?).map_err(|e| to_py(py, e))
}

/// A server's port: 1..65535, or 0 for "the kernel picks" (checked against
/// hold_socket by the configuration's validation).
pub fn server_port(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<u16> {
    match int(key::PORT, "an int", obj)? {
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

/// The worker count: an `int`, or `None` for `$UPSONIC_WORKERS_AMOUNT`,
/// which is read at each `start()` (upsonic 0.45.0 never reads it, and its
/// importers build managers at import time: a bad value must not fail that).
pub fn workers(py: Python<'_>, obj: Option<&Bound<'_, PyAny>>) -> PyResult<Option<u32>> {
    match obj.filter(|o| !o.is_none()) {
        None => Ok(None),
        Some(o) => validate::workers(int(key::WORKERS, "an int or None", o)?)
            .map(Some)
            .map_err(|e| to_py(py, e)),
    }
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

/// A memory size: an `int` of bytes or a string such as "512MiB".
pub fn memory(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<u64> {
    if obj.is_instance_of::<PyString>() {
        return validate::memory_size(&obj.extract::<String>()?).map_err(|e| to_py(py, e));
    }
    let n = int(
        key::MAX_MEMORY,
        "an int of bytes or a string like '512MiB'",
        obj,
    )?;
    validate::memory_size(&n.to_string()).map_err(|e| to_py(py, e))
}

/// A size in bytes: an `int` or a string such as "64KiB" (`arg` names it).
pub fn size(py: Python<'_>, arg: &'static str, obj: &Bound<'_, PyAny>) -> PyResult<u64> {
    if obj.is_instance_of::<PyString>() {
        return validate::size(arg, &obj.extract::<String>()?).map_err(|e| to_py(py, e));
    }
    let n = int(arg, "an int of bytes or a string like '50MiB'", obj)?;
    u64::try_from(n).map_err(|_| {
        to_py(
            py,
            crate::Error::invalid(arg, Some(n.to_string()), "must be 0 or more bytes"),
        )
    })
}

/// True or False (None: False), a TypeError naming `arg` otherwise.
fn flag(arg: &'static str, obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    if obj.is_none() {
        Ok(false)
    } else if obj.is_instance_of::<PyBool>() {
        obj.extract()
    } else {
        Err(super::errors::type_error(arg, "True or False", obj))
    }
}

/// A number of seconds that may be 0.
fn seconds_or_zero(
    py: Python<'_>,
    arg: &'static str,
    obj: &Bound<'_, PyAny>,
) -> PyResult<Duration> {
    let zero = !obj.is_instance_of::<PyBool>()
        && (obj.is_instance_of::<PyInt>() || obj.is_instance_of::<PyFloat>())
        && obj.extract::<f64>()? == 0.0;
    if zero {
        Ok(Duration::ZERO)
    } else {
        seconds(py, arg, obj)
    }
}

/// The supervision keywords of `ServerManager`, as the core's settings
/// (their combination is checked by `validate::supervision`).
pub struct SupervisionArgs<'a, 'py> {
    pub restart: &'a Bound<'py, PyAny>,
    pub restart_delay: &'a Bound<'py, PyAny>,
    pub restart_max_delay: &'a Bound<'py, PyAny>,
    pub restart_limit: &'a Bound<'py, PyAny>,
    pub stable_after: &'a Bound<'py, PyAny>,
    pub health_check: &'a Bound<'py, PyAny>,
    pub health_interval: &'a Bound<'py, PyAny>,
    pub health_timeout: &'a Bound<'py, PyAny>,
    pub health_failures: &'a Bound<'py, PyAny>,
    pub max_memory: &'a Bound<'py, PyAny>,
    pub supervise: &'a Bound<'py, PyAny>,
    pub log_max_bytes: &'a Bound<'py, PyAny>,
    pub log_backup_count: &'a Bound<'py, PyAny>,
    pub log_timestamps: &'a Bound<'py, PyAny>,
}

impl SupervisionArgs<'_, '_> {
    pub fn parse(&self, py: Python<'_>) -> PyResult<Supervision> {
        let name = string(
            key::RESTART,
            "one of 'no', 'on-failure', 'always'",
            self.restart,
        )?;
        let restart = Restart::parse(&name).ok_or_else(|| {
            to_py(
                py,
                crate::Error::invalid(
                    key::RESTART,
                    Some(format!("{name:?}")),
                    "must be 'no', 'on-failure' or 'always'",
                ),
            )
        })?;
        let limit = if self.restart_limit.is_none() {
            None
        } else {
            let n = int(key::RESTART_LIMIT, "an int or None", self.restart_limit)?;
            Some(u32::try_from(n).map_err(|_| {
                to_py(
                    py,
                    crate::Error::invalid(
                        key::RESTART_LIMIT,
                        Some(n.to_string()),
                        "must be at least 1 (or None: never give up)",
                    ),
                )
            })?)
        };
        let health = if self.health_check.is_none() {
            None
        } else {
            let failures = int(key::HEALTH_FAILURES, "an int", self.health_failures)?;
            Some(HealthCheck {
                path: string(
                    key::HEALTH_CHECK,
                    "a path such as '/healthz' or None",
                    self.health_check,
                )?,
                interval: seconds(py, key::HEALTH_INTERVAL, self.health_interval)?,
                timeout: seconds(py, key::HEALTH_TIMEOUT, self.health_timeout)?,
                failures: u32::try_from(failures.clamp(0, i64::from(u32::MAX))).unwrap_or(0),
            })
        };
        let max_memory = if self.max_memory.is_none() {
            None
        } else {
            Some(memory(py, self.max_memory)?)
        };
        Ok(Supervision {
            policy: Policy {
                restart,
                delay: seconds_or_zero(py, key::RESTART_DELAY, self.restart_delay)?,
                max_delay: seconds(py, key::RESTART_MAX_DELAY, self.restart_max_delay)?,
                limit,
                stable_after: seconds_or_zero(py, key::STABLE_AFTER, self.stable_after)?,
            },
            health,
            max_memory,
            supervise: flag(key::SUPERVISE, self.supervise)?,
            log_max_bytes: if self.log_max_bytes.is_none() {
                None
            } else {
                Some(size(py, key::LOG_MAX_BYTES, self.log_max_bytes)?)
            },
            log_backup_count: if self.log_backup_count.is_none() {
                None
            } else {
                let n = int(
                    key::LOG_BACKUP_COUNT,
                    "an int or None",
                    self.log_backup_count,
                )?;
                Some(u32::try_from(n).map_err(|_| {
                    to_py(
                        py,
                        crate::Error::invalid(
                            key::LOG_BACKUP_COUNT,
                            Some(n.to_string()),
                            "must be 0 or more (rotated files kept)",
                        ),
                    )
                })?)
            },
            log_timestamps: flag(key::LOG_TIMESTAMPS, self.log_timestamps)?,
        })
    }
}
