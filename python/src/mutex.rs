//! `SharedMutex` and its `Guard`: the crate's `SharedMutex::open_bytes`
//! with the value as a memoryview.

use crate::bound::ThreadBound;
use crate::errors;
use crate::guard::{AnyHolder, PyHeld};
use crate::held::{HeldMutex, State};
use crate::holder::{Holder, Release};
use crate::wait;
use pyo3::PyTypeInfo;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyTuple;
use robust_mutex::{OpenOptions, SharedMutex};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

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
    /// The value's memoryview format ('B', or a struct code such as 'Q').
    format: String,
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
        let v = factory.call1(py, (address, len, keep, &self.format))?;
        *self.base.lock().unwrap_or_else(|p| p.into_inner()) = Some((address, v.clone_ref(py)));
        Ok(v)
    }
}

#[pymethods]
impl PySharedMutex {
    #[new]
    #[pyo3(signature = (path, size = 16, *, create = true, mode = 0o600, format = "B"))]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        size: usize,
        create: bool,
        mode: u32,
        format: &str,
    ) -> PyResult<Self> {
        check_format(py, format, size)?;
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
            format: format.to_owned(),
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

    /// The value's memoryview format.
    #[getter]
    fn format(&self) -> &str {
        &self.format
    }

    /// Blocks until acquired (GIL released), or `timeout` seconds pass.
    #[pyo3(signature = (timeout = None))]
    fn lock(slf: &Bound<'_, Self>, timeout: Option<f64>) -> PyResult<Py<PyGuard>> {
        let py = slf.py();
        let limit = wait::timeout(timeout)?;
        // Made first: its allocation is not part of the time the lock is held.
        let guard = PyGuard::empty(slf)?;
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
        PyGuard::fill(guard.bind(py), held);
        Ok(guard)
    }

    /// Acquires without waiting, or raises WouldBlock.
    fn try_lock(slf: &Bound<'_, Self>) -> PyResult<Py<PyGuard>> {
        let py = slf.py();
        let held = HeldMutex::try_new(slf.get().inner.clone(), |m| {
            m.try_lock().map(|a| Some(State::from(a)))
        });
        crate::log::flush(py);
        let held = held.map_err(|e| errors::lock_error(py, e))?;
        let guard = PyGuard::empty(slf)?;
        PyGuard::fill(guard.bind(py), ThreadBound::new(held));
        Ok(guard)
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

/// Checks that `format` is one struct item code (native size and
/// alignment, at most 8 bytes, which the value's alignment gives) that
/// divides `size`, as `memoryview.cast` wants it.
fn check_format(py: Python<'_>, format: &str, size: usize) -> PyResult<()> {
    let item = match format {
        "B" | "b" | "c" | "?" => 1,
        "H" | "h" => 2,
        "I" | "i" | "f" => 4,
        "L" | "l" | "Q" | "q" | "N" | "n" | "d" | "P" => 8,
        _ => 0,
    };
    if item == 0 || size % item != 0 {
        let _ = py;
        return Err(pyo3::exceptions::PyValueError::new_err(format!(
            "format must be one native struct code ('B', 'Q', 'd', ...) whose item size divides size={size}, not {format:?}"
        )));
    }
    Ok(())
}

/// A held `SharedMutex`: a context manager (`_Held`), with the value.
#[pyclass(frozen, extends = PyHeld, module = "robust_mutex._native", name = "Guard")]
#[derive(Debug)]
pub(crate) struct PyGuard {
    /// The handle (for its value's memoryview).
    mutex: Py<PySharedMutex>,
    /// The value's address and length in the mapping (set when taken).
    region: OnceLock<(usize, usize)>,
}

impl PyGuard {
    /// A guard of `mutex` holding nothing yet.
    fn empty(mutex: &Bound<'_, PySharedMutex>) -> PyResult<Py<PyGuard>> {
        let init = PyClassInitializer::from(PyHeld::new(AnyHolder::Empty)).add_subclass(PyGuard {
            mutex: mutex.clone().unbind(),
            region: OnceLock::new(),
        });
        Py::new(mutex.py(), init)
    }

    /// Puts the lock just taken into it.
    fn fill(guard: &Bound<'_, PyGuard>, mut held: ThreadBound<HeldMutex>) {
        let region = held.get_mut().map_or((0, 0), HeldMutex::value_region);
        let _ = guard.get().region.set(region);
        guard
            .as_super()
            .get()
            .fill(AnyHolder::Mutex(Holder::new(held)));
    }
}

#[pymethods]
impl PyGuard {
    /// The value: a writable memoryview, valid while the lock is held.
    #[getter]
    fn value(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let this = slf.get();
        let held = slf.as_super().get();
        held.check(py)?;
        if let Some(v) = held.view().as_ref() {
            return Ok(v.clone_ref(py));
        }
        // Made with no lock of ours held: it runs Python code.
        let (address, len) = this.region.get().copied().unwrap_or_default();
        let base = this.mutex.get().base_view(py, address, len)?;
        let v = pyo3::types::PyMemoryView::from(base.bind(py))?
            .into_any()
            .unbind();
        *held.view() = Some(v.clone_ref(py));
        Ok(v)
    }

    /// Releases the lock now.
    fn unlock(slf: &Bound<'_, Self>) -> PyResult<()> {
        slf.as_super().get().let_go(slf.py(), Release::Clean)
    }
}
