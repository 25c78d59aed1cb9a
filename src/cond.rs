//! Condition waits that survive any death: a futex sequence word in the
//! file's header, and no waiter bookkeeping at all.
//!
//! The word (`cond_seq`, header offset 192, its own cache line) holds a
//! sequence in bits 1..31, advanced by 2 per notification, and in bit 0
//! [`SLEEPERS`], "a waiter may be asleep". A waiter reads it while holding
//! the lock, releases the lock, and sleeps in the kernel on the word while
//! it still holds that value; a notifier advances it, then wakes one or all
//! sleepers, and only if bit 0 says someone may sleep (so a notification
//! nobody waits for is one atomic add). A change made under the lock
//! before a notification is therefore never missed: the waiter either
//! sleeps already (the wake reaches it) or its futex call finds the word
//! changed and returns at once.
//!
//! Nothing is counted per waiter, so a dead waiter leaves nothing behind:
//! the kernel takes a killed sleeper off the futex queue, and a
//! `notify_one` wakes a live one.
//!
//! What the kernel does not do is wake condition waiters when a holder
//! dies: it wakes a robust mutex's waiters at its owner's death only if
//! FUTEX_WAITERS is set in the lock word, and a lock taken uncontended
//! never has it. So a sleep lasts at most one [`TICK`]; then the waiter
//! looks at the lock word (FUTEX_OWNER_DIED: return, relock, and the first
//! to relock gets `OwnerDied`) and at the sequence (moved without a wake
//! reaching us: a `notify_one` whose woken waiter died before relocking, or
//! a notifier killed between its add and its wake; return). Such a return
//! is a spurious wake-up, which `wait_while` hides. Every
//! [`SLICE`](crate::wait::SLICE) it also applies the stuck rule of lock
//! waits, since nobody can lock a stuck lock to notify. Besides, whoever takes
//! the lock with EOWNERDEAD, a holder whose panic is released as a death,
//! an abandoned recovery and a reset that retires the file all wake every
//! condition waiter at once ([`RawMutex::cond_broadcast`](crate::raw::RawMutex::cond_broadcast)).

use crate::cancel::CancelToken;
use crate::error::LockError;
use crate::raw::{Name, RawMutex};
use crate::sys;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Bit 0 of the word: a waiter may be asleep on it (set by waiters before
/// they sleep, cleared by `notify_all`, which wakes them all).
pub(crate) const SLEEPERS: u32 = 1;

/// One notification: the sequence's step (bit 0 is [`SLEEPERS`]).
const STEP: u32 = 2;

/// The longest a condition waiter sleeps before it looks at the lock word
/// and the sequence itself: a holder that dies with no lock waiter is seen
/// within about this.
pub(crate) const TICK: Duration = Duration::from_millis(50);

/// The sequence a waiter compares (without [`SLEEPERS`]).
#[inline]
pub(crate) fn sequence(word: u32) -> u32 {
    word & !SLEEPERS
}

/// How a sleep ended (the lock is not held; the caller relocks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slept {
    /// The sequence moved (a notification, or news of a death), or the
    /// waiter could not tell: relock and look.
    Notified,
    /// The lock's holder died (FUTEX_OWNER_DIED): relock, and the first to
    /// do so gets `OwnerDied`.
    HolderDied,
    /// The deadline passed.
    TimedOut,
}

/// Advances the sequence and wakes one (`all`: every) sleeper, if bit 0
/// says one may sleep. Never blocks; no system call when nobody waits.
pub(crate) fn notify(word: &AtomicU32, all: bool) {
    let old = if all {
        // Every sleeper is woken below: nobody sleeps on the new value yet.
        let mut cur = word.load(Ordering::Relaxed);
        loop {
            let new = sequence(cur).wrapping_add(STEP);
            match word.compare_exchange_weak(cur, new, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => break cur,
                Err(now) => cur = now,
            }
        }
    } else {
        word.fetch_add(STEP, Ordering::Release)
    };
    if old & SLEEPERS != 0 {
        sys::futex_wake(word, if all { i32::MAX } else { 1 }, true);
    }
}

/// Sleeps until the sequence moves from `seen` (read while the lock was
/// held, which it no longer is), the lock's holder dies (its lock word has
/// FUTEX_OWNER_DIED), `cancel` is cancelled, or `deadline` passes; at most
/// one [`TICK`] per kernel sleep (see the module's doc). Every
/// [`SLICE`](crate::wait::SLICE) it also asks whether the lock is stuck
/// (its holder gone without the kernel releasing it): nobody could then
/// lock to notify, so the wait ends with that error.
///
/// # Errors
/// [`LockError::Cancelled`]; [`LockError::Stuck`]; [`LockError::Io`] if
/// the futex call fails.
pub(crate) fn sleep<'n>(
    word: &AtomicU32,
    seen: u32,
    raw: RawMutex<'_>,
    name: &dyn Fn() -> Name<'n>,
    cancel: Option<&CancelToken>,
    deadline: Option<&libc::timespec>,
) -> Result<Slept, LockError> {
    let seen = sequence(seen);
    let ticks_per_slice = (crate::wait::SLICE.as_millis() / TICK.as_millis()).max(1);
    let (mut ticks, mut suspect) = (0, None);
    crate::file::init::checkpoint("cond_released");
    loop {
        let mut now = word.load(Ordering::Acquire);
        if sequence(now) != seen {
            return Ok(Slept::Notified);
        }
        if cancel.is_some_and(CancelToken::is_cancelled) {
            return Err(LockError::Cancelled);
        }
        let lock_word = raw.word().load(Ordering::Relaxed);
        if lock_word & sys::FUTEX_OWNER_DIED != 0 {
            return Ok(Slept::HolderDied);
        }
        if ticks == ticks_per_slice {
            ticks = 0;
            if lock_word & sys::FUTEX_TID_MASK == 0 {
                suspect = None;
            } else if let Some(e) = raw.stuck(name(), &mut suspect) {
                return Err(e);
            }
        }
        if now & SLEEPERS == 0 {
            match word.compare_exchange(now, now | SLEEPERS, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => now |= SLEEPERS,
                Err(_) => continue, // moved: look again
            }
        }
        let (until, is_deadline) = crate::wait::sleep_end(TICK, deadline);
        let woke = match cancel {
            None => sys::futex_wait_shared(word, now, Some(&until))?,
            Some(c) => sys::futex_waitv(
                &[
                    sys::FutexWait {
                        word,
                        expected: now,
                        shared: true,
                    },
                    sys::FutexWait {
                        word: c.word(),
                        expected: 0,
                        shared: false,
                    },
                ],
                Some(&until),
            )?,
        };
        if woke == sys::Woke::TimedOut {
            if is_deadline {
                // The last look: a notification at the deadline still counts.
                if sequence(word.load(Ordering::Acquire)) != seen {
                    return Ok(Slept::Notified);
                }
                return Ok(Slept::TimedOut);
            }
            ticks += 1;
        }
    }
}
