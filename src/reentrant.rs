//! [`ReentrantMutex`]: the re-entrant kind, whose holder may lock again.

use crate::error::{Error, LockError};
use crate::file::layout::{DataLayout, LockKind};
use crate::mutex::Guard;
use crate::options::{OpenOptions, Spec};
use crate::outcome::{Acquired, LockGuard, Recovery};
use crate::raw::{Name, RawMutex};
use crate::status::Status;
use crate::{CancelToken, SharedMutex};
use bytemuck::Pod;
use std::marker::PhantomData;
use std::path::Path;
use std::time::Duration;

/// A robust, process-shared, re-entrant (PTHREAD_MUTEX_RECURSIVE) mutex in a
/// file, guarding a `T`. The thread that holds it may lock it again; guards
/// nest, and the lock is released with the last one. When the holder dies at
/// any depth, the next locker gets [`Acquired::OwnerDied`].
///
/// Because guards nest, two of them can be alive on one thread, so they
/// cannot hand out references to `T` (they would alias). Values are copied
/// in and out with [`get`](ReentrantGuard::get) and [`set`](ReentrantGuard::set).
///
/// # Truncation
///
/// The file is mapped into every process that uses it. If someone with
/// write access truncates it to nothing (`truncate -s 0`, `> file`) while
/// it is in use, every process that then touches the mapping (to lock,
/// unlock or read) is killed by SIGBUS: a library cannot catch that signal
/// (the `robust-mutex` command does, and says the file was truncated).
/// Truncating it to a few bytes instead zeroes the lock in place, and what
/// can be detected is reported:
/// * a waiter that gets the lock after waiting finds the header no longer
///   READY, lets the lock go and returns [`LockError::FileChanged`]
///   instead of a lock that protects nothing (an uncontended lock is not
///   checked: the fast path reads no header);
/// * the holder's [`ReentrantGuard::unlock`] returns [`LockError::NotOwner`]
///   (dropping the guard logs it) and touches nothing, since the lock word
///   no longer names it.
///
/// Give write access to a lock file only to its users. `robust-mutex reset --force`
/// replaces a truncated file.
///
/// # Async
///
/// There is no `lock_async` for this kind. Re-entry belongs to a thread: a
/// relock by the thread that holds the lock nests. An async task has no
/// thread of its own (it moves between workers), and the holder thread
/// that would take the lock for it cannot tell that task's relock from
/// another task's, which must wait. Async services use
/// [`SharedMutex::lock_async`](crate::SharedMutex) (feature `async`) and
/// pass the guard down instead of relocking.
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

/// One level of a held [`ReentrantMutex`]. Neither `Send` nor `Sync`.
#[must_use = "if unused the mutex will immediately unlock"]
#[derive(Debug)]
pub struct ReentrantGuard<'a, T: Pod> {
    inner: Guard<'a, T>,
    _single_thread: PhantomData<*const ()>,
}

impl<T: Pod> ReentrantMutex<T> {
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
        Self::open_with(path, OpenOptions::new().create(true))
    }

    /// Opens (or creates, as `opts` say) the re-entrant mutex file at `path`.
    ///
    /// # Errors
    /// As [`SharedMutex::open_with`]; a plain (non-re-entrant) mutex file
    /// gives [`Error::KindMismatch`].
    ///
    /// # Examples
    /// ```
    /// use robust_mutex::{OpenOptions, ReentrantMutex};
    /// # let dir = tempfile::tempdir()?;
    /// let m = ReentrantMutex::<u64>::open_with(dir.path().join("r"), OpenOptions::new().create(true))?;
    /// let outer = m.lock()?.recover_with(|_| {});
    /// let inner = m.lock()?.recover_with(|_| {}); // same thread: no deadlock
    /// assert_eq!(inner.depth(), 2);
    /// # drop(inner); drop(outer);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_with(path: impl AsRef<Path>, opts: &OpenOptions) -> Result<Self, Error> {
        let layout = DataLayout::of::<T>().ok_or(Error::UnsupportedType {
            align: std::mem::align_of::<T>(),
        })?;
        let spec = Spec::new(LockKind::Reentrant, layout);
        SharedMutex::open_spec(path.as_ref(), opts, spec).map(|inner| ReentrantMutex { inner })
    }

    fn wrap(a: Acquired<Guard<'_, T>>) -> Acquired<ReentrantGuard<'_, T>> {
        a.map(|inner| ReentrantGuard {
            inner,
            _single_thread: PhantomData,
        })
    }

    /// Blocks until the lock is held by this thread (at once if it already is).
    ///
    /// A relock inside a [`Recovery`](crate::Recovery) not yet marked
    /// consistent is [`Acquired::Clean`] one level deeper; dropping (or
    /// unlocking) it lets that level go as usual, and the outer recovery
    /// can still be completed or abandoned. (glibc reports that inner
    /// unlock as ENOTRECOVERABLE while still counting the level down; it
    /// is taken as the success it is.)
    ///
    /// # Errors
    /// [`LockError::NotRecoverable`] after an abandoned recovery;
    /// [`LockError::Io`] for anything unexpected. Never `Deadlock`.
    /// [`LockError::Stuck`] if, after about a second of waiting, the holder
    /// is found gone without the kernel having released the lock (see the
    /// variant); [`LockError::TooManyHeld`] if this thread already holds
    /// [`MAX_HELD_PER_THREAD`](crate::MAX_HELD_PER_THREAD) locks;
    /// [`LockError::FileChanged`] if the file was truncated or overwritten
    /// while this thread waited.
    ///
    /// # Examples
    /// See [`ReentrantMutex`].
    pub fn lock(&self) -> Result<Acquired<ReentrantGuard<'_, T>>, LockError> {
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
    pub fn try_lock(&self) -> Result<Acquired<ReentrantGuard<'_, T>>, LockError> {
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
    pub fn lock_timeout(
        &self,
        timeout: Duration,
    ) -> Result<Acquired<ReentrantGuard<'_, T>>, LockError> {
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
    ) -> Result<Acquired<ReentrantGuard<'_, T>>, LockError> {
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
        self.inner.depth()
    }

    /// Sets the label of the owner record; see [`Guard::set_label`].
    ///
    /// # Errors
    /// [`LabelTooLong`](crate::LabelTooLong) when `label` is longer than
    /// [`LabelTooLong::LIMIT`](crate::LabelTooLong::LIMIT) (88) bytes; the
    /// record keeps its previous label.
    pub fn set_label(&mut self, label: &str) -> Result<(), crate::LabelTooLong> {
        self.inner.set_label(label)
    }

    /// Releases this level, reporting what dropping the guard would only
    /// log; see [`Guard::unlock`].
    ///
    /// # Errors
    /// [`LockError::NotOwner`] if the lock word no longer names this thread
    /// (the file changed under the holder, or the guard came through
    /// `fork`).
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let m = robust_mutex::ReentrantMutex::<u64>::open(dir.path().join("r"))?;
    /// let outer = m.lock()?.recover_with(|_| {});
    /// let inner = m.lock()?.recover_with(|_| {});
    /// inner.unlock()?;
    /// outer.unlock()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn unlock(self) -> Result<(), LockError> {
        self.inner.unlock()
    }
}

impl<T: Pod> LockGuard for ReentrantGuard<'_, T> {
    type Value = T;

    fn raw_lock(&self) -> RawMutex<'_> {
        self.inner.raw_lock()
    }

    fn lock_name(&self) -> Name<'_> {
        self.inner.lock_name()
    }

    fn with_value(&mut self, f: &mut dyn FnMut(&mut T)) {
        let mut v = self.get();
        f(&mut v);
        self.set(v);
    }
}

impl<T: Pod> Recovery<ReentrantGuard<'_, T>> {
    /// Sets the label of the owner record while recovering; see
    /// [`Guard::set_label`](crate::Guard::set_label). (The value is read and
    /// replaced through [`guard`](Recovery::guard)`().get()` / `.set(..)`.)
    ///
    /// # Errors
    /// [`LabelTooLong`](crate::LabelTooLong) when `label` is longer than
    /// [`LabelTooLong::LIMIT`](crate::LabelTooLong::LIMIT) (88) bytes; the
    /// record keeps its previous label.
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let m = robust_mutex::ReentrantMutex::<u64>::open(dir.path().join("r"))?;
    /// if let robust_mutex::Acquired::OwnerDied(mut r) = m.lock()? {
    ///     r.set_label("repairing")?;
    ///     r.guard().set(0);
    ///     r.mark_consistent();
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_label(&mut self, label: &str) -> Result<(), crate::LabelTooLong> {
        let map = self.guard().inner.map();
        // SAFETY: this thread holds the lock (a Recovery's contract), of a
        // re-entrant file (which has records).
        unsafe { map.raw().set_label(label) }
    }
}
