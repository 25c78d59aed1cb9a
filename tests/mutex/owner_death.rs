//! Owner death: real processes, real SIGKILLs, and threads that exit holding
//! the lock. The next locker must get `Acquired::OwnerDied` with the value as
//! the dead owner left it.

use crate::common::roles::{HELD_LABEL, HELD_VALUE};
use crate::common::{Kid, temp_path};
use robust_mutex::{Acquired, LockError, LockState, SharedMutex};
use std::time::Duration;

/// A mutex whose holder (a child process) was SIGKILLed while holding it.
fn owner_died_mutex() -> (tempfile::TempDir, SharedMutex<u64>, u32) {
    let (dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    let mut kid = Kid::spawn("hold", &path);
    kid.expect("locked");
    let pid = kid.pid();
    kid.kill();
    (dir, m, pid)
}

#[test]
fn sigkilled_holder_gives_owner_died_with_the_value_it_left() {
    let (_dir, m, pid) = owner_died_mutex();
    assert_eq!(m.status().state, LockState::OwnerDead);
    let Acquired::OwnerDied(r) = m.lock().unwrap() else {
        panic!("expected OwnerDied");
    };
    assert_eq!(*r, HELD_VALUE, "the dead owner's write must be visible");
    let prev = r.previous_owner().expect("the dead owner's record");
    assert_eq!(prev.pid, pid);
    assert_eq!(prev.label, HELD_LABEL);
    let g = r.mark_consistent();
    drop(g);
    let c = m.status().counters;
    assert_eq!(c.owner_deaths, 1);
    assert_eq!(c.recoveries, 1);
}

#[test]
fn mark_consistent_gives_a_clean_lock_afterwards_in_every_process() {
    let (_dir, m, _) = owner_died_mutex();
    let g = m
        .lock_or_recover(|v| {
            assert_eq!(*v, HELD_VALUE);
            *v = 0;
        })
        .unwrap();
    drop(g);
    assert!(matches!(m.lock().unwrap(), Acquired::Clean(_)));
    assert_eq!(m.status().state, LockState::Unlocked);
    Kid::spawn("lock_clean", m.path()).wait_ok();
}

#[test]
fn dropped_recovery_makes_it_not_recoverable_for_everyone() {
    let (_dir, m, _) = owner_died_mutex();
    match m.lock().unwrap() {
        Acquired::OwnerDied(r) => drop(r),
        Acquired::Clean(_) => panic!("expected OwnerDied"),
    }
    assert_eq!(m.status().state, LockState::NotRecoverable);
    assert!(matches!(m.lock(), Err(LockError::NotRecoverable)));
    assert!(matches!(
        m.lock_timeout(Duration::from_millis(10)),
        Err(LockError::NotRecoverable)
    ));
    let mut kid = Kid::spawn("expect_not_recoverable", m.path());
    kid.expect("ok");
    kid.wait_ok();
}

/// glibc's pthread_mutex_trylock leaves a not-recoverable mutex locked by the
/// caller; our try_lock must not.
#[test]
fn try_lock_on_not_recoverable_does_not_strand_the_lock_word() {
    let (_dir, m, _) = owner_died_mutex();
    if let Acquired::OwnerDied(r) = m.lock().unwrap() {
        drop(r);
    }
    for _ in 0..3 {
        assert!(matches!(m.try_lock(), Err(LockError::NotRecoverable)));
    }
    let s = m.status();
    assert_eq!(
        s.lock_word & 0x3fff_ffff,
        0,
        "lock word stranded: {:#x}",
        s.lock_word
    );
    assert_eq!(s.state, LockState::NotRecoverable);
}

#[test]
fn thread_that_exits_holding_the_lock_gives_owner_died() {
    let (_dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut g = m.lock_or_recover(|_| {}).unwrap();
            *g = 7;
            std::mem::forget(g);
        });
    });
    let Acquired::OwnerDied(r) = m.lock().unwrap() else {
        panic!("expected OwnerDied after the thread exited holding the lock");
    };
    assert_eq!(*r, 7);
    assert_eq!(r.previous_owner().unwrap().pid, std::process::id());
    drop(r.mark_consistent());
}

#[test]
fn a_waiter_blocked_in_lock_gets_owner_died_when_the_holder_is_killed() {
    let (_dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    let mut kid = Kid::spawn("hold", &path);
    kid.expect("locked");
    std::thread::scope(|s| {
        let waiter = s.spawn(|| match m.lock().unwrap() {
            Acquired::OwnerDied(r) => {
                let v = *r;
                drop(r.mark_consistent());
                v
            }
            Acquired::Clean(_) => panic!("expected OwnerDied"),
        });
        // The FUTEX_WAITERS bit says the waiter sleeps in the kernel.
        while m.status().lock_word & 0x8000_0000 == 0 {
            std::thread::yield_now();
        }
        kid.kill();
        assert_eq!(waiter.join().unwrap(), HELD_VALUE);
    });
}

#[test]
fn every_process_sees_the_kill_of_a_holder_exactly_once() {
    let (_dir, m, _) = owner_died_mutex();
    let first = m.lock().unwrap();
    assert!(first.owner_died());
    drop(first.recover_with(|v| *v = 1));
    for _ in 0..3 {
        assert!(!m.lock().unwrap().owner_died());
    }
    assert_eq!(m.status().counters.owner_deaths, 1);
}

/// Found by fuzzing: a zero-sized value lies exactly at the end of the
/// mapping, and recovering it must not trip a bounds check.
#[test]
fn recovering_a_unit_mutex_touches_no_byte_past_the_mapping() {
    let (_dir, path) = temp_path("unit");
    let m = SharedMutex::<()>::open(&path).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| std::mem::forget(m.lock().unwrap()));
    });
    let mut repaired = false;
    drop(m.lock_or_recover(|()| repaired = true).unwrap());
    assert!(repaired);
}
