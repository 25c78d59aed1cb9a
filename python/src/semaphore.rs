//! `Semaphore` and its `Permit`: the crate's `SharedSemaphore`.

use crate::bound::ThreadBound;
use crate::errors;
use crate::held::{HeldPermit, State};
use crate::holder::{Holder, PyOwner, Release};
use crate::mutex::exit_reason;
use crate::wait;
use pyo3::prelude::*;
use robust_mutex::{OpenOptions, SharedSemaphore};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// A robust counting semaphore of `permits` permits in a file.
#[pyclass(frozen, module = "robust_mutex._native", name = "Semaphore")]
#[derive(Debug)]
pub(crate) struct PySemaphore {
    inner: Arc<SharedSemaphore>,
}

#[pymethods]
impl PySemaphore {
    #[new]
    #[pyo3(signature = (path, permits, *, create = true, mode = 0o600))]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        permits: usize,
        create: bool,
        mode: u32,
    ) -> PyResult<Self> {
        crate::log::refresh_level(py);
        let r = py.detach(|| {
            SharedSemaphore::open_with(&path, permits, OpenOptions::new().create(create).mode(mode))
        });
        crate::log::flush(py);
        let inner = r.map_err(|e| errors::file_error(py, e))?;
        Ok(PySemaphore {
            inner: Arc::new(inner),
        })
    }

    /// The path it was opened by.
    #[getter]
    fn path(&self) -> String {
        self.inner.path().display().to_string()
    }

    /// Its number of permits.
    #[getter]
    fn permits(&self) -> usize {
        self.inner.permits()
    }

    /// Blocks until a permit is free (GIL released), or `timeout` seconds pass.
    #[pyo3(signature = (timeout = None))]
    fn acquire(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<PyPermit> {
        let limit = wait::timeout(timeout)?;
        let s = &self.inner;
        let held = wait::acquire_or_raise(
            py,
            limit,
            || {
                HeldPermit::try_new(s.clone(), |s| s.try_acquire().map(|a| Some(State::from(a))))
                    .map(ThreadBound::new)
            },
            |token, left| {
                HeldPermit::try_new(s.clone(), |s| {
                    s.acquire_cancellable(token, left)
                        .map(|a| Some(State::from(a)))
                })
                .map(ThreadBound::new)
            },
        )?;
        Ok(PyPermit::new(held))
    }

    /// Takes a free permit without waiting, or raises WouldBlock.
    fn try_acquire(&self, py: Python<'_>) -> PyResult<PyPermit> {
        let held = HeldPermit::try_new(self.inner.clone(), |s| {
            s.try_acquire().map(|a| Some(State::from(a)))
        });
        crate::log::flush(py);
        held.map(|h| PyPermit::new(ThreadBound::new(h)))
            .map_err(|e| errors::lock_error(py, e))
    }

    /// What `robust-mutex status --json PATH` prints, as a dict.
    fn status(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        crate::files::status_dict(py, self.inner.path())
    }

    fn __repr__(&self) -> String {
        format!("Semaphore({:?}, permits={})", self.path(), self.permits())
    }
}

/// A held permit: a context manager.
#[pyclass(frozen, module = "robust_mutex._native", name = "Permit")]
#[derive(Debug)]
pub(crate) struct PyPermit {
    holder: Mutex<Holder<HeldPermit>>,
    slot: usize,
}

impl PyPermit {
    fn new(mut held: ThreadBound<HeldPermit>) -> Self {
        let slot = held.get_mut().and_then(|h| h.slot()).unwrap_or_default();
        PyPermit {
            holder: Mutex::new(Holder::new(held)),
            slot,
        }
    }

    fn h(&self) -> std::sync::MutexGuard<'_, Holder<HeldPermit>> {
        self.holder.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn let_go(&self, py: Python<'_>, how: Release<'_>) -> PyResult<()> {
        let r = self.h().release(py, how);
        crate::log::flush(py);
        r
    }
}

#[pymethods]
impl PyPermit {
    /// The permit's slot in the file.
    #[getter]
    fn slot(&self) -> usize {
        self.slot
    }

    /// The permit's previous holder died holding it.
    #[getter]
    fn owner_died(&self) -> bool {
        self.h().owner_died()
    }

    /// The dead holder's record (None if clean, or unknown).
    #[getter]
    fn previous_owner(&self) -> Option<PyOwner> {
        self.h().previous_owner()
    }

    /// False while an owner death is not yet marked consistent.
    #[getter]
    fn consistent(&self, py: Python<'_>) -> PyResult<bool> {
        self.h().consistent(py)
    }

    /// Whether this permit is still held.
    #[getter]
    fn held(&self) -> bool {
        self.h().held()
    }

    /// Declares the protected state repaired after an owner death.
    fn mark_consistent(&self, py: Python<'_>) -> PyResult<()> {
        let r = self.h().mark_consistent(py);
        crate::log::flush(py);
        r
    }

    /// Sets the owner record's label (at most 88 bytes of UTF-8).
    fn set_label(&self, py: Python<'_>, label: &str) -> PyResult<()> {
        self.h().set_label(py, label)
    }

    /// Gives the permit back now.
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        self.let_go(py, Release::Clean)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Gives the permit back: cleanly, or as a death if an exception
    /// escaped the block.
    #[pyo3(signature = (exc_type, exc, tb))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<Bound<'_, PyAny>>,
        exc: Option<Bound<'_, PyAny>>,
        tb: Option<Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let _ = tb;
        if !self.h().held() {
            return Ok(false);
        }
        match exc_type {
            None => self.let_go(py, Release::Clean)?,
            Some(_) => {
                let why = exit_reason(exc.as_ref());
                self.let_go(py, Release::Death(&why))?;
            }
        }
        Ok(false)
    }
}
