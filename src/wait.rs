//! Cancellable waits on robust mutexes: try once, then sleep in the kernel on
//! the lock word(s) and a [`CancelToken`] together (`futex_waitv`).
//!
//! The protocol is glibc's own for waiters: a sleeper sets FUTEX_WAITERS in
//! the lock word by CAS, so that an unlock (or the kernel, at the owner's
//! death) wakes it; after acquiring following a sleep it sets FUTEX_WAITERS
//! again (glibc's `assume_other_futex_waiters`), so no other sleeper is lost.

use crate::cancel::CancelToken;
use crate::error::LockError;
use crate::sys::{self, LockFail, Locked};
use std::sync::atomic::{AtomicU32, Ordering};

/// Sets FUTEX_WAITERS in `word`. Returns the value to sleep on, or `None`
/// if the word changed (or is free) and the caller should try again.
pub(crate) fn announce(word: &AtomicU32) -> Option<u32> {
    let w = word.load(Ordering::Relaxed);
    // Free, or its owner died: the kernel's wake-up may already have gone
    // out, so never sleep on it; the retry gets the lock or EOWNERDEAD.
    if w == 0 || w & sys::FUTEX_OWNER_DIED != 0 {
        return None;
    }
    let sleeping = w | sys::FUTEX_WAITERS;
    if w != sleeping
        && word
            .compare_exchange(w, sleeping, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return None;
    }
    Some(sleeping)
}

/// After taking a lock following a sleep: other sleepers may remain, so keep
/// FUTEX_WAITERS set for our unlock to wake them.
pub(crate) fn after_sleep(word: &AtomicU32) {
    word.fetch_or(sys::FUTEX_WAITERS, Ordering::Relaxed);
}

/// Sleeps on `words` (each with the value it must still hold) and the
/// optional cancel token until something changes.
pub(crate) fn sleep(
    words: &[(&AtomicU32, u32)],
    cancel: Option<&CancelToken>,
    deadline: Option<&libc::timespec>,
) -> Result<(), LockError> {
    if deadline.is_some_and(sys::deadline_passed) {
        return Err(LockError::TimedOut);
    }
    let mut waits: Vec<sys::FutexWait<'_>> = words
        .iter()
        .map(|&(word, expected)| sys::FutexWait {
            word,
            expected,
            shared: true,
        })
        .collect();
    if let Some(c) = cancel {
        waits.push(sys::FutexWait {
            word: c.word(),
            expected: 0,
            shared: false,
        });
    }
    match sys::futex_waitv(&waits, deadline)? {
        sys::Woke::TimedOut => Err(LockError::TimedOut),
        _ => Ok(()),
    }
}

/// Locks one robust mutex, sleeping while it is held, until it is ours (or
/// EOWNERDEAD, ENOTRECOVERABLE, EDEADLK: any answer but "busy"), the token
/// is cancelled, or the deadline passes. Returns that answer and whether we
/// slept.
///
/// # Safety
/// `m` points to an initialised robust mutex in a mapping that stays alive
/// for the call.
pub(crate) unsafe fn lock_cancellable(
    m: *mut libc::pthread_mutex_t,
    cancel: &CancelToken,
    deadline: Option<&libc::timespec>,
) -> Result<(Result<Locked, LockFail>, bool), LockError> {
    // SAFETY: forwarded from the caller.
    let word = unsafe { sys::lock_word(m) };
    let mut slept = false;
    loop {
        if cancel.is_cancelled() {
            return Err(LockError::Cancelled);
        }
        // SAFETY: forwarded from the caller. A past deadline: try once.
        let r = unsafe { sys::mutex_clocklock(m, &sys::PAST_DEADLINE) };
        if !matches!(r, Err(LockFail::Busy)) {
            if slept && r.is_ok() {
                after_sleep(word);
            }
            return Ok((r, slept));
        }
        if let Some(expected) = announce(word) {
            sleep(&[(word, expected)], Some(cancel), deadline)?;
            slept = true;
        }
    }
}
