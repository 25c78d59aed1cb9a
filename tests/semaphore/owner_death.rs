//! Owner death with the semaphore: a killed holder's permit comes back
//! reported, to a caller, a blocked waiter in this or another process, and
//! every waiter a dead thread's permits can serve; abandoned recoveries lose
//! only their permit.

use crate::common::roles::{LONG, PERMITS_ENV};
use crate::common::{Kid, temp_path};
use crate::{N, gettid, holders, in_futex_waitv, process_in_futex_waitv, wait_until};
use robust_mutex::{Acquired, LockError, LockState, OpenOptions, SharedSemaphore};

#[test]
fn a_killed_holders_permit_comes_back_as_owner_died() {
    let (_dir, path) = temp_path("sem");
    let sem = SharedSemaphore::open(&path, N).unwrap();
    let mut kids = holders(&path, N);
    let s = sem.status();
    assert_eq!((s.available, s.held, s.owner_dead), (0, N, 0));
    assert_eq!(s.holders.len(), N);
    assert!(s.holders.iter().all(|o| o.label == "worker"));
    let mut pids: Vec<u32> = s.holders.iter().map(|o| o.pid).collect();
    pids.sort_unstable();
    let mut kid_pids: Vec<u32> = kids.iter().map(Kid::pid).collect();
    kid_pids.sort_unstable();
    assert_eq!(pids, kid_pids, "status names every holder");
    assert!(matches!(sem.try_acquire(), Err(LockError::WouldBlock)));

    let victim = kids.remove(1);
    let pid = victim.pid();
    victim.kill();
    let s = sem.status();
    assert_eq!((s.available, s.held, s.owner_dead), (0, N - 1, 1));
    let dead = s
        .permits
        .iter()
        .find(|p| p.state == LockState::OwnerDead)
        .unwrap();
    assert_eq!(dead.owner.as_ref().unwrap().pid, pid);

    let Acquired::OwnerDied(r) = sem.try_acquire().unwrap() else {
        panic!("expected the dead holder's permit, reported");
    };
    let prev = r.previous_owner().unwrap();
    assert_eq!((prev.pid, prev.label.as_str()), (pid, "worker"));
    assert_eq!(r.guard().slot(), dead.slot);
    let g = r.mark_consistent();
    assert_eq!(g.slot(), dead.slot);
    let s = sem.status();
    assert_eq!((s.available, s.held, s.owner_dead), (0, N, 0));
    assert!(s.holders.iter().any(|o| o.pid == std::process::id()));
    assert!(matches!(sem.try_acquire(), Err(LockError::WouldBlock)));

    drop(g);
    let s = sem.status();
    assert_eq!((s.available, s.held, s.owner_dead), (1, N - 1, 0));
    assert_eq!((s.counters.owner_deaths, s.counters.recoveries), (1, 1));
    assert_eq!(s.counters.acquisitions, N as u64 + 1);
    let p = sem.try_acquire().unwrap();
    assert!(!p.owner_died(), "clean after recovery");
    drop(p);
    assert_eq!(sem.status().counters.acquisitions, N as u64 + 2);
}

#[test]
fn a_blocked_acquire_gets_the_permit_of_a_holder_that_is_killed() {
    let (_dir, path) = temp_path("sem");
    let sem = SharedSemaphore::open(&path, N).unwrap();
    let mut kids = holders(&path, N);
    let victim = kids.pop().unwrap();
    let victim_pid = victim.pid();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            tx.send(gettid()).unwrap();
            let p = sem.acquire().unwrap();
            let prev = match &p {
                Acquired::OwnerDied(r) => r.previous_owner().map(|o| o.pid),
                Acquired::Clean(_) => None,
            };
            let g = p.recover_with(|_| {});
            (prev, g.slot())
        });
        let tid = rx.recv().unwrap();
        wait_until("the waiter sleeps", || {
            in_futex_waitv(std::process::id(), tid)
        });
        // It announced itself on every permit.
        let st = sem.status();
        assert!(st.permits.iter().all(|p| p.lock_word & 0x8000_0000 != 0));
        assert_eq!((st.available, st.held), (0, N));
        victim.kill();
        let (prev, slot) = waiter.join().unwrap();
        assert_eq!(prev, Some(victim_pid), "the dead holder's permit, reported");
        assert_eq!(sem.status().permits[slot].state, LockState::Unlocked);
    });
    let s = sem.status();
    assert_eq!((s.available, s.held, s.owner_dead), (1, N - 1, 0));
    assert_eq!(s.counters.contended, 1, "the waiter slept");
}

/// The regression test for lost wake-ups: one thread holding both permits
/// dies; the kernel wakes one sleeper per permit, possibly the same one
/// twice. Both sleepers must get a permit.
#[test]
fn two_waiters_both_get_the_permits_of_one_dead_thread() {
    for round in 0..5 {
        let (_dir, path) = temp_path("sem");
        let sem = SharedSemaphore::open(&path, 2).unwrap();
        let mut kid = Kid::spawn_env("sem_hold_all", &path, &[(PERMITS_ENV, "2")]);
        kid.expect("held");
        let (tx, rx) = std::sync::mpsc::channel();
        let all_got = std::sync::Barrier::new(3);
        std::thread::scope(|s| {
            let waiters: Vec<_> = (0..2)
                .map(|_| {
                    let (tx, sem, all_got) = (tx.clone(), &sem, &all_got);
                    s.spawn(move || {
                        tx.send(gettid()).unwrap();
                        let got = match sem.acquire_timeout(LONG) {
                            Ok(p) => Some(p.recover_with(|_| {})),
                            Err(LockError::TimedOut) => None,
                            Err(e) => panic!("{e}"),
                        };
                        // Hold it until both have answered.
                        let ok = got.is_some();
                        all_got.wait();
                        ok
                    })
                })
                .collect();
            for tid in [rx.recv().unwrap(), rx.recv().unwrap()] {
                wait_until("both waiters sleep", || {
                    in_futex_waitv(std::process::id(), tid)
                });
            }
            kid.kill();
            all_got.wait();
            let got: Vec<bool> = waiters.into_iter().map(|w| w.join().unwrap()).collect();
            assert_eq!(
                got,
                [true, true],
                "round {round}: a waiter slept beside a free permit"
            );
        });
        let s = sem.status();
        assert_eq!((s.available, s.counters.owner_deaths), (2, 2));
    }
}

#[test]
fn a_waiter_in_another_process_gets_a_dead_holders_permit() {
    let (_dir, path) = temp_path("sem");
    let sem = SharedSemaphore::open(&path, N).unwrap();
    let mut kids = holders(&path, N);
    let mut waiter = Kid::spawn("sem_wait", &path);
    wait_until("the waiting process sleeps", || {
        process_in_futex_waitv(waiter.pid())
    });
    let victim = kids.remove(0);
    let pid = victim.pid();
    victim.kill();
    let got = waiter.expect("got");
    assert!(got.starts_with(&format!("died:{pid}:")), "{got}");
    let s = sem.status();
    assert_eq!((s.held, s.owner_dead, s.counters.recoveries), (N, 0, 1));
    assert!(s.holders.iter().any(|o| o.pid == waiter.pid()));
}

#[test]
fn permits_of_one_thread_and_abandoned_recoveries() {
    let (_dir, path) = temp_path("sem");
    let sem = SharedSemaphore::open(&path, 2).unwrap();
    let a = sem.acquire().unwrap().recover_with(|_| {});
    let b = sem.acquire().unwrap().recover_with(|_| {});
    assert_ne!(a.slot(), b.slot(), "one thread may hold several permits");
    // All permits are this thread's: waiting would never end.
    assert!(matches!(sem.acquire(), Err(LockError::Deadlock)));
    assert!(matches!(sem.try_acquire(), Err(LockError::WouldBlock)));
    drop((a, b));

    // A thread dies holding a permit; its recovery is abandoned: that permit
    // is lost, the other still works.
    let lost_one = || {
        // An explicit join is pthread_join: it returns once the kernel has
        // walked the thread's robust list (the end of a scope does not wait
        // that long).
        std::thread::scope(|s| {
            s.spawn(|| std::mem::forget(sem.acquire().unwrap()))
                .join()
                .unwrap();
        });
        assert_eq!(sem.status().owner_dead, 1);
        loop {
            match sem.try_acquire().unwrap() {
                Acquired::OwnerDied(r) => {
                    let slot = r.guard().slot();
                    drop(r);
                    return slot;
                }
                Acquired::Clean(g) => drop(g),
            }
        }
    };
    let lost = lost_one();
    let s = sem.status();
    assert_eq!((s.not_recoverable, s.available), (1, 1));
    assert_eq!(s.permits[lost].state, LockState::NotRecoverable);
    for _ in 0..4 {
        let g = sem.try_acquire().unwrap();
        assert_ne!(g.guard().slot(), lost, "a lost permit is never handed out");
        assert!(matches!(sem.try_acquire(), Err(LockError::WouldBlock)));
        assert!(matches!(sem.acquire(), Err(LockError::Deadlock)));
        drop(g);
    }

    // Lose the other one too: nothing is left.
    lost_one();
    let s = sem.status();
    assert_eq!((s.not_recoverable, s.available), (2, 0));
    assert!(matches!(sem.try_acquire(), Err(LockError::NotRecoverable)));
    assert!(matches!(sem.acquire(), Err(LockError::NotRecoverable)));
    assert_eq!((s.counters.owner_deaths, s.counters.recoveries), (2, 0));

    // Replacing the file brings every permit back (for new opens).
    let fresh = SharedSemaphore::open_with(&path, 2, OpenOptions::new().replace(true)).unwrap();
    assert_eq!(fresh.status().available, 2);
}
