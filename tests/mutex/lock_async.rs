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

use crate::common::roles::{HELD_LABEL, HELD_VALUE};
use crate::common::roles_async::{
    CHURN_TASKS, FUTEX_WAITERS, HOLD_LABEL, ROUNDS_ENV, SET_ENV, TASKS, TID_MASK, WATCHDOG, clean,
    increment_tasks, runtime, settle,
};
use crate::common::{Kid, temp_path};
use robust_mutex::{
    Acquired, AsyncGuard, LockError, LockFuture, LockState, Recovery, SharedMutex, internals,
};
use std::collections::HashSet;
use std::future::{Future, poll_fn};
use std::path::PathBuf;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

/// What the waiter that repairs after an owner death writes.
const REPAIRED: u64 = 7;

/// One test at a time in this module: they count the process's holder
/// threads and lanes.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A test's fixture: this module's turn ([`serial`], given back last), a
/// fresh `SharedMutex<u64>` file, and a 2-worker runtime.
struct Fixture {
    path: PathBuf,
    m: Arc<SharedMutex<u64>>,
    rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
    _turn: MutexGuard<'static, ()>,
}

fn fixture() -> Fixture {
    let turn = serial();
    let (dir, path) = temp_path("m");
    Fixture {
        m: Arc::new(SharedMutex::open(&path).unwrap()),
        path,
        rt: runtime(),
        _dir: dir,
        _turn: turn,
    }
}

/// Runs `f` to completion on `rt`; fails after [`WATCHDOG`] (a hang).
fn within<F: Future>(rt: &tokio::runtime::Runtime, f: F) -> F::Output {
    rt.block_on(async { tokio::time::timeout(WATCHDOG, f).await })
        .expect("hung: still running after the watchdog")
}

/// Waits until `cond` holds, yielding; fails after [`WATCHDOG`].
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < WATCHDOG, "hung waiting until {what}");
        std::thread::yield_now();
    }
}

/// Waits until someone sleeps on the lock (FUTEX_WAITERS is set): here,
/// the holder thread that waits in the kernel for this process's tasks.
fn until_waited_on(m: &SharedMutex<u64>) {
    wait_until("a holder thread sleeps on the lock", || {
        m.status().lock_word & FUTEX_WAITERS != 0
    });
}

/// After every future and guard is gone: no lane is served, and every
/// holder thread still alive is idle (back in the pool).
fn settled() {
    internals::wait_lanes_idle();
    assert_eq!(internals::lanes_serving(), 0);
    // (A thread that ends after its idle time leaves the idle list just
    // before it stops counting as alive.)
    wait_until("every holder thread is idle", || {
        let (alive, idle) = internals::holder_threads();
        alive == idle
    });
}

/// The name of thread `tid` of process `pid` (`/proc/PID/task/TID/comm`).
fn comm(pid: u32, tid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
        .unwrap()
        .trim_end()
        .to_owned()
}

/// The calling thread's id.
fn gettid() -> u32 {
    nix::unistd::gettid().as_raw() as u32
}

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

/// The guard of a clean sync acquisition; panics on `OwnerDied`.
fn clean_sync(a: Acquired<robust_mutex::Guard<'_, u64>>) -> robust_mutex::Guard<'_, u64> {
    match a {
        Acquired::Clean(g) => g,
        Acquired::OwnerDied(_) => panic!("expected a clean lock"),
    }
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

/// A task that takes the lock, writes `value`, holds it across an
/// `.await` and panics: its `JoinHandle` gives the panic.
fn panic_holding(rt: &tokio::runtime::Runtime, m: &Arc<SharedMutex<u64>>, value: u64) {
    let m = m.clone();
    let task = rt.spawn(async move {
        let (_, mut g) = settle(m.lock_async().await.unwrap());
        *g = value;
        tokio::task::yield_now().await;
        panic!("deliberate: a task panics holding an AsyncGuard");
    });
    let e = within(rt, task).unwrap_err();
    assert!(e.is_panic(), "{e}");
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

/// What [`drop_when_woken`]'s waker records.
#[derive(Default)]
struct Woken {
    woken: AtomicBool,
    outer: Mutex<Option<Waker>>,
}

impl Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        if let Some(w) = self.outer.lock().unwrap().take() {
            w.wake();
        }
    }
}

/// Polls `f` once; if it is pending, waits until its waker is woken (for
/// a `LockFuture`: the holder thread delivered its outcome) and drops it
/// without taking the outcome (`None`).
async fn drop_when_woken<F: Future + Unpin>(mut f: F) -> Option<F::Output> {
    let flag = Arc::new(Woken::default());
    let waker = Waker::from(flag.clone());
    if let Poll::Ready(out) = Pin::new(&mut f).poll(&mut Context::from_waker(&waker)) {
        return Some(out);
    }
    poll_fn(|cx| {
        *flag.outer.lock().unwrap() = Some(cx.waker().clone());
        if flag.woken.load(Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    drop(f);
    None
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
