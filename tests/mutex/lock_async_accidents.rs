//! Ordinary accidents around async use (issue 14): processes that exit
//! right after a release or an abandoned wait, a runtime shut down under
//! waiting and holding tasks, stuck locks and resets, a death passed on
//! from a dropped future, no runtime at all, truncation, holder threads per
//! file, a panic while repairing. Real processes and real SIGKILLs, with
//! the fixture and the one-at-a-time turn of `lock_async`.

use super::lock_async::fixture::{
    clean_sync, comm, drop_when_woken, fixture, panic_holding, settled, until_waited_on, within,
};
use crate::common::Kid;
use crate::common::roles::{HELD_LABEL, HELD_VALUE};
use crate::common::roles_async::{TID_MASK, clean, runtime, settle};
use robust_mutex::{Acquired, LockError, LockState, SharedMutex, internals};
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

/// A process that drops its `AsyncGuard` and exits at once (a
/// `#[tokio::main]` returning right after its last critical section)
/// released the lock: the next locker gets it clean, never `OwnerDied`.
#[test]
fn a_process_that_exits_right_after_dropping_its_guard_released_the_lock() {
    let f = fixture();
    let (path, m) = (&f.path, &f.m);
    let mut deaths = 0;
    for i in 1..=50 {
        Kid::spawn("async_drop_exit", path).wait_ok();
        match m.lock().unwrap() {
            Acquired::Clean(g) => assert_eq!(*g, i),
            Acquired::OwnerDied(r) => {
                deaths += 1;
                assert_eq!(*r.mark_consistent(), i);
            }
        }
    }
    assert_eq!(
        deaths, 0,
        "exits right after a clean drop were taken as deaths"
    );
}

/// A runtime shut down while its tasks wait in `lock_async` (the lock
/// held by another process) drops their futures: the holder thread stops
/// waiting at once, and the lock is not taken for anyone afterwards. A
/// task holding the guard across a pending `.await` at shutdown releases
/// it.
#[test]
fn a_runtime_shut_down_with_waiting_and_holding_tasks_leaves_the_lock_free() {
    let f = fixture();
    let (path, m) = (&f.path, &f.m);
    let mut kid = Kid::spawn("hold_until_told", path);
    kid.expect("locked");
    let rt = runtime();
    for _ in 0..10 {
        let m = m.clone();
        rt.spawn(async move {
            let _g = m.lock_async().await;
            unreachable!("the lock is held elsewhere until the runtime is gone");
        });
    }
    until_waited_on(m);
    drop(rt);
    // No waiter is left: the lane stops while the other process holds.
    settled();
    kid.tell("release");
    kid.expect("released");
    assert!(matches!(m.try_lock(), Ok(Acquired::Clean(_))));
    drop(kid);

    let rt = runtime();
    let (held_tx, held_rx) = tokio::sync::oneshot::channel();
    let m2 = m.clone();
    rt.spawn(async move {
        let mut g = clean(m2.lock_async().await.unwrap());
        *g = 8;
        held_tx.send(()).unwrap();
        std::future::pending::<()>().await;
        drop(g);
    });
    within(&rt, held_rx).unwrap();
    assert!(matches!(m.try_lock(), Err(LockError::WouldBlock)));
    drop(rt);
    settled();
    assert_eq!(*clean_sync(m.try_lock().unwrap()), 8);
}

/// Tasks meeting a stuck lock (its holder died where the kernel could not
/// release it) get `Stuck`, every one, instead of hanging; after a reset,
/// `lock_async` on the same handle follows it to the new file (whose first
/// locker is told of the death, with the value kept).
#[test]
fn tasks_meeting_a_stuck_lock_get_stuck_and_follow_a_reset() {
    let f = fixture();
    let (path, m, rt) = (&f.path, &f.m, &f.rt);
    *clean_sync(m.lock().unwrap()) = 4;
    Kid::spawn("stuck", path).wait_ok();
    let dead = m.status().lock_word & TID_MASK;
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let m = m.clone();
            rt.spawn(async move {
                match m.lock_async().await {
                    Err(LockError::Stuck { tid, .. }) => tid,
                    other => panic!("expected Stuck, got {:?}", other.map(|_| ())),
                }
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(within(rt, t).unwrap(), dead);
    }
    robust_mutex::reset(path, false).unwrap();
    let m2 = m.clone();
    let after = rt.spawn(async move {
        let first = m2.lock_async().await.unwrap();
        let died = first.owner_died();
        let (_, g) = settle(first);
        let seen = *g;
        drop(g);
        let second = clean(m2.lock_async().await.unwrap());
        (died, seen, *second)
    });
    assert_eq!(within(rt, after).unwrap(), (true, 4, 4));
    assert_eq!(m.status().generation, 2, "the handle moved to the new file");
    settled();
}

/// A forced reset while tasks wait in `lock_async` for a live holder in
/// another process changes nothing for them, as for sync waiters (a handle
/// that never met a broken lock keeps the old file, as documented): they
/// lock the old file, clean, once its holder releases.
#[test]
fn a_forced_reset_leaves_waiting_tasks_on_the_old_file_as_sync_waiters() {
    let f = fixture();
    let (path, m, rt) = (&f.path, &f.m, &f.rt);
    let mut kid = Kid::spawn("hold_until_told", path);
    kid.expect("locked");
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let m = m.clone();
            rt.spawn(async move {
                let g = clean(m.lock_async().await.unwrap());
                g.mutex().status().generation
            })
        })
        .collect();
    until_waited_on(m);
    robust_mutex::reset(path, true).unwrap();
    kid.tell("release");
    kid.expect("released");
    for t in tasks {
        assert_eq!(within(rt, t).unwrap(), 1, "still the old file");
    }
    settled();
}

/// An owner death taken by the holder thread for a future that is dropped
/// once the outcome was delivered to it, untaken: the death is passed on,
/// the same death (the dead holder's records put back, counted once), to
/// the next locker.
#[test]
fn a_death_delivered_to_a_dropped_future_is_passed_on_to_the_next_locker() {
    let f = fixture();
    let (path, m, rt) = (&f.path, &f.m, &f.rt);
    let mut kid = Kid::spawn("hold", path);
    kid.expect("locked");
    let m2 = m.clone();
    let dropped = rt.spawn(async move { drop_when_woken(m2.lock_async()).await.is_none() });
    until_waited_on(m);
    let pid = kid.pid();
    kid.kill();
    assert!(within(rt, dropped).unwrap(), "dropped once delivered");
    settled();
    assert_eq!(m.status().state, LockState::OwnerDead);
    let Acquired::OwnerDied(r) = m.lock().unwrap() else {
        panic!("the death was lost with the dropped future");
    };
    let prev = r.previous_owner().expect("the dead owner's record");
    assert_eq!((prev.pid, prev.label.as_str()), (pid, HELD_LABEL));
    assert_eq!(*r, HELD_VALUE);
    drop(r.mark_consistent());
    let c = m.status().counters;
    assert_eq!((c.owner_deaths, c.recoveries), (1, 1));
}

/// Wakes a thread parked in [`block_on`].
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// A hand-written executor: polls `f` on this thread, parking between
/// polls.
fn block_on<F: Future>(f: F) -> F::Output {
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut f = pin!(f);
    loop {
        if let Poll::Ready(out) = f.as_mut().poll(&mut Context::from_waker(&waker)) {
            return out;
        }
        std::thread::park();
    }
}

/// `lock_async` needs no runtime: a hand-written executor waits for a
/// lock another process holds, and holds and labels it.
#[test]
fn lock_async_works_without_a_runtime() {
    let f = fixture();
    let (path, m) = (&f.path, &f.m);
    let mut kid = Kid::spawn("hold_until_told", path);
    kid.expect("locked");
    std::thread::scope(|s| {
        let t = s.spawn(|| {
            let mut g = clean(block_on(m.lock_async()).unwrap());
            g.set_label("hand-written").unwrap();
            *g += 1;
            m.status().owner.unwrap()
        });
        until_waited_on(m);
        kid.tell("release");
        let owner = t.join().unwrap();
        assert_eq!(owner.pid, std::process::id());
        assert_eq!(owner.label, "hand-written");
        assert_eq!(comm(owner.pid, owner.tid), internals::HOLDER_THREAD_NAME);
    });
    settled();
    assert_eq!(*clean_sync(m.lock().unwrap()), 1);
}

/// A file truncated under a waiting task (its holder thread asleep on the
/// lock) is reported to the task (`FileChanged`), never handed over clean
/// and never a SIGBUS.
#[test]
fn truncation_under_a_waiting_task_is_reported_not_clean() {
    let f = fixture();
    let (path, m, rt) = (&f.path, &f.m, &f.rt);
    let g = clean_sync(m.lock().unwrap());
    let m2 = m.clone();
    let waiter = rt.spawn(async move {
        match m2.lock_async().await {
            Err(e) => format!("{e:?}"),
            Ok(a) => format!("got the lock, owner died: {}", a.owner_died()),
        }
    });
    until_waited_on(m);
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(10)
        .unwrap();
    assert!(matches!(g.unlock(), Err(LockError::NotOwner { .. })));
    let got = within(rt, waiter).unwrap();
    assert!(got.starts_with("FileChanged"), "the task got {got}");
    settled();
}

/// Holder threads follow the locks in use, not the tasks: two handles of
/// one file share one lane; a task holding eight files' guards across an
/// `.await` keeps eight holder threads busy, each lock held for it (another
/// process finds every one busy), and gives all eight back on drop.
#[test]
fn holder_threads_follow_the_files_in_use_not_the_tasks() {
    let f = fixture();
    let (path, m, rt) = (&f.path, &f.m, &f.rt);
    let other = Arc::new(SharedMutex::<u64>::open(path).unwrap());
    let mut kid = Kid::spawn("hold_until_told", path);
    kid.expect("locked");
    let waiters: Vec<_> = (0..20)
        .map(|i| {
            let m = if i % 2 == 0 { m.clone() } else { other.clone() };
            rt.spawn(async move { *clean(m.lock_async().await.unwrap()) += 1 })
        })
        .collect();
    until_waited_on(m);
    assert_eq!(internals::lanes_serving(), 1, "one lane for both handles");
    kid.tell("release");
    kid.expect("released");
    for w in waiters {
        within(rt, w).unwrap();
    }
    settled();
    assert_eq!(*clean_sync(m.lock().unwrap()), 20);

    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<_> = (0..8).map(|i| dir.path().join(format!("m{i}"))).collect();
    let files: Arc<Vec<_>> = Arc::new(
        paths
            .iter()
            .map(|p| SharedMutex::<u64>::open(p).unwrap())
            .collect(),
    );
    let (held_tx, held_rx) = tokio::sync::oneshot::channel();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let fs = files.clone();
    let holder = rt.spawn(async move {
        let mut guards = Vec::new();
        for m in fs.iter() {
            guards.push(clean(m.lock_async().await.unwrap()));
        }
        held_tx.send(()).unwrap();
        go_rx.await.unwrap();
        for g in &mut guards {
            **g += 1;
        }
    });
    within(rt, held_rx).unwrap();
    assert_eq!(internals::lanes_serving(), 8);
    let (alive, idle) = internals::holder_threads();
    assert_eq!(alive - idle, 8, "one busy holder thread per lock held");
    for p in &paths {
        let mut k = Kid::spawn("cond_try_lock", p);
        assert_eq!(k.expect("try"), "busy");
        k.wait_ok();
    }
    go_tx.send(()).unwrap();
    within(rt, holder).unwrap();
    settled();
    for m in files.iter() {
        assert_eq!(*clean_sync(m.try_lock().unwrap()), 1);
    }
}

/// A task that panics while repairing (holding a `Recovery<AsyncGuard>`
/// not yet marked consistent, across an `.await`) is a death again, as
/// for the sync kind: the next locker, another process, gets `OwnerDied`
/// with the half-repaired value, not `NotRecoverable`.
#[test]
fn a_task_that_panics_while_repairing_passes_the_death_on() {
    let f = fixture();
    let (path, m, rt) = (&f.path, &f.m, &f.rt);
    panic_holding(rt, m, 3);
    let m2 = m.clone();
    let repairing = rt.spawn(async move {
        let Acquired::OwnerDied(mut r) = m2.lock_async().await.unwrap() else {
            panic!("expected OwnerDied after a panic");
        };
        *r = 4;
        tokio::task::yield_now().await;
        panic!("deliberate: a task panics while repairing");
    });
    assert!(within(rt, repairing).unwrap_err().is_panic());
    let mut kid = Kid::spawn("reopen", path);
    assert_eq!(kid.expect("got"), "true,4");
    kid.wait_ok();
    assert_eq!(m.status().counters.owner_deaths, 2);
    settled();
}

/// A process whose future is dropped (a zero timeout, the lock free) and
/// which exits at once: whatever its holder thread was doing then (not
/// asked yet, taking the lock, letting it go), the next locker gets the
/// lock clean, never `OwnerDied`.
#[test]
fn a_process_that_exits_right_after_abandoning_a_lock_async_leaves_no_death() {
    let f = fixture();
    let (path, m) = (&f.path, &f.m);
    let mut deaths = 0;
    for _ in 0..50 {
        Kid::spawn("async_abandon_exit", path).wait_ok();
        match m.lock().unwrap() {
            Acquired::Clean(_) => {}
            Acquired::OwnerDied(r) => {
                deaths += 1;
                drop(r.mark_consistent());
            }
        }
    }
    assert_eq!(
        deaths, 0,
        "exits right after abandoning a lock_async were taken as deaths"
    );
}

/// As above, with the wait abandoned just as the holder of the lock (this
/// process) releases it: the child's holder thread may be taking the lock
/// for a future that is gone when the child exits. Never a death.
#[test]
fn a_process_that_abandons_a_wait_as_the_lock_is_released_and_exits_leaves_no_death() {
    let f = fixture();
    let (path, m) = (&f.path, &f.m);
    let mut deaths = 0;
    for _ in 0..50 {
        let g = clean_sync(m.lock().unwrap());
        let mut kid = Kid::spawn("async_wait_abandon_exit", path);
        kid.expect("waiting");
        kid.tell("abandon");
        drop(g);
        kid.wait_ok();
        if let Acquired::OwnerDied(r) = m.lock().unwrap() {
            deaths += 1;
            drop(r.mark_consistent());
        }
    }
    assert_eq!(
        deaths, 0,
        "exits right after abandoning a wait were taken as deaths"
    );
}
