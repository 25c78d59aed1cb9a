//! What every lock call hands out, written once for every kind:
//! [`Acquired<G>`] and [`Recovery<G>`], over the kind's guard `G`.

use crate::error::LockError;
use crate::owner::OwnerInfo;
use crate::raw::{Name, RawMutex};
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};

/// A guard of one of this crate's lock kinds: [`Guard`](crate::Guard),
/// [`ReentrantGuard`](crate::ReentrantGuard), [`BareGuard`](crate::BareGuard)
/// or [`PermitGuard`](crate::PermitGuard). It is what [`Acquired`] and
/// [`Recovery`] are generic over. The trait is sealed: other crates cannot
/// implement it (its hidden methods name crate-private types).
pub trait LockGuard {
    /// What [`Acquired::recover_with`]'s repair closure gets: the protected
    /// value `T` for the mutex kinds, `()` for bare locks and permits.
    type Value;

    /// The raw lock this guard holds.
    #[doc(hidden)]
    fn raw_lock(&self) -> RawMutex<'_>;

    /// The lock's name in the log.
    #[doc(hidden)]
    fn lock_name(&self) -> Name<'_>;

    /// Runs `f` on the protected value (a re-entrant guard copies it out
    /// and back in, since its guards never hand out references).
    #[doc(hidden)]
    fn with_value(&mut self, f: &mut dyn FnMut(&mut Self::Value));

    /// Marks the lock consistent: [`Recovery::mark_consistent`]'s work.
    /// The calling thread holds the lock, unless the guard's holder is
    /// another thread (an async guard's, which gets the request).
    ///
    /// # Safety
    /// The guard's lock was taken with EOWNERDEAD for this guard, is held
    /// and has not been marked consistent since.
    #[doc(hidden)]
    unsafe fn mark_lock_consistent(&self) {
        // SAFETY: forwarded: this thread took it with EOWNERDEAD (a sync
        // guard's holder is the thread that has it: its guard is not Send).
        unsafe { self.raw_lock().mark_consistent(self.lock_name()) }
    }

    /// Whether the guard's lock is held for it now (not a guard inherited
    /// through fork, nor one whose file changed under it).
    #[doc(hidden)]
    fn held_for_guard(&self) -> bool {
        self.raw_lock().held_by_caller()
    }

    /// Whether the lock was taken while the taking thread was already
    /// panicking (its release during that panic is no death).
    #[doc(hidden)]
    fn taken_in_panic(&self) -> bool {
        self.raw_lock().taken_while_panicking()
    }
}

/// The outcome of a successful lock, for every kind: the lock is yours
/// either way, but after an owner death what it protects may be
/// half-written and must be repaired.
///
/// Like std's `PoisonError`, owner death still hands you the lock; unlike
/// poisoning, the state is shared with other processes and repair is a
/// deliberate step ([`Recovery::mark_consistent`]). One `match` serves every
/// kind:
///
/// ```
/// use robust_mutex::{Acquired, LockGuard};
/// fn take<G: LockGuard>(a: Acquired<G>) -> G {
///     match a {
///         Acquired::Clean(g) => g,
///         Acquired::OwnerDied(r) => r.mark_consistent(),
///     }
/// }
/// # let dir = tempfile::tempdir()?;
/// let m = robust_mutex::SharedMutex::<u64>::open(dir.path().join("m"))?;
/// let sem = robust_mutex::SharedSemaphore::open(dir.path().join("s"), 2)?;
/// let g = take(m.lock()?);
/// let p = take(sem.acquire()?);
/// # drop((g, p));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "if unused the lock is released at once (and an OwnerDied becomes NotRecoverable)"]
#[derive(Debug)]
pub enum Acquired<G: LockGuard> {
    /// The previous holder released the lock normally.
    Clean(G),
    /// The previous holder died holding the lock. Repair, then call
    /// [`Recovery::mark_consistent`].
    OwnerDied(Recovery<G>),
}

impl<G: LockGuard> Acquired<G> {
    /// The guard, repairing first with `repair` if the previous owner died
    /// (then marking the lock consistent).
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let m = robust_mutex::SharedMutex::<u64>::open(dir.path().join("m"))?;
    /// let mut g = m.lock()?.recover_with(|v| *v = 0);
    /// *g += 1;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recover_with(self, repair: impl FnOnce(&mut G::Value)) -> G {
        match self {
            Acquired::Clean(g) => g,
            Acquired::OwnerDied(mut r) => {
                let mut repair = Some(repair);
                r.guard.with_value(&mut |v| {
                    if let Some(f) = repair.take() {
                        f(v);
                    }
                });
                r.mark_consistent()
            }
        }
    }

    /// True if the previous owner died holding the lock.
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let m = robust_mutex::SharedMutex::<u64>::open(dir.path().join("m"))?;
    /// assert!(!m.lock()?.owner_died()); // a new file: nobody died
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn owner_died(&self) -> bool {
        matches!(self, Acquired::OwnerDied(_))
    }

    /// The guard, in either case (e.g. a permit's
    /// [`slot`](crate::PermitGuard::slot)), without deciding about recovery.
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let sem = robust_mutex::SharedSemaphore::open(dir.path().join("s"), 2)?;
    /// let p = sem.acquire()?;
    /// assert!(p.guard().slot() < 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn guard(&self) -> &G {
        match self {
            Acquired::Clean(g) => g,
            Acquired::OwnerDied(r) => r.guard(),
        }
    }

    /// The same outcome over another guard made from this one (how the
    /// re-entrant kind wraps the mutex's guard).
    pub(crate) fn map<H: LockGuard>(self, f: impl FnOnce(G) -> H) -> Acquired<H> {
        match self {
            Acquired::Clean(g) => Acquired::Clean(f(g)),
            Acquired::OwnerDied(r) => {
                let (guard, previous) = r.into_parts();
                // SAFETY: `f` wraps the guard of the same lock, which this
                // thread still holds after EOWNERDEAD (`r` was such a Recovery).
                Acquired::OwnerDied(unsafe { Recovery::new(f(guard), previous) })
            }
        }
    }
}

/// The lock after its previous owner died holding it. What it protects may
/// be half-written: repair it, then call
/// [`mark_consistent`](Self::mark_consistent).
///
/// **Dropping a `Recovery` without `mark_consistent` makes the lock not
/// recoverable** (POSIX semantics): every later lock, in every process,
/// fails with [`LockError::NotRecoverable`](crate::LockError::NotRecoverable)
/// (a semaphore loses that one permit) until the file is reset. That is
/// deliberate when repair is impossible: nobody proceeds on broken state.
///
/// Derefs to what the guard derefs to (the value `T` of a
/// [`SharedMutex<T>`](crate::SharedMutex)); [`guard`](Self::guard) reaches
/// the kind's own methods. `Send` exactly when its guard is: a sync guard
/// is not (only the thread that locked may mark consistent or unlock),
/// an async guard is (its holder thread does both).
///
/// # Examples
/// ```
/// # let dir = tempfile::tempdir()?;
/// let m = robust_mutex::SharedMutex::<u64>::open(dir.path().join("m"))?;
/// if let robust_mutex::Acquired::OwnerDied(mut r) = m.lock()? {
///     *r = 0; // repair
///     r.mark_consistent();
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "dropping a Recovery without mark_consistent makes the lock not recoverable"]
#[derive(Debug)]
pub struct Recovery<G: LockGuard> {
    /// Held with EOWNERDEAD by this thread. Never handed out mutably: the
    /// guard inside is always the one `mark_consistent` may act on.
    guard: ManuallyDrop<G>,
    /// Boxed, so that `Acquired` stays small on the clean path.
    previous: Option<Box<OwnerInfo>>,
}

impl<G: LockGuard> Recovery<G> {
    /// # Safety
    /// `guard`'s lock was acquired with EOWNERDEAD for it and is held (by
    /// the calling thread, whose guard is not `Send`, or by an async
    /// guard's holder thread), and it has not been marked consistent.
    pub(crate) unsafe fn new(guard: G, previous: Option<Box<OwnerInfo>>) -> Self {
        Recovery {
            guard: ManuallyDrop::new(guard),
            previous,
        }
    }

    /// The guard and the record, without marking consistent or unlocking.
    pub(crate) fn into_parts(self) -> (G, Option<Box<OwnerInfo>>) {
        let mut this = ManuallyDrop::new(self);
        // SAFETY: `this` is never used or dropped again: each field is moved
        // out exactly once.
        unsafe {
            (
                ManuallyDrop::take(&mut this.guard),
                std::ptr::read(&this.previous),
            )
        }
    }

    /// The dead owner's record: pid, tid, label, when it took the lock.
    /// `None` if no holder ever wrote one (and always for a bare file).
    ///
    /// The record is written a few instructions after the kernel hands over
    /// the lock. A holder killed inside that window leaves the record of the
    /// holder before it, so in that (rare) case this names an earlier death:
    /// the death itself is still reported exactly once, only its name is
    /// stale.
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
        self.previous.as_deref()
    }

    /// Declares the state repaired and the lock consistent again, and goes
    /// on holding it as a normal guard.
    ///
    /// # Examples
    /// See [`Recovery`].
    pub fn mark_consistent(self) -> G {
        let (guard, _) = self.into_parts();
        // A Recovery is only made (`new`'s contract) for a lock acquired
        // with EOWNERDEAD for its guard and still held; the guard is never
        // handed out mutably, so it is still that lock's.
        // SAFETY: so, and `into_parts` consumed `self`: this runs once.
        unsafe { guard.mark_lock_consistent() };
        guard
    }

    /// The guard, for the kind's own read methods (a permit's
    /// [`slot`](crate::PermitGuard::slot), a re-entrant guard's
    /// [`get`](crate::ReentrantGuard::get), ...). Each kind adds what a
    /// recovery may change (`set_label`, the re-entrant `set`) on
    /// `Recovery` itself: the guard is never handed out mutably.
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let sem = robust_mutex::SharedSemaphore::open(dir.path().join("s"), 1)?;
    /// if let robust_mutex::Acquired::OwnerDied(r) = sem.acquire()? {
    ///     eprintln!("permit {}'s holder died", r.guard().slot());
    ///     r.mark_consistent();
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn guard(&self) -> &G {
        &self.guard
    }
}

/// Releases a sync guard's lock as its holder's death: what dropping it
/// during a panic does. The guard's own `Drop` is skipped: for the sync
/// kinds it would only have released the lock.
///
/// # Errors
/// [`LockError::NotOwner`] when the lock word no longer names the calling
/// thread (the file changed under it, or the guard came through fork).
pub(crate) fn release_sync_as_death<G: LockGuard>(guard: G, why: &str) -> Result<(), LockError> {
    let guard = ManuallyDrop::new(guard);
    // SAFETY: a sync guard (not Send) exists only while its thread holds
    // the lock, taken through its raw lock; its Drop, which would release
    // it, never runs.
    unsafe { guard.raw_lock().release_as_death(guard.lock_name(), why) }
}

impl<G: LockGuard> Recovery<G> {
    /// [`release_sync_as_death`] for a recovery: its lock, still owner-dead
    /// (not marked consistent), is released as another death.
    pub(crate) fn release_sync_as_death(self, why: &str) -> Result<(), LockError> {
        release_sync_as_death(self.into_parts().0, why)
    }
}

impl<G: LockGuard + Deref> Deref for Recovery<G> {
    type Target = G::Target;
    fn deref(&self) -> &G::Target {
        &self.guard
    }
}

impl<G: LockGuard + DerefMut> DerefMut for Recovery<G> {
    fn deref_mut(&mut self) -> &mut G::Target {
        &mut self.guard
    }
}

impl<G: LockGuard> Drop for Recovery<G> {
    fn drop(&mut self) {
        // (A recovery inherited through fork is not this thread's: its
        // guard's drop does nothing, and there is nothing to say.)
        if std::thread::panicking() && !self.guard.taken_in_panic() {
            log::error!(
                "{}: panicked while recovering; counted as another death: the next locker gets OwnerDied",
                self.guard.lock_name()
            );
        } else if self.guard.held_for_guard() {
            log::error!(
                "{}: recovery abandoned without mark_consistent; it is now not recoverable",
                self.guard.lock_name()
            );
        }
        // SAFETY: dropped exactly once, here; `mark_consistent` and
        // `into_parts` never run this Drop.
        unsafe { ManuallyDrop::drop(&mut self.guard) };
    }
}
