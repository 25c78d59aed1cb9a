//! `SharedMutex` and its `Guard`: the crate's `SharedMutex::open_bytes`
//! with the value as a memoryview.

use crate::errors;
use crate::held::{HeldMutex, State};
use crate::holder::{Holder, PyOwner, Release};
use crate::wait;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyTuple;
use pyo3::{PyTraverseError, PyTypeInfo};
use robust_mutex::{OpenOptions, SharedMutex};
use send_wrapper::SendWrapper;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// `robust_mutex._view(address, size, owner)`: makes a value's memoryview
/// (set once by the package's `__init__`).
static VIEW_FACTORY: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

#[pyfunction]
pub(crate) fn _set_view_factory(py: Python<'_>, factory: Py<PyAny>) {
    let _ = VIEW_FACTORY.set(py, factory);
}

/// A robust process-shared mutex in a file, with `size` bytes beside it.
#[pyclass(frozen, module = "robust_mutex._native", name = "SharedMutex")]
#[derive(Debug)]
pub(crate) struct PySharedMutex {
    inner: Arc<SharedMutex<()>>,
    size: usize,
}

#[pymethods]
impl PySharedMutex {
    #[new]
    #[pyo3(signature = (path, size = 16, *, create = true, mode = 0o600))]
    fn new(py: Python<'_>, path: PathBuf, size: usize, create: bool, mode: u32) -> PyResult<Self> {
        crate::log::refresh_level(py);
        let r = py.detach(|| {
            OpenOptions::new()
                .create(create)
                .mode(mode)
                .open_bytes(&path, size)
        });
        crate::log::flush(py);
        let inner = r.map_err(|e| errors::file_error(py, e))?;
        Ok(PySharedMutex {
            inner: Arc::new(inner),
            size,
        })
    }

    /// The path it was opened by.
    #[getter]
    fn path(&self) -> String {
        self.inner.path().display().to_string()
    }

    /// The value's size in bytes.
    #[getter]
    fn size(&self) -> usize {
        self.size
    }

    /// Blocks until acquired (GIL released), or `timeout` seconds pass.
    #[pyo3(signature = (timeout = None))]
    fn lock(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<PyGuard> {
        let limit = wait::timeout(timeout)?;
        let m = &self.inner;
        let held = wait::acquire_or_raise(
            py,
            limit,
            || {
                HeldMutex::try_new(m.clone(), |m| m.try_lock().map(|a| Some(State::from(a))))
                    .map(SendWrapper::new)
            },
            |token, left| {
                HeldMutex::try_new(m.clone(), |m| {
                    m.lock_cancellable(token, left)
                        .map(|a| Some(State::from(a)))
                })
                .map(SendWrapper::new)
            },
        )?;
        Ok(PyGuard::new(held.take()))
    }

    /// Acquires without waiting, or raises WouldBlock.
    fn try_lock(&self, py: Python<'_>) -> PyResult<PyGuard> {
        let held = HeldMutex::try_new(self.inner.clone(), |m| {
            m.try_lock().map(|a| Some(State::from(a)))
        });
        crate::log::flush(py);
        held.map(PyGuard::new)
            .map_err(|e| errors::lock_error(py, e))
    }

    /// What `robust-mutex status --json PATH` prints, as a dict.
    fn status(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        crate::files::status_dict(py, self.inner.path())
    }

    fn __repr__(&self) -> String {
        format!("SharedMutex({:?}, size={})", self.path(), self.size)
    }

    /// Pickles as its path and size (a new handle on the same file).
    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let cls = PySharedMutex::type_object(py);
        PyTuple::new(
            py,
            [
                cls.into_any(),
                PyTuple::new(
                    py,
                    [
                        self.path().into_pyobject(py)?.into_any(),
                        self.size.into_pyobject(py)?.into_any(),
                    ],
                )?
                .into_any(),
            ],
        )
    }
}

/// A held `SharedMutex`: a context manager.
#[pyclass(frozen, module = "robust_mutex._native", name = "Guard")]
#[derive(Debug)]
pub(crate) struct PyGuard {
    holder: Holder<HeldMutex>,
    /// The value's address and length in the mapping.
    region: (usize, usize),
    /// The memoryview handed out (released with the lock).
    view: Mutex<Option<Py<PyAny>>>,
}

impl PyGuard {
    fn new(mut held: HeldMutex) -> Self {
        let region = held.value_region();
        PyGuard {
            holder: Holder::new(held),
            region,
            view: Mutex::new(None),
        }
    }

    fn take_view(&self) -> Option<Py<PyAny>> {
        self.view.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Lets go, after releasing the memoryview handed out.
    fn release(&self, py: Python<'_>, how: Release<'_>) -> PyResult<()> {
        // Only the holding thread may (`with` checks it).
        self.holder.with(py, |_| ())?;
        if let Some(v) = self.take_view() {
            // A view someone exported further (numpy, a slice's buffer)
            // refuses: it stays usable, unsafely, as documented.
            let _ = v.call_method0(py, "release");
        }
        self.holder.release(py, how)
    }
}

#[pymethods]
impl PyGuard {
    /// The previous holder died holding the lock.
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

    /// Whether this guard still holds the lock.
    #[getter]
    fn held(&self) -> bool {
        self.holder.held()
    }

    /// The value: a writable memoryview, valid while the lock is held.
    #[getter]
    fn value(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let this = slf.get();
        this.holder.with(py, |_| ())?;
        let mut view = this.view.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = view.as_ref() {
            return Ok(v.clone_ref(py));
        }
        let factory = VIEW_FACTORY.get(py).ok_or_else(|| {
            pyo3::exceptions::PyRuntimeError::new_err("robust_mutex is not initialised")
        })?;
        let (address, len) = this.region;
        let v = factory.call1(py, (address, len, slf.clone()))?;
        *view = Some(v.clone_ref(py));
        Ok(v)
    }

    /// Declares the value repaired after an owner death.
    fn mark_consistent(&self, py: Python<'_>) -> PyResult<()> {
        self.holder.mark_consistent(py)
    }

    /// Sets the owner record's label (at most 88 bytes of UTF-8).
    fn set_label(&self, py: Python<'_>, label: &str) -> PyResult<()> {
        self.holder.set_label(py, label)
    }

    /// Releases the lock now.
    fn unlock(&self, py: Python<'_>) -> PyResult<()> {
        self.release(py, Release::Clean)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Releases: cleanly, or as a death if an exception escaped the block.
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
            return Ok(false); // unlocked inside the block, or inherited through fork
        }
        match exc_type {
            None => self.release(py, Release::Clean)?,
            Some(_) => {
                let why = exit_reason(exc.as_ref());
                self.release(py, Release::Death(&why))?;
            }
        }
        Ok(false)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Ok(view) = self.view.try_lock() {
            if let Some(v) = view.as_ref() {
                visit.call(v)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        drop(self.take_view());
    }
}

/// The log's reason for a with-block left by an exception.
pub(crate) fn exit_reason(exc: Option<&Bound<'_, PyAny>>) -> String {
    let what = exc
        .and_then(|e| e.repr().ok())
        .map_or_else(|| "an exception".to_owned(), |r| r.to_string());
    format!("{what} escaped the with-block")
}
