//! Taking a permit: the scan, the sleep on every held permit, and passing
//! wake-ups on.
//!
//! A scan visits every slot once, starting at a per-thread index that moves
//! on by one at each scan (so threads spread over the slots). A slot whose
//! lock word names a live owner (a TID, no `FUTEX_OWNER_DIED`) is skipped
//! with one relaxed load: no glibc call, no system call, and no
//! `FUTEX_WAITERS` left behind by a failed try. Any other slot is tried with
//! `pthread_mutex_clocklock` and an already-passed deadline (never
//! `pthread_mutex_trylock`, whose glibc version strands a not-recoverable
//! mutex): 0 is a clean permit, EOWNERDEAD a dead holder's, ENOTRECOVERABLE a
//! lost slot (skipped: the semaphore goes on with fewer permits), EDEADLK a
//! slot this thread already holds.
//!
//! # Waiting
//!
//! When every usable slot is held, the waiter sets `FUTEX_WAITERS` by CAS in
//! the lock word of every slot held by someone else (glibc's own waiter
//! protocol, as in `wait.rs`) and sleeps in one `futex_waitv` on all of them
//! and the cancel token's word. A release (glibc's unlock wakes one sleeper
//! when WAITERS is set) or a holder's death (the kernel wakes one) ends the
//! sleep; the waiter scans again.
//!
//! Both wake exactly one sleeper *per word*, while one sleeper is queued on
//! many words: it can be woken through several words at once, or be woken
//! and then take another slot, time out or be cancelled. The wake it did not
//! use would be lost, and another sleeper would sleep on beside a free or
//! dead permit. So a waiter that slept passes the wakes on when it leaves:
//! for every slot it slept on (except the one it took), if the slot is free
//! or its holder died it wakes one sleeper there, and if it is held without
//! `FUTEX_WAITERS` it sets the bit, so that the holder's release wakes one.
//! On the slot it took it sets `FUTEX_WAITERS` again (glibc's
//! `assume_other_futex_waiters`). A waiter that re-sleeps re-announces itself
//! on every held slot, which restores the same guarantee.
//!
//! The sleep lasts at most one slice (`wait::SLICE`); after a slice that
//! ended with nothing woken, a waiter whose every busy permit is stuck (its
//! holder gone, never released by the kernel) gets [`LockError::Stuck`]
//! instead of sleeping for ever.

use super::SharedSemaphore;
use super::permit::PermitGuard;
use crate::cancel::CancelToken;
use crate::error::LockError;
use crate::identity;
use crate::outcome::{Acquired, Recovery};
use crate::raw::{self, Fail, Got};
use crate::sys::{self, LockFail, Locked};
use crate::wait;
use std::cell::Cell;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

thread_local! {
    /// Where this thread's next scan starts, so that threads spread over
    /// the slots instead of all fighting for slot 0.
    static START: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// The slots set in `mask`, lowest first.
fn slots_in(mut mask: u128) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        (mask != 0).then(|| {
            let i = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            i
        })
    })
}

/// Sets FUTEX_WAITERS in a held slot's lock word before sleeping on it.
/// Returns the value to sleep on, or `None` if the slot is free or its
/// holder died (scan again: it can be taken now).
///
/// As in `wait::announce`, an owner-died word is never slept on: the kernel
/// has already sent that death's wake-up, possibly to nobody. Unlike it,
/// this retries the CAS while the word stays held.
fn announce(word: &AtomicU32) -> Option<u32> {
    let mut w = word.load(Ordering::Relaxed);
    loop {
        if w == 0 || w & sys::FUTEX_OWNER_DIED != 0 {
            return None;
        }
        if w & sys::FUTEX_WAITERS != 0 {
            return Some(w);
        }
        match word.compare_exchange_weak(
            w,
            w | sys::FUTEX_WAITERS,
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Ok(_) => return Some(w | sys::FUTEX_WAITERS),
            Err(now) => w = now,
        }
    }
}

enum Scan<'a> {
    Got(Acquired<PermitGuard<'a>>),
    /// A bit per slot held by another thread or process.
    Busy {
        others: u128,
    },
}

impl SharedSemaphore {
    /// Takes a free permit if there is one now; never waits.
    ///
    /// # Errors
    /// [`LockError::WouldBlock`] if every usable permit is held (by others
    /// or by this thread); [`LockError::NotRecoverable`] if every permit is
    /// lost; [`LockError::Io`] for anything unexpected.
    /// [`LockError::TooManyHeld`] if this thread already holds
    /// [`MAX_HELD_PER_THREAD`](crate::MAX_HELD_PER_THREAD) locks.
    ///
    /// # Examples
    /// ```
    /// use robust_mutex::{LockError, SharedSemaphore};
    /// # let dir = tempfile::tempdir()?;
    /// let sem = SharedSemaphore::open(dir.path().join("s"), 1)?;
    /// let p = sem.try_acquire()?;
    /// assert!(matches!(sem.try_acquire(), Err(LockError::WouldBlock)));
    /// drop(p);
    /// assert!(sem.try_acquire().is_ok());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_acquire(&self) -> Result<Acquired<PermitGuard<'_>>, LockError> {
        raw::check_room(|| false)?;
        match self.scan(false)? {
            Scan::Got(p) => Ok(p),
            Scan::Busy { .. } => Err(LockError::WouldBlock),
        }
    }

    /// Waits, sleeping in the kernel, until a permit is free (or its holder
    /// dies) and takes it.
    ///
    /// # Errors
    /// [`LockError::Deadlock`] if every usable permit is held by the calling
    /// thread (waiting would never end); [`LockError::NotRecoverable`] if
    /// every permit is lost; [`LockError::Io`] for anything unexpected.
    /// [`LockError::Stuck`] if, after about a second of waiting, every
    /// permit held by others is found stuck: its holder gone and never
    /// released by the kernel (see the variant); [`LockError::TooManyHeld`]
    /// if this thread already holds
    /// [`MAX_HELD_PER_THREAD`](crate::MAX_HELD_PER_THREAD) locks;
    /// [`LockError::FileChanged`] if the file was truncated or overwritten
    /// while this thread waited.
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let sem = robust_mutex::SharedSemaphore::open(dir.path().join("s"), 2)?;
    /// let p = sem.acquire()?.recover_with(|_| { /* repair */ });
    /// println!("holding permit {}", p.slot());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn acquire(&self) -> Result<Acquired<PermitGuard<'_>>, LockError> {
        self.acquire_inner(None, None)
    }

    /// Like [`acquire`](Self::acquire), waiting at most `timeout`, measured
    /// on CLOCK_MONOTONIC (wall-clock jumps neither stretch nor cut it).
    ///
    /// # Errors
    /// [`LockError::TimedOut`] if no permit came free in time; else as
    /// [`acquire`](Self::acquire).
    ///
    /// # Examples
    /// ```
    /// use robust_mutex::{LockError, SharedSemaphore};
    /// use std::time::Duration;
    /// # let dir = tempfile::tempdir()?;
    /// let sem = SharedSemaphore::open(dir.path().join("s"), 1)?;
    /// let p = sem.acquire_timeout(Duration::from_millis(10))?;
    /// std::thread::scope(|s| {
    ///     let other = s.spawn(|| sem.acquire_timeout(Duration::from_millis(10)).map(drop));
    ///     assert!(matches!(other.join().unwrap(), Err(LockError::TimedOut)));
    /// });
    /// # drop(p);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn acquire_timeout(
        &self,
        timeout: Duration,
    ) -> Result<Acquired<PermitGuard<'_>>, LockError> {
        self.acquire_inner(Some(sys::deadline_after(timeout)), None)
    }

    /// Like [`acquire`](Self::acquire) (or [`acquire_timeout`](Self::acquire_timeout)
    /// when `timeout` is given), but the wait can be abandoned through
    /// `cancel`, from another thread or a signal handler. The sleep is on
    /// every permit and the token at once, so a cancel ends it immediately.
    /// A cancelled acquire takes nothing and changes no permit's state.
    ///
    /// # Errors
    /// [`LockError::Cancelled`] (also if `cancel` is already cancelled);
    /// else as [`acquire_timeout`](Self::acquire_timeout).
    ///
    /// # Examples
    /// ```
    /// use robust_mutex::{CancelToken, LockError, SharedSemaphore};
    /// # let dir = tempfile::tempdir()?;
    /// let sem = SharedSemaphore::open(dir.path().join("s"), 1)?;
    /// let held = sem.acquire()?; // the only permit
    /// let cancel = CancelToken::new();
    /// std::thread::scope(|s| {
    ///     let waiter = s.spawn(|| sem.acquire_cancellable(&cancel, None).map(drop));
    ///     cancel.cancel();
    ///     assert!(matches!(waiter.join().unwrap(), Err(LockError::Cancelled)));
    /// });
    /// # drop(held);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn acquire_cancellable(
        &self,
        cancel: &CancelToken,
        timeout: Option<Duration>,
    ) -> Result<Acquired<PermitGuard<'_>>, LockError> {
        self.acquire_inner(timeout.map(sys::deadline_after), Some(cancel))
    }

    fn acquire_inner(
        &self,
        deadline: Option<libc::timespec>,
        cancel: Option<&CancelToken>,
    ) -> Result<Acquired<PermitGuard<'_>>, LockError> {
        raw::check_room(|| false)?;
        let mut slept_on = 0u128;
        let out = self.wait_for_permit(deadline.as_ref(), cancel, &mut slept_on);
        if slept_on != 0 {
            let taken = out.as_ref().ok().map(|a| match a {
                Acquired::Clean(g) => g.slot(),
                Acquired::OwnerDied(r) => r.guard().slot(),
            });
            self.pass_on(slept_on, taken);
        }
        out
    }

    /// Scans, and sleeps while every usable permit is held by others.
    /// `slept_on` collects the slots this call slept on.
    fn wait_for_permit(
        &self,
        deadline: Option<&libc::timespec>,
        cancel: Option<&CancelToken>,
        slept_on: &mut u128,
    ) -> Result<Acquired<PermitGuard<'_>>, LockError> {
        // What each slot's stuck check saw after the last slice.
        let mut seen = Vec::new();
        'scan: loop {
            if cancel.is_some_and(CancelToken::is_cancelled) {
                return Err(LockError::Cancelled);
            }
            let busy = match self.scan(*slept_on != 0)? {
                Scan::Got(p) => return Ok(p),
                Scan::Busy { others } => others,
            };
            if busy == 0 {
                // Every usable permit is this thread's own.
                return Err(LockError::Deadlock);
            }
            if deadline.is_some_and(sys::deadline_passed) {
                return Err(LockError::TimedOut); // before announcing anything
            }
            let mut words = Vec::with_capacity(busy.count_ones() as usize);
            for i in slots_in(busy) {
                let word = self.slot(i).word();
                match announce(word) {
                    Some(expected) => words.push((word, expected)),
                    None => continue 'scan, // it came free or its holder died
                }
            }
            *slept_on |= busy;
            if wait::sleep(&words, cancel, deadline)? {
                self.every_busy_permit_stuck(busy, &mut seen)?;
            }
        }
    }

    /// After a slice of sleep: if every permit held by others is stuck
    /// (nobody will ever release any of them), the first one's
    /// [`LockError::Stuck`]; a single live holder means waiting can end.
    /// `seen` keeps, per slot, what its last check saw (`RawMutex::stuck`).
    fn every_busy_permit_stuck(
        &self,
        busy: u128,
        seen: &mut Vec<Option<crate::raw::Suspect>>,
    ) -> Result<(), LockError> {
        if seen.is_empty() {
            seen.resize(128, None);
        }
        let mut first = None;
        for i in slots_in(busy) {
            match self.slot(i).stuck(self.name(Some(i)), &mut seen[i]) {
                Some(e) => {
                    first.get_or_insert(e);
                }
                None => return Ok(()),
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Passes on the wake-ups this waiter may have absorbed from `slots`
    /// (see the module docs): wakes one sleeper on every free or owner-dead
    /// slot, and makes sure a held slot's release will wake one.
    fn pass_on(&self, slots: u128, taken: Option<usize>) {
        for i in slots_in(slots).filter(|&i| Some(i) != taken) {
            let slot = self.slot(i);
            let word = slot.word();
            let mut w = word.load(Ordering::Relaxed);
            loop {
                if w == 0 || w & sys::FUTEX_OWNER_DIED != 0 {
                    let lost = w == 0 && slot.is_not_recoverable();
                    if !lost {
                        sys::futex_wake(word, 1, true);
                    }
                    break;
                }
                if w & sys::FUTEX_WAITERS != 0 {
                    break;
                }
                match word.compare_exchange_weak(
                    w,
                    w | sys::FUTEX_WAITERS,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => break,
                    Err(now) => w = now,
                }
            }
        }
    }

    /// One pass over the slots, starting where this thread's last pass
    /// started, plus one. `after_sleep`: this call slept before.
    fn scan(&self, after_sleep: bool) -> Result<Scan<'_>, LockError> {
        let n = self.permits;
        let start = START.with(|s| {
            let v = match s.get() {
                usize::MAX => identity::me().tid as usize,
                v => v,
            };
            s.set(v.wrapping_add(1));
            v % n
        });
        let me = identity::me().tid;
        let mut others = 0u128;
        let mut lost = 0;
        for k in 0..n {
            let i = if start + k < n {
                start + k
            } else {
                start + k - n
            };
            let slot = self.slot(i);
            let word = slot.word();
            let w = word.load(Ordering::Relaxed);
            let tid = w & sys::FUTEX_TID_MASK;
            if tid != 0 && w & sys::FUTEX_OWNER_DIED == 0 {
                // Held: by another thread (busy) or by us (ERRORCHECK would
                // say EDEADLK). Skipped without a glibc call.
                if tid != me {
                    others |= 1 << i;
                }
                continue;
            }
            match slot.try_once() {
                Ok(how) => {
                    if after_sleep {
                        wait::after_sleep(word);
                    }
                    let name = || self.name(Some(i));
                    if after_sleep {
                        if let Err(Fail::Lock(e)) = slot.unchanged_after_wait(name()) {
                            return Err(e);
                        }
                    }
                    // SAFETY: `try_once` just gave this thread slot `i`;
                    // `how` says whether with EOWNERDEAD; every caller of
                    // `scan` passed `raw::check_room` first.
                    let got = unsafe { slot.took(how == Locked::OwnerDied, after_sleep, name) };
                    // SAFETY: as above, and `took` kept it unless it failed
                    // (then the guard is not made).
                    let guard = || unsafe { PermitGuard::new(self, i) };
                    return Ok(Scan::Got(match got {
                        Ok(Got::Clean) => Acquired::Clean(guard()),
                        Ok(Got::OwnerDied(previous)) => {
                            // SAFETY: taken with EOWNERDEAD, held, not yet
                            // marked consistent.
                            let r = unsafe { Recovery::new(guard(), previous) };
                            Acquired::OwnerDied(r)
                        }
                        // A slot has no state word: never retired.
                        // A slot has no state word of its own: it is never
                        // "retired".
                        Err(Fail::Lock(e)) => return Err(e),
                        Err(Fail::NotRecoverable) => return Err(LockError::NotRecoverable),
                    }));
                }
                Err(LockFail::Busy) => others |= 1 << i,
                Err(LockFail::Deadlock) => {}
                Err(LockFail::NotRecoverable) => lost += 1,
                Err(LockFail::Other(e)) => return Err(LockError::Io(e)),
            }
        }
        if lost == n {
            log::error!(
                "{}: every permit is not recoverable; replace the semaphore",
                self.path.display()
            );
            return Err(LockError::NotRecoverable);
        }
        Ok(Scan::Busy { others })
    }
}
