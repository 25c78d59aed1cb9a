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
//! Each lock of the file is judged this way: a mutex's own, or each permit
//! of a semaphore (whose permits are mutexes too, with records of the same
//! two layouts).
//!
//! * **Free**, or busy for a moment: the lock is taken here (waiting up to
//!   the reset's timeout) for the length of the conversion, so no version-1
//!   process can take it meanwhile, and no force is needed. Its value was
//!   consistent, so the new lock (or permit) is clean.
//! * **A dead holder's** (owner-dead, not recoverable, stuck): no force is
//!   needed, and the new lock's first locker (the permit's next taker) gets
//!   [`OwnerDied`](crate::Acquired::OwnerDied), as after any reset.
//! * **Held by a live process** through the whole timeout: refused without
//!   force (the held locks are waited for first, so no free one was taken:
//!   the file is as it was, but for the FUTEX_WAITERS bit the wait may leave
//!   in the held lock's word, which its holder's unlock clears). With force
//!   it is not waited for before publishing; the holder finishes on the old
//!   file, and the new lock's first locker gets `OwnerDied`.
//!
//! Once the new file is in place, every lock taken here is let go not
//! recoverable, as an abandoned recovery leaves it; with force, each lock a
//! live process held is then waited for (up to what is left of the
//! timeout), taken when its holder lets go, and let go not recoverable
//! too. A version-1 process reads RETIRED only on EOWNERDEAD, so this is
//! what moves it: one that locks the old mutex gets ENOTRECOVERABLE, looks
//! at the path again, is refused version 2 and reports the lock not
//! recoverable; one that acquires a permit of the old semaphore finds every
//! permit lost.
//!
//! What is not covered: a lock still held when the timeout runs out
//! ([`ResetOutcome::old_locks_held`] counts them, the command warns): its
//! holder's unlock leaves it free, and version-1 processes may go on using
//! the old file through it until they are stopped; and a version-1 process
//! already waiting for a held lock may take it (clean, on the old file)
//! before the conversion does, once. `docs/design.md` ("Converting a
//! version-1 file") lists these and the other known windows (a conversion
//! killed between its rename and the RETIRED store; a file from an earlier
//! boot, repaired by the open before the conversion).

use crate::error::Error;
use crate::file::init::Prepared;
use crate::file::{self, io_err, layout};
use crate::reset::{
    ResetOutcome, carried_from, changed_underneath, prepare_replacement, publish_replacement,
    still_at,
};
use crate::status::{self, LockState};
use crate::sys;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

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

/// Judges the mutex `m` from its lock word alone
/// ([`status::word_state`]).
///
/// # Safety
/// `m` is an initialised robust mutex in a live mapping.
unsafe fn look(m: *mut libc::pthread_mutex_t) -> Old {
    // SAFETY: forwarded from the caller.
    let (word, not_recoverable) =
        unsafe { (sys::lock_word_snapshot(m), sys::mutex_not_recoverable(m)) };
    match status::word_state(word, not_recoverable) {
        LockState::Unlocked => Old::Free { clean: true },
        LockState::OwnerDead => Old::Free { clean: false },
        LockState::NotRecoverable => Old::NotRecoverable,
        // The kernel marks a dying holder's locks before its TID is gone,
        // so a word that still names it after the check never changes by
        // itself (see `status::lock_state`).
        // SAFETY: forwarded from the caller.
        LockState::Stuck if status::same_holder(unsafe { sys::lock_word_snapshot(m) }, word) => {
            Old::Stuck { word }
        }
        _ => Old::Held,
    }
}

/// Judges `m` and takes it if it is free or owner-dead, or (with
/// `wait_for_holder`) once its live holder lets it go, waiting up to
/// `deadline` (`CLOCK_MONOTONIC`): a lock that is merely busy is not held.
/// Not taken: a not-recoverable or stuck lock, one the calling thread holds,
/// and one still held at the deadline ([`Old::Held`]; the wait may have
/// left FUTEX_WAITERS in its word, which the holder's unlock clears).
///
/// # Safety
/// `m` is an initialised robust mutex in a live mapping that stays mapped
/// until a lock taken here has been let go ([`let_go`]).
unsafe fn take(
    m: *mut libc::pthread_mutex_t,
    deadline: &libc::timespec,
    wait_for_holder: bool,
) -> std::io::Result<Old> {
    loop {
        // SAFETY: forwarded from the caller.
        let old = unsafe { look(m) };
        let wait = match old {
            Old::Free { .. } => true,
            Old::Held => {
                // SAFETY: forwarded from the caller.
                let tid = unsafe { sys::lock_word_snapshot(m) } & sys::FUTEX_TID_MASK;
                wait_for_holder && tid != sys::gettid()
            }
            _ => false,
        };
        if !wait {
            return Ok(old);
        }
        // SAFETY: forwarded from the caller (the clocklock rather than
        // trylock: glibc's trylock leaves a not-recoverable mutex locked).
        match unsafe { sys::mutex_clocklock(m, deadline) } {
            Ok(sys::Locked::Clean) => return Ok(Old::Taken { clean: true }),
            Ok(sys::Locked::OwnerDied) => return Ok(Old::Taken { clean: false }),
            Err(sys::LockFail::NotRecoverable) => return Ok(Old::NotRecoverable),
            Err(sys::LockFail::Deadlock) => return Ok(Old::Held),
            Err(sys::LockFail::Busy) if sys::deadline_passed(deadline) => return Ok(Old::Held),
            // Woken early: look again.
            Err(sys::LockFail::Busy) => {}
            Err(sys::LockFail::Other(e)) => return Err(e),
        }
    }
}

/// Lets go of `m`, taken by [`take`] (`clean`: without EOWNERDEAD).
/// `retired`: the new file is in place, so it is left not recoverable;
/// otherwise as it was found: free, or owner-dead.
///
/// # Safety
/// The calling thread holds `m`, taken by [`take`], in a live mapping.
unsafe fn let_go(m: *mut libc::pthread_mutex_t, clean: bool, retired: bool) {
    if retired {
        // SAFETY: we hold it (the caller's contract).
        let _ = unsafe { sys::unlock_not_recoverable(m) };
    } else if clean
        // SAFETY: we hold it; its word names our TID.
        || unsafe { sys::die_holding(m, sys::gettid()) } == sys::Death::Refused
    {
        // Free again; or (not on 64-bit glibc) a dead holder's lock that
        // cannot be left owner-dead again: not recoverable, which the next
        // reset converts all the same.
        // SAFETY: we hold it.
        let _ = unsafe { sys::mutex_unlock(m) };
    }
}

/// Converts the version-1 file `old` at `path`, whose flock the caller
/// holds (see the module docs), waiting up to `timeout` for its locks. `Ok(None)`: it was cut short, or replaced
/// by a version-1 reset, while we waited for the flock; the caller looks
/// again.
pub(crate) fn migrate(
    path: &Path,
    old: &file::Opened,
    force: bool,
    timeout: Duration,
) -> Result<Option<ResetOutcome>, Error> {
    let map = &old.map;
    if !map.intact() {
        return Ok(None);
    }
    let kind = layout::Kind::from_code(old.header.kind).unwrap_or(layout::Kind::Mutex);
    // The locks: a mutex's own, or (bit 1 + p of `Fill::Replacement`'s
    // owner_died) each permit's; a semaphore's main mutex is never locked.
    let first = usize::from(kind == layout::Kind::Semaphore);
    let locks: Vec<*mut libc::pthread_mutex_t> = old
        .header
        .mutexes()
        .skip(first)
        .map(|offset| map.data(offset as u64).cast())
        .collect();
    let outcome = |generation, state| ResetOutcome {
        generation,
        previous_state: state,
        remnant_len: None,
        migrated_from: Some(layout::MIGRATABLE_VERSION),
        old_locks_held: 0,
        converted_by_another: false,
    };
    if map.state().load(Ordering::Acquire) == layout::STATE_RETIRED {
        // Replaced while we waited for the flock: by another conversion
        // (report the file it made, as it is now), or by a version-1 reset
        // (convert what it left: the caller looks again).
        let now = crate::inspect_file(path).ok();
        return Ok(now.and_then(|now| {
            let file = now.file.filter(|f| f.version == layout::VERSION)?;
            Some(ResetOutcome {
                converted_by_another: true,
                ..outcome(file.generation, now.lock.state())
            })
        }));
    }
    if !still_at(path, old) {
        return Err(changed_underneath(path));
    }
    let refused = || Error::ConversionRefused {
        path: path.to_owned(),
    };
    // Every error of a full disk or a forbidden directory comes here,
    // before anything is taken: the file is then exactly as it was.
    let prepared = prepare_replacement(path, old)?;
    // Every lock is taken, waiting for a busy one; with force, a held one
    // is not waited for here but after publishing (below).
    let deadline = sys::deadline_after(timeout);
    // Without force, the held locks first: one still held at the deadline
    // refuses the conversion before a free one was taken (whose bytes
    // glibc's lock and unlock would touch).
    let mut order: Vec<usize> = (0..locks.len()).collect();
    if !force {
        // SAFETY: the mutexes lie in the live mapping, still covered.
        order.sort_by_key(|&i| unsafe { look(locks[i]) } != Old::Held);
    }
    let mut found: Vec<Option<Old>> = vec![None; locks.len()];
    let mut failed = None;
    for i in order {
        // SAFETY: the mutex lies in the live mapping, which the caller
        // detaches only after this returns; what is taken here is let go
        // below.
        match unsafe { take(locks[i], &deadline, !force) } {
            Ok(Old::Held) if !force => {
                failed = Some(refused());
                break;
            }
            Ok(o) => found[i] = Some(o),
            Err(e) => {
                failed = Some(io_err("pthread_mutex_clocklock", path)(e));
                break;
            }
        }
    }
    let result = match failed {
        Some(e) => Err(e),
        None => {
            let died = found
                .iter()
                .enumerate()
                .filter(|(_, o)| o.is_some_and(|o| o.state() != LockState::Unlocked))
                .fold(0u128, |bits, (i, _)| bits | 1 << (first + i));
            publish(path, old, prepared, kind, died)
        }
    };
    for (&m, o) in locks.iter().zip(&found) {
        if let Some(Old::Taken { clean }) = *o {
            // SAFETY: taken above, in the live mapping.
            unsafe { let_go(m, clean, result.is_ok()) };
        }
    }
    let generation = result?;
    // Every lock was judged.
    let found: Vec<Old> = found.into_iter().flatten().collect();
    for (&m, o) in locks.iter().zip(&found) {
        if let Old::Stuck { word } = *o {
            // As a reset of a stuck lock: its waiters wake, owner-dead, on
            // a retired file and move.
            // SAFETY: the mutex lies in the live mapping; `look` found the
            // thread in its word gone.
            unsafe { sys::release_dead_owner(m, word) };
        }
    }
    // Forced past live holders: wait (up to the deadline) for each to let
    // go, and leave its lock not recoverable, so that no version-1 process
    // takes it clean afterwards and goes on with the old file.
    let mut still_held = 0;
    for (&m, o) in locks.iter().zip(&found) {
        if *o != Old::Held {
            continue;
        }
        // SAFETY: the mutex lies in the live mapping; what is taken here is
        // let go at once.
        match unsafe { take(m, &deadline, true) } {
            // SAFETY: just taken, in the live mapping.
            Ok(Old::Taken { clean }) => unsafe { let_go(m, clean, true) },
            Ok(Old::NotRecoverable) => {}
            Ok(Old::Stuck { word }) => {
                // SAFETY: the mutex lies in the live mapping; `look` found
                // the thread in its word gone.
                let _ = unsafe { sys::release_dead_owner(m, word) };
            }
            Ok(_) | Err(_) => still_held += 1,
        }
    }
    let state = worst(&found);
    log::warn!(
        "{}: converted from format version {} ({state}) to version {}, generation {generation}{}",
        path.display(),
        layout::MIGRATABLE_VERSION,
        layout::VERSION,
        if still_held > 0 {
            format!("; {still_held} lock(s) of the old file still held by version-1 processes")
        } else {
            String::new()
        }
    );
    Ok(Some(ResetOutcome {
        old_locks_held: still_held,
        ..outcome(generation, state)
    }))
}

/// One state for all the locks found, as
/// [`Inspected::state`](crate::Inspected::state) gives one for a
/// semaphore: stuck, not recoverable, owner-dead, locked, unlocked, the
/// first that any lock is in.
fn worst(found: &[Old]) -> LockState {
    let states: Vec<LockState> = found.iter().map(|o| o.state()).collect();
    [
        LockState::Stuck,
        LockState::NotRecoverable,
        LockState::OwnerDead,
        LockState::Locked,
    ]
    .into_iter()
    .find(|s| states.contains(s))
    .unwrap_or(LockState::Unlocked)
}

/// Fills `prepared` as the version-2 file, with the mutexes `died` names
/// owner-dead, renames it over `path`, then marks the old one RETIRED.
/// Returns the new generation.
fn publish(
    path: &Path,
    old: &file::Opened,
    prepared: Prepared,
    kind: layout::Kind,
    died: u128,
) -> Result<u64, Error> {
    // The counters and a mutex's value; the version-1 records stay zero
    // (so does a semaphore's value region: its slots are made anew). They
    // are stable: the locks are ours, or their holders dead, or forced.
    let mut carried = carried_from(old, layout::COUNTERS_OFFSET);
    if kind == layout::Kind::Semaphore {
        carried.truncate(layout::DATA_MIN_OFFSET - layout::HOT_OFFSET);
    }
    let generation = publish_replacement(path, old, prepared, kind, carried, died)?;
    old.map
        .state()
        .store(layout::STATE_RETIRED, Ordering::Release);
    Ok(generation)
}
