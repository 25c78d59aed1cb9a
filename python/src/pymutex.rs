//! `robust_mutex.pymutex.SharedMutex`: pymutex's API over the crate's
//! `BareMutex` (pymutex's own file format).

use crate::bound::ThreadBound;
use crate::errors;
use crate::held::{HeldBare, State};
use crate::holder::{Holder, Release};
use crate::wait;
use pyo3::prelude::*;
use robust_mutex::{BareMutex, LockError};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// pymutex's message for a lock left not recoverable.
const INVALID_STATE: &str =
    "The shared state could not be recovered by recover_shared_state callback.";

/// pymutex's `SharedMutex`: one instance may be shared by threads; the
/// thread that locks it unlocks it.
#[pyclass(
    frozen,
    subclass,
    module = "robust_mutex._native",
    name = "PymutexSharedMutex"
)]
#[derive(Debug)]
pub(crate) struct PyPymutex {
    inner: Arc<BareMutex>,
    /// The lock held through this instance, by the thread that took it.
    held: Mutex<Option<Holder<HeldBare>>>,
    callback: Py<PyAny>,
}

impl PyPymutex {
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Holder<HeldBare>>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[pymethods]
impl PyPymutex {
    #[new]
    #[pyo3(signature = (mutex_file, recover_shared_state_cb))]
    fn new(
        py: Python<'_>,
        mutex_file: PathBuf,
        recover_shared_state_cb: Py<PyAny>,
    ) -> PyResult<Self> {
        crate::log::refresh_level(py);
        let r = py.detach(|| BareMutex::open(&mutex_file));
        crate::log::flush(py);
        let inner = r.map_err(|e| errors::file_error(py, e))?;
        Ok(PyPymutex {
            inner: Arc::new(inner),
            held: Mutex::new(None),
            callback: recover_shared_state_cb,
        })
    }

    /// Whether this instance holds the lock.
    #[getter]
    fn owns_lock(&self) -> bool {
        self.slot().is_some()
    }

    /// Locks: blocking (timeout <= 0: until locked; else at most `timeout`
    /// seconds), or one try. True when locked.
    #[pyo3(signature = (blocking = true, timeout = 0.0))]
    fn lock(&self, py: Python<'_>, blocking: bool, timeout: f64) -> PyResult<bool> {
        let m = &self.inner;
        let try_once = || {
            HeldBare::try_new(m.clone(), |m| m.try_lock().map(|a| Some(State::from(a))))
                .map(ThreadBound::new)
        };
        let r = if blocking {
            let limit = if timeout > 0.0 {
                wait::timeout(Some(timeout))?
            } else {
                None
            };
            wait::acquire(py, limit, try_once, |token, left| {
                HeldBare::try_new(m.clone(), |m| {
                    m.lock_cancellable(token, left)
                        .map(|a| Some(State::from(a)))
                })
                .map(ThreadBound::new)
            })?
        } else {
            let r = try_once();
            crate::log::flush(py);
            r
        };
        let mut holder = match r {
            Ok(held) => Holder::new(held),
            Err(LockError::WouldBlock | LockError::TimedOut) => return Ok(false),
            Err(LockError::NotRecoverable) => {
                return Err(errors::ours(py, "InvalidSharedState", (INVALID_STATE,)));
            }
            Err(e) => return Err(errors::lock_error(py, e)),
        };
        if holder.owner_died() {
            // The callback runs with the lock held, as pymutex's does.
            match self.callback.call0(py).and_then(|v| v.is_truthy(py)) {
                Ok(true) => {
                    holder.mark_consistent(py)?;
                    crate::log::flush(py);
                }
                Ok(false) => {
                    let _ = holder.release(py, Release::Clean);
                    crate::log::flush(py);
                    return Err(errors::ours(py, "InvalidSharedState", (INVALID_STATE,)));
                }
                Err(e) => {
                    let _ = holder.release(py, Release::Clean);
                    crate::log::flush(py);
                    return Err(e);
                }
            }
        }
        // A holder left here by a thread that exited holding the lock (the
        // kernel released it as a death) is dropped: it does nothing.
        let stale = self.slot().replace(holder);
        drop(stale);
        Ok(true)
    }

    /// Unlocks. PermissionError (EPERM) unless the calling thread holds the
    /// lock through this instance.
    fn unlock(&self, py: Python<'_>) -> PyResult<()> {
        let holder = {
            let mut slot = self.slot();
            match slot.take() {
                Some(h) if h.mine() => h,
                other => {
                    *slot = other;
                    return Err(errors::not_owner(
                        py,
                        "this thread does not hold the lock through this SharedMutex",
                    ));
                }
            }
        };
        let mut holder = holder;
        let r = holder.release(py, Release::Clean);
        crate::log::flush(py);
        r
    }

    fn __repr__(&self) -> String {
        format!("SharedMutex({:?})", self.inner.path().display().to_string())
    }
}
