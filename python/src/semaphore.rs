//! `Semaphore` and its `Permit`: the crate's `SharedSemaphore`.

use crate::bound::ThreadBound;
use crate::errors;
use crate::guard::{AnyHolder, PyHeld};
use crate::held::{HeldPermit, State};
use crate::holder::{Holder, Release};
use crate::wait;
use pyo3::prelude::*;
use robust_mutex::{OpenOptions, SharedSemaphore};
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
    fn acquire(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<PyPermit>> {
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
        PyPermit::new(py, held)
    }

    /// Takes a free permit without waiting, or raises WouldBlock.
    fn try_acquire(&self, py: Python<'_>) -> PyResult<Py<PyPermit>> {
        let held = HeldPermit::try_new(self.inner.clone(), |s| {
            s.try_acquire().map(|a| Some(State::from(a)))
        });
        crate::log::flush(py);
        let held = held.map_err(|e| errors::lock_error(py, e))?;
        PyPermit::new(py, ThreadBound::new(held))
    }

    /// What `robust-mutex status --json PATH` prints, as a dict.
    fn status(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        crate::files::status_dict(py, self.inner.path())
    }

    fn __repr__(&self) -> String {
        format!("Semaphore({:?}, permits={})", self.path(), self.permits())
    }
}

/// A held permit: a context manager (`_Held`).
#[pyclass(frozen, extends = PyHeld, module = "robust_mutex._native", name = "Permit")]
#[derive(Debug)]
pub(crate) struct PyPermit {
    slot: usize,
}

impl PyPermit {
    fn new(py: Python<'_>, mut held: ThreadBound<HeldPermit>) -> PyResult<Py<PyPermit>> {
        let slot = held.get_mut().and_then(|h| h.slot()).unwrap_or_default();
        let init = PyClassInitializer::from(PyHeld::new(AnyHolder::Permit(Holder::new(held))))
            .add_subclass(PyPermit { slot });
        Py::new(py, init)
    }
}

#[pymethods]
impl PyPermit {
    /// The permit's slot in the file.
    #[getter]
    fn slot(&self) -> usize {
        self.slot
    }

    /// Gives the permit back now.
    fn release(slf: &Bound<'_, Self>) -> PyResult<()> {
        slf.as_super().get().let_go(slf.py(), Release::Clean)
    }
}
