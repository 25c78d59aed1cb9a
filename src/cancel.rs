//! [`CancelToken`]: abandon a blocked wait from another thread or a signal
//! handler.

use crate::sys;
use std::sync::atomic::{AtomicU32, Ordering};

/// A flag that makes waits given it return [`LockError::Cancelled`](crate::LockError::Cancelled).
///
/// Waiting sleeps in the kernel on the lock word *and* on this token at once
/// (`futex_waitv`), so a cancel wakes the waiter immediately, with no
/// polling. [`cancel`](Self::cancel) is one atomic store and one system call,
/// so it is safe to call from a signal handler. A token stays cancelled until
/// [`reset`](Self::reset).
///
/// # Examples
/// From another thread:
/// ```
/// use robust_mutex::{CancelToken, LockError, SharedMutex};
/// # let dir = tempfile::tempdir()?;
/// # let path = dir.path().join("m");
/// let m = SharedMutex::<u64>::open(&path)?;
/// let held = m.lock()?; // someone holds it (here: this thread)
/// let cancel = CancelToken::new();
/// std::thread::scope(|s| {
///     let waiter = s.spawn(|| {
///         let other = SharedMutex::<u64>::open(&path).unwrap(); // same mutex
///         matches!(other.lock_cancellable(&cancel, None), Err(LockError::Cancelled))
///     });
///     cancel.cancel();
///     assert!(waiter.join().unwrap());
/// });
/// # drop(held);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// From a Ctrl-C handler, with a `static` token:
/// ```no_run
/// use robust_mutex::{CancelToken, LockError, SharedMutex};
/// static CTRL_C: CancelToken = CancelToken::new();
/// extern "C" fn on_sigint(_: libc::c_int) {
///     CTRL_C.cancel(); // async-signal-safe
/// }
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // install on_sigint for SIGINT with sigaction(2), then:
/// let m = SharedMutex::<()>::open("/dev/shm/job.lock")?;
/// match m.lock_cancellable(&CTRL_C, None) {
///     Err(LockError::Cancelled) => eprintln!("interrupted while waiting for the lock"),
///     other => drop(other?),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
pub struct CancelToken {
    word: AtomicU32,
    /// Whether a signal that interrupts a wait ends it too.
    signals: bool,
}

impl CancelToken {
    /// A token that is not cancelled. `const`, so it can be a `static`.
    pub const fn new() -> Self {
        CancelToken {
            word: AtomicU32::new(0),
            signals: false,
        }
    }

    /// A token that also ends a lock or acquire wait when a signal handler
    /// interrupts it (condition waits ignore interruptions):
    /// the wait returns [`LockError::Interrupted`](crate::LockError::Interrupted)
    /// (without the lock), and the caller decides whether to wait again.
    /// For runtimes whose signal handlers only set a flag for the waiting
    /// thread to act on later, such as Python's (Ctrl-C's
    /// `KeyboardInterrupt`). Only a handler installed without `SA_RESTART`
    /// interrupts a wait. `const`, so it can be a `static`.
    ///
    /// A signal that arrives just before the wait sleeps (after its last
    /// look) does not end it, as with any `EINTR`-based wait; a second one
    /// does.
    ///
    /// # Examples
    /// ```
    /// use robust_mutex::{CancelToken, LockError, SharedMutex};
    /// # let dir = tempfile::tempdir()?;
    /// let m = SharedMutex::<u64>::open(dir.path().join("m"))?;
    /// let token = CancelToken::ending_on_signals();
    /// loop {
    ///     match m.lock_cancellable(&token, None) {
    ///         Err(LockError::Interrupted) => continue, // run the handlers' work, then wait again
    ///         other => break drop(other?),
    ///     }
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub const fn ending_on_signals() -> Self {
        CancelToken {
            word: AtomicU32::new(0),
            signals: true,
        }
    }

    /// Whether a signal that interrupts a wait ends it
    /// ([`ending_on_signals`](Self::ending_on_signals)).
    pub fn ends_on_signals(&self) -> bool {
        self.signals
    }

    /// Cancels every wait given this token, now and until [`reset`](Self::reset).
    /// Async-signal-safe.
    pub fn cancel(&self) {
        self.word.store(1, Ordering::Release);
        sys::futex_wake(&self.word, i32::MAX, false);
    }

    /// Whether [`cancel`](Self::cancel) was called (and not reset since).
    pub fn is_cancelled(&self) -> bool {
        self.word.load(Ordering::Acquire) != 0
    }

    /// Makes the token usable again.
    pub fn reset(&self) {
        self.word.store(0, Ordering::Release);
    }

    pub(crate) fn word(&self) -> &AtomicU32 {
        &self.word
    }
}
