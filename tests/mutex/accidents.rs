//! Issue 11's accidents in the raw layer, for the mutex kinds: stuck locks
//! (never a silent hang), exiting threads (never "stuck"), the held-lock
//! bound, fork-inherited guards, panics that count as deaths, and a file
//! truncated under a waiter.

use crate::common::roles_accidents::sibling;
use crate::common::{Kid, temp_path};
use robust_mutex::{
    BareMutex, CancelToken, LockError, LockState, MAX_HELD_PER_THREAD, ReentrantMutex, SharedMutex,
    SharedSemaphore,
};
use std::time::{Duration, Instant};

/// A generous bound that only catches a real hang.
const HANG: Duration = Duration::from_secs(60);

/// A mutex whose lock word names a dead thread the kernel never released
/// (the `stuck` role unmaps while holding, then exits).
fn stuck_mutex() -> (tempfile::TempDir, SharedMutex<u64>) {
    let (dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    let mut kid = Kid::spawn("stuck", &path);
    kid.expect("unmapped");
    kid.wait_ok();
    (dir, m)
}

fn assert_stuck<T: std::fmt::Debug>(r: Result<T, LockError>, path: &std::path::Path) -> u32 {
    match r {
        Err(e @ LockError::Stuck { tid, .. }) => {
            let text = e.to_string();
            assert!(text.contains(&format!("thread {tid}")), "{text}");
            assert!(text.contains("robust-mutex reset"), "{text}");
            assert!(text.contains(&path.display().to_string()), "{text}");
            tid
        }
        other => panic!("expected Stuck, got {other:?}"),
    }
}

#[test]
fn lock_on_a_stuck_mutex_returns_stuck_instead_of_hanging() {
    let (_dir, m) = stuck_mutex();
    let dead = m.status().lock_word & 0x3fff_ffff;
    let t = Instant::now();
    assert_eq!(assert_stuck(m.lock().map(drop), m.path()), dead);
    assert_stuck(m.lock_timeout(Duration::from_secs(10)).map(drop), m.path());
    assert_stuck(
        m.lock_cancellable(&CancelToken::new(), None).map(drop),
        m.path(),
    );
    assert!(t.elapsed() < HANG, "took {:?}", t.elapsed());
    // lock_timeout(10 s) gave Stuck, not TimedOut after 10 s.
    assert!(matches!(m.try_lock(), Err(LockError::WouldBlock)));
}

#[test]
fn a_stuck_holder_whose_cold_record_names_another_process_is_still_stuck() {
    // A kill inside a cold record's rewrite, or another process's record:
    // the holder's PID namespace reads 0 ("unknown"), which must not make a
    // dead holder look like one of another namespace (never stuck).
    use robust_mutex::internals::{HOT_OFFSET, OWNER_OFFSET};
    use std::os::unix::fs::FileExt;
    let (_dir, m) = stuck_mutex();
    let dead = m.status().lock_word & 0x3fff_ffff;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(m.path())
        .unwrap();
    // The dead holder's hot record (a main thread: pid = tid), and a cold
    // record of process 1.
    let hot = [dead.to_ne_bytes(), dead.to_ne_bytes()].concat();
    f.write_all_at(&hot, HOT_OFFSET as u64).unwrap();
    f.write_all_at(&1u32.to_ne_bytes(), OWNER_OFFSET as u64)
        .unwrap();
    assert_eq!(m.status().owner.unwrap().pid_namespace, 0);
    let t = Instant::now();
    assert_stuck(m.lock_timeout(Duration::from_secs(20)).map(drop), m.path());
    assert!(t.elapsed() < HANG, "took {:?}", t.elapsed());
}

#[test]
fn locks_past_the_kernels_robust_list_limit_are_reported_stuck() {
    let (_dir, path) = temp_path("m");
    let files: Vec<SharedMutex<u64>> = (0..5)
        .map(|i| SharedMutex::<u64>::open(sibling(&path, &format!(".{i}"))).unwrap())
        .collect();
    let mut kid = Kid::spawn("hold_past_robust_limit", &path);
    kid.expect("held");
    kid.wait_ok();
    assert_eq!(files[0].status().state, LockState::Stuck);
    assert_stuck(files[0].lock().map(drop), files[0].path());
    assert_stuck(
        files[1].lock_timeout(Duration::from_secs(10)).map(drop),
        files[1].path(),
    );
}

#[test]
fn a_reentrant_and_a_bare_stuck_lock_are_reported_too() {
    let (_dir, path) = temp_path("r");
    let r = ReentrantMutex::<u64>::open(&path).unwrap();
    // The stuck role locks the mutex at offset 256 of any header file.
    let mut kid = Kid::spawn("stuck", &path);
    kid.expect("unmapped");
    kid.wait_ok();
    assert!(matches!(r.lock(), Err(LockError::Stuck { .. })));

    let (_dir2, bare) = temp_path("py.lock");
    let b = BareMutex::open(&bare).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            // A thread with no robust list of its own: the kernel cannot
            // release what it holds.
            // SAFETY: set_robust_list(NULL, len) only deregisters this
            // thread's list; it takes no lock afterwards through glibc's
            // list except the one below, which is then simply not on it.
            unsafe { libc::syscall(libc::SYS_set_robust_list, 0usize, 24usize) };
            std::mem::forget(b.lock().unwrap());
        });
    });
    match b.lock() {
        Err(LockError::Stuck { remedy, .. }) => assert!(remedy.contains("create it again")),
        other => panic!("expected Stuck, got {other:?}"),
    }
}

/// Item 9: a thread that locks, forgets its guard and ends is never called
/// stuck, however soon it is looked at: it is OwnerDead (and the lock then
/// gives OwnerDied).
#[test]
fn a_thread_that_is_still_exiting_is_never_stuck() {
    let (_dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    for _ in 0..300 {
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn({
            let path = path.clone();
            move || {
                let m = SharedMutex::<u64>::open(&path).unwrap();
                std::mem::forget(m.lock().unwrap().recover_with(|_| {}));
                tx.send(()).unwrap();
            }
        });
        rx.recv().unwrap();
        let state = m.status().state;
        assert_ne!(
            state,
            LockState::Stuck,
            "an exiting thread was called stuck"
        );
        t.join().unwrap();
        let a = m.lock().unwrap();
        assert!(a.owner_died());
        drop(a.recover_with(|_| {}));
    }
}

#[test]
fn a_thread_may_hold_at_most_the_bound_and_then_one_more_after_a_release() {
    let (_dir, path) = temp_path("m");
    std::thread::spawn(move || {
        let sems: Vec<SharedSemaphore> = (0..MAX_HELD_PER_THREAD / 127)
            .map(|k| SharedSemaphore::open(sibling(&path, &format!(".s{k}")), 127).unwrap())
            .collect();
        let rest = MAX_HELD_PER_THREAD - sems.len() * 127;
        let ms: Vec<SharedMutex<u64>> = (0..rest + 1)
            .map(|k| SharedMutex::<u64>::open(sibling(&path, &format!(".m{k}"))).unwrap())
            .collect();
        let bare = BareMutex::open(sibling(&path, ".bare")).unwrap();
        let mut permits = Vec::new();
        for s in &sems {
            for _ in 0..127 {
                permits.push(s.acquire().unwrap().recover_with(|_| {}));
            }
        }
        let mut guards: Vec<_> = ms[..rest]
            .iter()
            .map(|m| m.lock().unwrap().recover_with(|_| {}))
            .collect();
        let full = |r: Result<(), LockError>| match r {
            Err(LockError::TooManyHeld { held, max }) => {
                assert_eq!((held, max), (MAX_HELD_PER_THREAD, MAX_HELD_PER_THREAD))
            }
            other => panic!("expected TooManyHeld, got {other:?}"),
        };
        full(ms[rest].lock().map(drop));
        full(ms[rest].try_lock().map(drop));
        full(ms[rest].lock_timeout(Duration::from_secs(1)).map(drop));
        full(
            ms[rest]
                .lock_cancellable(&CancelToken::new(), None)
                .map(drop),
        );
        full(bare.lock().map(drop));
        full(sems[0].try_acquire().map(drop));
        // A relock of a held mutex adds nothing: still Deadlock.
        assert!(matches!(ms[0].lock(), Err(LockError::Deadlock)));
        guards.pop();
        let g = ms[rest].lock().unwrap().recover_with(|_| {});
        full(bare.lock().map(drop));
        drop(g);
        permits.pop();
        drop(bare.lock().unwrap());
    })
    .join()
    .unwrap();
}

#[test]
fn a_reentrant_nesting_counts_once_against_the_bound() {
    let (_dir, path) = temp_path("m");
    std::thread::spawn(move || {
        let r = ReentrantMutex::<u64>::open(sibling(&path, ".r")).unwrap();
        let outer = r.lock().unwrap().recover_with(|_| {});
        let ms: Vec<SharedMutex<u64>> = (0..MAX_HELD_PER_THREAD - 1)
            .map(|k| SharedMutex::<u64>::open(sibling(&path, &format!(".m{k}"))).unwrap())
            .collect();
        let gs: Vec<_> = ms
            .iter()
            .map(|m| m.lock().unwrap().recover_with(|_| {}))
            .collect();
        // Full now, but nesting the re-entrant lock adds nothing.
        let inner = r.lock().unwrap().recover_with(|_| {});
        assert_eq!(inner.depth(), 2);
        drop(inner);
        drop(gs);
        drop(outer);
    })
    .join()
    .unwrap();
}

/// The bound is safe: a process killed holding the most it may hold has
/// every one of them released by the kernel.
#[test]
fn a_process_killed_holding_the_bound_leaves_every_lock_owner_died() {
    let (_dir, path) = temp_path("m");
    let mut kid = Kid::spawn("hold_max", &path);
    assert_eq!(kid.expect("held"), MAX_HELD_PER_THREAD.to_string());
    kid.expect("refused");
    kid.kill();
    let mut dead = 0;
    for k in 0..MAX_HELD_PER_THREAD / 127 {
        let s = SharedSemaphore::open(sibling(&path, &format!(".sem{k}")), 127).unwrap();
        let st = s.status();
        assert_eq!((st.owner_dead, st.stuck), (127, 0));
        dead += st.owner_dead;
    }
    let rest = MAX_HELD_PER_THREAD - dead;
    for k in 0..rest {
        let m = SharedMutex::<u64>::open(sibling(&path, &format!(".m{k}"))).unwrap();
        assert_eq!(m.status().state, LockState::OwnerDead);
        dead += 1;
    }
    assert_eq!(dead, MAX_HELD_PER_THREAD);
}

/// More than [`MAX_HELD_PER_THREAD`] rounds through every error path of the
/// lock and release calls leave this thread's held count where it was, so
/// the bound neither refuses a later lock nor lets too many through. (A
/// truncation under nested re-entrant guards once credited the count twice.)
#[test]
fn no_error_path_drifts_the_held_count() {
    use robust_mutex::internals::held_by_this_thread as held;
    const ROUNDS: usize = MAX_HELD_PER_THREAD + 100;
    let (dir, path) = temp_path("m");
    let m = std::sync::Arc::new(SharedMutex::<u64>::open(&path).unwrap());

    // WouldBlock: another thread holds it.
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (free_tx, free_rx) = std::sync::mpsc::channel::<()>();
    let holder = {
        let m = m.clone();
        std::thread::spawn(move || {
            let _g = m.lock().unwrap().recover_with(|_| {});
            locked_tx.send(()).unwrap();
            free_rx.recv().unwrap();
        })
    };
    locked_rx.recv().unwrap();
    for _ in 0..ROUNDS {
        assert!(matches!(m.try_lock(), Err(LockError::WouldBlock)));
    }
    assert_eq!(held(), 0);
    free_tx.send(()).unwrap();
    holder.join().unwrap();

    // Deadlock: this thread holds it.
    let g = m.lock().unwrap().recover_with(|_| {});
    for _ in 0..ROUNDS {
        assert!(matches!(m.lock(), Err(LockError::Deadlock)));
    }
    assert_eq!(held(), 1);
    drop(g);
    assert_eq!(held(), 0);

    // NotRecoverable: a recovery abandoned after a thread died holding it.
    let dead = {
        let m = m.clone();
        std::thread::spawn(move || std::mem::forget(m.lock().unwrap()))
    };
    dead.join().unwrap();
    drop(m.lock().unwrap());
    assert_eq!(m.status().state, LockState::NotRecoverable);
    for _ in 0..ROUNDS {
        assert!(matches!(m.lock(), Err(LockError::NotRecoverable)));
    }
    assert_eq!(held(), 0);

    // NotOwner: the file truncated under the holder, plain and nested.
    let cut = |p: &std::path::Path| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(p)
            .unwrap()
            .set_len(10)
            .unwrap();
    };
    for i in 0..ROUNDS {
        let p = dir.path().join(format!("c{}", i % 2));
        let _ = std::fs::remove_file(&p);
        if i % 2 == 0 {
            let c = SharedMutex::<u64>::open(&p).unwrap();
            let g = c.lock().unwrap().recover_with(|_| {});
            cut(&p);
            assert!(matches!(g.unlock(), Err(LockError::NotOwner { .. })));
        } else {
            let r = ReentrantMutex::<u64>::open(&p).unwrap();
            let outer = r.lock().unwrap().recover_with(|_| {});
            let inner = r.lock().unwrap().recover_with(|_| {});
            cut(&p);
            drop(inner);
            assert!(matches!(outer.unlock(), Err(LockError::NotOwner { .. })));
        }
        assert_eq!(held(), 0, "round {i}");
    }

    // And the bound still counts from zero.
    let fresh = SharedMutex::<u64>::open(sibling(&path, ".fresh")).unwrap();
    assert_eq!(*fresh.lock().unwrap().recover_with(|_| {}), 0);
    assert_eq!(held(), 0);
}
