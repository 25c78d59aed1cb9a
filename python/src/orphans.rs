//! Held locks whose Python object was freed by a thread other than the one
//! that took them, while that thread lives (e.g. a guard taken in an
//! executor's thread and dropped in the event loop's). A lock belongs to
//! its thread, so only that thread can release it: the lock is kept here
//! and released by its thread's next call into the package, or by the
//! kernel, as a death, when the thread ends.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// A held lock that only its thread may release (by dropping it).
pub(crate) trait Orphan: Send {
    /// Whether the calling thread is the one that may drop it.
    fn mine(&self) -> bool;
}

impl<T> Orphan for crate::bound::ThreadBound<T> {
    fn mine(&self) -> bool {
        crate::bound::ThreadBound::mine(self)
    }
}

static ORPHANS: Mutex<Vec<Box<dyn Orphan>>> = Mutex::new(Vec::new());
/// Whether `ORPHANS` may hold something (read on every call: one load).
static PENDING: AtomicBool = AtomicBool::new(false);

/// Keeps `orphan` for its thread.
pub(crate) fn adopt(orphan: Box<dyn Orphan>) {
    log::error!(
        "a held lock's guard was freed by another thread than the one that took it; it stays held until that thread next calls into robust_mutex (or ends: then the next locker is told of a death)"
    );
    match ORPHANS.lock() {
        Ok(mut q) => {
            q.push(orphan);
            PENDING.store(true, Ordering::Release);
        }
        // Poisoned (a panic while it was held: never here) or not: keep it
        // alive rather than drop it on the wrong thread.
        Err(_) => std::mem::forget(orphan),
    }
}

/// Releases the calling thread's orphans (cheap when there are none).
pub(crate) fn reap() {
    if !PENDING.load(Ordering::Acquire) {
        return;
    }
    let mine: Vec<Box<dyn Orphan>> = {
        let Ok(mut q) = ORPHANS.try_lock() else {
            return; // another thread is reaping: next call
        };
        let (mine, others): (Vec<_>, Vec<_>) = q.drain(..).partition(|o| o.mine());
        *q = others;
        PENDING.store(!q.is_empty(), Ordering::Release);
        mine
    };
    // Dropped here, on their thread, with no lock of ours held.
    drop(mine);
}
