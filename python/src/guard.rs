//! `_Held`, the Python base class of `Guard` and `Permit`: what every held
//! lock offers (how it was taken, recovery, label, the with-block), written
//! once over any kind's [`Holder`].

use crate::held::Hold;
use crate::holder::{Holder, PyOwner, Release};
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use std::sync::{Mutex, MutexGuard};

/// A [`Holder`] of any kind.
pub(crate) trait AnyHolder: Send + Sync + std::fmt::Debug {
    fn owner_died(&self) -> bool;
    fn previous_owner(&self) -> Option<PyOwner>;
    fn held(&self) -> bool;
    /// Checks that the calling thread may use it.
    fn check(&mut self, py: Python<'_>) -> PyResult<()>;
    fn consistent(&mut self, py: Python<'_>) -> PyResult<bool>;
    fn mark_consistent(&mut self, py: Python<'_>) -> PyResult<()>;
    fn set_label(&mut self, py: Python<'_>, label: &str) -> PyResult<()>;
    fn release(&mut self, py: Python<'_>, how: Release<'_>) -> PyResult<()>;
}

impl<H: Hold + std::fmt::Debug> AnyHolder for Holder<H> {
    fn owner_died(&self) -> bool {
        Holder::owner_died(self)
    }
    fn previous_owner(&self) -> Option<PyOwner> {
        Holder::previous_owner(self)
    }
    fn held(&self) -> bool {
        Holder::held(self)
    }
    fn check(&mut self, py: Python<'_>) -> PyResult<()> {
        self.with(py, |_| ())
    }
    fn consistent(&mut self, py: Python<'_>) -> PyResult<bool> {
        Holder::consistent(self, py)
    }
    fn mark_consistent(&mut self, py: Python<'_>) -> PyResult<()> {
        Holder::mark_consistent(self, py)
    }
    fn set_label(&mut self, py: Python<'_>, label: &str) -> PyResult<()> {
        Holder::set_label(self, py, label)
    }
    fn release(&mut self, py: Python<'_>, how: Release<'_>) -> PyResult<()> {
        Holder::release(self, py, how)
    }
}

/// A held lock: the base of `Guard` and `Permit`, a context manager.
#[pyclass(frozen, subclass, module = "robust_mutex._native", name = "_Held")]
#[derive(Debug)]
pub(crate) struct PyHeld {
    holder: Mutex<Box<dyn AnyHolder>>,
    /// A memoryview handed out (a `Guard`'s value), released with the lock.
    view: Mutex<Option<Py<PyAny>>>,
}

impl PyHeld {
    pub(crate) fn new(holder: Box<dyn AnyHolder>) -> Self {
        PyHeld {
            holder: Mutex::new(holder),
            view: Mutex::new(None),
        }
    }

    fn h(&self) -> MutexGuard<'_, Box<dyn AnyHolder>> {
        self.holder.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks that the calling thread holds it.
    pub(crate) fn check(&self, py: Python<'_>) -> PyResult<()> {
        self.h().check(py)
    }

    /// The memoryview handed out, if any.
    pub(crate) fn view(&self) -> MutexGuard<'_, Option<Py<PyAny>>> {
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lets go, then releases the memoryview handed out (after the unlock:
    /// the mapping stays, the lock is held no longer than needed, and no
    /// other code runs on this thread in between), then emits the log.
    pub(crate) fn let_go(&self, py: Python<'_>, how: Release<'_>) -> PyResult<()> {
        let r = self.h().release(py, how);
        if r.is_ok() {
            let view = self.view().take();
            if let Some(v) = view {
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
impl PyHeld {
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

    /// Whether it still holds the lock.
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

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    /// Lets go: cleanly, or as a death if an exception escaped the block.
    #[pyo3(signature = (*args))]
    fn __exit__(&self, py: Python<'_>, args: &Bound<'_, PyTuple>) -> PyResult<bool> {
        if !self.held() {
            return Ok(false); // released inside the block, or inherited through fork
        }
        let exc = args.get_item(1).ok().filter(|e| !e.is_none());
        match exc {
            None => self.let_go(py, Release::Clean)?,
            Some(e) => {
                let what = e
                    .repr()
                    .map_or_else(|_| "an exception".to_owned(), |r| r.to_string());
                let why = format!("{what} escaped the with-block");
                self.let_go(py, Release::Death(&why))?;
            }
        }
        Ok(false)
    }
}
