//! The crash-safe counting semaphore: real holder processes, real SIGKILLs,
//! synchronised by pipes and by watching waiters sleep in `futex_waitv`
//! (`/proc/<pid>/task/<tid>/syscall`), never by sleeping.

mod common;

use common::{Kid, child_role, hang, listen, say, snapshot, temp_path};
use robust_mutex::{
    CancelToken, Error, LockError, LockState, OpenOptions, Permit, SemaphoreStatus, SharedMutex,
    SharedSemaphore,
};
use std::path::Path;
use std::time::{Duration, Instant};

const N: usize = 3;
/// The generic syscall number of `futex_waitv` (the same on every arch).
const SYS_FUTEX_WAITV: &str = "449";
/// Upper bound for anything that should happen at once.
const LONG: Duration = Duration::from_secs(10);

#[test]
fn child_main() {
    let Some((role, path)) = child_role() else {
        return;
    };
    let permits = std::env::var("RM_PERMITS").map_or(N, |s| s.parse().unwrap());
    let sem = SharedSemaphore::open(&path, permits).unwrap();
    match role.as_str() {
        // Take one permit, label it, say which, wait to be killed.
        "hold" => {
            let mut p = sem.acquire().unwrap().recover_with(|| {});
            p.set_label("worker");
            say(format!("slot={}", p.slot()));
            hang();
        }
        // One thread takes every permit.
        "hold_all" => {
            let held: Vec<_> = (0..permits)
                .map(|_| sem.try_acquire().unwrap().recover_with(|| {}))
                .collect();
            say(format!("held={}", held.len()));
            hang();
        }
        // Take a permit, release it when told.
        "hold_then_release" => {
            let p = sem.acquire().unwrap().recover_with(|| {});
            say(format!("slot={}", p.slot()));
            listen();
            drop(p);
            say("released");
            hang();
        }
        // Wait for a permit; report how it came.
        "wait" => {
            let p = sem.acquire_timeout(LONG).unwrap();
            let how = match &p {
                Permit::Clean(_) => "clean".to_owned(),
                Permit::OwnerDied(r) => format!("died:{}", r.previous_owner().unwrap().pid),
            };
            let g = p.recover_with(|| {});
            say(format!("got={how}:{}", g.slot()));
            hang();
        }
        other => panic!("unknown role {other}"),
    }
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
            let mut k = Kid::spawn("hold", path);
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

    let Permit::OwnerDied(r) = sem.try_acquire().unwrap() else {
        panic!("expected the dead holder's permit, reported");
    };
    let prev = r.previous_owner().unwrap();
    assert_eq!((prev.pid, prev.label.as_str()), (pid, "worker"));
    assert_eq!(r.slot(), dead.slot);
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
                Permit::OwnerDied(r) => r.previous_owner().map(|o| o.pid),
                Permit::Clean(_) => None,
            };
            let g = p.recover_with(|| {});
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

#[test]
fn a_blocked_acquire_gets_a_released_permit() {
    let (_dir, path) = temp_path("sem");
    let sem = SharedSemaphore::open(&path, 2).unwrap();
    let mut other = Kid::spawn_env("hold", &path, &[("RM_PERMITS", "2")]);
    other.expect("slot");
    let mut kid = Kid::spawn_env("hold_then_release", &path, &[("RM_PERMITS", "2")]);
    let slot: usize = kid.expect("slot").parse().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            tx.send(gettid()).unwrap();
            let p = sem.acquire().unwrap();
            (p.owner_died(), p.slot())
        });
        let tid = rx.recv().unwrap();
        wait_until("the waiter sleeps", || {
            in_futex_waitv(std::process::id(), tid)
        });
        kid.tell("release");
        assert_eq!(waiter.join().unwrap(), (false, slot));
    });
}

/// The regression test for lost wake-ups: one thread holding both permits
/// dies; the kernel wakes one sleeper per permit, possibly the same one
/// twice. Both sleepers must get a permit.
#[test]
fn two_waiters_both_get_the_permits_of_one_dead_thread() {
    for round in 0..5 {
        let (_dir, path) = temp_path("sem");
        let sem = SharedSemaphore::open(&path, 2).unwrap();
        let mut kid = Kid::spawn_env("hold_all", &path, &[("RM_PERMITS", "2")]);
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
                            Ok(p) => Some(p.recover_with(|| {})),
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
    let mut waiter = Kid::spawn("wait", &path);
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
fn permits_of_one_thread_and_abandoned_recoveries() {
    let (_dir, path) = temp_path("sem");
    let sem = SharedSemaphore::open(&path, 2).unwrap();
    let a = sem.acquire().unwrap().recover_with(|| {});
    let b = sem.acquire().unwrap().recover_with(|| {});
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
                Permit::OwnerDied(r) => {
                    let slot = r.slot();
                    drop(r);
                    return slot;
                }
                Permit::Clean(g) => drop(g),
            }
        }
    };
    let lost = lost_one();
    let s = sem.status();
    assert_eq!((s.not_recoverable, s.available), (1, 1));
    assert_eq!(s.permits[lost].state, LockState::NotRecoverable);
    for _ in 0..4 {
        let g = sem.try_acquire().unwrap();
        assert_ne!(g.slot(), lost, "a lost permit is never handed out");
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

#[test]
fn kinds_permit_counts_and_creation_policies() {
    let (dir, path) = temp_path("sem");
    SharedSemaphore::open(&path, 2).unwrap();
    let before = snapshot(&path);

    let e = SharedSemaphore::open(&path, 3).unwrap_err();
    assert!(
        matches!(
            e,
            Error::PermitMismatch {
                file: 2,
                asked: 3,
                ..
            }
        ),
        "{e}"
    );
    let e = SharedMutex::<u64>::open(&path).unwrap_err();
    assert!(
        matches!(
            e,
            Error::KindMismatch {
                found: "semaphore",
                ..
            }
        ),
        "{e}"
    );
    let e = OpenOptions::new().open_reentrant::<u64>(&path).unwrap_err();
    assert!(matches!(e, Error::KindMismatch { .. }), "{e}");
    let e = SharedSemaphore::open_with(&path, 2, OpenOptions::new().create_new(true)).unwrap_err();
    assert!(matches!(e, Error::AlreadyExists { .. }), "{e}");
    assert_eq!(snapshot(&path), before, "a rejected file is left untouched");

    let m = dir.path().join("mutex");
    SharedMutex::<u64>::open(&m).unwrap();
    let mutex_before = snapshot(&m);
    let e = SharedSemaphore::open(&m, 2).unwrap_err();
    assert!(
        matches!(e, Error::KindMismatch { found: "mutex", .. }),
        "{e}"
    );
    assert_eq!(snapshot(&m), mutex_before);

    let missing = dir.path().join("missing");
    let e = SharedSemaphore::open_with(&missing, 2, &OpenOptions::new()).unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    assert!(!missing.exists(), "open existing creates nothing");

    let created =
        SharedSemaphore::open_with(&missing, 4, OpenOptions::new().create_new(true)).unwrap();
    assert_eq!(
        (created.permits(), created.file_info().kind),
        (4, "semaphore")
    );
    let again = SharedSemaphore::open_with(&missing, 4, &OpenOptions::new()).unwrap();
    let held = again.try_acquire().unwrap();
    assert_eq!(created.status().held, 1, "one semaphore, two handles");
    drop(held);

    // Replace: a new file with another permit count over the old one.
    let fresh = SharedSemaphore::open_with(&path, 5, OpenOptions::new().replace(true)).unwrap();
    assert_eq!(fresh.status().total, 5);
    assert!(matches!(
        SharedSemaphore::open(&path, 2),
        Err(Error::PermitMismatch { file: 5, .. })
    ));
    // Replace never touches someone else's file.
    let foreign = dir.path().join("foreign");
    std::fs::write(&foreign, b"not ours").unwrap();
    let e = SharedSemaphore::open_with(&foreign, 2, OpenOptions::new().replace(true)).unwrap_err();
    assert!(matches!(e, Error::ForeignFile { .. }), "{e}");
    assert_eq!(std::fs::read(&foreign).unwrap(), b"not ours");

    for bad in [0, 128] {
        let e = SharedSemaphore::open(dir.path().join("bad"), bad).unwrap_err();
        assert!(matches!(e, Error::InvalidOptions { .. }), "{e}");
    }
    assert!(!dir.path().join("bad").exists());
    assert!(SharedSemaphore::open(dir.path().join("max"), 127).is_ok());

    SharedSemaphore::remove(&path).unwrap();
    assert!(!path.exists());
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
                    let p = sem.acquire_timeout(LONG).unwrap().recover_with(|| {});
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

#[test]
fn reset_refuses_a_semaphore_and_points_to_replace() {
    let (_dir, path) = common::temp_path("sem-reset");
    robust_mutex::SharedSemaphore::open(&path, 2).unwrap();
    let before = common::snapshot(&path);
    let e = robust_mutex::reset(&path, true).unwrap_err();
    assert!(
        matches!(e, robust_mutex::Error::InvalidOptions { .. }),
        "{e}"
    );
    assert!(e.to_string().contains("replace"));
    assert_eq!(common::snapshot(&path), before);
}
