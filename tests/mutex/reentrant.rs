//! The re-entrant kind: nesting, owner death at any depth, kind checks.

use crate::common;
use crate::common::{Kid, temp_path};
use robust_mutex::{Acquired, Error, LockState, OpenOptions, ReentrantMutex, SharedMutex};

#[test]
fn guards_nest_and_the_last_one_releases() {
    let (_dir, path) = temp_path("r");
    let m = ReentrantMutex::<u64>::open(&path).unwrap();
    let a = m.lock().unwrap().recover_with(|_| {});
    let b = m.try_lock().unwrap().recover_with(|_| {});
    assert_eq!((a.depth(), b.depth()), (2, 2));
    b.set(41);
    a.set(a.get() + 1);
    drop(b);
    assert_eq!(a.depth(), 1);
    assert_eq!(m.status().state, LockState::Locked);
    // Still held: another process cannot take it.
    let mut kid = Kid::spawn("reentrant_try", &path);
    assert_eq!(kid.expect("blocked"), "");
    drop(a);
    assert_eq!(m.status().state, LockState::Unlocked);
    let mut kid = Kid::spawn("reentrant_try", &path);
    kid.expect("got");
    let g = m.lock().unwrap().recover_with(|_| {});
    assert_eq!(g.get(), 42);
}

#[test]
fn owner_death_at_depth_three_gives_owner_died() {
    let (_dir, path) = temp_path("r");
    let m = ReentrantMutex::<u64>::open(&path).unwrap();
    let mut kid = Kid::spawn("reentrant_nest3", &path);
    assert_eq!(kid.expect("depth"), "3");
    let pid = kid.pid();
    kid.kill();
    let Acquired::OwnerDied(r) = m.lock().unwrap() else {
        panic!("expected OwnerDied");
    };
    assert_eq!(r.guard().get(), 3);
    assert_eq!(r.previous_owner().unwrap().pid, pid);
    let g = r.mark_consistent();
    assert_eq!(g.depth(), 1, "a fresh holder starts at depth 1");
    drop(g);
    assert_eq!(m.status().state, LockState::Unlocked);
}

#[test]
fn the_other_kind_is_refused_both_ways() {
    let (dir, path) = temp_path("r");
    ReentrantMutex::<u64>::open(&path).unwrap();
    let e = SharedMutex::<u64>::open(&path).unwrap_err();
    assert!(
        matches!(
            e,
            Error::KindMismatch {
                found: robust_mutex::LockKind::Reentrant,
                expected: robust_mutex::LockKind::Mutex,
                ..
            }
        ),
        "{e}"
    );

    let plain = dir.path().join("plain");
    SharedMutex::<u64>::open(&plain).unwrap();
    let before = common::snapshot(&plain);
    let e = ReentrantMutex::<u64>::open(&plain).unwrap_err();
    assert!(matches!(e, Error::KindMismatch { .. }), "{e}");
    assert_eq!(common::snapshot(&plain), before);
}

#[test]
fn a_lock_only_handle_can_take_a_reentrant_file() {
    let (_dir, path) = temp_path("r");
    let m = ReentrantMutex::<u64>::open(&path).unwrap();
    let lock = OpenOptions::new().open_lock_only(&path).unwrap();
    let g = lock.lock().unwrap().recover_with(|()| {});
    assert_eq!(m.status().state, LockState::Locked);
    drop(g);
}

/// glibc answers the inner unlock of a relock made inside a recovery not yet
/// marked consistent with ENOTRECOVERABLE (and still drops one level): the
/// inner guard's drop must take that quietly (it tripped a debug assertion,
/// a double panic during unwinding), and the outer recovery still works.
#[test]
fn a_relock_inside_an_unfinished_recovery_unlocks_quietly() {
    let (_dir, path) = temp_path("r");
    let m = ReentrantMutex::<u64>::open(&path).unwrap();
    let mut kid = Kid::spawn("reentrant_nest3", &path);
    assert_eq!(kid.expect("depth"), "3");
    kid.kill();
    let Acquired::OwnerDied(r) = m.lock().unwrap() else {
        panic!("expected OwnerDied");
    };
    let inner = m.lock().unwrap().recover_with(|_| {});
    assert_eq!(inner.depth(), 2);
    inner.set(4);
    drop(inner);
    let inner = m.lock().unwrap().recover_with(|_| {});
    assert!(
        inner.unlock().is_ok(),
        "an explicit inner unlock is fine too"
    );
    assert_eq!(r.guard().depth(), 1);
    drop(r.mark_consistent());
    let Acquired::Clean(g) = m.lock().unwrap() else {
        panic!("the outer recovery was completed");
    };
    assert_eq!(g.get(), 4);
    assert_eq!(robust_mutex::internals::held_by_this_thread(), 1);
}

#[test]
fn a_guard_inherited_through_fork_has_depth_zero() {
    let (_dir, path) = temp_path("r");
    let m = ReentrantMutex::<u64>::open(&path).unwrap();
    let a = m.lock().unwrap().recover_with(|_| {});
    let b = m.lock().unwrap().recover_with(|_| {});
    assert_eq!((a.depth(), b.depth()), (2, 2));
    // The child holds nothing: its copies of the guards say so.
    common::in_fork_child(|| assert_eq!((a.depth(), b.depth()), (0, 0)));
    drop(b);
    assert_eq!(a.depth(), 1);
}
