//! [`Guard`]: a held [`SharedMutex`], its value, and its release.

use super::SharedMutex;
use crate::error::LockError;
use crate::outcome::{LockGuard, Recovery};
use crate::raw::{Name, RawMutex};
use crate::registry::Mapping;
use bytemuck::Pod;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

/// Holds the lock; gives access to the value; unlocks on drop.
///
/// Not `Send`: POSIX requires the thread that locked a mutex to unlock it.
///
/// ```compile_fail
/// # let dir = tempfile::tempdir().unwrap();
/// let m = robust_mutex::SharedMutex::<u64>::open(dir.path().join("m")).unwrap();
/// let g = m.lock_or_recover(|_| {}).unwrap();
/// std::thread::spawn(move || drop(g)); // error: Guard is not Send
/// ```
///
/// # Examples
/// ```
/// # let dir = tempfile::tempdir()?;
/// let m = robust_mutex::SharedMutex::<u64>::open(dir.path().join("m"))?;
/// let mut g = m.lock_or_recover(|v| *v = 0)?;
/// *g += 1;
/// drop(g); // unlocks
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "if unused the mutex will immediately unlock"]
pub struct Guard<'a, T: Pod> {
    pub(super) mutex: &'a SharedMutex<T>,
    pub(super) map: &'a Mapping,
    _not_send: PhantomData<*const ()>,
}

// SAFETY: a `&Guard` only gives `&T`, so sharing it between threads is as
// safe as sharing `&T`, which `T: Sync` allows.
unsafe impl<T: Pod + Sync> Sync for Guard<'_, T> {}

impl<T: Pod> std::fmt::Debug for Guard<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("path", &self.mutex.path())
            .finish_non_exhaustive()
    }
}

impl<'a, T: Pod> Guard<'a, T> {
    /// # Safety
    /// The calling thread holds `map`'s mutex, taken through its raw lock;
    /// the guard releases it when dropped.
    pub(super) unsafe fn new(mutex: &'a SharedMutex<T>, map: &'a Mapping) -> Self {
        Guard {
            mutex,
            map,
            _not_send: PhantomData,
        }
    }

    /// The value's address in the mapping.
    pub(crate) fn data(&self) -> *mut T {
        self.map.data(self.mutex.data_offset()).cast()
    }

    /// The mapping this guard holds the lock of.
    pub(crate) fn map(&self) -> &'a Mapping {
        self.map
    }

    /// The holder's nesting depth, glibc's `__count` (1 unless re-entrant).
    pub(crate) fn depth(&self) -> u32 {
        self.map.raw().depth()
    }

    /// Sets a short label in the owner record (at most 88 bytes of UTF-8),
    /// which `status()` and a recovering successor's
    /// [`Recovery::previous_owner`](crate::Recovery::previous_owner) show.
    /// E.g. `"compaction #3"`. It is stored as given; the command escapes
    /// control characters when it prints one.
    ///
    /// # Errors
    /// [`LabelTooLong`](crate::LabelTooLong) when `label` is longer than
    /// [`LabelTooLong::LIMIT`](crate::LabelTooLong::LIMIT) (88) bytes; the
    /// record keeps its previous label.
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let m = robust_mutex::SharedMutex::<u64>::open(dir.path().join("m"))?;
    /// let mut g = m.lock_or_recover(|v| *v = 0)?;
    /// g.set_label("compaction #3")?;
    /// assert_eq!(m.status().owner.unwrap().label, "compaction #3");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_label(&mut self, label: &str) -> Result<(), crate::LabelTooLong> {
        // SAFETY: we hold the lock, of a mutex file (which has records).
        unsafe { self.map.raw().set_label(label) }
    }

    /// Unlocks, reporting what dropping the guard would only log: that the
    /// lock word no longer names this thread, because the file was
    /// truncated, reset or otherwise changed under the holder (or the guard
    /// was inherited through `fork`). Then nothing is unlocked.
    ///
    /// If the thread is panicking, this counts as the holder's death, as a
    /// drop does (the next locker gets `OwnerDied`).
    ///
    /// # Errors
    /// [`LockError::NotOwner`], as above.
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let m = robust_mutex::SharedMutex::<u64>::open(dir.path().join("m"))?;
    /// let mut g = m.lock_or_recover(|v| *v = 0)?;
    /// *g += 1;
    /// g.unlock()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn unlock(self) -> Result<(), LockError> {
        let this = std::mem::ManuallyDrop::new(self);
        this.release()
    }

    /// Releases the lock as this holder's death, as dropping the guard
    /// during a panic does: the next locker, in any process, gets
    /// [`Acquired::OwnerDied`](crate::Acquired::OwnerDied), so an update left half-done is never passed
    /// on as clean. For failures that are not panics: an error the holder
    /// cannot undo, or a binding's exception (the Python package's
    /// with-block). `why` starts the log line.
    ///
    /// # Errors
    /// [`LockError::NotOwner`] when the lock word no longer names this
    /// thread (as [`unlock`](Self::unlock)); then nothing is released.
    ///
    /// # Examples
    /// ```
    /// use robust_mutex::{Acquired, SharedMutex};
    /// # let dir = tempfile::tempdir()?;
    /// let m = SharedMutex::<u64>::open(dir.path().join("m"))?;
    /// let mut g = m.lock_or_recover(|v| *v = 0)?;
    /// *g = 1; // half-way through an update that cannot be finished
    /// g.release_as_death("the update failed half-way")?;
    /// assert!(matches!(m.lock()?, Acquired::OwnerDied(_)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn release_as_death(self, why: &str) -> Result<(), LockError> {
        crate::outcome::release_sync_as_death(self, why)
    }

    /// The release of [`unlock`](Self::unlock).
    fn release(&self) -> Result<(), LockError> {
        // SAFETY: a Guard exists only while its (not Send) thread holds the
        // lock, taken through this mapping's raw lock (`release` checks the
        // lock word says so too).
        unsafe { self.map.raw().release(|| self.mutex.name()) }
    }

    /// The value's bytes as they lie in the file: `T`'s, or for a handle
    /// made by [`SharedMutex::open_bytes`] (or `open_lock_only`), the
    /// file's whole value.
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let m = robust_mutex::SharedMutex::<u32>::open(dir.path().join("m"))?;
    /// let mut g = m.lock_or_recover(|_| {})?;
    /// *g = 7;
    /// assert_eq!(g.bytes(), 7u32.to_ne_bytes());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: as for `deref`: we hold the lock, and the mapping holds
        // the file's value (`layout.size` bytes at its offset) while the
        // handle lives; any byte pattern is a valid `u8`.
        unsafe { std::slice::from_raw_parts(self.data().cast::<u8>(), self.mutex.value_len()) }
    }

    /// The value's bytes, writable; see [`bytes`](Self::bytes).
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let m = robust_mutex::SharedMutex::open_bytes(dir.path().join("m"), 4)?;
    /// let mut g = m.lock_or_recover(|()| {})?;
    /// g.bytes_mut().copy_from_slice(b"abcd");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for `bytes`, and `&mut self` makes this the only
        // reference in this process.
        unsafe { std::slice::from_raw_parts_mut(self.data().cast::<u8>(), self.mutex.value_len()) }
    }

    /// The mutex this guard locks.
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let m = robust_mutex::SharedMutex::<u64>::open(dir.path().join("m"))?;
    /// let g = m.lock_or_recover(|_| {})?;
    /// assert_eq!(g.mutex().path(), m.path());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn mutex(&self) -> &'a SharedMutex<T> {
        self.mutex
    }
}

impl<T: Pod> LockGuard for Guard<'_, T> {
    type Value = T;

    fn raw_lock(&self) -> RawMutex<'_> {
        self.map.raw()
    }

    fn lock_name(&self) -> Name<'_> {
        self.mutex.name()
    }

    fn with_value(&mut self, f: &mut dyn FnMut(&mut T)) {
        f(self);
    }
}

impl<T: Pod> Deref for Guard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: we hold the lock, so no cooperating thread or process writes
        // the value; it lies aligned in the live mapping; `T: Pod` makes every
        // bit pattern a valid `T`, even one a dead owner left half-written.
        unsafe { &*self.data() }
    }
}

impl<T: Pod> DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as for `deref`, and `&mut self` makes this the only
        // reference in this process.
        unsafe { &mut *self.data() }
    }
}

impl<T: Pod> Drop for Guard<'_, T> {
    #[inline(always)]
    fn drop(&mut self) {
        // SAFETY: a Guard exists only while its (not Send) thread holds the
        // lock, taken through this mapping's raw lock (checked again by the
        // lock word). A failure is logged where it is found.
        unsafe { self.map.raw().release_in_drop(|| self.mutex.name()) };
    }
}

impl<T: Pod> Recovery<Guard<'_, T>> {
    /// Releases the lock as another death, still not consistent: the next
    /// locker gets [`Acquired::OwnerDied`](crate::Acquired::OwnerDied) again and may repair (where
    /// dropping a `Recovery` makes the lock not recoverable). See
    /// [`Guard::release_as_death`].
    ///
    /// # Errors
    /// [`LockError::NotOwner`], as [`Guard::release_as_death`].
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let m = robust_mutex::SharedMutex::<u64>::open(dir.path().join("m"))?;
    /// if let robust_mutex::Acquired::OwnerDied(r) = m.lock()? {
    ///     r.release_as_death("the repair failed")?; // the next locker tries
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn release_as_death(self, why: &str) -> Result<(), LockError> {
        self.release_sync_as_death(why)
    }

    /// The value's bytes, writable, for the repair; see [`Guard::bytes`].
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let m = robust_mutex::SharedMutex::open_bytes(dir.path().join("m"), 8)?;
    /// if let robust_mutex::Acquired::OwnerDied(mut r) = m.lock()? {
    ///     r.bytes_mut().fill(0);
    ///     r.mark_consistent();
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        let g = self.guard();
        // SAFETY: as for `Guard::bytes_mut`: this thread holds the lock (a
        // Recovery's contract) and `&mut self` makes this the only
        // reference in this process.
        unsafe { std::slice::from_raw_parts_mut(g.data().cast::<u8>(), g.mutex.value_len()) }
    }

    /// Sets the label of the owner record while recovering; see
    /// [`Guard::set_label`].
    ///
    /// # Errors
    /// [`LabelTooLong`](crate::LabelTooLong) when `label` is longer than
    /// [`LabelTooLong::LIMIT`](crate::LabelTooLong::LIMIT) (88) bytes; the
    /// record keeps its previous label.
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let m = robust_mutex::SharedMutex::<u64>::open(dir.path().join("m"))?;
    /// if let robust_mutex::Acquired::OwnerDied(mut r) = m.lock()? {
    ///     r.set_label("repairing")?;
    ///     *r = 0;
    ///     r.mark_consistent();
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_label(&mut self, label: &str) -> Result<(), crate::LabelTooLong> {
        let map = self.guard().map;
        // SAFETY: this thread holds the lock (a Recovery's contract), of a
        // mutex file (which has records).
        unsafe { map.raw().set_label(label) }
    }
}
