//! The spec's table and values as Python sees them: `_core.OPTIONS` (from
//! which the facade builds its signature and the CLI its options) and a
//! spec as the keyword arguments that build it again.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::spec::{Default_, Opt, ServerSpec, Value, OPTIONS};

/// An option's value as a Python object.
fn value<'py>(py: Python<'py>, v: Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::None => py.None().into_bound(py),
        Value::Bool(b) => pyo3::types::PyBool::new(py, b).to_owned().into_any(),
        Value::Int(i) => i.into_pyobject(py)?.into_any(),
        Value::Float(f) => f.into_pyobject(py)?.into_any(),
        Value::Str(s) => s.into_pyobject(py)?.into_any(),
        Value::Strs(v) => v.into_pyobject(py)?.into_any(),
        Value::Pairs(v) => v
            .into_iter()
            .collect::<std::collections::BTreeMap<_, _>>()
            .into_pyobject(py)?
            .into_any(),
    })
}

/// A default as a Python object (a list default is a tuple: immutable).
fn default<'py>(py: Python<'py>, d: Default_) -> PyResult<Bound<'py, PyAny>> {
    Ok(match d {
        Default_::Required | Default_::None => py.None().into_bound(py),
        Default_::Bool(b) => pyo3::types::PyBool::new(py, b).to_owned().into_any(),
        Default_::Int(i) => i.into_pyobject(py)?.into_any(),
        Default_::Float(f) => f.into_pyobject(py)?.into_any(),
        Default_::Str(s) => s.into_pyobject(py)?.into_any(),
        Default_::Strs(v) => PyTuple::new(py, v)?.into_any(),
    })
}

/// The spec's values of the options `pick` selects, by keyword.
pub fn values<'py>(
    py: Python<'py>,
    spec: &ServerSpec,
    pick: impl Fn(&Opt) -> bool,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (o, v) in spec.options() {
        if pick(o) {
            d.set_item(o.name, value(py, v)?)?;
        }
    }
    Ok(d)
}

/// `_core.OPTIONS`: one dict per option, in the signature's order.
pub fn table(py: Python<'_>) -> PyResult<Bound<'_, PyTuple>> {
    let rows = OPTIONS
        .iter()
        .map(|o| {
            let d = PyDict::new(py);
            d.set_item("name", o.name)?;
            d.set_item("annotation", o.annotation)?;
            d.set_item("required", o.default == Default_::Required)?;
            d.set_item("default", default(py, o.default)?)?;
            d.set_item("help", o.help)?;
            d.set_item("flag", o.flag)?;
            d.set_item("metavar", o.metavar)?;
            d.set_item("group", o.group)?;
            d.set_item("positional", o.positional)?;
            d.set_item("assignable", o.assignable)?;
            d.set_item("restored", o.restored)?;
            Ok(d)
        })
        .collect::<PyResult<Vec<_>>>()?;
    PyTuple::new(py, rows)
}
