//! Acquiring and waiting without deaths: released permits reach blocked
//! waiters, cancelled waits change nothing, a crowd of waiters never sleeps
//! beside a free permit.

use crate::common::roles::{LONG, PERMITS_ENV};
use crate::common::{Kid, temp_path};
use crate::{N, essentials, gettid, holders, in_futex_waitv, wait_until};
use robust_mutex::{CancelToken, LockError, SemaphoreStatus, SharedSemaphore};
use std::time::Duration;

#[test]
fn a_blocked_acquire_gets_a_released_permit() {
    let (_dir, path) = temp_path("sem");
    let sem = SharedSemaphore::open(&path, 2).unwrap();
    let mut other = Kid::spawn_env("sem_hold", &path, &[(PERMITS_ENV, "2")]);
    other.expect("slot");
    let mut kid = Kid::spawn_env("sem_hold_until_told", &path, &[(PERMITS_ENV, "2")]);
    let slot: usize = kid.expect("slot").parse().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            tx.send(gettid()).unwrap();
            let p = sem.acquire().unwrap();
            (p.owner_died(), p.guard().slot())
        });
        let tid = rx.recv().unwrap();
        wait_until("the waiter sleeps", || {
            in_futex_waitv(std::process::id(), tid)
        });
        kid.tell("release");
        assert_eq!(waiter.join().unwrap(), (false, slot));
    });
}

#[test]
fn a_cancelled_acquire_changes_nothing() {
    let (_dir, path) = temp_path("sem");
    let sem = SharedSemaphore::open(&path, N).unwrap();
    let _kids = holders(&path, N);
    let before = sem.status();
    let cancel = CancelToken::new();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            tx.send(gettid()).unwrap();
            sem.acquire_cancellable(&cancel, None).map(|_| ())
        });
        let tid = rx.recv().unwrap();
        wait_until("the waiter sleeps", || {
            in_futex_waitv(std::process::id(), tid)
        });
        cancel.cancel();
        assert!(matches!(waiter.join().unwrap(), Err(LockError::Cancelled)));
    });
    assert_eq!(essentials(&sem.status()), essentials(&before));
    // A cancelled token cancels at once, even with a permit free.
    assert!(matches!(
        sem.acquire_cancellable(&cancel, None),
        Err(LockError::Cancelled)
    ));
    cancel.reset();
    assert!(matches!(
        sem.acquire_cancellable(&cancel, Some(Duration::from_millis(20))),
        Err(LockError::TimedOut)
    ));
    assert!(matches!(
        sem.acquire_timeout(Duration::from_millis(20)),
        Err(LockError::TimedOut)
    ));
    assert_eq!(essentials(&sem.status()), essentials(&before));
}

#[test]
fn one_waiter_per_free_permit_in_a_crowd() {
    // Many permits, more waiting threads than permits, permits handed round:
    // every acquire finishes (no waiter sleeps beside a free permit).
    let (_dir, path) = temp_path("sem");
    let sem = SharedSemaphore::open(&path, 4).unwrap();
    let counter = std::sync::atomic::AtomicUsize::new(0);
    let inside = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..500 {
                    let p = sem.acquire_timeout(LONG).unwrap().recover_with(|_| {});
                    let now = inside.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    assert!(now <= 4, "{now} holders of 4 permits");
                    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    inside.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    drop(p);
                }
            });
        }
    });
    assert_eq!(counter.into_inner(), 4000);
    let s = sem.status();
    assert_eq!((s.available, s.counters.acquisitions), (4, 4000));
}

#[test]
fn handles_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<SharedSemaphore>();
    send_sync::<SemaphoreStatus>();
}
