//! `_Held`, the Python base class of `Guard` and `Permit`: what every held
//! lock offers (how it was taken, recovery, label, the with-block), written
//! once over either kind's [`Holder`].

use crate::errors;
use crate::held::{HeldMutex, HeldPermit};
use crate::holder::{Holder, PyOwner, Release};
use pyo3::prelude::*;
use std::sync::{Mutex, MutexGuard};

/// A [`Holder`] of either kind (an enum, not a box: no allocation per lock).
#[derive(Debug)]
pub(crate) enum AnyHolder {
    /// Not yet taken (a guard is made before the lock is waited for, so
    /// that its allocation is not part of the time the lock is held).
    Empty,
    Mutex(Holder<HeldMutex>),
    Permit(Holder<HeldPermit>),
}

/// `$h.$call` on whichever holder it is.
macro_rules! each {
    ($h:expr, $x:ident => $e:expr, empty => $none:expr) => {
        match $h {
            AnyHolder::Empty => $none,
            AnyHolder::Mutex($x) => $e,
            AnyHolder::Permit($x) => $e,
        }
    };
}

impl AnyHolder {
    fn owner_died(&self) -> bool {
        each!(self, h => h.owner_died(), empty => false)
    }
    fn previous_owner(&self) -> Option<PyOwner> {
        each!(self, h => h.previous_owner(), empty => None)
    }
    fn held(&self) -> bool {
        each!(self, h => h.held(), empty => false)
    }
    /// Checks that the calling thread may use it.
    fn check(&mut self, py: Python<'_>) -> PyResult<()> {
        each!(self, h => h.with(py, |_| ()), empty => Err(errors::released()))
    }
    fn consistent(&mut self, py: Python<'_>) -> PyResult<bool> {
        each!(self, h => h.consistent(py), empty => Err(errors::released()))
    }
    fn mark_consistent(&mut self, py: Python<'_>) -> PyResult<()> {
        each!(self, h => h.mark_consistent(py), empty => Err(errors::released()))
    }
    fn set_label(&mut self, py: Python<'_>, label: &str) -> PyResult<()> {
        each!(self, h => h.set_label(py, label), empty => Err(errors::released()))
    }
    fn release(&mut self, py: Python<'_>, how: Release<'_>) -> PyResult<()> {
        each!(self, h => h.release(py, how), empty => Err(errors::released()))
    }
}

/// A held lock: the base of `Guard` and `Permit`, a context manager.
#[pyclass(frozen, subclass, module = "robust_mutex._native", name = "_Held")]
#[derive(Debug)]
pub(crate) struct PyHeld {
    holder: Mutex<AnyHolder>,
    /// A memoryview handed out (a `Guard`'s value), released with the lock.
    view: Mutex<Option<Py<PyAny>>>,
}

impl PyHeld {
    pub(crate) fn new(holder: AnyHolder) -> Self {
        PyHeld {
            holder: Mutex::new(holder),
            view: Mutex::new(None),
        }
    }

    fn h(&self) -> MutexGuard<'_, AnyHolder> {
        self.holder.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts the lock just taken into a guard made before it (`Empty`).
    pub(crate) fn fill(&self, holder: AnyHolder) {
        *self.h() = holder;
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
    #[pyo3(signature = (exc_type, exc, tb))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: &Bound<'_, PyAny>,
        exc: &Bound<'_, PyAny>,
        tb: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        let _ = (exc_type, tb);
        if !self.held() {
            return Ok(false); // released inside the block, or inherited through fork
        }
        let exc = Some(exc).filter(|e| !e.is_none());
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
