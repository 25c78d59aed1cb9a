//! Issue 11's accidents for permits: a stuck permit ends a wait with
//! `Stuck` (only when no live holder could free a permit), a permit counts
//! against the held-lock bound, a truncated file is reported after a wait.

use crate::common::{Kid, temp_path};
use crate::wait_until;
use robust_mutex::{CancelToken, LockError, SharedSemaphore};
use std::time::Duration;

#[test]
fn every_permit_stuck_ends_the_wait_with_stuck() {
    let (_dir, path) = temp_path("sem");
    let sem = SharedSemaphore::open(&path, 1).unwrap();
    let mut kid = Kid::spawn("sem_stuck", &path);
    kid.expect("unmapped");
    kid.wait_ok();
    assert_eq!(sem.status().stuck, 1);
    for r in [
        sem.acquire().map(drop),
        sem.acquire_timeout(Duration::from_secs(10)).map(drop),
        sem.acquire_cancellable(&CancelToken::new(), None).map(drop),
    ] {
        match r {
            Err(
                e @ LockError::Stuck {
                    permit: Some(0), ..
                },
            ) => {
                assert!(e.to_string().contains("replace"), "{e}")
            }
            other => panic!("expected Stuck, got {other:?}"),
        }
    }
    assert!(matches!(sem.try_acquire(), Err(LockError::WouldBlock)));
}

#[test]
fn a_live_holder_keeps_a_waiter_waiting_beside_a_stuck_permit() {
    let (_dir, path) = temp_path("sem");
    let sem = SharedSemaphore::open(&path, 2).unwrap();
    // Permit 0 goes stuck; permit 1 is held by a live process.
    let env = [(crate::common::roles::PERMITS_ENV, "2")];
    let mut stuck = Kid::spawn_env("sem_stuck", &path, &env);
    stuck.expect("unmapped");
    stuck.wait_ok();
    let mut live = Kid::spawn_env("sem_hold", &path, &env);
    live.expect("slot");
    assert_eq!(sem.status().stuck, 1);
    // A wait longer than a slice is not cut short by the stuck permit.
    assert!(matches!(
        sem.acquire_timeout(Duration::from_millis(1200)),
        Err(LockError::TimedOut)
    ));
    live.kill();
    wait_until("the live holder's permit is back", || {
        sem.status().owner_dead == 1
    });
    assert!(sem.acquire().unwrap().owner_died());
}
