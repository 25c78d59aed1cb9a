//! Blocking acquisition the Python way: one try with the GIL held (the
//! uncontended path costs no GIL release), then the crate's cancellable
//! wait with the GIL released. A signal (Ctrl-C) interrupts the wait: the
//! GIL is taken back and Python's handlers run; their exception
//! (KeyboardInterrupt) propagates with the lock untouched, otherwise the
//! wait goes on.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use robust_mutex::{CancelToken, LockError};
use std::time::{Duration, Instant};

/// A timeout in seconds as Python gives it: `None` waits for ever.
///
/// # Errors
/// ValueError for a negative or not-a-number timeout.
pub(crate) fn timeout(t: Option<f64>) -> PyResult<Option<Duration>> {
    match t {
        None => Ok(None),
        Some(s) if s >= 0.0 => Ok(Some(
            Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX),
        )),
        Some(s) => Err(PyValueError::new_err(format!(
            "timeout must be None or >= 0 seconds, not {s}"
        ))),
    }
}

/// [`acquire`] with the lock's errors as exceptions.
///
/// # Errors
/// As [`acquire`], each `LockError` as its exception.
pub(crate) fn acquire_or_raise<H: Send>(
    py: Python<'_>,
    limit: Option<Duration>,
    try_once: impl FnOnce() -> Result<H, LockError>,
    wait: impl Fn(&CancelToken, Option<Duration>) -> Result<H, LockError> + Sync,
) -> PyResult<H> {
    acquire(py, limit, try_once, wait)?.map_err(|e| crate::errors::lock_error(py, e))
}

/// Acquires: `try_once` first, then, if busy, `wait` (the crate's
/// cancellable lock, given a token that ends on signals and the time left)
/// with the GIL released, until it returns something other than an
/// interruption, or a signal handler raises.
///
/// # Errors
/// A signal handler's exception (KeyboardInterrupt); inside, the lock's
/// own answer (`LockError::TimedOut` when `limit` passes).
pub(crate) fn acquire<H: Send>(
    py: Python<'_>,
    limit: Option<Duration>,
    try_once: impl FnOnce() -> Result<H, LockError>,
    wait: impl Fn(&CancelToken, Option<Duration>) -> Result<H, LockError> + Sync,
) -> PyResult<Result<H, LockError>> {
    match try_once() {
        Err(LockError::WouldBlock) => {}
        r => {
            crate::log::flush(py);
            return Ok(r);
        }
    }
    crate::log::refresh_level_now_and_then(py);
    let deadline = limit.and_then(|l| Instant::now().checked_add(l));
    let token = CancelToken::ending_on_signals();
    loop {
        let left = match (limit, deadline) {
            (None, _) | (Some(_), None) => None,
            (Some(_), Some(d)) => Some(d.saturating_duration_since(Instant::now())),
        };
        let r = py.detach(|| wait(&token, left));
        crate::log::flush(py);
        match r {
            Err(LockError::Interrupted) => py.check_signals()?,
            r => return Ok(r),
        }
    }
}
