//! In-process checks of async permits (the lane's hand-offs with several
//! slots held at once).

use crate::{Acquired, SharedSemaphore};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::holder::test_runtime as runtime;

#[test]
fn tasks_share_the_permits_and_never_exceed_them() {
    let dir = tempfile::tempdir().unwrap();
    let sem = Arc::new(SharedSemaphore::open(dir.path().join("s"), 3).unwrap());
    let inside = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let rt = runtime();
    // The lane's one holder thread holds several permits at once.
    let all: Vec<_> = (0..3)
        .map(|_| rt.block_on(sem.acquire_async()).unwrap())
        .collect();
    assert_eq!(sem.status().available, 0);
    drop(all);
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let (sem, inside, most) = (sem.clone(), inside.clone(), most.clone());
            rt.spawn(async move {
                for _ in 0..40 {
                    let p = match sem.acquire_async().await.unwrap() {
                        Acquired::Clean(p) => p,
                        Acquired::OwnerDied(_) => panic!("nobody died"),
                    };
                    let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(n, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    inside.fetch_sub(1, Ordering::SeqCst);
                    drop(p);
                }
            })
        })
        .collect();
    for t in tasks {
        rt.block_on(t).unwrap();
    }
    let most = most.load(Ordering::SeqCst);
    assert!(most <= 3, "{most} permits at once");
    crate::holder::wait_lanes_idle();
    assert_eq!(sem.status().available, 3);
}

#[test]
fn dropped_futures_leave_every_permit_free() {
    let dir = tempfile::tempdir().unwrap();
    let sem = Arc::new(SharedSemaphore::open(dir.path().join("s"), 2).unwrap());
    let rt = runtime();
    let tasks: Vec<_> = (0..6u64)
        .map(|t| {
            let sem = sem.clone();
            rt.spawn(async move {
                for i in 0..200u64 {
                    let d = std::time::Duration::from_micros((i * 11 + t * 5) % 40);
                    if let Ok(r) = tokio::time::timeout(d, sem.acquire_async()).await {
                        let p = r.unwrap().recover_with(|_| {});
                        tokio::task::yield_now().await;
                        drop(p);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        rt.block_on(t).unwrap();
    }
    crate::holder::wait_lanes_idle();
    let s = sem.status();
    assert_eq!((s.available, s.held), (2, 0));
}

#[test]
fn a_dead_permit_holder_is_reported_to_a_task() {
    let dir = tempfile::tempdir().unwrap();
    let sem = SharedSemaphore::open(dir.path().join("s"), 1).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| std::mem::forget(sem.acquire().unwrap().recover_with(|_| {})));
    });
    let rt = runtime();
    let Acquired::OwnerDied(r) = rt.block_on(sem.acquire_async()).unwrap() else {
        panic!("the permit's holder died")
    };
    assert_eq!(r.guard().slot(), 0);
    drop(r.mark_consistent());
    crate::holder::wait_lanes_idle();
    assert!(matches!(sem.try_acquire().unwrap(), Acquired::Clean(_)));
}

#[test]
fn permits_and_their_futures_are_send() {
    fn send<T: Send + Sync>() {}
    send::<crate::AsyncPermit<'static>>();
    send::<crate::Recovery<crate::AsyncPermit<'static>>>();
    fn send_unpin<T: Send + Unpin>() {}
    send_unpin::<crate::AcquireFuture<'static>>();
}
