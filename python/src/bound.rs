//! [`ThreadBound`]: a value that only the thread that made it may use or
//! drop, carried through PyO3's `Send`/`Sync` bounds. The only unsafe code
//! of the extension.
//!
//! The crate's guards are not `Send`: the lock belongs to the thread that
//! took it (its robust list, its TID in the lock word). A Python object
//! holding one must be `Send + Sync` for PyO3, and any thread may call its
//! methods or drop it. `ThreadBound` checks the calling thread on every
//! access and never drops its value elsewhere (it leaks it instead: the
//! taking thread is gone, and the kernel released its lock as a death).
//! Also [`unlock_leaked`], the pymutex drop-in's `unlock()`.
//!
//! `send_wrapper` does the same but panics on a foreign drop, and its
//! check (`std::thread::current()`) costs ten times this one on the lock
//! and unlock path.

#![allow(unsafe_code)]

use std::cell::Cell;
use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicU64, Ordering};

/// The next thread's number: numbers are never reused.
static NEXT: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's number (0 until first asked).
    static THIS: Cell<u64> = const { Cell::new(0) };
}

/// The calling thread's number, unique for the life of the process.
pub(crate) fn this_thread() -> u64 {
    THIS.with(|t| match t.get() {
        0 => {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            t.set(n);
            n
        }
        n => n,
    })
}

/// A `T` that only its making thread may touch.
#[derive(Debug)]
pub(crate) struct ThreadBound<T> {
    thread: u64,
    value: ManuallyDrop<T>,
}

// SAFETY: the value is only reached (`get_mut`, `into_inner`, `Drop`)
// from the thread that made it (checked by `thread`, a number never given
// to another thread); from any other thread it is neither read, written
// nor dropped. Moving the wrapper itself between threads moves only the
// bytes, as a `Box` would.
unsafe impl<T> Send for ThreadBound<T> {}
// SAFETY: `&ThreadBound` gives no access to the value (only `mine`, which
// reads the thread number).
unsafe impl<T> Sync for ThreadBound<T> {}

impl<T> ThreadBound<T> {
    /// Binds `value` to the calling thread.
    pub(crate) fn new(value: T) -> Self {
        ThreadBound {
            thread: this_thread(),
            value: ManuallyDrop::new(value),
        }
    }

    /// Whether the calling thread made it.
    pub(crate) fn mine(&self) -> bool {
        self.thread == this_thread()
    }

    /// The value, for its thread only.
    pub(crate) fn get_mut(&mut self) -> Option<&mut T> {
        if self.mine() {
            Some(&mut self.value)
        } else {
            None
        }
    }

    /// The value, for its thread only (else the wrapper back).
    pub(crate) fn into_inner(self) -> Result<T, Self> {
        if !self.mine() {
            return Err(self);
        }
        let mut this = ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped or used again, so the value is
        // taken out exactly once; we are its thread.
        Ok(unsafe { ManuallyDrop::take(&mut this.value) })
    }
}

impl<T> Drop for ThreadBound<T> {
    /// Drops the value on its thread; elsewhere leaks it.
    fn drop(&mut self) {
        if self.mine() {
            // SAFETY: dropped once, here (`into_inner` skips this Drop);
            // we are its thread.
            unsafe { ManuallyDrop::drop(&mut self.value) }
        }
    }
}

/// Unlocks `mutex`, held by the calling thread through a leaked guard
/// (`BareGuard::leak`); the pymutex drop-in's `unlock()`.
///
/// # Errors
/// `LockError::NotOwner` if the lock word no longer names this thread.
pub(crate) fn unlock_leaked(
    mutex: &robust_mutex::BareMutex,
) -> Result<(), robust_mutex::LockError> {
    // SAFETY: called only when the drop-in's owner record says this thread
    // (in this fork generation) leaked the guard of its acquisition of this
    // file and has not unlocked it since: the record is set after the leak
    // and cleared before this call, under the instance's mutex.
    unsafe { mutex.unlock_leaked() }
}
