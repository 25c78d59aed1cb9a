//! Module functions on lock files: `inspect`, `reset`, `remove`, and the
//! status dict every handle's `status()` returns.

use crate::errors;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use robust_mutex::{RemoveOptions, ResetOptions};
use std::path::{Path, PathBuf};

/// What `robust-mutex status --json PATH` prints, as a dict (the crate
/// renders it; this parses it).
pub(crate) fn status_dict(py: Python<'_>, path: &Path) -> PyResult<Py<PyAny>> {
    let r = py.detach(|| robust_mutex::status_json(path));
    crate::log::flush(py);
    let text = r.map_err(|e| errors::file_error(py, e))?;
    Ok(py.import("json")?.call_method1("loads", (text,))?.unbind())
}

/// The status of the lock file at `path`, without locking.
#[pyfunction]
pub(crate) fn inspect(py: Python<'_>, path: PathBuf) -> PyResult<Py<PyAny>> {
    status_dict(py, &path)
}

/// Replaces a broken lock file with a fresh one, keeping its value.
#[pyfunction]
#[pyo3(signature = (path, force = false))]
pub(crate) fn reset<'py>(
    py: Python<'py>,
    path: PathBuf,
    force: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let r = py.detach(|| ResetOptions::new().force(force).reset(&path));
    crate::log::flush(py);
    let o = r.map_err(|e| errors::file_error(py, e))?;
    let d = PyDict::new(py);
    d.set_item("generation", o.generation)?;
    d.set_item("previous_state", o.previous_state.as_str())?;
    d.set_item("remnant_len", o.remnant_len)?;
    d.set_item("migrated_from", o.migrated_from)?;
    d.set_item("old_locks_held", o.old_locks_held)?;
    d.set_item("converted_by_another", o.converted_by_another)?;
    Ok(d)
}

/// Removes a lock file nobody holds (`force`: even a held one).
#[pyfunction]
#[pyo3(signature = (path, force = false))]
pub(crate) fn remove(py: Python<'_>, path: PathBuf, force: bool) -> PyResult<()> {
    let r = py.detach(|| RemoveOptions::new().force(force).remove(&path));
    crate::log::flush(py);
    r.map_err(|e| errors::file_error(py, e))
}
