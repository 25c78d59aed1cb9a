//! What a lock call hands out: [`Acquired`], [`Guard`] and [`Recovery`].

use crate::SharedMutex;
use crate::layout::{self, Counters, OwnerRecord};
use crate::registry::Mapping;
use crate::status::OwnerInfo;
use crate::sys;
use bytemuck::Pod;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};

/// The outcome of a successful lock: the lock is yours either way, but after
/// an owner death the value may be half-written and must be repaired.
///
/// Like std's `PoisonError`, owner death still hands you the lock; unlike
/// poisoning, the state is shared with other processes and repair is a
/// deliberate step ([`Recovery::mark_consistent`]).
#[must_use = "if unused the mutex will immediately unlock (and an OwnerDied becomes NotRecoverable)"]
#[derive(Debug)]
pub enum Acquired<'a, T: Pod> {
    /// The previous holder released the lock normally.
    Clean(Guard<'a, T>),
    /// The previous holder died holding the lock. Repair the value, then call
    /// [`Recovery::mark_consistent`].
    OwnerDied(Recovery<'a, T>),
}

impl<'a, T: Pod> Acquired<'a, T> {
    /// The guard, repairing first with `repair` if the previous owner died.
    pub fn recover_with(self, repair: impl FnOnce(&mut T)) -> Guard<'a, T> {
        match self {
            Acquired::Clean(g) => g,
            Acquired::OwnerDied(mut r) => {
                repair(&mut r);
                r.mark_consistent()
            }
        }
    }

    /// True if the previous owner died holding the lock.
    pub fn owner_died(&self) -> bool {
        matches!(self, Acquired::OwnerDied(_))
    }
}

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
#[must_use = "if unused the mutex will immediately unlock"]
pub struct Guard<'a, T: Pod> {
    pub(crate) mutex: &'a SharedMutex<T>,
    pub(crate) map: &'a Mapping,
    pub(crate) _not_send: PhantomData<*const ()>,
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
    /// The value's address in the mapping.
    pub(crate) fn data(&self) -> *mut T {
        self.map.data(self.mutex.data_offset()).cast()
    }

    fn owner(&self) -> *mut OwnerRecord {
        self.map.owner()
    }

    /// Sets a short label in the owner record (at most 88 bytes; longer text
    /// is cut at a character boundary), which `status()` and a recovering
    /// successor's [`Recovery::previous_owner`] show. E.g. `"compaction #3"`.
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let m = robust_mutex::SharedMutex::<u64>::open(dir.path().join("m"))?;
    /// let mut g = m.lock_or_recover(|v| *v = 0)?;
    /// g.set_label("compaction #3");
    /// assert_eq!(m.status().owner.unwrap().label, "compaction #3");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_label(&mut self, label: &str) {
        let mut n = label.len().min(layout::LABEL_MAX);
        while !label.is_char_boundary(n) {
            n -= 1;
        }
        let rec = self.owner();
        // SAFETY: we hold the lock, so we are the only writer of the owner
        // record, which lies in the live mapping; `n` <= LABEL_MAX.
        unsafe {
            let dst = std::ptr::addr_of_mut!((*rec).label).cast::<u8>();
            std::ptr::copy_nonoverlapping(label.as_ptr(), dst, n);
            std::ptr::addr_of_mut!((*rec).label_len).write(n as u32);
        }
    }

    /// The mutex this guard locks.
    pub fn mutex(&self) -> &'a SharedMutex<T> {
        self.mutex
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
    fn drop(&mut self) {
        release(self.map);
        log::debug!("{}: released", self.mutex.path().display());
    }
}

/// Clears the owner record and unlocks. The caller holds the lock.
#[inline]
fn release(map: &Mapping) {
    // SAFETY: we hold the lock, so we are the only writer of the owner record,
    // and the mutex is ours to unlock; both lie in the live mapping.
    let r = unsafe {
        record_release(map.owner());
        sys::mutex_unlock(map.mutex())
    };
    debug_assert!(r.is_ok(), "unlock failed: {r:?}");
}

/// The lock after its previous owner died holding it. The value may be
/// half-written: repair it, then call [`mark_consistent`](Self::mark_consistent).
///
/// **Dropping a `Recovery` without `mark_consistent` makes the mutex
/// not recoverable** (POSIX semantics): every later lock, in every process,
/// fails with [`LockError::NotRecoverable`](crate::LockError::NotRecoverable)
/// until the mutex is reset. That is deliberate when repair is impossible:
/// nobody proceeds on broken state.
///
/// Not `Send`: only the thread that locked may mark consistent or unlock.
pub struct Recovery<'a, T: Pod> {
    pub(crate) guard: ManuallyDrop<Guard<'a, T>>,
    pub(crate) previous: Option<OwnerInfo>,
}

impl<T: Pod> std::fmt::Debug for Recovery<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recovery")
            .field("path", &self.guard.mutex.path())
            .field("previous_owner", &self.previous)
            .finish_non_exhaustive()
    }
}

impl<'a, T: Pod> Recovery<'a, T> {
    /// The dead owner's record: pid, tid, label, when it took the lock.
    /// `None` if no holder ever wrote one.
    ///
    /// The record is written a few instructions after the kernel hands over
    /// the lock. A holder killed inside that window leaves the record of the
    /// holder before it, so in that (rare) case this names an earlier death:
    /// the death itself is still reported exactly once, only its name is stale.
    ///
    /// # Examples
    /// ```no_run
    /// # let m = robust_mutex::SharedMutex::<u64>::open("/dev/shm/x")?;
    /// if let robust_mutex::Acquired::OwnerDied(r) = m.lock()? {
    ///     if let Some(o) = r.previous_owner() {
    ///         eprintln!("pid {} ({}) died holding the lock for {:?}", o.pid, o.label, o.held_for());
    ///     }
    ///     r.mark_consistent();
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn previous_owner(&self) -> Option<&OwnerInfo> {
        self.previous.as_ref()
    }

    /// Declares the value repaired and the mutex consistent again, and goes
    /// on holding the lock as a normal [`Guard`].
    pub fn mark_consistent(self) -> Guard<'a, T> {
        let mut this = ManuallyDrop::new(self);
        let map = this.guard.map;
        // SAFETY: this thread acquired the mutex with EOWNERDEAD (that is the
        // only way a Recovery is made) and has not unlocked it; Recovery is
        // not Send, so we are on that thread.
        let r = unsafe { sys::mutex_consistent(map.mutex()) };
        debug_assert!(r.is_ok(), "pthread_mutex_consistent failed: {r:?}");
        // SAFETY: we hold the lock; counters are only written under it.
        unsafe { (*map.counters()).recoveries += 1 };
        log::warn!(
            "{}: recovered after owner death",
            this.guard.mutex.path().display()
        );
        // SAFETY: `this` is never used or dropped again; `previous` is
        // dropped here, the guard moves out.
        unsafe {
            std::ptr::drop_in_place(&mut this.previous);
            ManuallyDrop::take(&mut this.guard)
        }
    }

    /// The mutex this recovery locks.
    pub fn mutex(&self) -> &'a SharedMutex<T> {
        self.guard.mutex
    }

    /// Sets the label of the owner record while recovering; see
    /// [`Guard::set_label`].
    pub fn set_label(&mut self, label: &str) {
        self.guard.set_label(label);
    }
}

impl<T: Pod> Deref for Recovery<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T: Pod> DerefMut for Recovery<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

impl<T: Pod> Drop for Recovery<'_, T> {
    fn drop(&mut self) {
        log::error!(
            "{}: recovery abandoned without mark_consistent; the mutex is now not recoverable",
            self.guard.mutex.path().display()
        );
        release(self.guard.map);
    }
}

/// Bookkeeping right after acquiring: write the owner record and counters.
/// Returns the dead owner's record when `died`.
#[inline]
pub(crate) fn on_acquired(map: &Mapping, died: bool, contended: bool) -> Option<OwnerInfo> {
    // SAFETY: the caller holds the mutex of `map`, whose owner record and
    // counters lie in the live mapping.
    unsafe { record_acquired(map.owner(), map.counters(), died, contended) }
}

/// Writes `rec` and bumps `counters` for the calling thread, which has just
/// acquired the lock they belong to. A re-entrant relock by the recorded
/// holder only deepens the record. Returns the dead owner's record when `died`.
///
/// # Safety
/// The calling thread holds the lock that guards `rec` and `counters`, both
/// valid for writes in a live mapping.
#[inline]
pub(crate) unsafe fn record_acquired(
    rec: *mut OwnerRecord,
    counters: *mut Counters,
    died: bool,
    contended: bool,
) -> Option<OwnerInfo> {
    let me = crate::identity::me();
    // SAFETY: we hold the lock, so we are the only writer of the record and
    // the counters (caller's contract); nobody else holds a reference.
    let (r, c) = unsafe { (&mut *rec, &mut *counters) };
    c.acquisitions += 1;
    if !died && r.depth > 0 && r.tid == me.tid && r.pid == me.pid {
        r.depth += 1; // re-entrant relock: same holder, same record
        return None;
    }
    c.contended += u64::from(contended);
    c.owner_deaths += u64::from(died);
    let previous = (died && r.pid != 0).then(|| OwnerInfo::from_record(r));
    r.pid = me.pid;
    r.tid = me.tid;
    r.pidns_ino = me.pidns_ino;
    r.start_time = me.start_time;
    r.acquired_unix_ns = sys::coarse_unix_ns();
    r.label_len = 0;
    r.depth = 1;
    previous
}

/// Undoes one [`record_acquired`]; the outermost release clears the record.
///
/// # Safety
/// The calling thread holds the lock that guards `rec`, valid for writes.
#[inline]
pub(crate) unsafe fn record_release(rec: *mut OwnerRecord) {
    // SAFETY: caller's contract: we are the only writer.
    let r = unsafe { &mut *rec };
    r.depth = r.depth.saturating_sub(1);
    if r.depth == 0 {
        r.tid = 0;
        r.pid = 0;
    }
}
