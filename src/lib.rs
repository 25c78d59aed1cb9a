//! # robust-mutex: a crash-safe lock named by a file path
//!
//! Worker processes that share state can be killed at any moment: SIGKILL,
//! the OOM killer, a crash. `flock`/`fcntl` locks are released when the
//! holder dies but never say so, so the next holder builds on half-written
//! state; POSIX semaphores and hand-made "lock files" stay held for ever.
//!
//! A [`SharedMutex<T>`] is a `pthread_mutex_t` initialised PROCESS_SHARED +
//! ROBUST + ERRORCHECK, in a memory-mapped file beside the plain-old-data
//! value `T` it protects. When a holder dies, the kernel releases the lock
//! and the next locker is told so, as [`Acquired::OwnerDied`]: it repairs `T`
//! and marks the mutex consistent. It neither hangs nor lies.
//!
//! ```
//! use robust_mutex::{Acquired, SharedMutex};
//!
//! #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
//! #[repr(C)]
//! struct Account { balance: u64, balance_copy: u64 }
//!
//! # let dir = tempfile::tempdir()?;
//! # let path = dir.path().join("account.lock");
//! let m = SharedMutex::<Account>::open(&path)?; // open or create, by path
//! let mut g = match m.lock()? {
//!     Acquired::Clean(g) => g,
//!     Acquired::OwnerDied(mut r) => {
//!         // The last holder died mid-update: repair, then mark consistent.
//!         if let Some(o) = r.previous_owner() {
//!             eprintln!("pid {} died holding the lock", o.pid);
//!         }
//!         r.balance_copy = r.balance;
//!         r.mark_consistent()
//!     }
//! };
//! g.balance += 10;
//! g.balance_copy += 10;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The file format, the initialisation handshake and the recovery semantics
//! are described in `docs/design.md`.

#![cfg(target_os = "linux")]

mod bare;
mod cancel;
mod error;
mod guard;
mod handshake;
mod identity;
mod layout;
mod mutex;
mod options;
mod reentrant;
mod registry;
mod reset;
mod semaphore;
mod stale;
mod status;
mod sync;
mod sys;
mod wait;

pub use bare::{BARE_SIZE, BareAcquired, BareGuard, BareMutex, BareRecovery};
pub use cancel::CancelToken;
pub use error::{Error, LockError};
pub use guard::{Acquired, Guard, Recovery};
pub use mutex::SharedMutex;
pub use options::OpenOptions;
pub use reentrant::{ReentrantAcquired, ReentrantGuard, ReentrantMutex, ReentrantRecovery};
pub use reset::{ResetOutcome, reset};
pub use semaphore::{
    MAX_PERMITS, Permit, PermitGuard, PermitRecovery, PermitStatus, SemaphoreStatus,
    SharedSemaphore,
};
pub use status::{Counters, FileInfo, LockState, OwnerInfo, Status};

/// Re-exported so users can derive `Pod` for their value types.
pub use bytemuck;

/// Internals exposed only to the loom models (`--cfg loom`).
#[cfg(loom)]
#[doc(hidden)]
pub mod loom_api {
    pub use crate::handshake::{Marked, decide_marked};
    pub use crate::registry::Registry;
}
