//! Lock semantics: mutual exclusion across processes, Deadlock on relock,
//! WouldBlock, TimedOut, one mapping per file per process.

use crate::common::{Kid, temp_path};
use robust_mutex::{Acquired, LockError, LockState, OpenOptions, SharedMutex};
use std::time::{Duration, Instant};

#[test]
fn processes_never_overlap_and_never_lose_an_update() {
    let (_dir, path) = temp_path("m");
    let m = SharedMutex::<[u64; 2]>::open(&path).unwrap();
    let mut kids: Vec<Kid> = (0..4).map(|_| Kid::spawn("increment", &path)).collect();
    for k in &mut kids {
        k.tell("go");
    }
    for mut k in kids {
        k.expect("done");
        k.wait_ok();
    }
    let g = m.lock_or_recover(|_| {}).unwrap();
    assert_eq!(*g, [8000, 8000]);
    drop(g);
    let c = m.status().counters;
    assert_eq!(c.acquisitions, 8001);
    assert_eq!(c.owner_deaths, 0);
}

#[test]
fn relocking_on_the_same_thread_is_deadlock_not_a_hang() {
    let (_dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    let g = m.lock().unwrap();
    assert!(matches!(m.lock(), Err(LockError::Deadlock)));
    assert!(matches!(m.try_lock(), Err(LockError::Deadlock)));
    assert!(matches!(
        m.lock_timeout(Duration::from_secs(60)),
        Err(LockError::Deadlock)
    ));
    drop(g);
    assert!(matches!(m.try_lock().unwrap(), Acquired::Clean(_)));
}

#[test]
fn try_lock_and_timeout_against_another_process() {
    let (_dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    let mut kid = Kid::spawn("hold_until_told", &path);
    kid.expect("locked");
    assert!(matches!(m.try_lock(), Err(LockError::WouldBlock)));
    let s = m.status();
    assert_eq!(s.state, LockState::Locked);
    assert_eq!(s.owner.as_ref().unwrap().pid, kid.pid());

    let t = Instant::now();
    assert!(matches!(
        m.lock_timeout(Duration::from_millis(200)),
        Err(LockError::TimedOut)
    ));
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(200),
        "returned early: {waited:?}"
    );
    assert!(waited < Duration::from_secs(10), "far too late: {waited:?}");

    kid.tell("release");
    kid.expect("released");
    assert!(matches!(
        m.lock_timeout(Duration::from_secs(30)).unwrap(),
        Acquired::Clean(_)
    ));
}

#[test]
fn two_handles_in_one_process_share_one_mutex() {
    let (_dir, path) = temp_path("m");
    let a = SharedMutex::<u64>::open(&path).unwrap();
    let b = OpenOptions::new().open::<u64>(&path).unwrap();
    let mut g = a.lock().unwrap().recover_with(|_| {});
    *g = 5;
    // Same thread, same futex: ERRORCHECK sees the relock through either handle.
    assert!(matches!(b.try_lock(), Err(LockError::Deadlock)));
    drop(g);
    assert_eq!(*b.lock_or_recover(|_| {}).unwrap(), 5);
}

#[test]
fn a_forgotten_guard_keeps_the_mapping_and_the_lock() {
    let (_dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    std::mem::forget(m.lock().unwrap());
    drop(m);
    // The lock is still this thread's: a new handle sees it as held by us
    // (that the mapping itself stayed is checked by a unit test in mutex.rs).
    let again = SharedMutex::<u64>::open(&path).unwrap();
    assert!(matches!(again.try_lock(), Err(LockError::Deadlock)));
    assert_eq!(again.status().state, LockState::Locked);
}

#[test]
fn guards_are_usable_from_many_threads_in_turn() {
    let (_dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..1000 {
                    *m.lock_or_recover(|_| {}).unwrap() += 1;
                }
            });
        }
    });
    assert_eq!(*m.lock_or_recover(|_| {}).unwrap(), 4000);
}
