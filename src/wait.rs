//! Cancellable waits on robust mutexes: try once, then sleep in the kernel on
//! the lock word(s) and a [`CancelToken`] together (`futex_waitv`).
//!
//! The protocol is glibc's own for waiters: a sleeper sets FUTEX_WAITERS in
//! the lock word by CAS, so that an unlock (or the kernel, at the owner's
//! death) wakes it; after acquiring following a sleep it sets FUTEX_WAITERS
//! again (glibc's `assume_other_futex_waiters`), so no other sleeper is lost.
//!
//! Every wait sleeps in slices of at most [`SLICE`], so that the waiter can
//! look whether the lock became stuck (its holder gone, never released by
//! the kernel) instead of hanging for ever.

use crate::cancel::CancelToken;
use crate::error::LockError;
use crate::raw::{Name, RawMutex};
use crate::sys::{self, LockFail, Locked};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The longest a contended wait sleeps before it looks whether the lock is
/// stuck: a stuck lock is reported within about twice this.
pub(crate) const SLICE: Duration = Duration::from_millis(500);

/// The end of the next slice of a wait: now + [`SLICE`], or `deadline` if
/// that is sooner (then `true`).
pub(crate) fn slice_end(deadline: Option<&libc::timespec>) -> (libc::timespec, bool) {
    sleep_end(SLICE, deadline)
}

/// The end of a kernel sleep of at most `len`: now + `len`, or `deadline`
/// if that is sooner (then `true`).
pub(crate) fn sleep_end(
    len: Duration,
    deadline: Option<&libc::timespec>,
) -> (libc::timespec, bool) {
    let slice = sys::deadline_after(len);
    match deadline {
        Some(d) if (d.tv_sec, d.tv_nsec) <= (slice.tv_sec, slice.tv_nsec) => (*d, true),
        _ => (slice, false),
    }
}

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
/// optional cancel token until something changes or one [`SLICE`] ends.
/// Returns true if a whole slice ended (the caller then looks whether the
/// lock is stuck, and tries again). A wait shorter than a slice is not
/// looked at: it ends with `TimedOut`.
///
/// # Errors
/// [`LockError::TimedOut`] if `deadline` has passed; [`LockError::Io`].
pub(crate) fn sleep(
    words: &[(&AtomicU32, u32)],
    cancel: Option<&CancelToken>,
    deadline: Option<&libc::timespec>,
) -> Result<bool, LockError> {
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
    let (until, is_deadline) = slice_end(deadline);
    match sys::futex_waitv(&waits, Some(&until))? {
        sys::Woke::TimedOut if is_deadline => Err(LockError::TimedOut),
        sys::Woke::TimedOut => Ok(true),
        sys::Woke::Interrupted if cancel.is_some_and(CancelToken::ends_on_signals) => {
            Err(LockError::Interrupted)
        }
        _ => Ok(false),
    }
}

/// Locks one robust mutex, sleeping while it is held, until it is ours (or
/// EOWNERDEAD, ENOTRECOVERABLE, EDEADLK: any answer but "busy"), the token
/// is cancelled, or the deadline passes. Returns that answer and whether we
/// slept.
///
/// # Errors
/// [`LockError::Cancelled`], [`LockError::TimedOut`], [`LockError::Stuck`]
/// (looked at after every slice), [`LockError::Io`].
pub(crate) fn lock_cancellable<'n>(
    raw: &RawMutex<'_>,
    cancel: &CancelToken,
    deadline: Option<&libc::timespec>,
    name: &impl Fn() -> Name<'n>,
) -> Result<(Result<Locked, LockFail>, bool), LockError> {
    let word = raw.word();
    let mut slept = false;
    let mut seen = None;
    loop {
        if cancel.is_cancelled() {
            return Err(LockError::Cancelled);
        }
        let r = raw.try_once();
        if !matches!(r, Err(LockFail::Busy)) {
            if slept && r.is_ok() {
                after_sleep(word);
            }
            return Ok((r, slept));
        }
        if let Some(expected) = announce(word) {
            let slice_over = sleep(&[(word, expected)], Some(cancel), deadline)?;
            slept = true;
            if slice_over {
                if let Some(e) = raw.stuck(name(), &mut seen) {
                    return Err(e);
                }
            }
        }
    }
}
