//! Child roles for the cached coarse clock (`src/clock.rs`), each in a
//! fresh process, since the clock and its thread are process-wide
//! (dispatched from `roles.rs`). Each locks the `SharedMutex<()>` at its
//! path many times and checks every recorded `acquired_at`; it says `ok`
//! at the end, or panics.
//!
//! * `clock_ticks`: 1,500 locks, each recorded no later than a clock read
//!   after it and no earlier than one before it minus [`SLACK`]; then the
//!   clock thread exists, named `rmutex-clock`, with every signal blocked.
//! * `clock_after_park`: starts the thread, waits for it to park (a test
//!   hook's flag), then the next lock records a fresh time: not earlier
//!   than a clock read before it.
//! * `clock_fork_child`: starts the thread, forks; the child has no cached
//!   time, records fresh times and starts its own thread after enough
//!   locks. Says `child=ok` (the child's exit status 0).
//! * `clock_no_spawn`: meant to run as uid 65534: sets `RLIMIT_NPROC` to
//!   0 (no thread can be created), then 1,500 locks each record a fresh
//!   time, and the clock is `disabled` with no thread.
//! * `clock_thread_dies`: starts the thread, makes its next tick panic;
//!   the clock is then `disabled` with no cached time, and locks record
//!   fresh times.
//! * `clock_opt_out`: meant to run with `ROBUST_MUTEX_CLOCK_THREAD=0`:
//!   1,000 locks record fresh times, and no clock thread ever starts.
//! * `clock_not_frozen`: starts the thread, takes a coarse clock read,
//!   waits for two ticks (a hook's counter), then a lock records a time
//!   not earlier than that read: a clock frozen for any length fails.

use super::say;
use robust_mutex::SharedMutex;
use robust_mutex::internals::{
    CLOCK_THREAD_NAME, CLOCK_TICK, clock_cached, clock_panic_next_tick, clock_parks, clock_state,
    clock_ticks, coarse_unix_ns, wait_for_clock_park, wait_for_clock_ticks,
};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How much earlier than a clock read before the lock a recorded time may
/// be: one tick, plus 5 s for a clock thread kept off the CPU by a slow,
/// loaded machine. Generous on purpose: only a stale cached time (a frozen
/// clock, or a parent's after fork) is off by more.
pub fn slack() -> Duration {
    CLOCK_TICK + Duration::from_secs(5)
}

/// More locks than the clock needs to start its thread (256 direct reads).
const MANY: usize = 1500;

/// Plays `role` if it is one of this file's; returns false otherwise.
pub fn play(role: &str, path: &Path) -> bool {
    match role {
        "clock_ticks" => {
            let m = SharedMutex::<()>::open(path).unwrap();
            assert_eq!(clock_state(), "none", "no thread before any lock");
            for _ in 0..MANY {
                lock_within_bounds(&m);
            }
            // Ticking, or parked already if this process was kept off the
            // CPU for a second: either way the thread exists.
            assert!(matches!(clock_state(), "ticking" | "parked"));
            let tid = clock_thread().expect("a clock thread");
            assert_all_signals_blocked(tid);
        }
        "clock_after_park" => {
            let m = SharedMutex::<()>::open(path).unwrap();
            for _ in 0..MANY {
                lock_within_bounds(&m);
            }
            // About 1 s without a lock; 60 s only catches a hang.
            let parks = clock_parks();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                wait_for_clock_park(parks);
                let _ = tx.send(());
            });
            rx.recv_timeout(Duration::from_secs(60))
                .expect("the idle clock thread never parked");
            assert_eq!(clock_cached(), 0, "a parked clock caches nothing");
            lock_fresh(&m);
            lock_within_bounds(&m);
        }
        "clock_fork_child" => {
            let m = SharedMutex::<()>::open(path).unwrap();
            for _ in 0..MANY {
                lock_within_bounds(&m);
            }
            assert!(clock_thread().is_some());
            say(format!("child={}", in_fork_child(|| fork_child_checks(&m))));
        }
        "clock_no_spawn" => {
            use nix::sys::resource::{Resource, setrlimit};
            assert_ne!(
                nix::unistd::geteuid().as_raw(),
                0,
                "root ignores RLIMIT_NPROC"
            );
            setrlimit(Resource::RLIMIT_NPROC, 0, 0).unwrap();
            let probe = std::thread::Builder::new().spawn(|| {});
            assert!(probe.is_err(), "RLIMIT_NPROC 0 still let a thread start");
            let m = SharedMutex::<()>::open(path).unwrap();
            for _ in 0..MANY {
                lock_fresh(&m);
            }
            assert_eq!(clock_state(), "disabled");
            assert_eq!(clock_thread(), None);
        }
        "clock_thread_dies" => {
            let m = SharedMutex::<()>::open(path).unwrap();
            for _ in 0..MANY {
                lock_within_bounds(&m);
            }
            assert!(clock_thread().is_some());
            clock_panic_next_tick();
            // Its next tick is ~50 ms away; 60 s only catches a hang.
            poll_until(|| clock_state() == "disabled" && clock_thread().is_none());
            assert_eq!(clock_cached(), 0, "a dead clock left its cached time");
            for _ in 0..MANY {
                lock_fresh(&m);
            }
            assert_eq!(clock_state(), "disabled");
        }
        "clock_opt_out" => {
            assert_eq!(
                std::env::var("ROBUST_MUTEX_CLOCK_THREAD").as_deref(),
                Ok("0")
            );
            let m = SharedMutex::<()>::open(path).unwrap();
            for _ in 0..1000 {
                lock_fresh(&m);
            }
            assert_eq!(clock_thread(), None, "a clock thread despite the opt-out");
            assert_eq!(clock_state(), "disabled");
        }
        "clock_not_frozen" => {
            let m = SharedMutex::<()>::open(path).unwrap();
            for _ in 0..MANY {
                lock_within_bounds(&m);
            }
            let before = UNIX_EPOCH + Duration::from_nanos(coarse_unix_ns() & !1);
            let ticks = clock_ticks();
            // Two ticks are ~100 ms away (the thread parks only after 1 s
            // without a lock: keep it busy); 60 s only catches a hang.
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                wait_for_clock_ticks(ticks + 2);
                let _ = tx.send(());
            });
            while rx.try_recv().is_err() {
                drop(m.lock_or_recover(|_| {}).unwrap());
                std::thread::yield_now();
            }
            let g = m.lock_or_recover(|_| {}).unwrap();
            let at = m.status().owner.unwrap().acquired_at;
            drop(g);
            assert!(
                at >= before,
                "recorded {at:?}, frozen: the clock said {before:?} two ticks before"
            );
        }
        _ => return false,
    }
    say("ok");
    true
}

/// Polls `done` (yielding) until it holds; panics after 60 s, which only
/// catches a hang.
fn poll_until(done: impl Fn() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(60), "never happened");
        std::thread::yield_now();
    }
}

/// In the fork child: no cached time, fresh times, its own thread later.
fn fork_child_checks(m: &SharedMutex<()>) {
    assert_eq!(clock_cached(), 0, "the parent's cached time survived fork");
    assert_eq!(clock_state(), "none");
    assert_eq!(clock_thread(), None);
    lock_fresh(m);
    for _ in 0..MANY {
        lock_within_bounds(m);
    }
    assert!(matches!(clock_state(), "ticking" | "parked"));
    assert!(
        clock_thread().is_some(),
        "the child started no clock thread"
    );
}

/// Forks; the child runs `f` and exits 0, or 1 if it panicked (its panic
/// message on stderr). Returns `ok` or the child's wait status.
fn in_fork_child(f: impl FnOnce()) -> String {
    // SAFETY: the child only runs `f` (locks, /proc reads, a thread spawn
    // by the library, as a fork child of this crate may) and `_exit`s: it
    // never returns into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        // SAFETY: `_exit` ends the child at once, without the harness's
        // atexit handlers or buffered output.
        unsafe { libc::_exit(i32::from(r.is_err())) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child; `status` is a valid int.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid);
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        "ok".to_owned()
    } else {
        format!("status {status:#x}")
    }
}

/// Locks `m`: the recorded time is not later than a clock read after the
/// lock, nor earlier than one before it minus [`slack`].
fn lock_within_bounds(m: &SharedMutex<()>) {
    let before = SystemTime::now();
    let g = m.lock_or_recover(|_| {}).unwrap();
    let at = m.status().owner.unwrap().acquired_at;
    let after = SystemTime::now();
    drop(g);
    assert!(at <= after, "recorded {at:?}, later than {after:?}");
    assert!(
        at >= before - slack(),
        "recorded {at:?}, more than {:?} before {before:?}",
        slack()
    );
}

/// Locks `m` when no cached time may be used: the recorded time is not
/// earlier than a coarse clock read before the lock (bit 0 aside).
fn lock_fresh(m: &SharedMutex<()>) {
    let before = UNIX_EPOCH + Duration::from_nanos(coarse_unix_ns() & !1);
    let g = m.lock_or_recover(|_| {}).unwrap();
    let at = m.status().owner.unwrap().acquired_at;
    drop(g);
    assert!(
        at >= before,
        "recorded {at:?}, stale: the clock said {before:?}"
    );
}

/// The TID of this process's thread named `rmutex-clock`, if any.
fn clock_thread() -> Option<u32> {
    let mut found = None;
    for e in std::fs::read_dir("/proc/self/task").unwrap() {
        let e = e.unwrap();
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if comm.trim_end() == CLOCK_THREAD_NAME {
            assert!(found.is_none(), "two clock threads");
            found = Some(e.file_name().to_str().unwrap().parse().unwrap());
        }
    }
    found
}

/// Thread `tid` of this process blocks every signal that can be blocked
/// (all but SIGKILL, SIGSTOP and glibc's two internal ones, 32 and 33).
fn assert_all_signals_blocked(tid: u32) {
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap();
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .unwrap()
        .trim();
    let blocked = u64::from_str_radix(hex, 16).unwrap();
    let unblockable = [libc::SIGKILL, libc::SIGSTOP, 32, 33]
        .iter()
        .fold(0u64, |b, &s| b | 1 << (s - 1));
    assert_eq!(
        blocked | unblockable,
        u64::MAX,
        "the clock thread's SigBlk is {hex}"
    );
}
