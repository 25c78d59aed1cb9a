//! `robust_mutex.pymutex.SharedMutex`: pymutex's API over the crate's
//! `BareMutex` (pymutex's own file format).
//!
//! pymutex's `lock()` and `unlock()` are two calls, so the crate's guard is
//! leaked at `lock()` (`BareGuard::leak`: the thread still holds the lock,
//! and the kernel still releases it as a death if the thread ends) and
//! `unlock()` is `BareMutex::unlock_leaked`, by the same thread only. No
//! guard object is kept, so the pair costs no allocation.

use crate::bound::{self, ThreadBound};
use crate::errors;
use crate::holder;
use crate::wait;
use pyo3::prelude::*;
use robust_mutex::{Acquired, BareGuard, BareMutex, LockError};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// pymutex's message for a lock left not recoverable.
const INVALID_STATE: &str =
    "The shared state could not be recovered by recover_shared_state callback.";

/// Who holds the lock through an instance: a thread (`bound`'s number) in
/// a fork generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Owner {
    thread: u64,
    generation: u64,
}

impl Owner {
    fn me() -> Owner {
        Owner {
            thread: bound::this_thread(),
            generation: holder::fork_generation(),
        }
    }
}

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
    /// Who holds the lock through this instance (a leaked guard).
    owner: Mutex<Option<Owner>>,
    callback: Py<PyAny>,
}

impl PyPymutex {
    fn owner(&self) -> std::sync::MutexGuard<'_, Option<Owner>> {
        self.owner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps the lock (the guard leaked), held by the calling thread.
    fn keep(&self, guard: BareGuard<'_>) {
        guard.leak();
        // An owner left here by a thread that exited holding the lock (the
        // kernel released it as a death), or by the parent before a fork,
        // is replaced: we hold the lock now.
        *self.owner() = Some(Owner::me());
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
            owner: Mutex::new(None),
            callback: recover_shared_state_cb,
        })
    }

    /// Whether this instance holds the lock (in this process).
    #[getter]
    fn owns_lock(&self) -> bool {
        self.owner()
            .is_some_and(|o| o.generation == holder::fork_generation())
    }

    /// Locks: blocking (timeout <= 0: until locked; else at most `timeout`
    /// seconds), or one try. True when locked.
    #[pyo3(signature = (blocking = true, timeout = 0.0))]
    fn lock(&self, py: Python<'_>, blocking: bool, timeout: f64) -> PyResult<bool> {
        let m = &*self.inner;
        let r = if blocking {
            let limit = if timeout > 0.0 {
                wait::timeout(Some(timeout))?
            } else {
                None
            };
            wait::acquire(
                py,
                limit,
                || m.try_lock().map(ThreadBound::new),
                |token, left| m.lock_cancellable(token, left).map(ThreadBound::new),
            )?
        } else {
            let r = m.try_lock().map(ThreadBound::new);
            crate::log::flush(py);
            r
        };
        let acquired = match r {
            Ok(a) => a.into_inner().map_err(|_| errors::other_thread(py))?,
            Err(LockError::WouldBlock | LockError::TimedOut) => return Ok(false),
            Err(LockError::NotRecoverable) => {
                return Err(errors::ours(py, "InvalidSharedState", (INVALID_STATE,)));
            }
            Err(e) => return Err(errors::lock_error(py, e)),
        };
        match acquired {
            Acquired::Clean(g) => self.keep(g),
            Acquired::OwnerDied(r) => {
                // The callback runs with the lock held, as pymutex's does.
                // False, or an exception: the recovery is dropped, and the
                // lock is not recoverable (pymutex unlocks without marking
                // it consistent).
                let verdict = self.callback.call0(py).and_then(|v| v.is_truthy(py));
                match verdict {
                    Ok(true) => self.keep(r.mark_consistent()),
                    Ok(false) => {
                        drop(r);
                        crate::log::flush(py);
                        return Err(errors::ours(py, "InvalidSharedState", (INVALID_STATE,)));
                    }
                    Err(e) => {
                        drop(r);
                        crate::log::flush(py);
                        return Err(e);
                    }
                }
                crate::log::flush(py);
            }
        }
        Ok(true)
    }

    /// Unlocks. PermissionError (EPERM) unless the calling thread holds the
    /// lock through this instance.
    fn unlock(&self, py: Python<'_>) -> PyResult<()> {
        {
            let mut owner = self.owner();
            if *owner != Some(Owner::me()) {
                return Err(errors::not_owner(
                    py,
                    "this thread does not hold the lock through this SharedMutex",
                ));
            }
            *owner = None;
        }
        let r = bound::unlock_leaked(&self.inner);
        crate::log::flush(py);
        r.map_err(|e| errors::lock_error(py, e))
    }

    fn __repr__(&self) -> String {
        format!("SharedMutex({:?})", self.inner.path().display().to_string())
    }
}

impl Drop for PyPymutex {
    /// Collected while its thread holds the lock: unlocked, as a dropped
    /// guard is (pymutex would unmap a lock still in use). Held by another
    /// thread, or from before a fork: left alone (the crate keeps the
    /// mapping while a thread of this process holds the lock).
    fn drop(&mut self) {
        let owner = self.owner.get_mut().unwrap_or_else(|p| p.into_inner());
        if *owner == Some(Owner::me()) {
            let _ = bound::unlock_leaked(&self.inner);
        }
    }
}
