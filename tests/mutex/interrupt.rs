//! Waits that a signal ends (`CancelToken::ending_on_signals`), as the
//! Python package waits so that Ctrl-C reaches Python: a SIGUSR1 handler
//! installed without `SA_RESTART`, sent to the waiting thread while it
//! sleeps in the futex (seen in `/proc`), ends the wait with
//! `LockError::Interrupted`, leaving the lock to the other process that
//! holds it; with a plain `CancelToken` the same signal does not end the
//! wait (a `cancel` then does). For each kind.
//!
//! The waits run in a child process (role `kind_interrupted`), whose
//! signal dispositions are its own: this test binary's other tests install
//! a SIGUSR1 handler of their own (`cancel.rs`).

use crate::common::Kid;
use crate::common::roles_bytes::{KIND_ENV, Kind, TOKEN_ENV};
use crate::common::temp_path;
use robust_mutex::{BareMutex, LockState, SharedMutex, SharedSemaphore};

/// Another process takes `K`'s lock at `path` and holds it.
fn held_elsewhere<K: Kind>(path: &std::path::Path) -> Kid {
    let mut holder = Kid::spawn_env("kind_hold", path, &[(KIND_ENV, K::NAME)]);
    holder.expect("locked");
    holder
}

/// A waiter that ends on signals: SIGUSR1 ends its wait with
/// `Interrupted`, the lock stays the holder's; its next wait gets the lock
/// when the holder lets go.
fn a_signal_ends_the_wait<K: Kind>(token: &str) {
    let (_dir, path) = temp_path("l");
    let k = K::open_at(&path);
    let mut holder = held_elsewhere::<K>(&path);
    let holder_pid = Some(holder.pid());
    let mut waiter = Kid::spawn_env(
        "kind_interrupted",
        &path,
        &[(KIND_ENV, K::NAME), (TOKEN_ENV, token)],
    );
    assert_eq!(waiter.expect("result"), "error Interrupted", "{}", K::NAME);
    let missed = waiter.expect("missed");
    assert_eq!(waiter.expect("busy"), "error WouldBlock", "{}", K::NAME);
    // The holder still holds it, untouched.
    assert_eq!((k.state(), k.holder_pid()), (LockState::Locked, holder_pid));
    holder.tell("release");
    holder.expect("released");
    assert_eq!(
        waiter.expect("then"),
        "clean",
        "{}: the wait after",
        K::NAME
    );
    waiter.wait_ok();
    eprintln!("{}: signals sent just outside the sleep: {missed}", K::NAME);
}

/// The same signal with a plain token: the handler runs, the waiter sleeps
/// again, three times over; `cancel` ends the wait.
fn a_signal_does_not_end_a_plain_wait<K: Kind>(token: &str) {
    let (_dir, path) = temp_path("l");
    let k = K::open_at(&path);
    let holder = held_elsewhere::<K>(&path);
    let holder_pid = Some(holder.pid());
    let mut waiter = Kid::spawn_env(
        "kind_interrupted",
        &path,
        &[(KIND_ENV, K::NAME), (TOKEN_ENV, token)],
    );
    let what = format!("{} {token}", K::NAME);
    assert_eq!(waiter.expect("result"), "error Cancelled", "{what}");
    assert_eq!(waiter.expect("still-waiting"), "3", "{what}");
    assert_eq!(waiter.expect("busy"), "error WouldBlock", "{what}");
    waiter.wait_ok();
    assert_eq!((k.state(), k.holder_pid()), (LockState::Locked, holder_pid));
}

#[test]
fn a_signal_interrupts_a_mutex_wait_that_ends_on_signals() {
    a_signal_ends_the_wait::<SharedMutex<u64>>("signals");
}

#[test]
fn a_signal_interrupts_a_permit_wait_that_ends_on_signals() {
    a_signal_ends_the_wait::<SharedSemaphore>("signals");
}

#[test]
fn a_signal_interrupts_a_bare_wait_that_ends_on_signals() {
    a_signal_ends_the_wait::<BareMutex>("signals");
}

/// A wait with a timeout ends the same way: `Interrupted`, not `TimedOut`.
#[test]
fn a_signal_interrupts_a_timed_wait_that_ends_on_signals() {
    a_signal_ends_the_wait::<SharedMutex<u64>>("signals-timed");
    a_signal_ends_the_wait::<SharedSemaphore>("signals-timed");
}

#[test]
fn a_signal_does_not_end_a_plain_mutex_wait() {
    a_signal_does_not_end_a_plain_wait::<SharedMutex<u64>>("plain");
}

#[test]
fn a_signal_does_not_end_a_plain_permit_wait() {
    a_signal_does_not_end_a_plain_wait::<SharedSemaphore>("plain");
}

#[test]
fn a_signal_does_not_end_a_plain_bare_wait() {
    a_signal_does_not_end_a_plain_wait::<BareMutex>("plain");
}

/// `ending_on_signals` with a handler installed with `SA_RESTART`: the
/// kernel restarts the sleep, so the wait goes on (as documented).
#[test]
fn a_handler_with_sa_restart_does_not_end_a_wait_that_ends_on_signals() {
    a_signal_does_not_end_a_plain_wait::<SharedMutex<u64>>("restart");
}
