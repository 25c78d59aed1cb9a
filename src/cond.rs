//! Condition waits that survive any death: a futex sequence word in the
//! file's header, and no waiter bookkeeping at all.
//!
//! The word (`cond_seq`, header offset 192, its own cache line) holds:
//! * bits 8..31: a sequence, advanced by [`STEP`] per notification;
//! * bits 1..7: an arrival count, advanced by every waiter just before it
//!   sleeps (so that a notifier can tell whether someone came to sleep
//!   since it looked, see below);
//! * bit 0: [`SLEEPERS`], "a waiter may be asleep".
//!
//! A waiter reads the word while holding the lock, releases the lock,
//! advances the arrival count and sets bit 0 in one CAS, and sleeps in the
//! kernel on the word while it still holds that value. A notifier advances
//! the sequence, then wakes one or all sleepers, and only if bit 0 says
//! someone may sleep (so a notification nobody waits for is one atomic
//! add). A change made under the lock before a notification is therefore
//! never missed: the waiter either sleeps already (the wake reaches it) or
//! its futex call finds the word changed and returns at once.
//!
//! **Bit 0 is cleared** by `notify_all` (it wakes every sleeper), and by a
//! `notify_one` whose wake found nobody asleep, with a CAS from the exact
//! value its add produced: a waiter that arrived after the add changed the
//! arrival count, so the CAS fails and the bit stays; one that arrives
//! after the CAS sets the bit again. (The CAS could succeed wrongly only if
//! exactly a multiple of 128 waiters arrived between the notifier's add and
//! its CAS, while no other notification moved the word; those sleep unseen
//! until their next tick, below, which sets the bit again.) So a file whose
//! waiters have all gone costs one system call on the next `notify_one`,
//! and none after.
//!
//! Nothing is counted per waiter, so a dead waiter leaves nothing behind:
//! the kernel takes a killed sleeper off the futex queue, and a
//! `notify_one` wakes a live one (but in the microseconds before a killed
//! task leaves the queue: then the others learn at their tick).
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
//! waits, since nobody can lock a stuck lock to notify; and it moves off a
//! file a reset retired. Besides, whoever takes
//! the lock with EOWNERDEAD, a holder whose panic is released as a death
//! and a reset that retires the file all wake every
//! condition waiter at once ([`RawMutex::cond_broadcast`](crate::raw::RawMutex::cond_broadcast)).

use crate::cancel::CancelToken;
use crate::error::LockError;
use crate::file::init::checkpoint;
use crate::raw::{Name, RawMutex};
use crate::sys;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Bit 0 of the word: a waiter may be asleep on it.
pub(crate) const SLEEPERS: u32 = 1;

/// Bits 1..7: the arrival count (one per waiter's sleep).
const ARRIVALS: u32 = 0xfe;

/// One arrival.
const ARRIVAL: u32 = 2;

/// One notification: the sequence's step (bits 8..31).
pub(crate) const STEP: u32 = 0x100;

/// The longest a condition waiter sleeps before it looks at the lock word
/// and the sequence itself: a holder that dies with no lock waiter is seen
/// within about this.
pub(crate) const TICK: Duration = Duration::from_millis(50);

/// The sequence a waiter compares (without the arrivals and [`SLEEPERS`]).
#[inline]
pub(crate) fn sequence(word: u32) -> u32 {
    word & !(ARRIVALS | SLEEPERS)
}

/// `word` with one more arrival and [`SLEEPERS`] set: what a waiter
/// sleeps on.
#[inline]
fn arrived(word: u32) -> u32 {
    (word & !ARRIVALS) | (word.wrapping_add(ARRIVAL) & ARRIVALS) | SLEEPERS
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
    if all {
        // Every sleeper is woken below: nobody sleeps on the new value yet.
        let mut cur = word.load(Ordering::Relaxed);
        let old = loop {
            let new = sequence(cur).wrapping_add(STEP) | (cur & ARRIVALS);
            match word.compare_exchange_weak(cur, new, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => break cur,
                Err(now) => cur = now,
            }
        };
        if old & SLEEPERS != 0 {
            sys::futex_wake(word, i32::MAX, true);
        }
        return;
    }
    let old = word.fetch_add(STEP, Ordering::Release);
    if old & SLEEPERS != 0 && sys::futex_wake(word, 1, true) == Some(0) {
        // Nobody was asleep: clear the bit, unless a waiter arrived since
        // our add (it changed the arrival count: the CAS fails).
        let ours = old.wrapping_add(STEP);
        let _ = word.compare_exchange(ours, ours & !SLEEPERS, Ordering::Relaxed, Ordering::Relaxed);
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
    // Whether the last kernel sleep ended at its tick (not woken): what
    // the tick finds is what no wake-up told us (the checkpoints
    // cond_tick_moved, cond_tick_died and cond_tick_retired let tests make
    // such a finding hang, to show that the wake-ups came).
    let mut ticked = false;
    checkpoint("cond_released");
    loop {
        let mut now = word.load(Ordering::Acquire);
        if sequence(now) != seen {
            if ticked {
                checkpoint("cond_tick_moved");
            }
            return Ok(Slept::Notified);
        }
        if cancel.is_some_and(CancelToken::is_cancelled) {
            return Err(LockError::Cancelled);
        }
        let lock_word = raw.word().load(Ordering::Relaxed);
        if lock_word & sys::FUTEX_OWNER_DIED != 0 {
            if ticked {
                checkpoint("cond_tick_died");
            }
            return Ok(Slept::HolderDied);
        }
        if ticked && raw.retired() {
            // A reset retired the file and its broadcast never came (the
            // resetting process died first): move, as the wake would have.
            checkpoint("cond_tick_retired");
            return Ok(Slept::Notified);
        }
        if ticks == ticks_per_slice {
            ticks = 0;
            if lock_word & sys::FUTEX_TID_MASK == 0 {
                suspect = None;
            } else if let Some(e) = raw.stuck(name(), &mut suspect) {
                return Err(e);
            }
        }
        // Arrive (always, even with bit 0 set: see the module's doc on
        // clearing it), then sleep on exactly the value we wrote.
        match word.compare_exchange(now, arrived(now), Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => now = arrived(now),
            Err(_) => {
                // Moved while we were awake: not something a tick found.
                ticked = false;
                continue;
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
        ticked = woke == sys::Woke::TimedOut;
        if ticked {
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
