//! `Semaphore` and its `Permit`: the crate's `SharedSemaphore`.

use crate::errors;
use crate::held::{HeldPermit, State};
use crate::holder::{Holder, PyOwner, Release};
use crate::mutex::exit_reason;
use crate::wait;
use pyo3::prelude::*;
use robust_mutex::{OpenOptions, SharedSemaphore};
use send_wrapper::SendWrapper;
use std::path::PathBuf;
use std::sync::Arc;

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
                    .map(SendWrapper::new)
            },
            |token, left| {
                HeldPermit::try_new(s.clone(), |s| {
                    s.acquire_cancellable(token, left)
                        .map(|a| Some(State::from(a)))
                })
                .map(SendWrapper::new)
            },
        )?;
        Ok(PyPermit::new(held.take()))
    }

    /// Takes a free permit without waiting, or raises WouldBlock.
    fn try_acquire(&self, py: Python<'_>) -> PyResult<PyPermit> {
        let held = HeldPermit::try_new(self.inner.clone(), |s| {
            s.try_acquire().map(|a| Some(State::from(a)))
        });
        crate::log::flush(py);
        held.map(PyPermit::new)
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
    holder: Holder<HeldPermit>,
    slot: usize,
}

impl PyPermit {
    fn new(held: HeldPermit) -> Self {
        let slot = held.slot().unwrap_or_default();
        PyPermit {
            holder: Holder::new(held),
            slot,
        }
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
        self.holder.owner_died()
    }

    /// The dead holder's record (None if clean, or unknown).
    #[getter]
    fn previous_owner(&self) -> Option<PyOwner> {
        self.holder.previous_owner()
    }

    /// False while an owner death is not yet marked consistent.
    #[getter]
    fn consistent(&self, py: Python<'_>) -> PyResult<bool> {
        self.holder.consistent(py)
    }

    /// Whether this permit is still held.
    #[getter]
    fn held(&self) -> bool {
        self.holder.held()
    }

    /// Declares the protected state repaired after an owner death.
    fn mark_consistent(&self, py: Python<'_>) -> PyResult<()> {
        self.holder.mark_consistent(py)
    }

    /// Sets the owner record's label (at most 88 bytes of UTF-8).
    fn set_label(&self, py: Python<'_>, label: &str) -> PyResult<()> {
        self.holder.set_label(py, label)
    }

    /// Gives the permit back now.
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        self.holder.release(py, Release::Clean)
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
        if !self.holder.held() {
            return Ok(false);
        }
        match exc_type {
            None => self.holder.release(py, Release::Clean)?,
            Some(_) => {
                let why = exit_reason(exc.as_ref());
                self.holder.release(py, Release::Death(&why))?;
            }
        }
        Ok(false)
    }
}
