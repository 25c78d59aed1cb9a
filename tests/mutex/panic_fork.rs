//! A panic that unwinds out of a critical section counts as the holder's
//! death, for every kind; a guard inherited through fork is inert in the
//! child; a file truncated under a holder and a waiter is reported, not
//! handed over as clean.

use crate::common::roles_accidents::sibling;
use crate::common::{Kid, temp_path};
use robust_mutex::{Acquired, LockError, LockState, ReentrantMutex, SharedMutex, SharedSemaphore};

/// Waits until someone sleeps on the lock (FUTEX_WAITERS is set).
fn until_waited_on(m: &SharedMutex<u64>) {
    let t = std::time::Instant::now();
    while m.status().lock_word & 0x8000_0000 == 0 {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(60),
            "nobody waits"
        );
        std::thread::yield_now();
    }
}

#[test]
fn a_panic_in_the_critical_section_is_a_death_for_every_peer() {
    let (_dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    let a = SharedMutex::<u64>::open(sibling(&path, ".a")).unwrap();
    let b = SharedMutex::<u64>::open(sibling(&path, ".b")).unwrap();
    let mut kid = Kid::spawn("panic_holder", &path);
    kid.tell("go");
    kid.expect("locked");
    kid.tell("panic");
    kid.expect("panicked");
    // The panicking process lives on, and its death record stays.
    assert_eq!(m.status().state, LockState::OwnerDead);
    // A raw pthread peer sees EOWNERDEAD.
    let mut raw = Kid::spawn("raw_owner_died", &path);
    assert_eq!(raw.expect("locked"), libc::EOWNERDEAD.to_string());
    raw.kill();
    // (The raw peer died holding it too: it left no record, so the
    // panicking holder is still the one named.)
    let Acquired::OwnerDied(r) = m.lock().unwrap() else {
        panic!("expected OwnerDied after a panic");
    };
    assert_eq!(r.previous_owner().unwrap().pid, kid.pid());
    assert_eq!(*r, 7, "the half-done write is visible");
    drop(r.mark_consistent());
    // The panicking thread's robust list is intact: it locks two more and
    // is killed; both come back as OwnerDied.
    kid.tell("more");
    kid.expect("locked2");
    kid.kill();
    assert!(a.lock().unwrap().owner_died());
    assert!(b.lock().unwrap().owner_died());
}

#[test]
fn skipping_mark_consistent_after_a_panic_is_not_recoverable() {
    let (_dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    let mut kid = Kid::spawn("panic_holder", &path);
    kid.tell("go");
    kid.expect("locked");
    kid.tell("panic");
    kid.expect("panicked");
    match m.lock().unwrap() {
        Acquired::OwnerDied(r) => drop(r),
        Acquired::Clean(_) => panic!("expected OwnerDied"),
    }
    assert!(matches!(m.lock(), Err(LockError::NotRecoverable)));
}

#[test]
fn a_waiter_blocked_in_lock_is_woken_by_a_panic_death() {
    let (_dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    let mut kid = Kid::spawn("panic_holder", &path);
    kid.tell("go");
    kid.expect("locked");
    // A raw pthread waiter: blocked in pthread_mutex_lock, which has no
    // time slices, so only the death's FUTEX_WAKE can wake it.
    let mut raw = Kid::spawn("raw_owner_died", &path);
    until_waited_on(&m);
    let watchdog = watchdog(raw.pid());
    kid.tell("panic");
    assert_eq!(
        raw.expect("locked"),
        libc::EOWNERDEAD.to_string(),
        "the blocked raw waiter was woken and got EOWNERDEAD"
    );
    drop(watchdog);
    kid.expect("panicked");
}

/// Kills `pid` if not dropped within a minute: a bound that only catches a
/// real hang (the waiter's `expect` then fails instead of hanging).
fn watchdog(pid: u32) -> std::sync::mpsc::Sender<()> {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if rx.recv_timeout(std::time::Duration::from_secs(60))
            == Err(std::sync::mpsc::RecvTimeoutError::Timeout)
        {
            // SAFETY: kill(2) on the pid of our own unreaped child.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    });
    tx
}

/// Locks a, then m, then b on one thread; a panic releases m alone (taking
/// it off the middle of the robust list); then SIGKILL: the kernel's walk
/// of the mended list still reaches a and b.
#[test]
fn a_panic_unlinks_the_middle_of_the_robust_list_and_the_rest_still_die() {
    let (_dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    let a = SharedMutex::<u64>::open(sibling(&path, ".a")).unwrap();
    let b = SharedMutex::<u64>::open(sibling(&path, ".b")).unwrap();
    let mut kid = Kid::spawn("panic_middle", &path);
    kid.expect("panicked");
    assert_eq!(m.status().state, LockState::OwnerDead);
    assert_eq!(a.status().state, LockState::Locked);
    assert_eq!(b.status().state, LockState::Locked);
    let pid = kid.pid();
    kid.kill();
    for (name, x) in [("a", &a), ("b", &b), ("m", &m)] {
        let Acquired::OwnerDied(r) = x.lock().unwrap() else {
            panic!("{name}: expected OwnerDied");
        };
        assert_eq!(r.previous_owner().unwrap().pid, pid, "{name}");
        drop(r.mark_consistent());
    }
}

#[test]
fn a_permit_held_through_a_panic_comes_back_as_owner_died() {
    let (_dir, path) = temp_path("s");
    let sem = SharedSemaphore::open(&path, 1).unwrap();
    let mut kid = Kid::spawn("panic_sem_holder", &path);
    kid.tell("go");
    kid.expect("panicked");
    let Acquired::OwnerDied(r) = sem.acquire().unwrap() else {
        panic!("expected the panicking holder's permit, reported");
    };
    assert_eq!(r.previous_owner().unwrap().pid, kid.pid());
    drop(r.mark_consistent());
}

#[test]
fn a_panic_inside_nested_reentrant_guards_counts_once() {
    let (_dir, path) = temp_path("r");
    let m = ReentrantMutex::<u64>::open(&path).unwrap();
    let mut kid = Kid::spawn("panic_nested", &path);
    assert_eq!(
        kid.expect("between"),
        "locked",
        "the inner release is no death"
    );
    assert_eq!(kid.expect("held"), "0", "the death gave the lock back once");
    kid.expect("panicked");
    let a = m.lock().unwrap();
    assert!(a.owner_died());
    let Acquired::OwnerDied(r) = a else {
        unreachable!()
    };
    assert_eq!(r.previous_owner().unwrap().pid, kid.pid());
    let g = r.mark_consistent();
    assert_eq!(g.depth(), 1);
}

/// fork() with a held guard and a held recovery: the child drops both and
/// exits cleanly; the parent's lock and owner record are untouched.
#[test]
fn guards_inherited_through_fork_are_inert_in_the_child() {
    let (_dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    let d = SharedMutex::<u64>::open(sibling(&path, ".d")).unwrap();
    // A recovery: the previous holder of `d` died.
    std::thread::scope(|s| {
        s.spawn(|| std::mem::forget(d.lock().unwrap()));
    });
    let mut g = m.lock().unwrap().recover_with(|_| {});
    g.set_label("parent").unwrap();
    let Acquired::OwnerDied(rec) = d.lock().unwrap() else {
        panic!("expected OwnerDied");
    };
    // SAFETY: the child only drops the guards, touches no lock of its own
    // and leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let r = rec.mark_consistent();
            assert!(matches!(r.unlock(), Err(LockError::NotOwner { .. })));
            drop(g);
        }))
        .is_ok();
        // SAFETY: ends the child at once, running no parent's destructors.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{status:#x}"
    );
    let s = m.status();
    assert_eq!(s.state, LockState::Locked);
    let o = s.owner.unwrap();
    assert_eq!((o.pid, o.label.as_str()), (std::process::id(), "parent"));
    assert_eq!(d.status().state, LockState::Locked);
    assert!(matches!(m.try_lock(), Err(LockError::Deadlock)));
}

/// The parent side after fork: the holder's record is intact, and a later
/// kill of the holder names it to the next locker.
#[test]
fn a_fork_childs_drop_leaves_the_holders_record_for_the_next_locker() {
    let (_dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    let mut kid = Kid::spawn("fork_drop_then_hold", &path);
    assert_eq!(kid.expect("child-done"), "0", "the fork child failed");
    let s = m.status();
    assert_eq!(s.state, LockState::Locked);
    let o = s.owner.unwrap();
    assert_eq!((o.pid, o.label.as_str()), (kid.pid(), "parent"));
    let pid = kid.pid();
    kid.kill();
    let Acquired::OwnerDied(r) = m.lock().unwrap() else {
        panic!("expected OwnerDied");
    };
    assert_eq!(r.previous_owner().unwrap().pid, pid);
    drop(r.mark_consistent());
}

#[test]
fn truncation_under_a_holder_and_a_waiter_is_reported_not_clean() {
    let (_dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    let g = m.lock().unwrap().recover_with(|_| {});
    let mut waiter = Kid::spawn("wait_and_report", &path);
    waiter.expect("waiting");
    until_waited_on(&m);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(10)
        .unwrap();
    assert!(matches!(g.unlock(), Err(LockError::NotOwner { .. })));
    let got = waiter.expect("got");
    assert!(got.starts_with("error FileChanged"), "the waiter got {got}");
}

#[test]
fn a_panic_holding_a_bare_lock_is_a_death_too() {
    let (_dir, path) = temp_path("py.lock");
    let b = robust_mutex::BareMutex::open(&path).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let _g = b.lock().unwrap().recover_with(|_| {});
                std::panic::resume_unwind(Box::new("holder panics"));
            }));
            assert!(r.is_err());
            // The thread lives on; its panic released the lock as a death.
            assert_eq!(b.status().state, LockState::OwnerDead);
        });
    });
    // The next locker gets OwnerDied.
    assert!(b.lock().unwrap().owner_died());
}

#[test]
fn a_lock_taken_and_released_during_unwinding_is_not_a_death() {
    let (_dir, path) = temp_path("m");
    let mut kid = Kid::spawn("lock_in_drop_while_unwinding", &path);
    assert_eq!(kid.expect("mutex"), "clean");
    assert_eq!(kid.expect("reentrant"), "clean");
    assert_eq!(kid.expect("held"), "0");
    kid.wait_ok();
    let m = SharedMutex::<u64>::open(&path).unwrap();
    assert_eq!(m.status().state, LockState::Unlocked);
    assert_eq!(*m.lock().unwrap().recover_with(|_| {}), 1);
}

/// The other side of the rule above: a re-entrant lock held from before
/// the panic and relocked by a `Drop` during the unwinding is still a death
/// when its outer guard goes.
#[test]
fn a_relock_during_unwinding_of_a_lock_held_from_before_is_still_a_death() {
    let (_dir, path) = temp_path("r");
    let mut kid = Kid::spawn("relock_held_while_unwinding", &path);
    assert_eq!(kid.expect("state"), "owner-dead");
    assert_eq!(kid.expect("held"), "0");
    kid.wait_ok();
}
