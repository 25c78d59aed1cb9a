//! [`BareGuard`]: a held [`BareMutex`] and its release.

use super::BareMutex;
use crate::error::LockError;
use crate::outcome::{LockGuard, Recovery};
use crate::raw::{Name, RawMutex};
use std::marker::PhantomData;

/// Holds a [`BareMutex`]; unlocks on drop. Not `Send`: only the locking
/// thread may unlock.
///
/// # Examples
/// ```
/// # let dir = tempfile::tempdir()?;
/// let m = robust_mutex::BareMutex::open(dir.path().join("py.lock"))?;
/// let g = m.lock()?.recover_with(|_| {});
/// assert_eq!(g.mutex().path(), m.path());
/// drop(g); // unlocks
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// ```compile_fail
/// fn send<T: Send>() {}
/// send::<robust_mutex::BareGuard<'static>>();
/// ```
#[must_use = "if unused the mutex will immediately unlock"]
#[derive(Debug)]
pub struct BareGuard<'a> {
    mutex: &'a BareMutex,
    _not_send: PhantomData<*const ()>,
}

impl<'a> BareGuard<'a> {
    /// # Safety
    /// The calling thread holds `mutex`'s lock, taken through its raw lock;
    /// the guard releases it when dropped.
    pub(super) unsafe fn new(mutex: &'a BareMutex) -> Self {
        BareGuard {
            mutex,
            _not_send: PhantomData,
        }
    }

    /// Unlocks, reporting what dropping the guard would only log: that the
    /// lock word no longer names this thread (the file was truncated or
    /// overwritten under the holder, or the guard was inherited through
    /// `fork`). Then nothing is unlocked. During a panic this counts as the
    /// holder's death, as a drop does.
    ///
    /// # Errors
    /// [`LockError::NotOwner`], as above.
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let m = robust_mutex::BareMutex::open(dir.path().join("py.lock"))?;
    /// m.lock()?.recover_with(|_| {}).unlock()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn unlock(self) -> Result<(), LockError> {
        let this = std::mem::ManuallyDrop::new(self);
        this.release()
    }

    /// Releases the lock as this holder's death, as dropping the guard
    /// during a panic does: its next taker, in any process, gets
    /// [`Acquired::OwnerDied`](crate::Acquired::OwnerDied). See
    /// [`Guard::release_as_death`](crate::Guard::release_as_death).
    ///
    /// # Errors
    /// [`LockError::NotOwner`], as [`unlock`](Self::unlock).
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let m = robust_mutex::BareMutex::open(dir.path().join("py.lock"))?;
    /// m.lock()?.recover_with(|_| {}).release_as_death("the job failed half-way")?;
    /// assert!(m.lock()?.owner_died());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn release_as_death(self, why: &str) -> Result<(), LockError> {
        crate::outcome::release_sync_as_death(self, why)
    }

    /// The release of [`unlock`](Self::unlock).
    fn release(&self) -> Result<(), LockError> {
        // SAFETY: a BareGuard exists only while its (not Send) thread holds
        // the mutex, taken through this raw lock (`release` checks the lock
        // word says so too).
        unsafe { self.mutex.raw().release(|| self.mutex.name()) }
    }

    /// Keeps the lock held with no guard: for bindings whose lock and
    /// unlock are two calls (pymutex's `lock()` and `unlock()`). The
    /// calling thread still holds it, and the kernel still releases it as a
    /// death if the thread ends; [`BareMutex::unlock_leaked`] releases it.
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let m = robust_mutex::BareMutex::open(dir.path().join("py.lock"))?;
    /// m.lock()?.recover_with(|_| {}).leak();
    /// assert!(m.try_lock().is_err()); // still held (by this thread: Deadlock)
    /// // SAFETY: this thread leaked the guard of its acquisition just above.
    /// unsafe { m.unlock_leaked()? };
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn leak(self) {
        std::mem::forget(self);
    }

    /// The mutex this guard locks.
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let m = robust_mutex::BareMutex::open(dir.path().join("py.lock"))?;
    /// let g = m.lock()?.recover_with(|_| {});
    /// assert_eq!(g.mutex().status().state, robust_mutex::LockState::Locked);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn mutex(&self) -> &BareMutex {
        self.mutex
    }
}

impl Recovery<BareGuard<'_>> {
    /// Releases the lock as another death, still not consistent: the next
    /// taker gets `OwnerDied` again. See
    /// [`Recovery::<Guard>::release_as_death`](crate::Recovery::release_as_death).
    ///
    /// # Errors
    /// [`LockError::NotOwner`], as [`BareGuard::release_as_death`].
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let m = robust_mutex::BareMutex::open(dir.path().join("py.lock"))?;
    /// if let robust_mutex::Acquired::OwnerDied(r) = m.lock()? {
    ///     r.release_as_death("the repair failed")?;
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn release_as_death(self, why: &str) -> Result<(), LockError> {
        self.release_sync_as_death(why)
    }
}

impl LockGuard for BareGuard<'_> {
    type Value = ();

    fn raw_lock(&self) -> RawMutex<'_> {
        self.mutex.raw()
    }

    fn lock_name(&self) -> Name<'_> {
        self.mutex.name()
    }

    fn with_value(&mut self, f: &mut dyn FnMut(&mut ())) {
        f(&mut ());
    }
}

impl Drop for BareGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: a BareGuard exists only while its (not Send) thread holds
        // the mutex, taken through this raw lock (checked again by the lock
        // word). A failure is logged where it is found.
        unsafe { self.mutex.raw().release_in_drop(|| self.mutex.name()) };
    }
}
