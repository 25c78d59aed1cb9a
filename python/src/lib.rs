//! `robust_mutex._native`: the robust-mutex crate's locks for CPython
//! (abi3, >= 3.9). The Python package `robust_mutex` re-exports it; the
//! API is in its type stubs (`robust_mutex/__init__.pyi`).
//!
//! Every lock here is the crate's own: a Python guard holds the crate's
//! guard (`held`), a blocking call is the crate's cancellable wait with
//! the GIL released (`wait`), errors are mapped to exceptions (`errors`),
//! log records go to Python's `logging` (`log`).

mod bound;
mod errors;
mod files;
mod guard;
mod held;
mod holder;
mod log;
mod mutex;
mod pymutex;
mod semaphore;
mod wait;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    log::install(m.py());
    m.add_class::<mutex::PySharedMutex>()?;
    m.add_class::<guard::PyHeld>()?;
    m.add_class::<mutex::PyGuard>()?;
    m.add_class::<mutex::PyKeep>()?;
    m.add_class::<semaphore::PySemaphore>()?;
    m.add_class::<semaphore::PyPermit>()?;
    m.add_class::<holder::PyOwner>()?;
    m.add_class::<pymutex::PyPymutex>()?;
    m.add_function(wrap_pyfunction!(files::inspect, m)?)?;
    m.add_function(wrap_pyfunction!(files::reset, m)?)?;
    m.add_function(wrap_pyfunction!(files::remove, m)?)?;
    m.add_function(wrap_pyfunction!(mutex::_set_view_factory, m)?)?;
    m.add_function(wrap_pyfunction!(holder::_forked, m)?)?;
    m.add_function(wrap_pyfunction!(log::_flush_log, m)?)?;
    Ok(())
}
