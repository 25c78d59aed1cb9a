//! The mutex kinds (`SharedMutex`, `ReentrantMutex`) in use, with real
//! processes and real SIGKILLs: one test binary, one module per concern.
//!
//! * `locking`: mutual exclusion across processes, `Deadlock`, `WouldBlock`,
//!   `TimedOut`, one mapping per file per process;
//! * `owner_death`: killed holders and exited threads give `OwnerDied`,
//!   recovery, not recoverable;
//! * `reentrant`: the re-entrant kind;
//! * `cancel`: cancellable waits;
//! * `cond`: condition waits (`Guard::wait*`, `notify_*`) through deaths
//!   of waiters, notifiers and holders;
//! * `clock`: the cached coarse clock behind `acquired_at`;
//! * `logging`: events through the `log` facade;
//! * `accidents`: stuck locks, exiting threads, the held-lock bound;
//! * `panic_fork`: panics count as deaths, fork-inherited guards are inert,
//!   truncation under a waiter is reported;
//! * `hot_record`: format version 2: per acquisition only the mutex's own
//!   cache line is written; counters, labels, the cold record's rewrite;
//! * `proc_view`: a live holder `/proc` cannot show is not stuck;
//! * `lock_async`: async acquisition on tokio (`lock_async`, `AsyncGuard`):
//!   guards across thread-hopping `.await`s, deaths, panics, cancel safety;
//! * `lock_async_accidents`: ordinary accidents around async use: exits
//!   right after a release, runtime shutdown, stuck locks and resets;
//! * `bytes`: values of raw bytes (`open_bytes`, `Guard::bytes`), typed
//!   and byte handles on one file across processes;
//! * `release_as_death`: a holder gives up its lock (or recovery) as a
//!   death, for every kind;
//! * `interrupt`: waits that a signal ends (`CancelToken::ending_on_signals`);
//! * `torture`: the crash torture, short (the logic is in
//!   `tests/common/torture/`).
//!
//! The file itself (creation, bad files, permissions, status, reset) is
//! tested by `tests/file`, the semaphore by `tests/semaphore`, the command
//! by `tests/cli`.

#[path = "../common/mod.rs"]
mod common;

mod accidents;
mod bytes;
mod cancel;
mod clock;
mod cond;
mod hot_record;
mod interrupt;
mod job_queue;
mod lock_async;
mod lock_async_accidents;
mod locking;
mod logging;
mod owner_death;
mod panic_fork;
mod proc_view;
mod reentrant;
mod release_as_death;
mod torture;

/// Not a test: the entry point of child processes (see `common::roles`).
#[test]
fn child_main() {
    common::roles::run_if_child();
}
