//! [`PermitGuard`]: one held permit.

use super::SharedSemaphore;
use crate::error::LockError;
use crate::outcome::{LockGuard, Recovery};
use crate::raw::{Name, RawMutex};
use std::marker::PhantomData;

/// A held permit; released when dropped.
///
/// Not `Send`: POSIX requires the thread that locked a mutex to unlock it.
///
/// ```compile_fail
/// # let dir = tempfile::tempdir().unwrap();
/// let sem = robust_mutex::SharedSemaphore::open(dir.path().join("s"), 1).unwrap();
/// let p = sem.acquire().unwrap().recover_with(|_| {});
/// std::thread::spawn(move || drop(p)); // error: PermitGuard is not Send
/// ```
#[must_use = "if unused the permit is released at once"]
pub struct PermitGuard<'a> {
    sem: &'a SharedSemaphore,
    slot: usize,
    _not_send: PhantomData<*const ()>,
}

impl std::fmt::Debug for PermitGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PermitGuard")
            .field("path", &self.sem.path)
            .field("slot", &self.slot)
            .finish()
    }
}

impl<'a> PermitGuard<'a> {
    /// # Safety
    /// The calling thread holds permit `slot` of `sem`, taken through its
    /// raw lock; the guard releases it when dropped.
    pub(super) unsafe fn new(sem: &'a SharedSemaphore, slot: usize) -> Self {
        PermitGuard {
            sem,
            slot,
            _not_send: PhantomData,
        }
    }

    /// Which permit (slot) this is, `0..permits`: e.g. an index into
    /// per-permit resources (scratch files, connections) that a recovering
    /// successor must clean up.
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let sem = robust_mutex::SharedSemaphore::open(dir.path().join("s"), 2)?;
    /// let a = sem.acquire()?.recover_with(|_| {});
    /// let b = sem.acquire()?.recover_with(|_| {});
    /// assert_ne!(a.slot(), b.slot());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn slot(&self) -> usize {
        self.slot
    }

    /// Releases the permit, reporting what dropping the guard would only
    /// log: that its lock word no longer names this thread (the file was
    /// truncated or overwritten under the holder, or the guard was
    /// inherited through `fork`). Then nothing is released. During a panic
    /// this counts as the holder's death, as a drop does.
    ///
    /// # Errors
    /// [`LockError::NotOwner`], as above.
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let sem = robust_mutex::SharedSemaphore::open(dir.path().join("s"), 2)?;
    /// sem.acquire()?.recover_with(|_| {}).unlock()?;
    /// assert_eq!(sem.status().available, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn unlock(self) -> Result<(), LockError> {
        let this = std::mem::ManuallyDrop::new(self);
        this.release()
    }

    /// Releases the permit as this holder's death, as dropping the guard
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
    /// let sem = robust_mutex::SharedSemaphore::open(dir.path().join("s"), 1)?;
    /// sem.acquire()?.recover_with(|_| {}).release_as_death("the job failed half-way")?;
    /// assert!(sem.acquire()?.owner_died());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn release_as_death(self, why: &str) -> Result<(), LockError> {
        crate::outcome::release_sync_as_death(self, why)
    }

    /// The release of [`unlock`](Self::unlock).
    fn release(&self) -> Result<(), LockError> {
        // SAFETY: a PermitGuard exists only while its (not Send) thread
        // holds the permit, taken through this slot's raw lock (`release`
        // checks the lock word says so too).
        unsafe {
            self.sem
                .slot(self.slot)
                .release(|| self.sem.name(Some(self.slot)))
        }
    }

    /// The semaphore this permit belongs to.
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let sem = robust_mutex::SharedSemaphore::open(dir.path().join("s"), 2)?;
    /// let p = sem.acquire()?.recover_with(|_| {});
    /// assert_eq!(p.semaphore().status().held, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn semaphore(&self) -> &'a SharedSemaphore {
        self.sem
    }

    /// Sets a short label in this permit's owner record (at most 88 bytes of
    /// UTF-8), which [`SharedSemaphore::status`] and a recovering
    /// successor's [`Recovery::previous_owner`](crate::Recovery::previous_owner)
    /// show.
    ///
    /// # Errors
    /// [`LabelTooLong`](crate::LabelTooLong) when `label` is longer than
    /// [`LabelTooLong::LIMIT`](crate::LabelTooLong::LIMIT) (88) bytes; the
    /// record keeps its previous label.
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let sem = robust_mutex::SharedSemaphore::open(dir.path().join("s"), 1)?;
    /// let mut p = sem.acquire()?.recover_with(|_| {});
    /// p.set_label("upload #12")?;
    /// assert_eq!(sem.status().holders[0].label, "upload #12");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_label(&mut self, label: &str) -> Result<(), crate::LabelTooLong> {
        // SAFETY: we hold the permit, which has records.
        unsafe { self.sem.slot(self.slot).set_label(label) }
    }
}

impl LockGuard for PermitGuard<'_> {
    type Value = ();

    fn raw_lock(&self) -> RawMutex<'_> {
        self.sem.slot(self.slot)
    }

    fn lock_name(&self) -> Name<'_> {
        self.sem.name(Some(self.slot))
    }

    fn with_value(&mut self, f: &mut dyn FnMut(&mut ())) {
        f(&mut ());
    }
}

impl Drop for PermitGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: a PermitGuard exists only while its (not Send) thread
        // holds the permit, taken through this slot's raw lock (checked
        // again by the lock word). A failure is logged where it is found.
        unsafe {
            self.sem
                .slot(self.slot)
                .release_in_drop(|| self.sem.name(Some(self.slot)))
        };
    }
}

impl Recovery<PermitGuard<'_>> {
    /// Releases the permit as another death, still not consistent: the next
    /// taker gets `OwnerDied` again. See
    /// [`Recovery::<Guard>::release_as_death`](crate::Recovery::release_as_death).
    ///
    /// # Errors
    /// [`LockError::NotOwner`], as [`PermitGuard::release_as_death`].
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let sem = robust_mutex::SharedSemaphore::open(dir.path().join("s"), 1)?;
    /// if let robust_mutex::Acquired::OwnerDied(r) = sem.acquire()? {
    ///     r.release_as_death("the repair failed")?;
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn release_as_death(self, why: &str) -> Result<(), LockError> {
        self.release_sync_as_death(why)
    }

    /// Sets the label of this permit's owner record while recovering; see
    /// [`PermitGuard::set_label`].
    ///
    /// # Errors
    /// [`LabelTooLong`](crate::LabelTooLong) when `label` is longer than
    /// [`LabelTooLong::LIMIT`](crate::LabelTooLong::LIMIT) (88) bytes; the
    /// record keeps its previous label.
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let sem = robust_mutex::SharedSemaphore::open(dir.path().join("s"), 1)?;
    /// if let robust_mutex::Acquired::OwnerDied(mut r) = sem.acquire()? {
    ///     r.set_label("cleaning up")?;
    ///     r.mark_consistent();
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_label(&mut self, label: &str) -> Result<(), crate::LabelTooLong> {
        let guard = self.guard();
        // SAFETY: this thread holds the permit (a Recovery's contract),
        // which has records.
        unsafe { guard.sem.slot(guard.slot).set_label(label) }
    }
}
