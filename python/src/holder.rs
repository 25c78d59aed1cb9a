//! The part of a Python guard object that is the same for every kind: the
//! held lock, bound to the thread (and process) that took it, and how it is
//! let go.

use crate::bound::ThreadBound;
use crate::errors;
use crate::held::{Hold, Taken};
use pyo3::prelude::*;
use robust_mutex::OwnerInfo;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::UNIX_EPOCH;

/// Bumped in every fork child (`os.register_at_fork`), so that a guard
/// inherited through fork is told from the child's own.
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);

/// This process's fork generation (0 in the process that imported us).
pub(crate) fn fork_generation() -> u64 {
    FORK_GENERATION.load(Ordering::Relaxed)
}

/// `os.register_at_fork(after_in_child=...)`: this process is a new fork child.
#[pyfunction]
pub(crate) fn _forked() {
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// A dead or earlier holder, as its owner record names it.
#[pyclass(frozen, module = "robust_mutex._native", name = "Owner")]
#[derive(Debug)]
pub(crate) struct PyOwner {
    /// Process id (in the holder's PID namespace).
    #[pyo3(get)]
    pid: u32,
    /// Thread id (the thread's `threading.get_native_id()`).
    #[pyo3(get)]
    tid: u32,
    /// The label it set (`set_label`), or "".
    #[pyo3(get)]
    label: String,
    /// When it took the lock, in seconds since the Unix epoch.
    #[pyo3(get)]
    acquired_at: f64,
}

#[pymethods]
impl PyOwner {
    fn __repr__(&self) -> String {
        format!(
            "Owner(pid={}, tid={}, label={:?})",
            self.pid, self.tid, self.label
        )
    }
}

impl From<&OwnerInfo> for PyOwner {
    fn from(o: &OwnerInfo) -> Self {
        PyOwner {
            pid: o.pid,
            tid: o.tid,
            label: o.label.clone(),
            acquired_at: o
                .acquired_at
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        }
    }
}

/// How a guard lets go.
#[derive(Debug)]
pub(crate) enum Release<'a> {
    /// Unlock (a recovery not marked consistent: not recoverable).
    Clean,
    /// As a death, `why` in the log.
    Death(&'a str),
}

/// A held lock in a Python object.
#[derive(Debug)]
pub(crate) struct Holder<H: Hold + 'static> {
    /// `None` once released. Only the taking thread may touch the guard.
    held: Option<ThreadBound<H>>,
    /// How it was taken (fixed for the guard's life).
    owner_died: bool,
    previous: Option<OwnerInfo>,
    /// The fork generation it was taken in.
    generation: u64,
}

impl<H: Hold + 'static> Holder<H> {
    /// A holder of `held`, just taken by the calling thread.
    pub(crate) fn new(mut held: ThreadBound<H>) -> Self {
        let (owner_died, previous) = match held.get_mut().map(|h| h.taken()) {
            Some(Taken {
                owner_died,
                previous,
            }) => (owner_died, previous),
            None => (false, None),
        };
        Holder {
            held: Some(held),
            owner_died,
            previous,
            generation: fork_generation(),
        }
    }

    /// Whether the guard came through a fork (it is the parent's).
    fn inherited(&self) -> bool {
        self.generation != fork_generation()
    }

    pub(crate) fn owner_died(&self) -> bool {
        self.owner_died
    }

    pub(crate) fn previous_owner(&self) -> Option<PyOwner> {
        self.previous.as_ref().map(PyOwner::from)
    }

    /// Whether it still holds the lock (for this process; perhaps for
    /// another of its threads).
    pub(crate) fn held(&self) -> bool {
        self.held.is_some() && !self.inherited()
    }

    /// Runs `f` on the held lock, from its thread only.
    pub(crate) fn with<R>(&mut self, py: Python<'_>, f: impl FnOnce(&mut H) -> R) -> PyResult<R> {
        if self.inherited() {
            return Err(errors::released());
        }
        match self.held.as_mut().map(ThreadBound::get_mut) {
            Some(Some(h)) => Ok(f(h)),
            Some(None) => Err(errors::other_thread(py)),
            None => Err(errors::released()),
        }
    }

    pub(crate) fn consistent(&mut self, py: Python<'_>) -> PyResult<bool> {
        self.with(py, |h| h.consistent())
    }

    pub(crate) fn mark_consistent(&mut self, py: Python<'_>) -> PyResult<()> {
        self.with(py, |h| h.mark_consistent())
    }

    pub(crate) fn set_label(&mut self, py: Python<'_>, label: &str) -> PyResult<()> {
        self.with(py, |h| h.set_label(label))?
            .map(|_| ())
            .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))
    }

    /// Lets go of the lock. From another thread: NotOwner, the lock still
    /// held. Already released: RuntimeError. Inherited through fork: does
    /// nothing (the lock is the parent's). The caller flushes the log
    /// (`crate::log::flush`) once it holds no lock of its own.
    pub(crate) fn release(&mut self, py: Python<'_>, how: Release<'_>) -> PyResult<()> {
        let Some(bound) = self.held.take() else {
            return Err(errors::released());
        };
        if self.inherited() {
            // The parent's guard: never touched, never dropped here.
            std::mem::forget(bound);
            return Ok(());
        }
        let mut h = match bound.into_inner() {
            Ok(h) => h,
            Err(bound) => {
                self.held = Some(bound);
                return Err(errors::other_thread(py));
            }
        };
        let r = match how {
            Release::Clean => h.release(),
            Release::Death(why) => h.release_as_death(why),
        };
        drop(h);
        r.map_err(|e| errors::lock_error(py, e))
    }
}

impl<H: Hold + 'static> Drop for Holder<H> {
    /// A guard object collected while it holds the lock: dropped (a clean
    /// release) by its thread; from another thread, kept for its thread to
    /// release ([`crate::orphans`]); after a fork, left alone (the parent's).
    fn drop(&mut self) {
        let Some(bound) = self.held.take() else {
            return;
        };
        if self.inherited() {
            std::mem::forget(bound);
        } else if !bound.mine() {
            crate::orphans::adopt(Box::new(bound));
        }
    }
}
