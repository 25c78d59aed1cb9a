//! The crash-safe counting semaphore: real holder processes, real SIGKILLs.

mod common;

use common::{Kid, child_role, hang, say, temp_path};
use robust_mutex::{
    CancelToken, Error, LockError, OpenOptions, Permit, SharedMutex, SharedSemaphore,
};

const N: usize = 3;

#[test]
fn child_main() {
    let Some((role, path)) = child_role() else {
        return;
    };
    let sem = SharedSemaphore::open(&path, N).unwrap();
    match role.as_str() {
        "hold" => {
            let mut p = sem.acquire().unwrap().recover_with(|| {});
            p.set_label("worker");
            say(format!("slot={}", p.slot()));
            hang();
        }
        other => panic!("unknown role {other}"),
    }
}

fn holders(path: &std::path::Path, n: usize) -> Vec<Kid> {
    (0..n)
        .map(|_| {
            let mut k = Kid::spawn("hold", path);
            k.expect("slot");
            k
        })
        .collect()
}

#[test]
fn a_killed_holders_permit_comes_back_as_owner_died() {
    let (_dir, path) = temp_path("sem");
    let sem = SharedSemaphore::open(&path, N).unwrap();
    let mut kids = holders(&path, N);
    let s = sem.status();
    assert_eq!((s.available, s.holders.len()), (0, N));
    assert!(s.holders.iter().all(|o| o.label == "worker"));
    assert!(matches!(sem.try_acquire(), Err(LockError::WouldBlock)));

    let victim = kids.remove(1);
    let pid = victim.pid();
    victim.kill();
    let s = sem.status();
    assert_eq!((s.owner_dead, s.holders.len()), (1, N - 1));
    let Permit::OwnerDied(r) = sem.try_acquire().unwrap() else {
        panic!("expected the dead holder's permit, reported");
    };
    assert_eq!(r.previous_owner().unwrap().pid, pid);
    let g = r.mark_consistent();
    assert!(matches!(sem.try_acquire(), Err(LockError::WouldBlock)));
    drop(g);
    let s = sem.status();
    assert_eq!((s.available, s.owner_dead), (1, 0));
    assert_eq!((s.counters.owner_deaths, s.counters.recoveries), (1, 1));
    assert!(
        !sem.try_acquire().unwrap().owner_died(),
        "clean after recovery"
    );
}

#[test]
fn a_blocked_acquire_gets_the_permit_of_a_holder_that_is_killed() {
    let (_dir, path) = temp_path("sem");
    let sem = SharedSemaphore::open(&path, N).unwrap();
    let mut kids = holders(&path, N);
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let p = sem.acquire().unwrap();
            let died = p.owner_died();
            drop(p.recover_with(|| {}));
            died
        });
        // The waiter sleeps on every slot: FUTEX_WAITERS appears in the words.
        while !waiting(&path) {
            std::thread::yield_now();
        }
        kids.pop().unwrap().kill();
        assert!(waiter.join().unwrap(), "the dead holder's permit, reported");
    });
}

/// Whether a waiter has announced itself on the semaphore (FUTEX_WAITERS in
/// any slot's lock word). Reads the file directly (offset 512, 192-byte slots).
fn waiting(path: &std::path::Path) -> bool {
    let bytes = std::fs::read(path).unwrap();
    (0..N).any(|i| {
        let o = 512 + i * 192;
        u32::from_ne_bytes(bytes[o..o + 4].try_into().unwrap()) & 0x8000_0000 != 0
    })
}

#[test]
fn a_cancelled_acquire_changes_nothing() {
    let (_dir, path) = temp_path("sem");
    let sem = SharedSemaphore::open(&path, N).unwrap();
    let _kids = holders(&path, N);
    let before = sem.status();
    let cancel = CancelToken::new();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| sem.acquire_cancellable(&cancel, None).map(|_| ()));
        while !waiting(&path) {
            std::thread::yield_now();
        }
        cancel.cancel();
        assert!(matches!(waiter.join().unwrap(), Err(LockError::Cancelled)));
    });
    assert_eq!(sem.status(), before);
    assert!(matches!(
        sem.acquire_timeout(std::time::Duration::from_millis(20)),
        Err(LockError::TimedOut)
    ));
}

#[test]
fn permits_of_one_thread_and_an_abandoned_recovery() {
    let (_dir, path) = temp_path("sem");
    let sem = SharedSemaphore::open(&path, 2).unwrap();
    let a = sem.acquire().unwrap().recover_with(|| {});
    let b = sem.acquire().unwrap().recover_with(|| {});
    assert_ne!(a.slot(), b.slot(), "one thread may hold several permits");
    // All permits are this thread's: waiting would never end.
    assert!(matches!(sem.acquire(), Err(LockError::Deadlock)));
    drop((a, b));

    // A thread dies holding a permit; its recovery is abandoned: that permit
    // is lost, the other still works.
    std::thread::scope(|s| {
        s.spawn(|| std::mem::forget(sem.acquire().unwrap()));
    });
    let mut lost = false;
    for _ in 0..2 {
        match sem.try_acquire().unwrap() {
            Permit::OwnerDied(r) => {
                drop(r);
                lost = true;
            }
            Permit::Clean(g) => drop(g),
        }
    }
    assert!(lost);
    let s = sem.status();
    assert_eq!((s.not_recoverable, s.available), (1, 1));
    let g = sem.try_acquire().unwrap();
    assert!(matches!(sem.try_acquire(), Err(LockError::WouldBlock)));
    drop(g);
}

#[test]
fn kinds_permit_counts_and_creation_policies() {
    let (dir, path) = temp_path("sem");
    SharedSemaphore::open(&path, 2).unwrap();
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

    let m = dir.path().join("mutex");
    SharedMutex::<u64>::open(&m).unwrap();
    let e = SharedSemaphore::open(&m, 2).unwrap_err();
    assert!(
        matches!(e, Error::KindMismatch { found: "mutex", .. }),
        "{e}"
    );

    let missing = dir.path().join("missing");
    let e = SharedSemaphore::open_with(&missing, 2, &OpenOptions::new()).unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    assert!(!missing.exists());
    let e = SharedSemaphore::open_with(&path, 2, OpenOptions::new().create_new(true)).unwrap_err();
    assert!(matches!(e, Error::AlreadyExists { .. }), "{e}");
    let fresh = SharedSemaphore::open_with(&path, 5, OpenOptions::new().replace(true)).unwrap();
    assert_eq!(fresh.status().total, 5);
    for bad in [0, 128] {
        let e = SharedSemaphore::open(dir.path().join("bad"), bad).unwrap_err();
        assert!(matches!(e, Error::InvalidOptions { .. }), "{e}");
    }
    assert!(!dir.path().join("bad").exists());
}
