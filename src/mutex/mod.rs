//! [`SharedMutex`]: the path-named, crash-safe, process-shared mutex, and
//! its [`Guard`].

mod cond;
mod guard;
#[cfg(feature = "async")]
mod lock_async;
mod open;

pub use guard::Guard;
#[cfg(feature = "async")]
pub use lock_async::{AsyncGuard, LockFuture};
pub use open::BYTES_ALIGN;

use crate::cancel::CancelToken;
use crate::error::{Error, LockError};
use crate::file::layout::DataLayout;
use crate::options::{OpenOptions, Spec};
use crate::outcome::{Acquired, Recovery};
use crate::raw::{Fail, Got, Name, Wait};
use crate::registry::{self, Mapping};
use crate::status::{self, Status};
use crate::sys;
use bytemuck::Pod;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A robust, process-shared mutex in a memory-mapped file at a path,
/// guarding a plain-old-data value `T` stored beside it in the same file.
///
/// When a holder dies (SIGKILL, OOM kill, crash, thread exit), the kernel
/// releases the lock and the next locker gets [`Acquired::OwnerDied`]: the
/// lock plus the duty to repair `T` before calling
/// [`Recovery::mark_consistent`].
///
/// A handle is `Send + Sync`; share it between threads with `Arc` or a
/// reference. All handles of one file in one process share one mapping.
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
/// * the holder's [`Guard::unlock`] returns [`LockError::NotOwner`]
///   (dropping the guard logs it) and touches nothing, since the lock word
///   no longer names it.
///
/// Give write access to a lock file only to its users. `robust-mutex reset --force`
/// replaces a truncated file.
///
/// # Examples
/// ```
/// use robust_mutex::{Acquired, SharedMutex};
/// # let dir = tempfile::tempdir()?;
/// # let path = dir.path().join("counter.lock");
/// let m = SharedMutex::<u64>::open(&path)?;
/// match m.lock()? {
///     Acquired::Clean(mut g) => *g += 1,
///     Acquired::OwnerDied(mut r) => {
///         *r = 0; // repair whatever the dead owner left half-done
///         *r.mark_consistent() += 1;
///     }
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SharedMutex<T: Pod = ()> {
    path: PathBuf,
    layout: DataLayout,
    opts: OpenOptions,
    /// What it was opened as (a reset's replacement is opened the same way).
    spec: Spec,
    /// The mapping in use: one of `maps`, which keeps it alive.
    current: AtomicPtr<Mapping>,
    /// Every mapping this handle has used (more than one only after a reset
    /// moved it to a new file); guards borrow them for the handle's life.
    maps: Mutex<Vec<Arc<Mapping>>>,
    _value: PhantomData<T>,
}

// SAFETY: the handle owns no `T` by value; access to the shared `T` is
// serialised by the process-shared mutex, so sending a handle to another
// thread is like sending a `std::sync::Mutex<T>`: fine when `T: Send`.
unsafe impl<T: Pod + Send> Send for SharedMutex<T> {}
// SAFETY: as for std's `Mutex<T>`: `&SharedMutex` only gives access to `T`
// through the lock, so `T: Send` suffices.
unsafe impl<T: Pod + Send> Sync for SharedMutex<T> {}

impl<T: Pod> std::fmt::Debug for SharedMutex<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedMutex")
            .field("path", &self.path)
            .field("value", &std::any::type_name::<T>())
            .finish_non_exhaustive()
    }
}

impl<T: Pod> SharedMutex<T> {
    /// The path this mutex was opened by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn data_offset(&self) -> u64 {
        self.layout.offset
    }

    /// The length of the value in the file, in bytes.
    pub(crate) fn value_len(&self) -> usize {
        self.layout.size as usize
    }

    #[inline]
    pub(crate) fn map(&self) -> &Mapping {
        let p = self.current.load(Ordering::Acquire);
        // SAFETY: `current` always points into an `Arc<Mapping>` held in
        // `self.maps`, which only grows while `self` lives.
        unsafe { &*p }
    }

    /// The lock's name in the log.
    pub(crate) fn name(&self) -> Name<'_> {
        Name {
            path: &self.path,
            permit: None,
        }
    }

    /// Blocks until the lock is acquired.
    ///
    /// # Errors
    /// [`LockError::Deadlock`] if this thread already holds it (never a
    /// hang), [`LockError::NotRecoverable`] after an abandoned recovery (until
    /// a reset), [`LockError::Io`] for anything unexpected.
    /// [`LockError::Stuck`] if, after about a second of waiting, the holder
    /// is found gone without the kernel having released the lock (see the
    /// variant); [`LockError::TooManyHeld`] if this thread already holds
    /// [`MAX_HELD_PER_THREAD`](crate::MAX_HELD_PER_THREAD) locks;
    /// [`LockError::FileChanged`] if the file was truncated or overwritten
    /// while this thread waited.
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let m = robust_mutex::SharedMutex::<u64>::open(dir.path().join("m"))?;
    /// let mut g = match m.lock()? {
    ///     robust_mutex::Acquired::Clean(g) => g,
    ///     robust_mutex::Acquired::OwnerDied(r) => r.mark_consistent(),
    /// };
    /// *g += 1;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn lock(&self) -> Result<Acquired<Guard<'_, T>>, LockError> {
        self.acquire(Wait::Block)
    }

    /// Acquires the lock only if it is free now.
    ///
    /// Implemented with an already-expired `pthread_mutex_clocklock`, not
    /// `pthread_mutex_trylock`, whose glibc version leaves a not-recoverable
    /// mutex locked by the caller.
    ///
    /// # Errors
    /// [`LockError::WouldBlock`] if another thread or process holds it; else
    /// as [`lock`](Self::lock).
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let m = robust_mutex::SharedMutex::<()>::open(dir.path().join("m"))?;
    /// let held = m.lock()?;
    /// assert!(matches!(m.try_lock(), Err(robust_mutex::LockError::Deadlock)));
    /// # drop(held);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_lock(&self) -> Result<Acquired<Guard<'_, T>>, LockError> {
        self.acquire(Wait::Try)
    }

    /// Waits at most `timeout` for the lock, measured on CLOCK_MONOTONIC, so
    /// a wall-clock jump neither stretches nor cuts the wait.
    ///
    /// # Errors
    /// [`LockError::TimedOut`] if the lock was not free in time; else as
    /// [`lock`](Self::lock).
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let m = robust_mutex::SharedMutex::<u64>::open(dir.path().join("m"))?;
    /// let g = m.lock_timeout(std::time::Duration::from_millis(100))?;
    /// # drop(g);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lock_timeout(&self, timeout: Duration) -> Result<Acquired<Guard<'_, T>>, LockError> {
        self.acquire(Wait::Until(&sys::deadline_after(timeout)))
    }

    /// Like [`lock`](Self::lock) (or [`lock_timeout`](Self::lock_timeout)
    /// when `timeout` is given), but the wait can be abandoned through
    /// `cancel`, from another thread or a signal handler: it then returns
    /// [`LockError::Cancelled`] at once, without the lock, leaving the
    /// mutex's state unchanged.
    ///
    /// The wait sleeps in the kernel on the lock word and the token together
    /// (`futex_waitv`, Linux 5.16+); it does not poll.
    ///
    /// # Errors
    /// [`LockError::Cancelled`], [`LockError::TimedOut`], else as [`lock`](Self::lock).
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let m = robust_mutex::SharedMutex::<u64>::open(dir.path().join("m"))?;
    /// let cancel = robust_mutex::CancelToken::new();
    /// let g = m.lock_cancellable(&cancel, None)?; // free: taken at once
    /// # drop(g);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lock_cancellable(
        &self,
        cancel: &CancelToken,
        timeout: Option<Duration>,
    ) -> Result<Acquired<Guard<'_, T>>, LockError> {
        let deadline = timeout.map(sys::deadline_after);
        self.acquire(Wait::Cancellable(cancel, deadline.as_ref()))
    }

    /// Locks, and if the previous owner died, runs `repair` on the value and
    /// marks the mutex consistent.
    ///
    /// # Errors
    /// As [`lock`](Self::lock).
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let m = robust_mutex::SharedMutex::<u64>::open(dir.path().join("m"))?;
    /// *m.lock_or_recover(|v| *v = 0)? += 1;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lock_or_recover(&self, repair: impl FnOnce(&mut T)) -> Result<Guard<'_, T>, LockError> {
        Ok(self.lock()?.recover_with(repair))
    }

    /// Every lock call: the raw lock of the current mapping, following a
    /// reset to its replacement file when the current one is retired.
    #[inline]
    fn acquire(&self, wait: Wait<'_>) -> Result<Acquired<Guard<'_, T>>, LockError> {
        loop {
            let map = self.map();
            match map.raw().acquire(wait, || self.name()) {
                // SAFETY: `acquire` returned Ok: this thread holds the lock.
                Ok(Got::Clean) => return Ok(Acquired::Clean(unsafe { Guard::new(self, map) })),
                Ok(Got::OwnerDied(previous)) => {
                    // SAFETY: held with EOWNERDEAD, not yet marked consistent.
                    let r = unsafe { Recovery::new(Guard::new(self, map), previous) };
                    return Ok(Acquired::OwnerDied(r));
                }
                Err(Fail::Lock(e)) => return Err(e),
                Err(Fail::NotRecoverable) => {
                    if !self.follow_reset(map) {
                        log::error!("{}: mutex is not recoverable; reset it", self.name());
                        return Err(LockError::NotRecoverable);
                    }
                }
            }
        }
    }

    /// A snapshot of the lock's state, holder and counters, taken without
    /// locking.
    ///
    /// # Examples
    /// ```
    /// use robust_mutex::{LockState, SharedMutex};
    /// # let dir = tempfile::tempdir()?;
    /// let m = SharedMutex::<u64>::open(dir.path().join("m"))?;
    /// assert_eq!(m.status().state, LockState::Unlocked);
    /// let g = m.lock_or_recover(|_| {})?;
    /// let s = m.status();
    /// assert_eq!(s.state, LockState::Locked);
    /// assert_eq!(s.owner.unwrap().pid, std::process::id());
    /// # drop(g);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn status(&self) -> Status {
        status::snapshot(self.map())
    }

    /// Facts about the file from its header: format version, kind, ABI,
    /// generation, value size, whether it belongs to this boot.
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let m = robust_mutex::SharedMutex::<u64>::open(dir.path().join("m"))?;
    /// let info = m.file_info();
    /// assert_eq!((info.version, info.kind, info.value_size), (2, robust_mutex::LockKind::Mutex, 8));
    /// assert!(info.boot_id_matches);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn file_info(&self) -> crate::FileInfo {
        status::file_info(self.map())
    }

    /// Replaces a broken mutex with a fresh one, keeping the value; see
    /// [`reset`](crate::reset()). Other handles, in this and other processes,
    /// move to the new file when they next meet the broken one.
    ///
    /// # Errors
    /// As [`reset`](crate::reset()).
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let m = robust_mutex::SharedMutex::<u64>::open(dir.path().join("m"))?;
    /// // A healthy mutex is only reset when forced.
    /// assert!(m.reset(false).is_err());
    /// assert_eq!(m.reset(true)?.generation, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn reset(&self, force: bool) -> Result<crate::ResetOutcome, Error> {
        crate::reset::reset(&self.path, force)
    }
}

impl<T: Pod> Drop for SharedMutex<T> {
    fn drop(&mut self) {
        let maps = self.maps.get_mut().unwrap_or_else(|p| p.into_inner());
        for m in maps.drain(..) {
            registry::detach(m);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropping_the_last_handle_while_holding_keeps_the_mapping() {
        let dir = tempfile::tempdir().unwrap();
        let m = SharedMutex::<u64>::open(dir.path().join("held")).unwrap();
        let key = m.map().key();
        std::mem::forget(m.lock().unwrap());
        drop(m);
        assert!(registry::is_mapped(key), "a held mutex must stay mapped");

        let n = SharedMutex::<u64>::open(dir.path().join("free")).unwrap();
        let key = n.map().key();
        drop(n.lock().unwrap());
        drop(n);
        assert!(
            !registry::is_mapped(key),
            "a free mutex is unmapped with its last handle"
        );
    }

    #[test]
    fn handles_of_one_file_share_one_mapping() {
        let dir = tempfile::tempdir().unwrap();
        let a = SharedMutex::<u64>::open(dir.path().join("m")).unwrap();
        let b = SharedMutex::<u64>::open(dir.path().join("m")).unwrap();
        assert!(std::ptr::eq(a.map(), b.map()));
    }
}
