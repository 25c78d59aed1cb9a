//! The held-lock bound: a thread may hold at most
//! [`MAX_HELD_PER_THREAD`](crate::MAX_HELD_PER_THREAD) locks.

use crate::error::LockError;
use crate::identity;

/// The held-lock bound, checked before every lock call of every kind: one
/// thread-local load and compare on the fast path. `held_already` says
/// whether the lock asked for is the calling thread's already (a re-entrant
/// relock adds nothing to the robust list; an errorcheck relock is
/// `Deadlock` anyway).
///
/// # Errors
/// [`LockError::TooManyHeld`].
#[inline(always)]
pub(crate) fn check_room(held_already: impl FnOnce() -> bool) -> Result<(), LockError> {
    if identity::must_check() {
        return no_room(held_already);
    }
    Ok(())
}

#[cold]
#[inline(never)]
fn no_room(held_already: impl FnOnce() -> bool) -> Result<(), LockError> {
    if identity::take_clock_chore() {
        // Our last direct clock read found the process locks often: start
        // or wake the clock thread now, holding no lock we take here.
        crate::clock::resume_now();
        if identity::room() != 0 {
            return Ok(());
        }
    }
    if identity::init_locker() {
        // A thread's first lock call, or its first after a fork.
        super::refresh_process_key();
        return Ok(());
    }
    if held_already() {
        return Ok(());
    }
    let e = LockError::TooManyHeld {
        held: identity::held(),
        max: identity::MAX_HELD_PER_THREAD,
    };
    log::error!("{e}");
    Err(e)
}
