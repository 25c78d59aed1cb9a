//! `SharedMutex` and its `Guard`: the crate's `SharedMutex::open_bytes`
//! with the value as a memoryview.

use crate::bound::ThreadBound;
use crate::errors;
use crate::held::{HeldMutex, State};
use crate::holder::{Holder, PyOwner, Release};
use crate::wait;
use pyo3::PyTypeInfo;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyTuple;
use robust_mutex::{OpenOptions, SharedMutex};
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
    /// A memoryview of the whole value in the current mapping, and its
    /// address: each guard hands out a slice of it, released with the lock
    /// (making a view costs microseconds; a view of a view, a tenth of that).
    base: Mutex<Option<(usize, Py<PyAny>)>>,
}

/// What keeps a value's mapping alive for its memoryview: the handle's
/// crate object, not the Python handle (no reference cycle).
#[pyclass(frozen, module = "robust_mutex._native", name = "_Mapping")]
#[derive(Debug)]
pub(crate) struct PyKeep {
    _mutex: Arc<SharedMutex<()>>,
}

impl PySharedMutex {
    /// The memoryview of the value at `address` (`len` bytes), made once
    /// per mapping.
    fn base_view(&self, py: Python<'_>, address: usize, len: usize) -> PyResult<Py<PyAny>> {
        if let Some((a, v)) = self.base.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            if *a == address {
                return Ok(v.clone_ref(py));
            }
        }
        // Made with no lock of ours held: the factory runs Python code.
        let factory = VIEW_FACTORY.get(py).ok_or_else(|| {
            pyo3::exceptions::PyRuntimeError::new_err("robust_mutex is not initialised")
        })?;
        let keep = PyKeep {
            _mutex: self.inner.clone(),
        };
        let v = factory.call1(py, (address, len, keep))?;
        *self.base.lock().unwrap_or_else(|p| p.into_inner()) = Some((address, v.clone_ref(py)));
        Ok(v)
    }
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
            base: Mutex::new(None),
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
    fn lock(slf: &Bound<'_, Self>, timeout: Option<f64>) -> PyResult<PyGuard> {
        let py = slf.py();
        let limit = wait::timeout(timeout)?;
        let m = &slf.get().inner;
        let held = wait::acquire_or_raise(
            py,
            limit,
            || {
                HeldMutex::try_new(m.clone(), |m| m.try_lock().map(|a| Some(State::from(a))))
                    .map(ThreadBound::new)
            },
            |token, left| {
                HeldMutex::try_new(m.clone(), |m| {
                    m.lock_cancellable(token, left)
                        .map(|a| Some(State::from(a)))
                })
                .map(ThreadBound::new)
            },
        )?;
        Ok(PyGuard::new(slf, held))
    }

    /// Acquires without waiting, or raises WouldBlock.
    fn try_lock(slf: &Bound<'_, Self>) -> PyResult<PyGuard> {
        let py = slf.py();
        let held = HeldMutex::try_new(slf.get().inner.clone(), |m| {
            m.try_lock().map(|a| Some(State::from(a)))
        });
        crate::log::flush(py);
        held.map(|h| PyGuard::new(slf, ThreadBound::new(h)))
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
    holder: Mutex<Holder<HeldMutex>>,
    /// The handle (for its value's memoryview).
    mutex: Py<PySharedMutex>,
    /// The value's address and length in the mapping.
    region: (usize, usize),
    /// The memoryview handed out (released with the lock).
    view: Mutex<Option<Py<PyAny>>>,
}

impl PyGuard {
    fn new(mutex: &Bound<'_, PySharedMutex>, mut held: ThreadBound<HeldMutex>) -> Self {
        let region = held.get_mut().map_or((0, 0), HeldMutex::value_region);
        PyGuard {
            holder: Mutex::new(Holder::new(held)),
            mutex: mutex.clone().unbind(),
            region,
            view: Mutex::new(None),
        }
    }

    fn h(&self) -> std::sync::MutexGuard<'_, Holder<HeldMutex>> {
        self.holder.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take_view(&self) -> Option<Py<PyAny>> {
        self.view.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Lets go, then releases the memoryview handed out (after the unlock:
    /// the mapping stays, and the lock is held no longer than needed; no
    /// other code runs on this thread in between).
    fn release(&self, py: Python<'_>, how: Release<'_>) -> PyResult<()> {
        let r = self.h().release(py, how);
        if r.is_ok() {
            if let Some(v) = self.take_view() {
                // A view someone exported further (numpy, a buffer taken
                // from it) refuses: it stays usable, unsafely, as documented.
                let _ = v.call_method0(py, pyo3::intern!(py, "release"));
            }
        }
        crate::log::flush(py);
        r
    }
}

#[pymethods]
impl PyGuard {
    /// The previous holder died holding the lock.
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

    /// Whether this guard still holds the lock.
    #[getter]
    fn held(&self) -> bool {
        self.h().held()
    }

    /// The value: a writable memoryview, valid while the lock is held.
    #[getter]
    fn value(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.h().with(py, |_| ())?;
        if let Some(v) = self.view.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            return Ok(v.clone_ref(py));
        }
        // Made with no lock of ours held: slicing runs Python code.
        let (address, len) = self.region;
        let base = self.mutex.get().base_view(py, address, len)?;
        let v = pyo3::types::PyMemoryView::from(base.bind(py))?
            .into_any()
            .unbind();
        *self.view.lock().unwrap_or_else(|p| p.into_inner()) = Some(v.clone_ref(py));
        Ok(v)
    }

    /// Declares the value repaired after an owner death.
    fn mark_consistent(&self, py: Python<'_>) -> PyResult<()> {
        let r = self.h().mark_consistent(py);
        crate::log::flush(py);
        r
    }

    /// Sets the owner record's label (at most 88 bytes of UTF-8).
    fn set_label(&self, py: Python<'_>, label: &str) -> PyResult<()> {
        self.h().set_label(py, label)
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
        if !self.h().held() {
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
}

/// The log's reason for a with-block left by an exception.
pub(crate) fn exit_reason(exc: Option<&Bound<'_, PyAny>>) -> String {
    let what = exc
        .and_then(|e| e.repr().ok())
        .map_or_else(|| "an exception".to_owned(), |r| r.to_string());
    format!("{what} escaped the with-block")
}
