#![doc = include_str!("../README.md")]
#![cfg(target_os = "linux")]

mod bare;
mod cancel;
mod clock;
mod cond;
mod error;
mod file;
#[cfg(feature = "async")]
mod holder;
mod identity;
mod inspect;
mod migrate;
mod mutex;
mod options;
mod outcome;
mod owner;
mod raw;
mod reentrant;
mod registry;
mod remove;
#[cfg(feature = "json")]
pub mod report;
mod reset;
mod semaphore;
mod status;
mod sync;
mod sys;
mod wait;

pub use bare::{BARE_SIZE, BareGuard, BareMutex};
pub use cancel::CancelToken;
pub use error::{Error, LabelTooLong, LockError};
pub use file::layout::LockKind;
pub use identity::MAX_HELD_PER_THREAD;
pub use inspect::{Inspected, Inspection, inspect, inspect_file, inspect_semaphore};
#[cfg(feature = "async")]
pub use mutex::{AsyncGuard, LockFuture};
pub use mutex::{BYTES_ALIGN, Guard, SharedMutex};
pub use options::OpenOptions;
pub use outcome::{Acquired, LockGuard, Recovery};
pub use reentrant::{ReentrantGuard, ReentrantMutex};
pub use remove::{RemoveOptions, remove};
#[cfg(feature = "json")]
pub use report::status_json;
pub use reset::{ResetOptions, ResetOutcome, reset};
#[cfg(feature = "async")]
pub use semaphore::{AcquireFuture, AsyncPermit};
pub use semaphore::{MAX_PERMITS, PermitGuard, PermitStatus, SemaphoreStatus, SharedSemaphore};
pub use status::{Counters, FileInfo, LockState, OwnerInfo, Status};

/// Re-exported so users can derive `Pod` for their value types.
pub use bytemuck;

/// Internals exposed only to the loom models (`--cfg loom`).
#[cfg(loom)]
#[doc(hidden)]
pub mod loom_api {
    pub use crate::file::open::{Marked, decide_marked};
    pub use crate::registry::Registry;
}

/// Internals for this crate's own benchmarks, whose step-by-step replica of
/// the fast path prices each piece of the bookkeeping: the format's offsets
/// and records, the identity cache and the clock the owner record uses. Not
/// API: compiled only with the `test-hooks` feature, which only this
/// crate's own dev-dependency on itself turns on.
#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub mod internals {
    /// The version-2 cold owner record (at [`OWNER_OFFSET`]).
    pub use crate::file::layout::OwnerRecord as ColdRecord;
    pub use crate::file::layout::{
        COUNTERS_OFFSET, Counters, DATA_MIN_OFFSET, HOT_AFTER_MUTEX, HOT_COUNTS, HOT_OFFSET,
        HotRecord, LABEL_MAX, MUTEX_OFFSET, OWNER_OFFSET, SINCE_LABELLED, process_key,
    };

    /// What one notification adds to the header's condition word
    /// (`cond_seq`, offset 192; docs/design.md, Condition waits).
    pub const COND_STEP: u32 = crate::cond::STEP;

    /// The coarse wall clock the owner record stores, ns since the epoch.
    pub fn coarse_unix_ns() -> u64 {
        crate::sys::coarse_unix_ns()
    }

    /// The cached coarse clock the lock path reads (`src/clock.rs`), ns
    /// since the epoch: up to [`CLOCK_TICK`] early, never late.
    pub fn coarse_now_ns() -> u64 {
        crate::clock::coarse_now_ns()
    }

    /// How often the clock thread refreshes the cached clock.
    pub const CLOCK_TICK: std::time::Duration = crate::clock::TICK;

    /// The clock thread's name.
    pub const CLOCK_THREAD_NAME: &str = crate::clock::THREAD_NAME;

    /// The clock thread's state (`none`, `ticking`, `parked`, `disabled`),
    /// its cached time word, its park and tick counts, waits for its next
    /// park and for a tick count, and a panic in its next tick.
    pub use crate::clock::hooks::{
        cached as clock_cached, panic_next_tick as clock_panic_next_tick, parks as clock_parks,
        state as clock_state, ticks as clock_ticks, wait_for_park as wait_for_clock_park,
        wait_for_ticks as wait_for_clock_ticks,
    };

    /// How many locks the calling thread holds through this crate (the
    /// count [`MAX_HELD_PER_THREAD`](crate::MAX_HELD_PER_THREAD) bounds).
    pub fn held_by_this_thread() -> usize {
        crate::identity::held()
    }

    /// The async holder threads' name (`/proc/self/task/TID/comm`).
    #[cfg(feature = "async")]
    pub const HOLDER_THREAD_NAME: &str = crate::holder::THREAD_NAME;

    /// Async holder threads alive, and how many of them are idle.
    #[cfg(feature = "async")]
    pub fn holder_threads() -> (usize, usize) {
        crate::holder::threads()
    }

    /// Lanes (files) with a serving holder thread now.
    #[cfg(feature = "async")]
    pub fn lanes_serving() -> usize {
        crate::holder::lanes_serving()
    }

    /// Blocks until no lane is being served: once every `lock_async`
    /// future and guard is gone, the holders finish within microseconds.
    #[cfg(feature = "async")]
    pub fn wait_lanes_idle() {
        crate::holder::wait_lanes_idle()
    }

    /// glibc's `pthread_mutex_clocklock`, which the `libc` crate lacks.
    pub use crate::sys::pthread_mutex_clocklock;

    /// The expired deadline a non-blocking `pthread_mutex_clocklock` uses
    /// (negative: glibc answers it without a system call).
    pub const PAST_DEADLINE: libc::timespec = crate::sys::PAST_DEADLINE;
}
