//! Async acquisition (issue 14): `SharedMutex::lock_async` and `AsyncGuard`
//! on tokio's multi-thread runtime, with real processes and real SIGKILLs
//! (the roles of `common::roles_async`), synchronised by pipes and by
//! watching the lock word, never by sleeping. Every wait has the 60 s hang
//! watchdog as its only time limit, and so does every child.
//!
//! The holder threads and the lanes are per process, so the tests here run
//! one at a time ([`serial`]) and each leaves every lane idle and every
//! holder thread idle behind it ([`settled`]), so that each test can count
//! them.

pub(crate) mod fixture;

use crate::common::Kid;
use crate::common::roles::{HELD_LABEL, HELD_VALUE};
use crate::common::roles_async::{
    CHURN_TASKS, HOLD_LABEL, ROUNDS_ENV, SET_ENV, TASKS, TID_MASK, WATCHDOG, clean,
    increment_tasks, settle,
};
use fixture::{
    Fixture, clean_sync, comm, drop_when_woken, fixture, gettid, panic_holding, settled,
    until_waited_on, wait_until, within,
};
use robust_mutex::{
    Acquired, AsyncGuard, LockError, LockFuture, LockState, Recovery, SharedMutex, internals,
};
use std::collections::HashSet;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// What the waiter that repairs after an owner death writes.
const REPAIRED: u64 = 7;

/// Awaits a wake-up sent from a plain thread (not a worker: the task goes
/// to the runtime's shared queue) while a busy task spins on the worker it
/// was spawned on, which is this task's: so this task resumes on the other
/// worker (unless the busy task was moved there first).
async fn resume_elsewhere() {
    let (wake_tx, wake_rx) = tokio::sync::oneshot::channel::<()>();
    let (busy_tx, busy_rx) = std::sync::mpsc::channel::<()>();
    let resumed = Arc::new(AtomicBool::new(false));
    std::thread::spawn(move || {
        busy_rx.recv().unwrap();
        wake_tx.send(()).unwrap();
    });
    let r = resumed.clone();
    let busy = tokio::spawn(async move {
        busy_tx.send(()).unwrap();
        let start = Instant::now();
        while !r.load(Ordering::Acquire) && start.elapsed() < WATCHDOG {
            std::hint::spin_loop();
        }
    });
    wake_rx.await.unwrap();
    resumed.store(true, Ordering::Release);
    busy.await.unwrap();
}

/// A guard held across `.await` points where the task moves
/// between worker threads; the lock stays with one holder thread (named
/// `rm-holder`, never a worker) the whole time; then another process
/// locks clean and sees every write.
#[test]
fn a_guard_is_held_across_awaits_that_hop_worker_threads() {
    let f = fixture();
    let (path, m, rt) = (&f.path, &f.m, &f.rt);
    let m2 = m.clone();
    let task = rt.spawn(async move {
        let mut g = clean(m2.lock_async().await.unwrap());
        let holder = m2.status().lock_word & TID_MASK;
        let mut threads = HashSet::new();
        let mut workers = HashSet::new();
        for i in 0..10_000u64 {
            threads.insert(std::thread::current().id());
            workers.insert(gettid());
            assert_eq!(
                m2.status().lock_word & TID_MASK,
                holder,
                "the holder changed"
            );
            if threads.len() >= 2 {
                break;
            }
            *g += 1;
            match i % 3 {
                0 => tokio::task::yield_now().await,
                1 => tokio::spawn(async {}).await.unwrap(),
                _ => resume_elsewhere().await,
            }
        }
        let value = *g;
        drop(g);
        (threads.len(), workers, holder, value)
    });
    let (threads, workers, holder, value) = within(rt, task).unwrap();
    assert!(
        threads >= 2,
        "the task never moved to another worker thread"
    );
    assert!(value > 0);
    // The lock word named a holder thread of this process, never a worker.
    assert!(!workers.contains(&holder), "a worker thread held the lock");
    let holder_name = comm(std::process::id(), holder);
    assert_eq!(holder_name, internals::HOLDER_THREAD_NAME);
    let mut kid = Kid::spawn("reopen", path);
    assert_eq!(kid.expect("got"), format!("false,{value}"));
    kid.wait_ok();
    settled();
}

/// Two processes x 50 tasks x 20 rounds of read, yield (holding),
/// write read+1: the total is exact and nobody sees an owner death.
#[test]
fn tasks_of_two_processes_exclude_each_other_exactly() {
    const ROUNDS: u64 = 20;
    let f = fixture();
    let (path, m, rt) = (&f.path, &f.m, &f.rt);
    let mut kid = Kid::spawn_env("async_increment", path, &[(ROUNDS_ENV, "20")]);
    kid.expect("ready");
    kid.tell("go");
    within(rt, increment_tasks(m.clone(), ROUNDS));
    kid.expect("done");
    kid.wait_ok();
    settled();
    let g = clean_sync(m.lock().unwrap());
    assert_eq!(*g, 2 * TASKS as u64 * ROUNDS);
    drop(g);
    assert_eq!(m.status().counters.owner_deaths, 0);
}

/// A task of this process waits in `lock_async` (its holder thread asleep
/// on the lock) while `kid` holds the lock with `value` in it, labelled
/// `label`; `kid` is SIGKILLed: the task gets `OwnerDied` naming it,
/// repairs, marks consistent and holds the repaired lock across an
/// `.await`; a third locker (another process) then gets it clean.
fn waiter_sees_the_holder_die(f: &Fixture, kid: Kid, value: u64, label: &str) {
    let (path, m, rt) = (&f.path, &f.m, &f.rt);
    let m2 = m.clone();
    let waiter = rt.spawn(async move {
        let Acquired::OwnerDied(mut r) = m2.lock_async().await.unwrap() else {
            panic!("expected OwnerDied");
        };
        let prev = r.previous_owner().expect("the dead owner's record");
        let (pid, label) = (prev.pid, prev.label.clone());
        let seen = *r;
        *r = REPAIRED;
        let mut g: AsyncGuard<'_, u64> = r.mark_consistent();
        tokio::task::yield_now().await;
        *g += 1;
        (pid, label, seen)
    });
    until_waited_on(m);
    let pid = kid.pid();
    kid.kill();
    assert_eq!(within(rt, waiter).unwrap(), (pid, label.to_owned(), value));
    Kid::spawn("lock_clean", path).wait_ok();
    let g = clean_sync(m.lock().unwrap());
    assert_eq!(*g, REPAIRED + 1);
    drop(g);
    let c = m.status().counters;
    assert_eq!((c.owner_deaths, c.recoveries), (1, 1));
    settled();
}

/// A holder process (a plain `lock()`) SIGKILLed while a task of
/// another process waits in `lock_async`.
#[test]
fn a_holder_killed_while_a_task_of_another_process_waits_gives_it_owner_died() {
    let f = fixture();
    let mut kid = Kid::spawn("hold", &f.path);
    kid.expect("locked");
    waiter_sees_the_holder_die(&f, kid, HELD_VALUE, HELD_LABEL);
}

/// The holder is itself a task of another process, which holds
/// its `AsyncGuard` across an `.await` that never completes when its
/// process is SIGKILLed; the lock word named that process's holder thread.
#[test]
fn a_process_killed_while_its_task_holds_an_async_guard_across_an_await_is_a_death() {
    let f = fixture();
    let (path, m) = (&f.path, &f.m);
    let mut kid = Kid::spawn_env("async_hold", path, &[(SET_ENV, "9")]);
    assert_eq!(kid.expect("locked"), "clean");
    let tid = m.status().lock_word & TID_MASK;
    assert_eq!(comm(kid.pid(), tid), internals::HOLDER_THREAD_NAME);
    waiter_sees_the_holder_die(&f, kid, 9, HOLD_LABEL);
}

/// A panic in a tokio task holding an `AsyncGuard` is a death for
/// the next locker, in another process and in this one; a recovery
/// dropped without `mark_consistent` leaves it not recoverable.
#[test]
fn a_task_that_panics_holding_an_async_guard_is_a_death() {
    let f = fixture();
    let (path, m, rt) = (&f.path, &f.m, &f.rt);

    // The next locker is another process.
    panic_holding(rt, m, 5);
    let mut kid = Kid::spawn("reopen", path);
    assert_eq!(kid.expect("got"), "true,5");
    kid.wait_ok();

    // The next locker is a task of this process.
    panic_holding(rt, m, 6);
    let m2 = m.clone();
    let next = rt.spawn(async move {
        let Acquired::OwnerDied(r) = m2.lock_async().await.unwrap() else {
            panic!("expected OwnerDied after a panic");
        };
        let who = r.previous_owner().unwrap().pid;
        let g = r.mark_consistent();
        (who, *g)
    });
    assert_eq!(within(rt, next).unwrap(), (std::process::id(), 6));

    // A recovery dropped without mark_consistent.
    panic_holding(rt, m, 7);
    let m2 = m.clone();
    let abandon = rt.spawn(async move {
        let Acquired::OwnerDied(r) = m2.lock_async().await.unwrap() else {
            panic!("expected OwnerDied after a panic");
        };
        let _: &Recovery<AsyncGuard<'_, u64>> = &r;
        drop(r);
        let again = m2.lock_async().await;
        matches!(again, Err(LockError::NotRecoverable))
    });
    assert!(
        within(rt, abandon).unwrap(),
        "lock_async after an abandoned recovery"
    );
    assert!(matches!(m.lock(), Err(LockError::NotRecoverable)));
    Kid::spawn("expect_not_recoverable", path).wait_ok();
    assert_eq!(m.status().counters.owner_deaths, 3);
    settled();
}

/// A small xorshift generator (the torture's randomness, seeded per task).
fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// The cancel torture's counts (this process's).
#[derive(Default)]
struct Tally {
    guards: AtomicU64,
    deaths: AtomicU64,
    timeouts: AtomicU64,
    timed_out: AtomicU64,
    polled_once: AtomicU64,
    rewoken: AtomicU64,
    dropped_woken: AtomicU64,
    /// Set once every kill is done and its death taken.
    stop: AtomicBool,
}

/// Timeouts each torture task runs at least.
const TIMEOUTS_PER_TASK: u64 = 500;
/// Torture tasks in this process.
const TORTURE_TASKS: u64 = 12;
/// Holder processes SIGKILLed during the torture.
const KILLS: u64 = 8;

/// Uses an acquisition: an owner death is counted and marked consistent;
/// adds one to the value; holds it across an `.await` if `across`.
async fn use_lock(a: Acquired<AsyncGuard<'_, u64>>, tally: &Tally, across: bool) {
    let (how, mut g) = settle(a);
    if how == "died" {
        tally.deaths.fetch_add(1, Ordering::Relaxed);
    }
    *g += 1;
    tally.guards.fetch_add(1, Ordering::Relaxed);
    if across {
        tokio::task::yield_now().await;
    }
}

/// One torture task: at least [`TIMEOUTS_PER_TASK`] timeouts, and until
/// the tally says stop, of: `lock_async` under `tokio::time::timeout` of
/// 0 to 2 ms (zero a quarter of the time); a future polled once with a
/// no-op waker and dropped, or then awaited; a future dropped once the
/// holder delivered to it; a plain `.await`.
async fn torture_task(m: Arc<SharedMutex<u64>>, tally: Arc<Tally>, mut rng: u64) {
    let mut timeouts = 0;
    while timeouts < TIMEOUTS_PER_TASK || !tally.stop.load(Ordering::Acquire) {
        let r = next(&mut rng);
        let across = r & 1 == 0;
        match (r >> 1) % 10 {
            0..=5 => {
                timeouts += 1;
                tally.timeouts.fetch_add(1, Ordering::Relaxed);
                let d = match (r >> 8) % 4 {
                    0 => Duration::ZERO,
                    _ => Duration::from_micros((r >> 12) % 2000),
                };
                match tokio::time::timeout(d, m.lock_async()).await {
                    Ok(a) => use_lock(a.unwrap(), &tally, across).await,
                    Err(_) => {
                        tally.timed_out.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            6 => {
                let mut f = pin!(m.lock_async());
                let polled = f.as_mut().poll(&mut Context::from_waker(Waker::noop()));
                if let Poll::Ready(a) = polled {
                    use_lock(a.unwrap(), &tally, across).await;
                }
                tally.polled_once.fetch_add(1, Ordering::Relaxed);
            }
            7 => {
                // Then awaited: the task's waker must replace the no-op one.
                let mut f = m.lock_async();
                let polled = Pin::new(&mut f).poll(&mut Context::from_waker(Waker::noop()));
                let a = match polled {
                    Poll::Ready(a) => a,
                    Poll::Pending => f.await,
                };
                use_lock(a.unwrap(), &tally, across).await;
                tally.rewoken.fetch_add(1, Ordering::Relaxed);
            }
            8 => match drop_when_woken(m.lock_async()).await {
                Some(a) => use_lock(a.unwrap(), &tally, across).await,
                None => {
                    tally.dropped_woken.fetch_add(1, Ordering::Relaxed);
                }
            },
            _ => use_lock(m.lock_async().await.unwrap(), &tally, across).await,
        }
    }
}

/// Cancel safety: thousands of futures dropped at random points
/// (6000 timeouts at least, futures polled once, futures dropped just
/// after the holder acquired for them) from 12 tasks, while another
/// process's tasks lock and unlock and holder processes are SIGKILLed
/// holding. Afterwards the lock is free, the value is exactly the number
/// of guards obtained, every holder thread is idle, and each death was
/// delivered to exactly one taker (and counted once).
#[test]
fn futures_dropped_at_random_points_never_leave_the_lock_held_nor_lose_a_death() {
    let f = fixture();
    let (path, m, rt) = (&f.path, &f.m, &f.rt);
    let mut churn = Kid::spawn("async_churn", path);
    churn.expect("ready");
    churn.tell("go");
    let tally = Arc::new(Tally::default());
    let tasks: Vec<_> = (0..TORTURE_TASKS)
        .map(|t| {
            let seed = 0x9E37_79B9_7F4A_7C15 ^ (t + 1).wrapping_mul(0x2545_F491_4F6C_DD1D);
            rt.spawn(torture_task(m.clone(), tally.clone(), seed))
        })
        .collect();
    // Holders killed while the tasks run: each a death for exactly one
    // taker (a torture task, the churn, or the next killed holder).
    let mut killer_deaths = 0;
    for _ in 0..KILLS {
        let mut k = Kid::spawn("async_hold", path);
        if k.expect("locked") == "died" {
            killer_deaths += 1;
        }
        k.kill();
    }
    wait_until("the last death is taken and recovered", || {
        m.status().counters.recoveries == KILLS
    });
    tally.stop.store(true, Ordering::Release);
    for t in tasks {
        within(rt, t).unwrap();
    }
    churn.tell("stop");
    let done = churn.expect("done");
    churn.wait_ok();
    let (churn_guards, churn_deaths) = done.split_once(',').unwrap();
    let churn_guards: u64 = churn_guards.parse().unwrap();
    let churn_deaths: u64 = churn_deaths.parse().unwrap();

    settled();
    let s = m.status();
    assert_eq!(s.state, LockState::Unlocked, "{s:?}");
    let g = clean_sync(m.try_lock().unwrap());
    let guards = tally.guards.load(Ordering::Relaxed);
    assert_eq!(*g, guards + churn_guards, "every guard added one");
    drop(g);
    let deaths = tally.deaths.load(Ordering::Relaxed);
    assert_eq!(
        deaths + churn_deaths + killer_deaths,
        KILLS,
        "each death goes to exactly one taker \
         (here {deaths}, the churn {churn_deaths}, the killed holders {killer_deaths})"
    );
    let c = m.status().counters;
    assert_eq!((c.owner_deaths, c.recoveries), (KILLS, KILLS));
    let timeouts = tally.timeouts.load(Ordering::Relaxed);
    assert!(timeouts >= TIMEOUTS_PER_TASK * TORTURE_TASKS);
    eprintln!(
        "cancel torture: {timeouts} timeouts ({} timed out), {} polled once and dropped, \
         {} polled once then awaited, {} dropped once delivered; {guards} guards here, \
         {churn_guards} in the churn \
         ({CHURN_TASKS} tasks); {KILLS} deaths: {deaths} taken here, {churn_deaths} by the \
         churn, {killer_deaths} by the next killed holder",
        tally.timed_out.load(Ordering::Relaxed),
        tally.polled_once.load(Ordering::Relaxed),
        tally.rewoken.load(Ordering::Relaxed),
        tally.dropped_woken.load(Ordering::Relaxed),
    );
}

/// Responsiveness (structural, not timed): with the lock held by
/// another process, 50 tasks on a 2-worker runtime each poll `lock_async`
/// (the poll returns: no worker blocks), and one holder thread, not 50,
/// waits in the kernel; a ping task then completes 100 round trips with
/// another task; on release all 50 finish.
#[test]
fn fifty_waiting_tasks_leave_a_two_worker_runtime_responsive() {
    let f = fixture();
    let (path, m, rt) = (&f.path, &f.m, &f.rt);
    let mut kid = Kid::spawn("hold_until_told", path);
    kid.expect("locked");
    let (queued_tx, mut queued_rx) = tokio::sync::mpsc::unbounded_channel();
    let waiters: Vec<_> = (0..TASKS)
        .map(|_| {
            let (m, queued) = (m.clone(), queued_tx.clone());
            rt.spawn(async move {
                let mut f = pin!(m.lock_async());
                poll_fn(|cx| {
                    assert!(
                        f.as_mut().poll(cx).is_pending(),
                        "the lock is held elsewhere"
                    );
                    Poll::Ready(())
                })
                .await;
                queued.send(()).unwrap();
                *clean(f.await.unwrap()) += 1;
            })
        })
        .collect();
    let pinger = rt.spawn(async move {
        for _ in 0..TASKS {
            queued_rx.recv().await.unwrap();
        }
        let (ping_tx, mut ping_rx) = tokio::sync::mpsc::channel::<u32>(1);
        let (pong_tx, mut pong_rx) = tokio::sync::mpsc::channel::<u32>(1);
        let ponger = tokio::spawn(async move {
            while let Some(i) = ping_rx.recv().await {
                pong_tx.send(i).await.unwrap();
            }
        });
        for i in 0..100 {
            ping_tx.send(i).await.unwrap();
            assert_eq!(pong_rx.recv().await, Some(i));
        }
        drop(ping_tx);
        ponger.await.unwrap();
    });
    within(rt, pinger).unwrap();
    // Threads follow the locks in use, not the tasks: one lane, one
    // holder thread busy, asleep on the lock word.
    until_waited_on(m);
    assert_eq!(internals::lanes_serving(), 1);
    let (alive, idle) = internals::holder_threads();
    assert_eq!(alive - idle, 1, "holder threads busy for one lock");
    kid.tell("release");
    kid.expect("released");
    for w in waiters {
        within(rt, w).unwrap();
    }
    settled();
    assert_eq!(*clean_sync(m.lock().unwrap()), TASKS as u64);
}

/// An `AsyncGuard` held across `fork()` (in a child process, which has a
/// runtime): the fork child's inherited copy is inert when dropped (the
/// lock stays with the parent's holder thread); the fork child then waits
/// in `lock_async` on a runtime of its own and gets the lock, with the
/// parent's last write, when the parent releases.
#[test]
fn an_async_guard_inherited_through_fork_is_inert_and_the_child_locks_after_release() {
    let f = fixture();
    let (path, m) = (&f.path, &f.m);
    let mut kid = Kid::spawn("async_fork", path);
    kid.expect("ok");
    kid.wait_ok();
    assert_eq!(*clean_sync(m.lock().unwrap()), 3);
}

fn assert_send<T: Send>() {}
fn assert_sync<T: Sync>() {}
fn assert_unpin<T: Unpin>() {}

/// A future that holds the guard across an `.await`, as `tokio::spawn`
/// takes it (`Send + 'static`).
fn spawn_holding(m: Arc<SharedMutex<u64>>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut g = clean(m.lock_async().await.unwrap());
        tokio::task::yield_now().await;
        *g += 1;
        *g
    })
}

/// The future, the guard, its recovery and acquisition are `Send`
/// (the guard also `Sync`, the future `Unpin`), and `tokio::spawn` takes a
/// future holding the guard across an `.await`.
#[test]
fn futures_guards_and_recoveries_are_send() {
    assert_send::<LockFuture<'static, u64>>();
    assert_unpin::<LockFuture<'static, u64>>();
    assert_send::<AsyncGuard<'static, u64>>();
    assert_sync::<AsyncGuard<'static, u64>>();
    assert_send::<Recovery<AsyncGuard<'static, u64>>>();
    assert_send::<Acquired<AsyncGuard<'static, u64>>>();
    let f = fixture();
    let (m, rt) = (&f.m, &f.rt);
    let task = {
        let _in_runtime = rt.enter();
        spawn_holding(m.clone())
    };
    assert_eq!(within(rt, task).unwrap(), 1);
    settled();
}

/// A sync `lock()` in this process while an `AsyncGuard` holds the lock
/// waits like any other locker (the holder thread owns the lock, not the
/// thread that awaited it): no `Deadlock`; `try_lock` is `WouldBlock`.
#[test]
fn a_sync_lock_in_the_same_process_waits_for_an_async_guard() {
    let f = fixture();
    let (m, rt) = (&f.m, &f.rt);
    let g = clean(within(rt, m.lock_async()).unwrap());
    assert!(matches!(m.try_lock(), Err(LockError::WouldBlock)));
    std::thread::scope(|s| {
        let t = s.spawn(|| {
            let mut g = clean_sync(m.lock().unwrap());
            *g += 1;
        });
        until_waited_on(m);
        drop(g);
        t.join().unwrap();
    });
    settled();
    assert_eq!(*clean_sync(m.lock().unwrap()), 1);
}
