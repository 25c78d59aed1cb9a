//! `release_as_death`: a holder that gives up its lock (or its recovery)
//! as a death, as the Python package does when an exception leaves a
//! with-block. For each kind (mutex, semaphore permit, bare mutex): the
//! holder's process lives on, and the next locker, in another process, gets
//! `OwnerDied` naming it; a recovery given up the same way passes the
//! death on (it is not made not-recoverable); a guard inherited through
//! fork gives nothing up.

use crate::common::roles_bytes::{KIND_ENV, Kind, outcome};
use crate::common::{Kid, in_fork_child, temp_path};
use robust_mutex::{Acquired, BareMutex, LockError, LockState, SharedMutex, SharedSemaphore};

/// Starts `kind_release_as_death` for `K` on `path` and has it take the
/// lock; returns it and whether it found the lock owner-dead.
fn holder<K: Kind>(path: &std::path::Path) -> (Kid, String) {
    let mut kid = Kid::spawn_env("kind_release_as_death", path, &[(KIND_ENV, K::NAME)]);
    let took = kid.expect("took");
    (kid, took)
}

/// Tells the holder to give up its lock as a death; returns its tid.
fn give_up(kid: &mut Kid) -> u32 {
    kid.tell("give up");
    let tid = kid.expect("released");
    tid.parse()
        .unwrap_or_else(|_| panic!("release_as_death failed: {tid}"))
}

/// What the next locker sees of a death `kid` (its thread `tid`) gave up:
/// `OwnerDied` naming it where the kind keeps a record (a bare file has
/// none), one death more in the counters (`deaths_before` + 1). Recovers.
fn next_locker_sees_the_death<K: Kind>(k: &K, kid: &Kid, tid: u32, deaths_before: Option<u64>) {
    assert_eq!(k.state(), LockState::OwnerDead, "{}", K::NAME);
    let Acquired::OwnerDied(r) = k.lock().unwrap() else {
        panic!("{}: expected OwnerDied after release_as_death", K::NAME);
    };
    match r.previous_owner() {
        Some(o) => assert_eq!((o.pid, o.tid), (kid.pid(), tid), "{}", K::NAME),
        None => assert_eq!(K::NAME, "bare", "only a bare file has no owner record"),
    }
    assert_eq!(
        k.owner_deaths(),
        deaths_before.map(|n| n + 1),
        "{}: one death more",
        K::NAME
    );
    drop(r.mark_consistent());
}

/// The holder (another process) gives up its clean lock as a death; the
/// next locker gets `OwnerDied` naming it, while it lives on.
fn a_released_death_is_reported_to_another_process<K: Kind>() {
    let (_dir, path) = temp_path("l");
    let k = K::open_at(&path);
    let deaths = k.owner_deaths();
    let (mut kid, took) = holder::<K>(&path);
    assert_eq!(took, "clean");
    assert_eq!(k.holder_pid(), Some(kid.pid()));
    let tid = give_up(&mut kid);
    assert!(
        kid.child.try_wait().unwrap().is_none(),
        "the holder lives on"
    );
    next_locker_sees_the_death(&k, &kid, tid, deaths);
    assert!(matches!(k.lock().unwrap(), Acquired::Clean(_)));
}

#[test]
fn a_mutex_released_as_a_death_is_owner_died_for_another_process() {
    a_released_death_is_reported_to_another_process::<SharedMutex<u64>>();
}

#[test]
fn a_permit_released_as_a_death_is_owner_died_for_another_process() {
    a_released_death_is_reported_to_another_process::<SharedSemaphore>();
}

#[test]
fn a_bare_lock_released_as_a_death_is_owner_died_for_another_process() {
    a_released_death_is_reported_to_another_process::<BareMutex>();
}

/// A recovery given up with `release_as_death` (the repair failed) is
/// another death: the next locker gets `OwnerDied` again, not
/// `NotRecoverable`, and can recover.
fn a_recovery_released_as_a_death_passes_the_death_on<K: Kind>() {
    let (_dir, path) = temp_path("l");
    let k = K::open_at(&path);
    let (mut first, _) = holder::<K>(&path);
    give_up(&mut first);
    let deaths = k.owner_deaths();
    let (mut second, took) = holder::<K>(&path);
    assert_eq!(took, "died", "{}: the second holder recovers", K::NAME);
    let tid = give_up(&mut second);
    assert_ne!(k.state(), LockState::NotRecoverable, "{}", K::NAME);
    next_locker_sees_the_death(&k, &second, tid, deaths.map(|n| n + 1));
    assert!(matches!(k.lock().unwrap(), Acquired::Clean(_)));
}

#[test]
fn a_mutex_recovery_released_as_a_death_is_owner_died_again() {
    a_recovery_released_as_a_death_passes_the_death_on::<SharedMutex<u64>>();
}

#[test]
fn a_permit_recovery_released_as_a_death_is_owner_died_again() {
    a_recovery_released_as_a_death_passes_the_death_on::<SharedSemaphore>();
}

#[test]
fn a_bare_recovery_released_as_a_death_is_owner_died_again() {
    a_recovery_released_as_a_death_passes_the_death_on::<BareMutex>();
}

/// A waiter asleep in another process is woken by the death.
#[test]
fn a_release_as_death_wakes_a_blocked_waiter_with_owner_died() {
    let (_dir, path) = temp_path("l");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    let (mut kid, _) = holder::<SharedMutex<u64>>(&path);
    std::thread::scope(|s| {
        let waiter = s.spawn(|| match m.lock().unwrap() {
            Acquired::OwnerDied(r) => {
                let pid = r.previous_owner().map(|o| o.pid);
                drop(r.mark_consistent());
                pid
            }
            Acquired::Clean(_) => None,
        });
        // FUTEX_WAITERS: the waiter sleeps in the kernel.
        while m.status().lock_word & 0x8000_0000 == 0 {
            std::thread::yield_now();
        }
        give_up(&mut kid);
        assert_eq!(waiter.join().unwrap(), Some(kid.pid()));
    });
}

/// A fork child's `release_as_death` of a guard and of a recovery it
/// inherited is `NotOwner` and changes nothing: the parent still holds
/// both (and then releases them cleanly).
fn an_inherited_guard_gives_nothing_up<K: Kind>() {
    let (_dir, path) = temp_path("l");
    let (_dir2, died) = temp_path("d");
    let k = K::open_at(&path);
    let d = K::open_at(&died);
    // `d`'s previous holder (a thread of ours) exited holding it.
    std::thread::scope(|s| {
        s.spawn(|| std::mem::forget(d.lock().unwrap()));
    });
    // In Options, so that the parent keeps them: the fork child takes them.
    let mut g = Some(k.lock().unwrap());
    let mut r = Some(d.lock().unwrap());
    assert!(r.as_ref().unwrap().owner_died());
    let before = (k.state(), k.holder_pid(), d.state());
    assert_eq!(before.0, LockState::Locked);
    in_fork_child(|| {
        for got in [g.take(), r.take()] {
            let e = K::release_as_death(got.unwrap(), "a fork child gives up");
            assert!(matches!(e, Err(LockError::NotOwner { .. })), "{e:?}");
        }
    });
    assert_eq!((k.state(), k.holder_pid(), d.state()), before);
    let again = k.try_lock();
    assert!(again.is_err(), "{}: {}", K::NAME, outcome(&again));
    drop(again);
    // The parent still holds both: its releases are clean ones.
    drop(g);
    if let Some(Acquired::OwnerDied(r)) = r {
        drop(r.mark_consistent());
    }
    assert_eq!(
        (k.state(), d.state()),
        (LockState::Unlocked, LockState::Unlocked)
    );
}

#[test]
fn a_fork_childs_release_as_death_of_a_mutex_guard_is_not_owner() {
    an_inherited_guard_gives_nothing_up::<SharedMutex<u64>>();
}

#[test]
fn a_fork_childs_release_as_death_of_a_permit_is_not_owner() {
    an_inherited_guard_gives_nothing_up::<SharedSemaphore>();
}

#[test]
fn a_fork_childs_release_as_death_of_a_bare_guard_is_not_owner() {
    an_inherited_guard_gives_nothing_up::<BareMutex>();
}
