//! Converting a file of format version 1 to this build's version: what
//! [`reset()`](crate::reset()) does with one.
//!
//! Version 2 moved the holder's per-acquisition fields into the mutex's own
//! cache line; the geometry (header, mutex at 256, owner record at 320,
//! counters at 448, value at 512 or later) and the header's fields are the
//! same. So a version-1 file is opened as any lock file (its version
//! accepted for this alone), judged through the glibc lock word only
//! (version 1's owner record has another layout: it is neither read nor
//! carried), and replaced as a reset replaces a file: a new file built
//! beside it with the kind, value layout, value and counters (`resets + 1`)
//! and the next generation, renamed over the path; the old one is marked
//! RETIRED.
//!
//! * **Free**: the lock is taken here for the length of the conversion, so
//!   no version-1 process can take it meanwhile, and no force is needed.
//!   Its value was consistent, so the new lock is clean.
//! * **A dead holder's** (owner-dead, not recoverable, stuck): no force is
//!   needed, and the new file's first locker gets
//!   [`OwnerDied`](crate::Acquired::OwnerDied), as after any reset.
//! * **Held by a live process**: only with force, as any reset; the holder
//!   finishes on the old file, newcomers use the new one.
//!
//! Once the new file is in place, a lock taken here is left as a dying
//! holder leaves it (owner-dead). A version-1 process that locks the old
//! file then gets EOWNERDEAD on a RETIRED file, lets it go without marking
//! it consistent (so every other old user bounces as well), looks at the
//! path again and is refused version 2: old and new processes never use
//! two locks as one.

use crate::error::Error;
use crate::file::{self, io_err, layout};
use crate::reset::{ResetOutcome, carried_from, publish_replacement};
use crate::status::{self, LockState};
use crate::{identity, sys};
use std::path::Path;
use std::sync::atomic::Ordering;

/// The old lock, as its lock word showed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Old {
    /// Free (`clean`) or owner-dead, and now held by the calling thread.
    Taken {
        clean: bool,
    },
    /// Free or owner-dead, not taken (only looked at).
    Free {
        clean: bool,
    },
    NotRecoverable,
    /// Held by a live thread (or by the calling one).
    Held,
    /// Held by a thread that is gone and was never marked owner-dead.
    Stuck {
        word: u32,
    },
}

impl Old {
    fn state(self) -> LockState {
        match self {
            Old::Taken { clean: true } | Old::Free { clean: true } => LockState::Unlocked,
            Old::Taken { clean: false } | Old::Free { clean: false } => LockState::OwnerDead,
            Old::NotRecoverable => LockState::NotRecoverable,
            Old::Held => LockState::Locked,
            Old::Stuck { .. } => LockState::Stuck,
        }
    }
}

/// Judges the mutex `m` from its lock word alone.
///
/// # Safety
/// `m` is an initialised robust mutex in a live mapping.
unsafe fn look(m: *mut libc::pthread_mutex_t) -> Old {
    // SAFETY: forwarded from the caller.
    let word = unsafe { sys::lock_word_snapshot(m) };
    let tid = word & sys::FUTEX_TID_MASK;
    if word & sys::FUTEX_OWNER_DIED != 0 {
        Old::Free { clean: false }
    } else if tid == 0 {
        // SAFETY: forwarded from the caller.
        if unsafe { sys::mutex_not_recoverable(m) } {
            Old::NotRecoverable
        } else {
            Old::Free { clean: true }
        }
    } else if tid != sys::gettid()
        && identity::holder_gone(tid)
        // The kernel marks a dying holder's locks before its TID is gone,
        // so a word that still names it after the check never changes by
        // itself (see `status::lock_state`).
        // SAFETY: forwarded from the caller.
        && status::same_holder(unsafe { sys::lock_word_snapshot(m) }, word)
    {
        Old::Stuck { word }
    } else {
        Old::Held
    }
}

/// Judges `m` and takes it if it is free or owner-dead, with a try that
/// never blocks. A held lock is never tried: a failed try may leave
/// FUTEX_WAITERS in its word.
///
/// # Safety
/// `m` is an initialised robust mutex in a live mapping that stays mapped
/// until a lock taken here has been let go ([`let_go`]).
unsafe fn take(m: *mut libc::pthread_mutex_t) -> std::io::Result<Old> {
    for _ in 0..16 {
        // SAFETY: forwarded from the caller.
        let old = unsafe { look(m) };
        let Old::Free { .. } = old else {
            return Ok(old);
        };
        // SAFETY: forwarded from the caller; the deadline has passed, so
        // this only tries (the clocklock rather than trylock: glibc's
        // trylock leaves a not-recoverable mutex locked).
        match unsafe { sys::mutex_clocklock(m, &sys::PAST_DEADLINE) } {
            Ok(sys::Locked::Clean) => return Ok(Old::Taken { clean: true }),
            Ok(sys::Locked::OwnerDied) => return Ok(Old::Taken { clean: false }),
            Err(sys::LockFail::NotRecoverable) => return Ok(Old::NotRecoverable),
            Err(sys::LockFail::Deadlock) => return Ok(Old::Held),
            // Taken since we looked: look again.
            Err(sys::LockFail::Busy) => {}
            Err(sys::LockFail::Other(e)) => return Err(e),
        }
    }
    Ok(Old::Held)
}

/// Lets go of `m`, taken by [`take`] (`clean`: without EOWNERDEAD).
/// `retired`: the new file is in place, so it is left as a dying holder
/// leaves it (owner-dead); otherwise as it was found: free, or owner-dead.
///
/// # Safety
/// The calling thread holds `m`, taken by [`take`], in a live mapping.
unsafe fn let_go(m: *mut libc::pthread_mutex_t, clean: bool, retired: bool) {
    if clean && !retired {
        // SAFETY: we hold it (the caller's contract).
        let _ = unsafe { sys::mutex_unlock(m) };
        return;
    }
    // SAFETY: we hold it; its word names our TID.
    if unsafe { sys::die_holding(m, sys::gettid()) } == sys::Death::Refused {
        // Not on 64-bit glibc: a plain unlock. A lock taken with
        // EOWNERDEAD becomes not recoverable (old users bounce all the
        // same); a clean one is free again, and version-1 processes that
        // never let go of their handle go on using the old file.
        // SAFETY: we hold it.
        let _ = unsafe { sys::mutex_unlock(m) };
    }
}

/// Converts the version-1 file `old` at `path`, whose flock the caller
/// holds (see the module docs). `Ok(None)`: it was cut short while we
/// waited for the flock; the caller looks again.
pub(crate) fn migrate(
    path: &Path,
    old: &file::Opened,
    force: bool,
) -> Result<Option<ResetOutcome>, Error> {
    let map = &old.map;
    if !map.intact() {
        return Ok(None);
    }
    let kind = layout::Kind::from_code(old.header.kind).unwrap_or(layout::Kind::Mutex);
    if kind == layout::Kind::Semaphore {
        return Err(Error::InvalidOptions {
            reason: "a version-1 semaphore is converted by replacing it: OpenOptions::replace(true), then reopen",
        });
    }
    let m = map.mutex();
    let outcome = |generation, state: LockState| ResetOutcome {
        generation,
        previous_state: state,
        remnant_len: None,
        migrated_from: Some(layout::MIGRATABLE_VERSION),
    };
    if map.state().load(Ordering::Acquire) == layout::STATE_RETIRED {
        // Converted by another reset while we waited for the flock.
        // SAFETY: the mutex lies in the live mapping, still covered.
        let state = unsafe { look(m) }.state();
        return Ok(Some(outcome(old.header.generation + 1, state)));
    }
    // SAFETY: the mutex lies in the live mapping, which the caller detaches
    // only after this returns; a lock taken here is let go before that.
    let found = unsafe { take(m) }.map_err(io_err("pthread_mutex_clocklock", path))?;
    let state = found.state();
    let result = if state == LockState::Locked && !force {
        Err(Error::ResetRefused {
            path: path.to_owned(),
            state,
        })
    } else {
        publish(path, old, kind, state)
    };
    if let Old::Taken { clean } = found {
        // SAFETY: taken above, in the live mapping. The state word says
        // RETIRED before a woken waiter looks at it.
        unsafe { let_go(m, clean, result.is_ok()) };
    }
    let generation = result?;
    if let Old::Stuck { word } = found {
        // As a reset of a stuck lock: its waiters wake, owner-dead, on a
        // retired file and move.
        // SAFETY: the mutex lies in the live mapping; `look` found the
        // thread in its word gone.
        unsafe { sys::release_dead_owner(m, word) };
    }
    log::warn!(
        "{}: converted from format version {} ({state}) to version {}, generation {generation}",
        path.display(),
        layout::MIGRATABLE_VERSION,
        layout::VERSION,
    );
    Ok(Some(outcome(generation, state)))
}

/// Builds the version-2 file and renames it over `path`, then marks the
/// old one RETIRED. Returns the new generation.
fn publish(
    path: &Path,
    old: &file::Opened,
    kind: layout::Kind,
    state: LockState,
) -> Result<u64, Error> {
    // The counters and the value; the version-1 record stays zero. They
    // are stable: the lock is ours, or its holder is dead, or forced.
    let carried = carried_from(old, layout::COUNTERS_OFFSET);
    let generation = publish_replacement(path, old, kind, carried, state != LockState::Unlocked)?;
    old.map
        .state()
        .store(layout::STATE_RETIRED, Ordering::Release);
    Ok(generation)
}
