//! The release and recovery paths off the fast one: a panic while holding
//! counts as the holder's death (unless the lock was taken during that
//! panic), a release that finds the lock word no longer naming the calling
//! thread (a guard inherited through fork, a file changed under its holder)
//! touches nothing, an acquisition with EOWNERDEAD (or of a retired file),
//! and marking a recovered lock consistent.

use super::{Books, Fail, Got, Name, RawMutex};
use crate::error::LockError;
use crate::file::layout::{self, Counters};
use crate::identity;
use crate::sys;
use std::sync::atomic::{AtomicU32, Ordering};

#[cfg(feature = "async")]
thread_local! {
    /// The dead holder's records as the calling thread's last acquisition
    /// with EOWNERDEAD found them (for an async holder thread that passes
    /// the death on unseen: [`RawMutex::pass_on_death`]).
    static LAST_DEAD: std::cell::Cell<Option<crate::owner::Records>> =
        const { std::cell::Cell::new(None) };
}

/// The records of the dead holder that the calling thread's last
/// acquisition with EOWNERDEAD replaced (taken: a second call gives `None`).
#[cfg(feature = "async")]
pub(crate) fn take_last_dead() -> Option<crate::owner::Records> {
    LAST_DEAD.take()
}

impl RawMutex<'_> {
    /// The calling thread, already panicking, has just taken this lock and
    /// written its record: unless it held it already (a re-entrant relock,
    /// depth 2 or more now), its release during this panic will be a plain
    /// unlock.
    #[cold]
    #[inline(never)]
    pub(super) fn took_while_panicking(&self) {
        if self.depth() > 1 {
            return; // a relock of a lock held from before: its outermost release decides
        }
        identity::taken_while_panicking(self.as_ptr() as usize);
    }

    /// Whether the calling thread took this lock while already panicking
    /// (and still holds it): its release during the panic is no death.
    pub(crate) fn taken_while_panicking(&self) -> bool {
        identity::was_taken_while_panicking(self.as_ptr() as usize, false)
    }

    /// The calling holder's nesting depth: glibc's `__count` (0 for a kind
    /// without records, whose releases are always the outermost), or 0 if
    /// the lock word does not name the calling thread (a guard inherited
    /// through fork; a file reset or overwritten under its holder): then
    /// `__count` is another holder's, or nobody's.
    pub(crate) fn depth(&self) -> u32 {
        if !self.held_by_caller() {
            return 0;
        }
        match self.books {
            Books::None => 0,
            // SAFETY: the mutex lies in the live mapping (`new`); only its
            // holder (the caller) changes `__count`.
            Books::Header | Books::Permit { .. } => unsafe { sys::mutex_count(self.as_ptr()) },
        }
    }

    /// Whether a reset retired this file (a header mutex's state word says
    /// RETIRED; never for other kinds).
    pub(crate) fn retired(&self) -> bool {
        if let Books::Header = self.books {
            let state = self.at::<AtomicU32>(-(layout::STATE_BEFORE_MUTEX as isize));
            // SAFETY: the state word lies in the live mapping (`new`).
            return unsafe { state.as_ref() }.load(Ordering::Acquire) == layout::STATE_RETIRED;
        }
        false
    }

    #[cold]
    pub(super) fn took_dead(&self, contended: bool, name: Name<'_>) -> Result<Got, Fail> {
        if self.retired() {
            // A reset woke us on the old file: let go (leaving the old
            // mutex not recoverable, so every other old waiter bounces
            // too) and let the caller move to the new file.
            // SAFETY: EOWNERDEAD gave us the old mutex.
            let _ = unsafe { sys::mutex_unlock(self.as_ptr()) };
            return Err(Fail::NotRecoverable);
        }
        // The dead holder's records, copied before ours replace them; then
        // ours at once, leaving the window in which our own death would
        // leave its record to the next locker (the known window of
        // docs/design.md) as short as on the clean path: the description of
        // the dead holder (a String, a Box) is built afterwards.
        let dead = self.records();
        #[cfg(feature = "async")]
        LAST_DEAD.set(dead);
        // SAFETY: EOWNERDEAD gave us the lock.
        unsafe { self.record_acquired(contended) };
        self.add_cold(&Counters {
            owner_deaths: 1,
            ..Counters::default()
        });
        let previous = dead.and_then(|r| r.owner()).map(Box::new);
        // A death is news for the file's condition waiters too (whoever the
        // kernel woke, it was us): each relocks, and waits for our repair.
        self.cond_broadcast();
        if std::thread::panicking() {
            self.took_while_panicking();
        }
        match &previous {
            Some(o) => log::warn!(
                "{name}: previous owner pid {} tid {}{} died holding the lock; recovering",
                o.pid,
                o.tid,
                if o.label.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", o.label)
                }
            ),
            None => log::warn!("{name}: previous owner died holding the lock; recovering"),
        }
        Ok(Got::OwnerDied(previous))
    }

    /// The release paths off the fast one: the word (`w`) is not exactly
    /// the calling thread's TID (it names another thread, or us with
    /// FUTEX_WAITERS set), the thread is panicking, or debug logging is on.
    ///
    /// A panic that unwinds out of a critical section leaves what the lock
    /// protects as half-done as a crash would, so the outermost release
    /// during a panic does what the kernel does for a dying thread: the
    /// mutex leaves this thread's robust list and its word becomes
    /// FUTEX_OWNER_DIED (a waiter is woken). The owner record stays: the
    /// next locker, in any process, gets `OwnerDied` naming this thread.
    ///
    /// # Safety
    /// As [`Self::release`].
    #[cold]
    #[inline(never)]
    pub(super) unsafe fn release_cold(&self, w: u32, name: Name<'_>) -> Result<(), LockError> {
        let tid = w & sys::FUTEX_TID_MASK;
        if u64::from(tid) == identity::locker_tid() {
            if !std::thread::panicking() {
                // Ours: waiters (FUTEX_WAITERS) brought us here.
                // SAFETY: the word names us (and the caller's contract).
                unsafe { self.unlock_ours() };
                log::debug!("{name}: released to waiters");
                return Ok(());
            }
            // Ours, and the thread is panicking.
            if self.depth() > 1 || identity::was_taken_while_panicking(self.as_ptr() as usize, true)
            {
                // A nested re-entrant guard (the outermost one counts), or
                // a lock taken during this panic (a Drop that locks, does
                // its update and unlocks): a plain release.
                // SAFETY: we hold the lock.
                unsafe { self.unlock_ours() };
                return Ok(());
            }
            // SAFETY: we hold the lock (the word names us).
            unsafe { self.die(tid, name, "the holder panicked holding the lock", false) };
            return Ok(());
        }
        // Not ours. If it is on this thread's robust list, the file changed
        // under us: take it off (so the kernel's walk at our death never
        // reads it) without touching the word or the record, which are
        // someone else's now.
        // SAFETY: every entry of our robust list is a mutex we hold, in a
        // mapping kept alive while held (registry.rs).
        let on_our_list = unsafe { sys::forget_held(self.as_ptr()) };
        // Credit the held count once per lock: only the guard that took it
        // off our list (nested re-entrant guards all come here; a guard
        // inherited through fork was never counted here). Where the list
        // cannot be read, guess: not a fork child's.
        if on_our_list.unwrap_or(!identity::is_fork_child()) {
            identity::gave_one();
        }
        if on_our_list != Some(true) && identity::is_fork_child() {
            log::debug!("{name}: a guard inherited through fork was dropped; nothing done");
        } else {
            log::error!(
                "{name}: the lock word ({w:#x}) no longer names this thread: the file was truncated, reset or otherwise changed under the holder; nothing unlocked"
            );
        }
        Err(LockError::NotOwner {
            path: name.path.to_path_buf(),
        })
    }

    /// Releases the lock as its holder's death: the mutex leaves the
    /// calling thread's robust list and its word becomes FUTEX_OWNER_DIED
    /// (a waiter is woken); the next locker gets OwnerDied. `why` starts
    /// the log line. Where the platform cannot, a plain unlock (and with
    /// `recount`, the death the caller uncounted is counted again first,
    /// since nobody will be told of it).
    ///
    /// # Safety
    /// The calling thread holds the lock (its word names `tid`, the
    /// caller's TID), taken through this `RawMutex`.
    unsafe fn die(&self, tid: u32, name: Name<'_>, why: &str, recount: bool) {
        // SAFETY: we hold the lock (the caller's contract), in the live
        // mapping.
        match unsafe { sys::die_holding(self.as_ptr(), tid) } {
            sys::Death::Done => {
                identity::gave_one();
                // Condition waiters learn of the death at once.
                self.cond_broadcast();
                log::error!("{name}: {why}: released as a death; the next locker gets OwnerDied");
            }
            sys::Death::Refused => {
                log::error!(
                    "{name}: {why}, and this platform cannot mark it dead: released as if clean"
                );
                if recount {
                    self.add_cold(&Counters {
                        owner_deaths: 1,
                        ..Counters::default()
                    });
                }
                // SAFETY: we hold the lock.
                unsafe { self.unlock_ours() };
            }
        }
    }

    /// Releases the lock the calling thread holds as a death: a guard given
    /// up by its holder (`release_as_death`), or one held for an async task
    /// (`crate::holder`) whose task panicked holding it, or a recovery
    /// taken for a future dropped before it could see it.
    /// A lock word that no longer names the caller is reported as by
    /// [`Self::release`].
    ///
    /// # Errors
    /// [`LockError::NotOwner`], as [`Self::release`].
    ///
    /// # Safety
    /// As [`Self::release`].
    pub(crate) unsafe fn release_as_death(
        &self,
        name: Name<'_>,
        why: &str,
    ) -> Result<(), LockError> {
        // SAFETY: forwarded from the caller.
        unsafe { self.release_as_death_counted(name, why, false) }
    }

    /// [`Self::release_as_death`], `recount` as for `die`.
    ///
    /// # Safety
    /// As [`Self::release`].
    unsafe fn release_as_death_counted(
        &self,
        name: Name<'_>,
        why: &str,
        recount: bool,
    ) -> Result<(), LockError> {
        let w = self.word().load(Ordering::Relaxed);
        let tid = w & sys::FUTEX_TID_MASK;
        if u64::from(tid) != identity::locker_tid() {
            // SAFETY: forwarded from the caller; the not-ours path.
            return unsafe { self.release_cold(w, name) };
        }
        // SAFETY: the word names us (and the caller's contract).
        unsafe { self.die(tid, name, why, recount) };
        Ok(())
    }

    /// Lets go of a lock taken with EOWNERDEAD that nobody will recover (an
    /// async future dropped before it saw it) as the same death, unseen:
    /// the dead holder's records (`dead`, as [`take_last_dead`] gave them)
    /// are put back and its death is uncounted, then the lock is released
    /// as a death. The next locker gets OwnerDied naming the holder that
    /// really died, and counts that death once.
    ///
    /// # Errors
    /// [`LockError::NotOwner`], as [`Self::release`].
    ///
    /// # Safety
    /// As [`Self::release`], and the calling thread took the lock with
    /// EOWNERDEAD and has neither marked it consistent nor written a label.
    #[cfg(feature = "async")]
    pub(crate) unsafe fn pass_on_death(
        &self,
        dead: Option<crate::owner::Records>,
        name: Name<'_>,
    ) -> Result<(), LockError> {
        let mut uncounted = false;
        if let (Some(d), Books::Header | Books::Permit { .. }) = (dead, self.books) {
            if self.held_by_caller() {
                // We hold the lock: the only writer of both records. The
                // hot counts stay (our acquisition happened).
                let (who, since, _) = self.hot_atomics();
                who.store(bytemuck::cast([d.hot.pid, d.hot.tid]), Ordering::Relaxed);
                since.store(d.hot.since, Ordering::Relaxed);
                // SAFETY: as above; the cold record lies in the live
                // mapping (`new`).
                unsafe { *self.cold().as_mut() = d.cold };
                self.uncount_death();
                uncounted = true;
            }
        }
        let why =
            "an owner death was taken for a lock_async future dropped before it saw it; passed on";
        // SAFETY: forwarded from the caller.
        unsafe { self.release_as_death_counted(name, why, uncounted) }
    }

    /// Takes back the owner death `took_dead` counted (see
    /// [`Self::pass_on_death`]). The caller holds the lock.
    #[cfg(feature = "async")]
    fn uncount_death(&self) {
        match self.books {
            Books::None => {}
            Books::Header => {
                let mut counters = self.header_counters();
                // SAFETY: we hold the lock: the only writer of the header's
                // counters, which lie in the live mapping (`new`).
                let to = unsafe { counters.as_mut() };
                to.owner_deaths = to.owner_deaths.saturating_sub(1);
            }
            Books::Permit { counters } => {
                let at = std::mem::offset_of!(Counters, owner_deaths);
                // SAFETY: `owner_deaths` is an 8-byte aligned u64 of the
                // shared counters in the live mapping, only accessed
                // atomically (`new`).
                let a = unsafe {
                    std::sync::atomic::AtomicU64::from_ptr(
                        counters.as_ptr().cast::<u8>().add(at).cast(),
                    )
                };
                a.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// `pthread_mutex_consistent`, plus one recovery on the counters.
    ///
    /// # Safety
    /// The calling thread acquired the lock with EOWNERDEAD and has neither
    /// unlocked it nor marked it consistent since (glibc does not check).
    pub(crate) unsafe fn mark_consistent(&self, name: Name<'_>) {
        if !self.held_by_caller() {
            // A recovery inherited through fork, or a file changed under
            // us: glibc's consistent would not check, so we do.
            log::error!("{name}: not marking consistent: this thread does not hold the lock");
            return;
        }
        // SAFETY: caller's contract.
        let r = unsafe { sys::mutex_consistent(self.as_ptr()) };
        debug_assert!(r.is_ok(), "pthread_mutex_consistent failed: {r:?}");
        self.add_cold(&Counters {
            recoveries: 1,
            ..Counters::default()
        });
        log::warn!("{name}: recovered after owner death");
    }
}
