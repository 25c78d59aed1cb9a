//! The crash-safe counting semaphore (`SharedSemaphore`): real holder
//! processes, real SIGKILLs, synchronised by pipes and by watching waiters
//! sleep in `futex_waitv` (`/proc/<pid>/task/<tid>/syscall`), never by
//! sleeping. One test binary, one module per concern:
//!
//! * `owner_death`: killed holders' permits come back, reported;
//! * `accidents`: stuck permits end waits, never while a live holder may
//!   free one;
//! * `acquiring`: releases, waits, cancellation, crowds;
//! * `files`: kinds, permit counts, creation policies, broken files;
//! * `hot_record`: format version 2: a permit cycle writes only its own
//!   cache line; permit counts summed exactly.
//!
//! This file holds the helpers the modules share.

#[path = "../common/mod.rs"]
mod common;

mod accidents;
mod acquiring;
mod files;
mod hot_record;
mod owner_death;

use common::Kid;
use common::roles::LONG;
use robust_mutex::{LockState, SemaphoreStatus};
use std::path::Path;
use std::time::Instant;

/// The permit count of a semaphore the roles open by default.
const N: usize = common::roles::SEM_PERMITS;

/// The generic syscall number of `futex_waitv` (the same on every arch).
const SYS_FUTEX_WAITV: &str = "449";

/// Not a test: the entry point of child processes (see `common::roles`).
#[test]
fn child_main() {
    common::roles::run_if_child();
}

/// Spins (yielding) until `cond` holds; fails after a generous bound.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < LONG, "timed out waiting until {what}");
        std::thread::yield_now();
    }
}

/// Whether thread `tid` of process `pid` is blocked in `futex_waitv`.
fn in_futex_waitv(pid: u32, tid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall"))
        .is_ok_and(|s| s.split_whitespace().next() == Some(SYS_FUTEX_WAITV))
}

/// Whether some thread of process `pid` is blocked in `futex_waitv`.
fn process_in_futex_waitv(pid: u32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .any(|tid| in_futex_waitv(pid, tid))
}

fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// Starts `n` holder processes, each holding one permit.
fn holders(path: &Path, n: usize) -> Vec<Kid> {
    (0..n)
        .map(|_| {
            let mut k = Kid::spawn("sem_hold", path);
            k.expect("slot");
            k
        })
        .collect()
}

/// The parts of a status that a waiter must not change (the raw lock words
/// may gain FUTEX_WAITERS).
fn essentials(s: &SemaphoreStatus) -> impl PartialEq + std::fmt::Debug {
    let states: Vec<LockState> = s.permits.iter().map(|p| p.state).collect();
    (
        (
            s.total,
            s.available,
            s.held,
            s.owner_dead,
            s.not_recoverable,
        ),
        s.holders.clone(),
        states,
        s.counters,
    )
}
