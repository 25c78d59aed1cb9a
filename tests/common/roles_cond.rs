//! Child roles for condition waits (issue 13), dispatched from `roles.rs`.
//! All on a `SharedMutex<u64>` at the child's path. Each role starts a hang
//! watchdog first: a child still running after [`WATCHDOG`] says why on
//! stderr and exits with status 3, so a parent reading from it fails
//! instead of hanging (a paused or hanging child is killed long before).
//!
//! * `cond_waiter`: locks, says `tid=<tid>`, then waits while the value is
//!   0 (`wait_while`). The first to relock after a death (`OwnerDied`) sets
//!   the value to [`REPAIRED`] and marks it consistent. With [`TAKE_ENV`]
//!   set it takes one from the value (a ticket) before unlocking; with
//!   [`ABANDON_ENV`] set it abandons a recovery instead (drops it); with
//!   [`HOLD_ENV`] set, it says `got=died,..` still holding the repaired
//!   lock and releases it on a line from the parent; with
//!   [`RELOCK_ENV`] set, a wait that ends with `Stuck` is followed by
//!   `lock()` until that is not `Stuck` (a reset moves it to the new file).
//!   Says `got=<died|clean|abandoned>,<value it returned with>` (or
//!   `got=err <error>`), then `gen=<generation of the file its handle uses
//!   now>`, and exits. With `ROBUST_MUTEX_TEST_PAUSE_AT=<step>` the library
//!   stops it at that step of the wait (it says `paused:<step>`):
//!   `cond_released`, `cond_woken`, or `cond_tick_moved` /
//!   `cond_tick_died` (a sleep ended at its 50 ms tick and found the
//!   sequence moved / the holder dead: what no wake-up told it).
//! * `cond_pingpong`: plays side [`SIDE_ENV`] (0 starts) of [`pingpong`]
//!   for [`ROUNDS_ENV`] rounds, notifying after unlocking if [`AFTER_ENV`]
//!   is set, else with the lock held; says `done=<value>`.
//! * `cond_hold`: locks (clean), sets the value to [`SET_ENV`] if given,
//!   says `locked`; with [`PANIC_ENV`] set, panics holding the lock on a
//!   line from the parent and says `panicked`; then waits to be killed.
//! * `cond_lock_repair`: a plain lock waiter: locks; if the owner died, sets
//!   [`REPAIRED`] and marks it consistent; says `got=<died|clean>,<value>`
//!   (with [`HOLD_ENV`], as `cond_waiter`).
//! * `cond_notify`: locks, sets the value to [`SET_ENV`], unlocks,
//!   `notify_all`, says `notified`, waits to be killed.
//! * `cond_bump`: if [`SET_ENV`] is given, sets the value under the lock
//!   (no notify); then adds one notification (`COND_STEP`) to the header's `cond_seq` through a raw
//!   mapping, with no wake: what a notifier killed between its add and its
//!   wake leaves. Says `bumped`, waits to be killed.
//! * `cond_try_lock`: `try_lock`; says `try=clean`, `try=died`,
//!   `try=busy` or `try=err <error>`.

use super::{hang, listen, say};
use robust_mutex::{Acquired, Guard, LockError, SharedMutex};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The hang watchdog of every role and of the tests' own waits.
pub const WATCHDOG: Duration = Duration::from_secs(60);
/// What the first relocker after an owner death writes.
pub const REPAIRED: u64 = 7;
/// `cond_waiter`: take one from the value before unlocking.
pub const TAKE_ENV: &str = "RM_COND_TAKE";
/// `cond_waiter`: abandon the recovery after an owner death.
pub const ABANDON_ENV: &str = "RM_COND_ABANDON";
/// `cond_pingpong`: the number of rounds.
pub const ROUNDS_ENV: &str = "RM_COND_ROUNDS";
/// `cond_pingpong`: notify after unlocking rather than with the lock held.
pub const AFTER_ENV: &str = "RM_COND_AFTER";
/// `cond_pingpong`: the side played, 0 or 1.
pub const SIDE_ENV: &str = "RM_COND_SIDE";
/// `cond_waiter`: after a wait ended with `Stuck`, lock again until that
/// is not `Stuck`.
pub const RELOCK_ENV: &str = "RM_COND_RELOCK";
/// `cond_waiter`, `cond_lock_repair`: after an owner death, say so while
/// holding the repaired lock, and release it on a line from the parent.
pub const HOLD_ENV: &str = "RM_COND_HOLD";
/// `cond_hold`, `cond_notify`, `cond_bump`: the value to write.
pub const SET_ENV: &str = "RM_COND_SET";
/// `cond_hold`: panic holding the lock (on a line from the parent).
pub const PANIC_ENV: &str = "RM_COND_PANIC";
/// The offset of the header's `cond_seq` word (docs/design.md).
pub const COND_SEQ_OFFSET: usize = 192;

/// Plays `role` if it is one of this file's; returns false otherwise.
pub fn play(role: &str, path: &Path) -> bool {
    if !role.starts_with("cond_") {
        return false;
    }
    watchdog();
    let m = SharedMutex::<u64>::open(path).unwrap();
    let set = std::env::var(SET_ENV)
        .ok()
        .map(|s| s.parse::<u64>().unwrap());
    match role {
        "cond_waiter" => {
            let g = clean(m.lock().unwrap());
            say(format!("tid={}", gettid()));
            let mut r = g.wait_while(|v| *v == 0);
            if std::env::var_os(RELOCK_ENV).is_some() {
                while let Err(LockError::Stuck { .. }) = r {
                    r = m.lock();
                }
            }
            match r {
                Ok(Acquired::OwnerDied(r)) if std::env::var_os(ABANDON_ENV).is_some() => {
                    let seen = *r;
                    drop(r);
                    say(format!("got=abandoned,{seen}"));
                }
                Ok(a) => {
                    let (how, seen, mut g) = settle(a);
                    if std::env::var_os(TAKE_ENV).is_some() {
                        *g -= 1;
                    }
                    release(g, format!("got={how},{seen}"));
                }
                Err(e) => say(format!("got=err {e}")),
            }
            say(format!("gen={}", m.status().generation));
        }
        "cond_pingpong" => {
            let rounds = std::env::var(ROUNDS_ENV).unwrap().parse().unwrap();
            let after = std::env::var_os(AFTER_ENV).is_some();
            let side = std::env::var(SIDE_ENV).unwrap().parse().unwrap();
            pingpong(&m, side, rounds, after);
            say(format!("done={}", *clean(m.lock().unwrap())));
        }
        "cond_hold" => {
            let mut g = clean(m.lock().unwrap());
            if let Some(v) = set {
                *g = v;
            }
            say("locked");
            if std::env::var_os(PANIC_ENV).is_some() {
                listen();
                std::panic::set_hook(Box::new(|_| {}));
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                    let _g = g;
                    panic!("holding the lock");
                }));
                assert!(r.is_err());
                say("panicked");
            } else {
                std::mem::forget(g);
            }
            hang();
        }
        "cond_lock_repair" => {
            let (how, seen, g) = settle(m.lock().unwrap());
            release(g, format!("got={how},{seen}"));
        }
        "cond_notify" => {
            *clean(m.lock().unwrap()) = set.unwrap();
            m.notify_all();
            say("notified");
            hang();
        }
        "cond_bump" => {
            if let Some(v) = set {
                *clean(m.lock().unwrap()) = v;
            }
            bump_cond_seq(path);
            say("bumped");
            hang();
        }
        "cond_try_lock" => match m.try_lock() {
            Ok(Acquired::Clean(_)) => say("try=clean"),
            Ok(Acquired::OwnerDied(_)) => say("try=died"),
            Err(LockError::WouldBlock) => say("try=busy"),
            Err(e) => say(format!("try=err {e}")),
        },
        other => panic!("unknown role {other}"),
    }
    true
}

/// One side of a ping-pong on the value: `rounds` times, waits (in
/// `wait_while_timeout`, the watchdog as the timeout) until the value's
/// parity is `mine`, adds one and notifies one, with the lock held or
/// after unlocking (`after`). Side 0 starts; after both sides' rounds the
/// value is `2 * rounds`.
fn pingpong(m: &SharedMutex<u64>, mine: u64, rounds: u64, after: bool) {
    for round in 0..rounds {
        let g = clean(m.lock().unwrap());
        let (a, timed_out) = g.wait_while_timeout(WATCHDOG, |v| *v % 2 != mine).unwrap();
        assert!(!timed_out, "side {mine} round {round}: never woken");
        let mut g = clean(a);
        *g += 1;
        notify(g, after, false);
    }
}

/// Releases `g` and says `said`; with [`HOLD_ENV`] set, if `said` is of
/// an owner death (`got=died,..`), says it first, still holding `g`, and
/// releases it on a line from the parent.
fn release(g: Guard<'_, u64>, said: String) {
    if std::env::var_os(HOLD_ENV).is_some() && said.starts_with("got=died,") {
        say(said);
        listen();
        drop(g);
    } else {
        drop(g);
        say(said);
    }
}

/// Notifies one (`all`: every) waiter of `g`'s mutex, with the lock held,
/// or after unlocking if `after`.
pub fn notify(g: Guard<'_, u64>, after: bool, all: bool) {
    let m = g.mutex();
    let notify = || if all { m.notify_all() } else { m.notify_one() };
    if after {
        drop(g);
        notify();
    } else {
        notify();
        drop(g);
    }
}

/// The guard of a clean acquisition; panics on `OwnerDied`.
pub fn clean<'a>(a: Acquired<Guard<'a, u64>>) -> Guard<'a, u64> {
    match a {
        Acquired::Clean(g) => g,
        Acquired::OwnerDied(_) => panic!("expected a clean lock"),
    }
}

/// How a lock came (`died` or `clean`), the value it came with, and the
/// guard, repaired to [`REPAIRED`] and marked consistent if the owner died.
pub fn settle(a: Acquired<Guard<'_, u64>>) -> (&'static str, u64, Guard<'_, u64>) {
    match a {
        Acquired::Clean(g) => ("clean", *g, g),
        Acquired::OwnerDied(mut r) => {
            let seen = *r;
            *r = REPAIRED;
            ("died", seen, r.mark_consistent())
        }
    }
}

/// The calling thread's id.
pub fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// Adds one notification (`internals::COND_STEP`) to the `cond_seq` word of the file at `path` through a raw
/// mapping, past the library: a notification nobody is woken for.
pub fn bump_cond_seq(path: &Path) {
    let base = super::roles::raw_map(path).cast::<u8>();
    // SAFETY: the one-page mapping is live for ever (never unmapped);
    // `cond_seq` is a 4-byte aligned u32 at offset 192 of the header
    // (docs/design.md), which other processes only access atomically.
    let seq = unsafe { &*base.add(COND_SEQ_OFFSET).cast::<AtomicU32>() };
    seq.fetch_add(robust_mutex::internals::COND_STEP, Ordering::SeqCst);
}

/// Exits the process with status 3 if it is still running after
/// [`WATCHDOG`].
fn watchdog() {
    std::thread::spawn(|| {
        std::thread::sleep(WATCHDOG);
        eprintln!("cond role: still running after {WATCHDOG:?}: hung");
        std::process::exit(3);
    });
}
