//! [`ReentrantMutex`]: the re-entrant kind, whose holder may lock again.

use crate::error::{Error, LockError};
use crate::guard::{Acquired, Guard, Recovery};
use crate::options::OpenOptions;
use crate::status::{OwnerInfo, Status};
use crate::{CancelToken, SharedMutex};
use bytemuck::Pod;
use std::marker::PhantomData;
use std::path::Path;
use std::time::Duration;

/// A robust, process-shared, re-entrant (PTHREAD_MUTEX_RECURSIVE) mutex in a
/// file, guarding a `T`. The thread that holds it may lock it again; guards
/// nest, and the lock is released with the last one. When the holder dies at
/// any depth, the next locker gets [`ReentrantAcquired::OwnerDied`].
///
/// Because guards nest, two of them can be alive on one thread, so they
/// cannot hand out references to `T` (they would alias). Values are copied
/// in and out with [`get`](ReentrantGuard::get) and [`set`](ReentrantGuard::set).
///
/// # Examples
/// ```
/// use robust_mutex::ReentrantMutex;
/// # let dir = tempfile::tempdir()?;
/// let m = ReentrantMutex::<u64>::open(dir.path().join("r"))?;
/// let outer = m.lock()?.recover_with(|v| *v = 0);
/// outer.set(outer.get() + 1);
/// {
///     let inner = m.lock()?.recover_with(|_| {}); // no deadlock
///     inner.set(inner.get() * 10);
/// }
/// assert_eq!(outer.get(), 10);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct ReentrantMutex<T: Pod = ()> {
    inner: SharedMutex<T>,
}

/// What a lock of a [`ReentrantMutex`] returns.
#[must_use = "if unused the mutex will immediately unlock"]
#[derive(Debug)]
pub enum ReentrantAcquired<'a, T: Pod> {
    /// The lock is yours (possibly again) and the state consistent.
    Clean(ReentrantGuard<'a, T>),
    /// The previous holder died holding it: repair, then mark consistent.
    OwnerDied(ReentrantRecovery<'a, T>),
}

/// One level of a held [`ReentrantMutex`]. Neither `Send` nor `Sync`.
#[must_use = "if unused the mutex will immediately unlock"]
#[derive(Debug)]
pub struct ReentrantGuard<'a, T: Pod> {
    inner: Guard<'a, T>,
    _single_thread: PhantomData<*const ()>,
}

/// A [`ReentrantMutex`] after its previous holder died. Dropping it without
/// [`mark_consistent`](Self::mark_consistent) makes the mutex not
/// recoverable, as for [`Recovery`].
#[derive(Debug)]
pub struct ReentrantRecovery<'a, T: Pod> {
    inner: Recovery<'a, T>,
    _single_thread: PhantomData<*const ()>,
}

impl<T: Pod> ReentrantMutex<T> {
    pub(crate) fn from_inner(inner: SharedMutex<T>) -> Self {
        ReentrantMutex { inner }
    }

    /// Opens the re-entrant mutex file at `path`, creating it if missing.
    ///
    /// # Errors
    /// As [`OpenOptions::open`]; a plain (non-re-entrant) mutex file gives
    /// [`Error::KindMismatch`].
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let m = robust_mutex::ReentrantMutex::<u32>::open(dir.path().join("r"))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        OpenOptions::new().create(true).open_reentrant(path)
    }

    fn wrap(a: Acquired<'_, T>) -> ReentrantAcquired<'_, T> {
        match a {
            Acquired::Clean(inner) => ReentrantAcquired::Clean(ReentrantGuard {
                inner,
                _single_thread: PhantomData,
            }),
            Acquired::OwnerDied(inner) => ReentrantAcquired::OwnerDied(ReentrantRecovery {
                inner,
                _single_thread: PhantomData,
            }),
        }
    }

    /// Blocks until the lock is held by this thread (at once if it already is).
    ///
    /// # Errors
    /// [`LockError::NotRecoverable`] after an abandoned recovery;
    /// [`LockError::Io`] for anything unexpected. Never `Deadlock`.
    ///
    /// # Examples
    /// See [`ReentrantMutex`].
    pub fn lock(&self) -> Result<ReentrantAcquired<'_, T>, LockError> {
        self.inner.lock().map(Self::wrap)
    }

    /// Takes the lock only if it is free or already held by this thread.
    ///
    /// # Errors
    /// [`LockError::WouldBlock`] if another thread or process holds it.
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let m = robust_mutex::ReentrantMutex::<()>::open(dir.path().join("r"))?;
    /// let a = m.try_lock()?;
    /// let b = m.try_lock()?; // nested
    /// # drop(b); drop(a);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_lock(&self) -> Result<ReentrantAcquired<'_, T>, LockError> {
        self.inner.try_lock().map(Self::wrap)
    }

    /// Waits at most `timeout` (CLOCK_MONOTONIC).
    ///
    /// # Errors
    /// [`LockError::TimedOut`]; else as [`lock`](Self::lock).
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let m = robust_mutex::ReentrantMutex::<()>::open(dir.path().join("r"))?;
    /// let g = m.lock_timeout(std::time::Duration::from_millis(10))?;
    /// # drop(g);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lock_timeout(&self, timeout: Duration) -> Result<ReentrantAcquired<'_, T>, LockError> {
        self.inner.lock_timeout(timeout).map(Self::wrap)
    }

    /// A wait that `cancel` can abandon; see [`SharedMutex::lock_cancellable`].
    ///
    /// # Errors
    /// [`LockError::Cancelled`]; else as [`lock_timeout`](Self::lock_timeout).
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let m = robust_mutex::ReentrantMutex::<()>::open(dir.path().join("r"))?;
    /// let g = m.lock_cancellable(&robust_mutex::CancelToken::new(), None)?;
    /// # drop(g);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lock_cancellable(
        &self,
        cancel: &CancelToken,
        timeout: Option<Duration>,
    ) -> Result<ReentrantAcquired<'_, T>, LockError> {
        self.inner.lock_cancellable(cancel, timeout).map(Self::wrap)
    }

    /// A snapshot of the state, holder and counters, without locking.
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let m = robust_mutex::ReentrantMutex::<()>::open(dir.path().join("r"))?;
    /// assert_eq!(m.status().state, robust_mutex::LockState::Unlocked);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn status(&self) -> Status {
        self.inner.status()
    }

    /// The path this mutex was opened by.
    pub fn path(&self) -> &Path {
        self.inner.path()
    }
}

impl<'a, T: Pod> ReentrantAcquired<'a, T> {
    /// The guard, repairing first with `repair` if the previous owner died.
    pub fn recover_with(self, repair: impl FnOnce(&mut T)) -> ReentrantGuard<'a, T> {
        match self {
            ReentrantAcquired::Clean(g) => g,
            ReentrantAcquired::OwnerDied(r) => {
                let mut v = r.get();
                repair(&mut v);
                r.set(v);
                r.mark_consistent()
            }
        }
    }

    /// True if the previous owner died holding the lock.
    pub fn owner_died(&self) -> bool {
        matches!(self, ReentrantAcquired::OwnerDied(_))
    }
}

impl<T: Pod> ReentrantGuard<'_, T> {
    /// A copy of the value.
    pub fn get(&self) -> T {
        // SAFETY: as for `set`: no reference to the value is alive.
        unsafe { self.inner.data().read() }
    }

    /// Replaces the value.
    pub fn set(&self, value: T) {
        // SAFETY: this thread holds the lock, so no other thread or process
        // touches the value; guards are neither Send nor Sync and never hand
        // out references, so no reference to the value is alive here.
        unsafe { self.inner.data().write(value) };
    }

    /// How many guards this thread holds on the mutex (1 = outermost).
    pub fn depth(&self) -> u32 {
        // SAFETY: we hold the lock, so the owner record is ours to read.
        unsafe { (*self.inner.map.owner()).depth }
    }

    /// Sets the label of the owner record; see [`Guard::set_label`].
    pub fn set_label(&mut self, label: &str) {
        self.inner.set_label(label);
    }
}

impl<'a, T: Pod> ReentrantRecovery<'a, T> {
    /// A copy of the value the dead owner left.
    pub fn get(&self) -> T {
        // SAFETY: as for `ReentrantGuard::set`.
        unsafe { self.inner.guard.data().read() }
    }

    /// Replaces the value.
    pub fn set(&self, value: T) {
        // SAFETY: as for `ReentrantGuard::set`.
        unsafe { self.inner.guard.data().write(value) };
    }

    /// The dead owner's record.
    pub fn previous_owner(&self) -> Option<&OwnerInfo> {
        self.inner.previous_owner()
    }

    /// Declares the value repaired; goes on holding the lock.
    pub fn mark_consistent(self) -> ReentrantGuard<'a, T> {
        ReentrantGuard {
            inner: self.inner.mark_consistent(),
            _single_thread: PhantomData,
        }
    }
}
