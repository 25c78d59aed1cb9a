//! Condition waits (issue 13): `Guard::wait*` and `notify_*`, with real
//! processes and real SIGKILLs (the roles of `common::roles_cond`),
//! synchronised by pipes and by watching waiters sleep in the kernel
//! (`/proc/<pid>/task/<tid>/syscall`), never by sleeping. Every wait here
//! has the 60 s hang watchdog as its only time limit, and so does every
//! child (it exits if still running then).
//!
//! A waiter sleeps at most one 50 ms tick at a time, and a tick that finds
//! the sequence moved or the holder dead returns as a wake-up would have:
//! so a wake-up or a broadcast that never comes would only make the tests
//! slower. Waiters that a wake-up must reach therefore run with the
//! library's tick checkpoints ([`TICK_MOVED`], [`TICK_DIED`], [`TICK_ANY`]):
//! a tick that finds what no wake-up told it stops the waiter, and the test
//! fails at once ([`said`], [`answers`]). After a holder's death, a
//! sequence moved with no wake-up once the death is taken finds any waiter
//! its broadcast missed ([`dead_holder`]). (The benchmark shows the notify
//! → wake latency.)

use crate::common::roles_cond::{
    ABANDON_ENV, AFTER_ENV, HOLD_ENV, PANIC_ENV, RELOCK_ENV, REPAIRED, ROUNDS_ENV, SET_ENV,
    SIDE_ENV, TAKE_ENV, WATCHDOG, clean, gettid, notify,
};
use crate::common::{Kid, temp_path};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use robust_mutex::{Acquired, CancelToken, LockError, LockState, SharedMutex};
use std::path::Path;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::thread::{Scope, ScopedJoinHandle};
use std::time::{Duration, Instant};

/// The syscall number of `futex` (x86_64; `FUTEX_WAIT_BITSET` sleeps).
#[cfg(target_arch = "x86_64")]
const SYS_FUTEX: &str = "202";
#[cfg(not(target_arch = "x86_64"))]
const SYS_FUTEX: &str = "98";
/// The generic syscall number of `futex_waitv` (cancellable waits).
const SYS_FUTEX_WAITV: &str = "449";
/// FUTEX_WAITERS in the lock word: a locker sleeps on it.
const FUTEX_WAITERS: u32 = 0x8000_0000;
const PAUSE_AT: &str = "ROBUST_MUTEX_TEST_PAUSE_AT";
/// With [`PAUSE_AT`]: go on after a line on stdin.
const RESUME: &str = "ROBUST_MUTEX_TEST_RESUME";
/// For a waiter that a wake-up must reach: a sleep that ends at its tick
/// and finds the sequence moved (a notification whose wake-up did not
/// reach it) stops it there. Not for a waiter that may legitimately learn
/// of a notification at a tick: one of several woken by `notify_one`s, or
/// one whose notifier died between its add and its wake.
const TICK_MOVED: (&str, &str) = (PAUSE_AT, "cond_tick_moved");
/// For a waiter that a death's broadcast must reach: a sleep that ends at
/// its tick and finds the holder dead (FUTEX_OWNER_DIED) stops it there.
const TICK_DIED: (&str, &str) = (PAUSE_AT, "cond_tick_died");
/// For a waiter that a reset's broadcast must reach: a sleep that ends at
/// its tick and finds the file retired stops it there.
const TICK_RETIRED: (&str, &str) = (PAUSE_AT, "cond_tick_retired");
/// Both: for a waiter that a broadcast (a notify_all) must reach.
const TICK_ANY: (&str, &str) = (PAUSE_AT, "cond_tick_died,cond_tick_moved");

/// What child `k` says as `msg` (as [`Kid::expect`]); fails the test at
/// once, saying why, if the child stopped at a tick checkpoint
/// ([`TICK_MOVED`], [`TICK_DIED`]) or ended first.
fn said(k: &mut Kid, msg: &str) -> String {
    k.expect_or_paused(msg)
        .unwrap_or_else(|stop| panic!("{}", why(k.pid(), msg, stop.as_deref())))
}

/// Why child `pid` did not say `msg`: it stopped at checkpoint `stop`, or
/// ended (`None`).
fn why(pid: u32, msg: &str, stop: Option<&str>) -> String {
    match stop {
        Some("cond_tick_moved") => format!(
            "waiter {pid}: no wake-up reached it: its sleep ended at its 50 ms tick \
             and found the sequence moved"
        ),
        Some("cond_tick_died") => format!(
            "waiter {pid}: no broadcast told it of the holder's death: its sleep ended \
             at its 50 ms tick and found FUTEX_OWNER_DIED"
        ),
        Some("cond_tick_retired") => format!(
            "waiter {pid}: no broadcast told it of the reset: its sleep ended at its \
             50 ms tick and found the file retired"
        ),
        Some(step) => format!("child {pid} stopped at {step} before saying {msg:?}"),
        None => format!(
            "child {pid} ended before saying {msg:?}: its {WATCHDOG:?} hang watchdog \
             fired, or it failed (see its stderr)"
        ),
    }
}

/// Spins (yielding) until `cond` holds; fails after the watchdog.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < WATCHDOG, "hung waiting until {what}");
        std::thread::yield_now();
    }
}

/// Whether thread `tid` of process `pid` is in system call `nr`.
fn in_syscall(pid: u32, tid: i32, nr: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall"))
        .is_ok_and(|s| s.split_whitespace().next() == Some(nr))
}

/// Waits until thread `tid` of `pid` sleeps in `futex`.
fn asleep(pid: u32, tid: i32) {
    wait_until("the waiter sleeps in futex", || {
        in_syscall(pid, tid, SYS_FUTEX)
    });
}

/// A `cond_waiter` child (with extra environment), asleep in its wait.
fn sleeping_waiter(path: &Path, env: &[(&str, &str)]) -> Kid {
    let mut k = Kid::spawn_env("cond_waiter", path, env);
    let tid = k.expect("tid").parse().unwrap();
    asleep(k.pid(), tid);
    k
}

/// `n` sleeping `cond_waiter` children.
fn sleeping_waiters(path: &Path, n: usize, env: &[(&str, &str)]) -> Vec<Kid> {
    (0..n).map(|_| sleeping_waiter(path, env)).collect()
}

/// What each waiter said it returned with (`died,<v>` / `clean,<v>`), and
/// each ends well.
fn outcomes(kids: Vec<Kid>) -> Vec<String> {
    kids.into_iter()
        .map(|mut k| {
            let got = said(&mut k, "got");
            k.wait_ok();
            got
        })
        .collect()
}

/// Each of `kids`' answer to `msg` (as [`Kid::expect`]), with the kid, in
/// the order they come. A kid stopped at a tick checkpoint, or ended, fails
/// the test at once (as in [`said`]), after killing the others (which may
/// be waiting for it).
fn answers(kids: Vec<Kid>, msg: &'static str) -> impl Iterator<Item = (String, Kid)> {
    let pids: Vec<u32> = kids.iter().map(Kid::pid).collect();
    let (tx, rx) = std::sync::mpsc::channel();
    for mut kid in kids {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let answer = kid.expect_or_paused(msg);
            let _ = tx.send((answer, kid));
        });
    }
    let mut answered = Vec::new();
    rx.into_iter().take(pids.len()).map(move |(answer, kid)| {
        let pid = kid.pid();
        answered.push(pid);
        match answer {
            Ok(a) => (a, kid),
            Err(stop) => {
                drop(kid); // killed and reaped
                for other in pids.iter().filter(|p| !answered.contains(p)) {
                    let _ = kill(Pid::from_raw(*other as i32), Signal::SIGKILL);
                }
                panic!("{}", why(pid, msg, stop.as_deref()))
            }
        }
    })
}

/// Another process's `try_lock` answer (`clean`, `died`, `busy`, `err ..`).
fn try_lock_elsewhere(path: &Path) -> String {
    let mut k = Kid::spawn("cond_try_lock", path);
    let r = k.expect("try");
    k.wait_ok();
    r
}

// 1. No lost wake-up.

/// Two processes play ping-pong for `ROUNDS` rounds each, notifying
/// with the lock held or `after` unlocking. Both run with [`TICK_MOVED`]:
/// each notification must wake the other side, not its tick.
fn ping_pong(after: bool) {
    const ROUNDS: u64 = 500;
    let (_dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    let rounds = ROUNDS.to_string();
    let mut env = vec![(ROUNDS_ENV, rounds.as_str()), TICK_MOVED];
    if after {
        env.push((AFTER_ENV, "1"));
    }
    let sides: Vec<Kid> = ["0", "1"]
        .into_iter()
        .map(|side| {
            Kid::spawn_env(
                "cond_pingpong",
                &path,
                &[&env[..], &[(SIDE_ENV, side)]].concat(),
            )
        })
        .collect();
    for (_, side) in answers(sides, "done") {
        side.wait_ok();
    }
    assert_eq!(*clean(m.lock().unwrap()), 2 * ROUNDS);
    let s = m.status();
    assert_eq!((s.state, s.counters.owner_deaths), (LockState::Unlocked, 0));
}

#[test]
fn a_ping_pong_notified_with_the_lock_held_completes_every_round() {
    ping_pong(false);
}

#[test]
fn a_ping_pong_notified_after_unlocking_completes_every_round() {
    ping_pong(true);
}

#[test]
fn notify_all_wakes_every_waiting_process() {
    let (_dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    for after in [false, true] {
        *clean(m.lock().unwrap()) = 0;
        let waiters = sleeping_waiters(&path, 4, &[TICK_MOVED]);
        let mut g = clean(m.lock().unwrap());
        *g = 1;
        notify(g, after, true);
        assert_eq!(outcomes(waiters), ["clean,1"; 4], "after unlock: {after}");
    }
}

/// A `cond_waiter` child stopped after releasing the lock, before its
/// first sleep; `tell` a line to resume it. What happened meanwhile must be
/// seen before that sleep: its tick must not find it (`tick`, the step of
/// [`TICK_MOVED`] or [`TICK_DIED`]).
fn waiter_paused_before_sleeping(path: &Path, tick: (&str, &str)) -> Kid {
    let steps = format!("cond_released,{}", tick.1);
    let env = [(PAUSE_AT, steps.as_str()), (RESUME, "1")];
    let mut k = Kid::spawn_env("cond_waiter", path, &env);
    k.expect("paused:cond_released");
    k
}

#[test]
fn a_notification_between_the_release_and_the_first_sleep_is_not_lost() {
    let (_dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    let mut k = waiter_paused_before_sleeping(&path, TICK_MOVED);
    *clean(m.lock().unwrap()) = 1;
    m.notify_one();
    k.tell("go");
    assert_eq!(outcomes(vec![k]), ["clean,1"]);
}

// 2. Dead waiters cost nothing.

#[test]
fn waiters_killed_at_every_step_leave_nothing_behind() {
    let (_dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    let take = [(TAKE_ENV, "1")];

    // Killed after releasing the lock, before its first sleep.
    let mut k = Kid::spawn_env("cond_waiter", &path, &[(PAUSE_AT, "cond_released")]);
    k.expect("paused:cond_released");
    k.kill();

    // Killed asleep.
    sleeping_waiter(&path, &take).kill();

    // Killed woken, before its relock (the notification is spent on it).
    let mut k = sleeping_waiter(&path, &[(PAUSE_AT, "cond_woken")]);
    m.notify_one();
    k.expect("paused:cond_woken");
    k.kill();

    // Killed blocked in its relock, behind us.
    let k = sleeping_waiter(&path, &take);
    let g = clean(m.lock().unwrap());
    m.notify_one();
    wait_until("the woken waiter blocks in its relock", || {
        m.status().lock_word & FUTEX_WAITERS != 0
    });
    k.kill();
    drop(g);

    // Three killed asleep ahead of a live one: one notify_one wakes it (not
    // its tick: the dead are reaped, so off the futex queue).
    let dead = sleeping_waiters(&path, 3, &take);
    let live = sleeping_waiter(&path, &[take[0], TICK_MOVED]);
    dead.into_iter().for_each(Kid::kill);
    *clean(m.lock().unwrap()) += 1;
    m.notify_one();
    assert_eq!(outcomes(vec![live]), ["clean,1"]);

    // Live and killed sleepers mixed: one ticket and one notify_one per
    // live waiter, and every live one gets a ticket. (Not TICK_MOVED: a
    // live one may see at its tick the notify_one that woke another.)
    let mut live = Vec::new();
    let mut dead = Vec::new();
    for _ in 0..3 {
        dead.push(sleeping_waiter(&path, &take));
        live.push(sleeping_waiter(&path, &take));
    }
    dead.into_iter().for_each(Kid::kill);
    for _ in 0..live.len() {
        *clean(m.lock().unwrap()) += 1;
        m.notify_one();
    }
    for got in outcomes(live) {
        assert!(got.starts_with("clean,"), "{got}");
    }

    let s = m.status();
    assert_eq!(s.state, LockState::Unlocked);
    assert_eq!(s.counters.owner_deaths, 0);
    assert_eq!(*clean(m.lock().unwrap()), 0, "every ticket taken once");
}

// 3. A dead holder is a notification; 4. dead notifiers.

/// How the holder of [`dead_holder`] goes.
#[derive(Clone, Copy, PartialEq)]
enum Death {
    Killed,
    Panics,
}

/// Three processes wait while the value is 0; another takes the lock
/// (setting the value to `set`, if given) and dies holding it, with a
/// plain lock waiter blocked behind it if `lock_waiter`. Every waiter
/// returns, exactly one (the first to relock) with `OwnerDied`, which
/// repairs (the value it saw: `set`, or 0); the others see the repair;
/// the counters say one death, one recovery.
///
/// The first to relock takes the death and wakes every condition waiter
/// (its EOWNERDEAD broadcasts), so once it holds the lock (it says so and
/// holds it until told) no condition waiter may still sleep: the test
/// then moves the sequence with no wake-up (`cond_bump`), which only a
/// waiter still asleep would see, at its tick ([`TICK_MOVED`]). A panic
/// also broadcasts at once: its waiters' ticks must not find the death
/// either ([`TICK_ANY`]).
fn dead_holder(death: Death, lock_waiter: bool, set: Option<&str>) {
    let (_dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    let hold = (HOLD_ENV, "1");
    let told = match death {
        Death::Panics => TICK_ANY,
        // The death itself: only their ticks can see it if no lock waiter.
        Death::Killed => TICK_MOVED,
    };
    let mut kids = sleeping_waiters(&path, 3, &[told, hold]);
    let mut env = Vec::new();
    if death == Death::Panics {
        env.push((PANIC_ENV, "1"));
    }
    if let Some(v) = set {
        env.push((SET_ENV, v));
    }
    let mut holder = Kid::spawn_env("cond_hold", &path, &env);
    holder.expect("locked");
    if lock_waiter {
        kids.push(Kid::spawn_env("cond_lock_repair", &path, &[hold]));
        wait_until("the lock waiter sleeps", || {
            m.status().lock_word & FUTEX_WAITERS != 0
        });
    }
    match death {
        Death::Killed => holder.kill(),
        Death::Panics => {
            holder.tell("panic");
            holder.expect("panicked");
        }
    }
    // The first to answer is the taker (the others relock behind it).
    let mut answers = answers(kids, "got");
    let (first, mut taker) = answers.next().unwrap();
    assert!(first.starts_with("died,"), "{first}");
    Kid::spawn("cond_bump", &path).expect("bumped");
    taker.tell("release");
    taker.wait_ok();
    let mut got = vec![first];
    for (g, k) in answers {
        got.push(g);
        k.wait_ok();
    }
    let died = got.iter().filter(|g| g.starts_with("died,")).count();
    assert_eq!(died, 1, "exactly one repairs: {got:?}");
    let (dead, repaired) = (
        format!("died,{}", set.unwrap_or("0")),
        format!("clean,{REPAIRED}"),
    );
    assert!(got.iter().all(|g| *g == dead || *g == repaired), "{got:?}");
    let c = m.status().counters;
    assert_eq!((c.owner_deaths, c.recoveries), (1, 1));
    assert_eq!(*clean(m.lock().unwrap()), REPAIRED);
}

#[test]
fn a_holder_killed_with_no_lock_waiter_wakes_every_condition_waiter() {
    // Only the waiters' own look at the lock word (each tick) can see it.
    dead_holder(Death::Killed, false, None);
}

#[test]
fn a_holder_killed_with_a_lock_waiter_wakes_every_condition_waiter() {
    // The kernel wakes the lock waiter; its EOWNERDEAD wakes the others.
    dead_holder(Death::Killed, true, None);
}

#[test]
fn a_holder_that_panics_holding_wakes_every_condition_waiter() {
    dead_holder(Death::Panics, false, None);
}

#[test]
fn a_notifier_killed_between_its_change_and_its_notify_is_a_holder_death() {
    dead_holder(Death::Killed, false, Some("5"));
}

/// Three processes (with `env`) wait while the value is 0; a notifier
/// (child `role`) sets it to 5 and says `said`, then is killed. Every
/// waiter returns with 5, the lock is free and nobody died holding it.
fn dead_notifier(role: &str, said: &str, env: &[(&str, &str)]) {
    let (_dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    let waiters = sleeping_waiters(&path, 3, env);
    let mut notifier = Kid::spawn_env(role, &path, &[(SET_ENV, "5")]);
    notifier.expect(said);
    notifier.kill();
    assert_eq!(outcomes(waiters), ["clean,5"; 3]);
    let s = m.status();
    assert_eq!((s.state, s.counters.owner_deaths), (LockState::Unlocked, 0));
    assert_eq!(try_lock_elsewhere(&path), "clean");
}

#[test]
fn a_notifier_killed_right_after_its_notify_is_harmless() {
    // Killed after its wake-up: that reached every waiter.
    dead_notifier("cond_notify", "notified", &[TICK_MOVED]);
}

#[test]
fn a_notifier_killed_between_its_add_and_its_wake_still_releases_the_waiters() {
    // The sequence moved and nobody was woken: each waiter sees it at its
    // next tick (a spurious wake-up), relocks and finds the change.
    dead_notifier("cond_bump", "bumped", &[]);
}

#[test]
fn a_holder_death_between_the_release_and_the_first_sleep_is_seen() {
    let (_dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    let mut k = waiter_paused_before_sleeping(&path, TICK_DIED);
    let mut holder = Kid::spawn("cond_hold", &path);
    holder.expect("locked");
    holder.kill();
    k.tell("go");
    assert_eq!(outcomes(vec![k]), ["died,0"]);
    assert_eq!(*clean(m.lock().unwrap()), REPAIRED);
}

#[test]
fn a_stuck_holder_ends_every_wait_with_stuck() {
    // A holder the kernel never marked dead (its robust-list walk stopped)
    // is dead all the same: a lock waiter learns it (Stuck), and so must
    // condition waiters, since no notifier can take the lock any more.
    let (_dir, path) = temp_path("m");
    let waiters = sleeping_waiters(&path, 2, &[]);
    Kid::spawn("stuck", &path).wait_ok();
    for g in outcomes(waiters) {
        assert!(
            g.starts_with("err ") && g.contains("the lock is stuck"),
            "{g}"
        );
    }
}

#[test]
fn an_abandoned_recovery_ends_every_wait_with_not_recoverable() {
    let (_dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    let waiters = sleeping_waiters(&path, 3, &[(ABANDON_ENV, "1")]);
    let mut holder = Kid::spawn("cond_hold", &path);
    holder.expect("locked");
    holder.kill();
    let mut got = outcomes(waiters);
    got.sort();
    assert_eq!(got[0], "abandoned,0", "{got:?}");
    for g in &got[1..] {
        assert!(g.starts_with("err the mutex is not recoverable"), "{g}");
    }
    assert_eq!(m.status().state, LockState::NotRecoverable);
}

// 5. Cancellation.

/// A thread (in `s`) that locks `m`, then waits, cancellable through
/// `cancel` (again after each spurious return), until an error ends it;
/// returned once it sleeps in `futex_waitv`.
fn cancellable_waiter<'s>(
    s: &'s Scope<'s, '_>,
    m: &'s SharedMutex<u64>,
    cancel: &'s CancelToken,
) -> ScopedJoinHandle<'s, LockError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = s.spawn(move || {
        tx.send(gettid()).unwrap();
        let mut g = clean(m.lock().unwrap());
        loop {
            match g.wait_cancellable(cancel, None) {
                Ok(a) => g = clean(a),
                Err(e) => return e,
            }
        }
    });
    let tid = rx.recv().unwrap();
    wait_until("the waiter sleeps in futex_waitv", || {
        in_syscall(std::process::id(), tid, SYS_FUTEX_WAITV)
    });
    waiter
}

#[test]
fn a_cancelled_wait_returns_without_the_lock() {
    let (_dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    let cancel = CancelToken::new();

    // Cancelled from another thread while asleep.
    std::thread::scope(|s| {
        let waiter = cancellable_waiter(s, &m, &cancel);
        cancel.cancel();
        let e = waiter.join().unwrap();
        assert!(matches!(e, LockError::Cancelled), "{e:?}");
    });
    assert_eq!(m.status().state, LockState::Unlocked);
    assert_eq!(try_lock_elsewhere(&path), "clean");

    // Already cancelled: at once, without the lock.
    let g = clean(m.lock().unwrap());
    assert!(matches!(
        g.wait_cancellable(&cancel, None),
        Err(LockError::Cancelled)
    ));
    assert_eq!(try_lock_elsewhere(&path), "clean");

    // Timed out: without the lock.
    cancel.reset();
    let mut g = clean(m.lock().unwrap());
    let e = loop {
        match g.wait_cancellable(&cancel, Some(Duration::from_millis(20))) {
            Ok(a) => g = clean(a),
            Err(e) => break e,
        }
    };
    assert!(matches!(e, LockError::TimedOut), "{e:?}");
    assert_eq!(m.status().state, LockState::Unlocked);
    assert_eq!(try_lock_elsewhere(&path), "clean");
}

#[test]
fn a_wait_cancelled_while_relocking_returns_without_the_lock() {
    let (_dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    let cancel = CancelToken::new();
    std::thread::scope(|s| {
        let waiter = cancellable_waiter(s, &m, &cancel);
        let mut holder = Kid::spawn("hold_until_told", &path);
        holder.expect("locked");
        // Woken, it relocks behind the holder.
        m.notify_all();
        wait_until("the waiter blocks in its relock", || {
            m.status().lock_word & FUTEX_WAITERS != 0
        });
        cancel.cancel();
        let e = waiter.join().unwrap();
        assert!(matches!(e, LockError::Cancelled), "{e:?}");
        let s = m.status();
        assert_eq!(s.state, LockState::Locked);
        assert_eq!(
            s.owner.unwrap().pid,
            holder.pid(),
            "the holder's lock untouched"
        );
        holder.tell("release");
        holder.expect("released");
    });
    assert_eq!(try_lock_elsewhere(&path), "clean");
}

// 6. Spurious wake-ups.

#[test]
fn wait_can_return_without_a_notification() {
    // A moved sequence with nobody woken (a notifier killed between its
    // add and its wake) returns a plain wait: a spurious wake-up.
    let (_dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    let tid = AtomicI32::new(0);
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            tid.store(gettid(), Ordering::SeqCst);
            let g = clean(m.lock().unwrap());
            *clean(g.wait().unwrap())
        });
        wait_until("the waiter sleeps", || {
            let t = tid.load(Ordering::SeqCst);
            t != 0 && in_syscall(std::process::id(), t, SYS_FUTEX)
        });
        let mut bump = Kid::spawn("cond_bump", &path);
        bump.expect("bumped");
        assert_eq!(waiter.join().unwrap(), 0, "back with nothing changed");
    });
}

#[test]
fn wait_while_ends_only_when_its_condition_is_false() {
    let (_dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    let tid = AtomicI32::new(0);
    let evaluations = AtomicUsize::new(0);
    let sleeping = |n| {
        wait_until("the waiter evaluated and sleeps", || {
            let t = tid.load(Ordering::SeqCst);
            evaluations.load(Ordering::SeqCst) == n && in_syscall(std::process::id(), t, SYS_FUTEX)
        })
    };
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            tid.store(gettid(), Ordering::SeqCst);
            let g = clean(m.lock().unwrap());
            let (a, timed_out) = g
                .wait_while_timeout(WATCHDOG, |v| {
                    evaluations.fetch_add(1, Ordering::SeqCst);
                    *v < 2
                })
                .unwrap();
            assert!(!timed_out);
            *clean(a)
        });
        sleeping(1);
        // A spurious wake-up: evaluated again (still true), asleep again.
        let mut bump = Kid::spawn("cond_bump", &path);
        bump.expect("bumped");
        sleeping(2);
        // A notification with the condition still true: asleep again.
        *clean(m.lock().unwrap()) = 1;
        m.notify_all();
        sleeping(3);
        *clean(m.lock().unwrap()) = 2;
        m.notify_one();
        assert_eq!(waiter.join().unwrap(), 2);
    });
    assert_eq!(evaluations.load(Ordering::SeqCst), 4);
}

#[test]
fn a_timed_out_wait_holds_the_lock_again() {
    let (_dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    let mut g = clean(m.lock().unwrap());
    *g = 3;
    let (a, timed_out) = g.wait_timeout(Duration::from_millis(20)).unwrap();
    assert!(timed_out, "nobody notified");
    let g = clean(a);
    let owner = m.status().owner.expect("we hold it again");
    assert_eq!(
        (owner.pid, owner.tid),
        (std::process::id(), gettid() as u32)
    );
    let (a, timed_out) = g
        .wait_while_timeout(Duration::from_millis(20), |v| *v == 3)
        .unwrap();
    assert!(timed_out, "the condition still holds");
    let g = clean(a);
    assert_eq!(*g, 3);
    assert_eq!(m.status().state, LockState::Locked);
    assert_eq!(try_lock_elsewhere(&path), "busy");
    drop(g);
}

// 7. Recovery.

#[test]
fn a_recovered_guard_waits() {
    let (_dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    let mut holder = Kid::spawn("hold", &path);
    holder.expect("locked");
    holder.kill();
    let Acquired::OwnerDied(mut r) = m.lock().unwrap() else {
        panic!("expected OwnerDied");
    };
    *r = 0;
    let g = r.mark_consistent();
    let mut notifier = Kid::spawn_env("cond_notify", &path, &[(SET_ENV, "5")]);
    let (a, timed_out) = g.wait_while_timeout(WATCHDOG, |v| *v != 5).unwrap();
    assert!(!timed_out);
    assert_eq!(*clean(a), 5);
    notifier.expect("notified");
    let c = m.status().counters;
    assert_eq!((c.owner_deaths, c.recoveries), (1, 1));
}

// 8. A reset while waiters sleep.

/// Every waiter said it returned on the file now at `path` (its
/// generation), exactly one with `OwnerDied` (a replacement reports it to
/// its first locker), which repaired.
fn all_moved_to_the_new_file(path: &Path, waiters: Vec<Kid>) {
    let generation = SharedMutex::<u64>::open(path).unwrap().status().generation;
    let mut died = 0;
    for mut w in waiters {
        match said(&mut w, "got").as_str() {
            "died,0" => died += 1,
            g => assert_eq!(g, format!("clean,{REPAIRED}")),
        }
        assert_eq!(w.expect("gen"), generation.to_string(), "on the new file");
        w.wait_ok();
    }
    assert_eq!(died, 1);
}

#[test]
fn a_reset_of_a_stuck_lock_moves_sleeping_waiters_to_the_new_file() {
    // However late the reset: a waiter whose wait ended with Stuck first
    // (about a second after the lock became stuck) locks until the reset
    // moves that lock to the new file.
    let (_dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    let waiters = sleeping_waiters(&path, 3, &[(RELOCK_ENV, "1")]);
    Kid::spawn("stuck", &path).wait_ok();
    assert_eq!(m.status().state, LockState::Stuck);
    robust_mutex::reset(&path, false).unwrap();
    all_moved_to_the_new_file(&path, waiters);
    assert_eq!(*clean(m.lock().unwrap()), REPAIRED, "m moved too");
}

#[test]
fn a_forced_reset_moves_sleeping_waiters_to_the_new_file() {
    let (_dir, path) = temp_path("m");
    let _m = SharedMutex::<u64>::open(&path).unwrap();
    let waiters = sleeping_waiters(&path, 3, &[TICK_RETIRED]);
    robust_mutex::reset(&path, true).unwrap();
    all_moved_to_the_new_file(&path, waiters);
}

#[test]
fn a_wait_begun_on_a_retired_file_moves_to_the_new_one() {
    // After a forced reset, a handle that never met a broken lock still
    // locks the old file (as documented); its notifiers use the new one.
    let (_dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    robust_mutex::reset(&path, true).unwrap();
    let mut first = Kid::spawn("cond_lock_repair", &path);
    assert_eq!(first.expect("got"), "died,0");
    first.wait_ok();
    let g = clean(m.lock().unwrap());
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut notifier = Kid::spawn_env("cond_notify", &path, &[(SET_ENV, "5")]);
            notifier.expect("notified");
        });
        let (a, timed_out) = g.wait_while_timeout(WATCHDOG, |v| *v != 5).unwrap();
        assert!(!timed_out, "never woken");
        assert_eq!(*clean(a), 5);
    });
}
