//! The owner record's "acquired at": a process-wide cached coarse wall
//! clock, so that a lock acquisition gets "now" with one relaxed load
//! instead of a clock read.
//!
//! Why: `clock_gettime(CLOCK_REALTIME_COARSE)` is a vDSO call of about
//! 7-10 ns here, some 45 % of a raw glibc lock+unlock (docs/benchmarks.md,
//! "Issue 11"). Servers that stamp many events cache the time the same way
//! (nginx, Redis, HAProxy).
//!
//! How:
//! * [`NOW`] holds the coarse wall clock in ns since the epoch (always
//!   even), or 0: "no cached time, read the clock". Its bit 0 ([`USED`])
//!   says a lock took this tick's time.
//! * A "clock" thread (`rmutex-clock`) stores a fresh time every [`TICK`].
//!   The first lock after a tick marks it [`USED`] (one compare-exchange
//!   per tick at most); every later lock in the tick only loads. After
//!   [`IDLE_TICKS`] ticks (1 s) that no lock used, the thread zeroes
//!   [`NOW`] and parks on a futex.
//! * With [`NOW`] zero, a lock reads the clock itself and counts the read;
//!   from the [`WARMUP`]-th since the last park on, the reader notes a
//!   chore for its own next lock call (the reader may hold a lock: nothing
//!   slow while it does), whose entry, before taking any lock, stores the
//!   time in [`NOW`] and wakes the thread, or spawns it the first time. So a process that
//!   takes a handful of locks (the CLI's `run`, most tests) never gets a
//!   thread.
//! * `ROBUST_MUTEX_CLOCK_THREAD=0` in the environment (read once, when the
//!   thread would first be spawned) keeps the process free of it: locks
//!   read the clock directly, for good.
//! * Should the thread end (a panic in its tick), a guard stores DISABLED
//!   and [`NOW`] = 0: locks read the clock directly, for good.
//! * The thread is spawned with every signal blocked and a small stack.
//!   If it cannot be (`RLIMIT_NPROC`, a seccomp filter), the process reads
//!   the clock directly for good; nothing panics.
//! * A fork child has no clock thread: [`after_fork_in_child`] (run by the
//!   identity module's atfork child handler) zeroes [`NOW`], so the child
//!   reads the clock directly and may start its own thread.
//!
//! What it costs in accuracy: a recorded time is the coarse clock as the
//! thread last read it, so it may be up to one [`TICK`] (plus however long
//! the thread waited for a CPU, plus the coarse clock's own jiffy) EARLY,
//! and is never later than the acquisition. A recorded time is even (bit 0
//! is cleared: at most 1 ns earlier still).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::sys;

/// How often the clock thread refreshes [`NOW`] while locks are taken.
///
/// 50 ms: a recorded time is then at most ~50 ms early, well below what it
/// is shown for ("held for 2.3 s" in `status`, `watch`, `OwnerInfo::held_for`)
/// and the same order as a loaded machine's scheduling delay. A shorter
/// tick buys nothing visible and costs wake-ups: each tick is a thread
/// wake-up (a few µs of CPU and a context switch, possibly preempting a lock
/// holder), per process; 64 worker processes on 2 CPUs wake 1,280 times a
/// second at 50 ms, 6,400 times at 10 ms.
pub(crate) const TICK: Duration = Duration::from_millis(50);

/// Ticks without a lock after which the thread parks: 1 s.
const IDLE_TICKS: u32 = 20;

/// Direct clock reads (since the process started, forked, or the thread
/// last parked) after which the thread is started or woken.
const WARMUP: u32 = 256;

/// The clock thread's stack: it only sleeps, reads the clock and waits on
/// a futex (std raises it to its minimum if need be).
const STACK: usize = 64 * 1024;

/// The clock thread's name (in `/proc/<pid>/task/<tid>/comm`).
pub(crate) const THREAD_NAME: &str = "rmutex-clock";

/// Bit 0 of [`NOW`]: a lock used this tick's time.
const USED: u64 = 1;

/// The cached coarse wall clock, ns since the epoch with bit 0 [`USED`],
/// or 0: read the clock directly.
static NOW: AtomicU64 = AtomicU64::new(0);

/// Direct reads since the process started, forked or the thread parked.
static DIRECT_READS: AtomicU32 = AtomicU32::new(0);

/// The clock thread's state (one of the constants below); the parked
/// thread waits on this word.
static THREAD: AtomicU32 = AtomicU32::new(NONE);
/// No clock thread in this process (yet, or since a fork).
const NONE: u32 = 0;
/// The thread runs and refreshes [`NOW`].
const TICKING: u32 = 1;
/// The thread waits on [`THREAD`] until a lock wakes it; [`NOW`] is 0 (or
/// about to be).
const PARKED: u32 = 2;
/// The thread could not be spawned: direct reads for good.
const DISABLED: u32 = 3;

/// How many times the clock thread parked (since the process started),
/// woken on each park: what the test hooks wait for.
static PARKS: AtomicU32 = AtomicU32::new(0);

/// How many times the clock thread stored a fresh time (since the process
/// started), woken on each: what the test hooks wait for.
#[cfg(feature = "test-hooks")]
static TICKS: AtomicU32 = AtomicU32::new(0);

/// Test hook: the clock thread's next tick panics (a bug in it, as far as
/// the process can tell).
#[cfg(feature = "test-hooks")]
static PANIC_NEXT_TICK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The coarse wall clock now, ns since the epoch (even), for the owner
/// record: up to one [`TICK`] (plus scheduling delay) early, never late.
///
/// The lock path: one relaxed load and one branch, taken while the clock
/// thread ticks and this tick's time was used already; the rest is out of
/// line.
#[inline(always)]
pub(crate) fn coarse_now_ns() -> u64 {
    let v = NOW.load(Ordering::Relaxed);
    if v & USED != 0 {
        v & !USED
    } else {
        now_slow(v)
    }
}

/// [`coarse_now_ns`] when this tick's time is not yet marked used, or
/// there is no cached time.
#[cold]
#[inline(never)]
fn now_slow(v: u64) -> u64 {
    if v != 0 {
        // This tick's first use. A failed exchange means the thread stored
        // a newer time or parked meanwhile: `v` was current at the load.
        let _ = NOW.compare_exchange(v, v | USED, Ordering::Relaxed, Ordering::Relaxed);
        return v;
    }
    let t = direct();
    if THREAD.load(Ordering::Relaxed) != DISABLED
        && DIRECT_READS.fetch_add(1, Ordering::Relaxed) >= WARMUP - 1
    {
        // The caller may hold a lock: spawning or waking the thread waits
        // for this thread's next lock call's entry (`raw::check_room`).
        crate::identity::owe_clock_chore();
    }
    t
}

/// The chore [`now_slow`] left for a lock call's entry (no lock held by
/// that call yet): cache the time and wake (or start) the clock thread.
#[cold]
pub(crate) fn resume_now() {
    if THREAD.load(Ordering::Relaxed) != DISABLED {
        resume(direct());
    }
}

/// A clock read, even and non-zero (0 means "no cached time").
fn direct() -> u64 {
    (sys::coarse_unix_ns() & !USED).max(2)
}

/// The process locks often: cache `t` and wake (or start) the clock thread.
/// Of concurrent callers, the one that moves [`NOW`] from 0 does it.
#[cold]
fn resume(t: u64) {
    if NOW
        .compare_exchange(0, t | USED, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        return;
    }
    DIRECT_READS.store(0, Ordering::Relaxed);
    // [`NOW`] was 0, so the thread is parked (it stores PARKED before it
    // zeroes [`NOW`]), or there is none; it stays so until we change it.
    match THREAD.load(Ordering::SeqCst) {
        PARKED => {
            THREAD.store(TICKING, Ordering::SeqCst);
            sys::futex_wake(&THREAD, 1, false);
        }
        NONE if opted_out() => {
            log::debug!("{OPT_OUT}=0: reading the clock at each lock");
            THREAD.store(DISABLED, Ordering::SeqCst);
            NOW.store(0, Ordering::SeqCst);
        }
        NONE => {
            THREAD.store(TICKING, Ordering::SeqCst);
            // A fork child must forget the thread: make sure the handler
            // is registered before there is one.
            crate::identity::register_fork_handler();
            if let Err(e) = sys::spawn_signals_blocked(THREAD_NAME, STACK, tick) {
                log::debug!("no clock thread ({e}): reading the clock at each lock");
                THREAD.store(DISABLED, Ordering::SeqCst);
                NOW.store(0, Ordering::SeqCst);
            }
        }
        _ => NOW.store(0, Ordering::SeqCst), // DISABLED (TICKING cannot be)
    }
}

/// Should the clock thread end (a panic: it never returns), locks read the
/// clock themselves for good: its drop stores [`DISABLED`] and [`NOW`] = 0,
/// so no lock keeps using the last cached time.
struct Disable;

impl Drop for Disable {
    fn drop(&mut self) {
        THREAD.store(DISABLED, Ordering::SeqCst);
        NOW.store(0, Ordering::SeqCst);
        log::error!("the clock thread ended: locks read the clock themselves");
    }
}

/// The environment variable that, set to `0`, keeps the process free of
/// the clock thread (locks read the clock themselves).
pub(crate) const OPT_OUT: &str = "ROBUST_MUTEX_CLOCK_THREAD";

/// Whether [`OPT_OUT`] is `0`: read once, at the spawn decision (which a
/// process makes once; a fork child inherits the answer with DISABLED).
fn opted_out() -> bool {
    std::env::var_os(OPT_OUT).is_some_and(|v| v == "0")
}

/// The clock thread: refreshes [`NOW`] every [`TICK`]; parks after
/// [`IDLE_TICKS`] unused ticks until [`resume`] wakes it.
fn tick() {
    let _disable_if_it_ends = Disable;
    let mut idle = 0;
    loop {
        std::thread::sleep(TICK);
        #[cfg(feature = "test-hooks")]
        if PANIC_NEXT_TICK.swap(false, Ordering::SeqCst) {
            panic!("test hook: the clock thread panics");
        }
        let fresh = direct();
        let was = NOW.swap(fresh, Ordering::SeqCst);
        #[cfg(feature = "test-hooks")]
        {
            TICKS.fetch_add(1, Ordering::SeqCst);
            sys::futex_wake(&TICKS, i32::MAX, false);
        }
        if was & USED != 0 {
            idle = 0;
            continue;
        }
        idle += 1;
        if idle < IDLE_TICKS {
            continue;
        }
        idle = 0;
        // PARKED before NOW = 0: whoever sees NOW = 0 sees PARKED.
        THREAD.store(PARKED, Ordering::SeqCst);
        if NOW
            .compare_exchange(fresh, 0, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            THREAD.store(TICKING, Ordering::SeqCst); // used meanwhile
            continue;
        }
        PARKS.fetch_add(1, Ordering::SeqCst);
        sys::futex_wake(&PARKS, i32::MAX, false);
        while THREAD.load(Ordering::SeqCst) == PARKED {
            sys::futex_wait_private(&THREAD, PARKED);
        }
    }
}

/// In a fork child (from the identity module's atfork child handler): the
/// child has no clock thread. Only atomic stores: async-signal-safe.
pub(crate) fn after_fork_in_child() {
    NOW.store(0, Ordering::Relaxed);
    DIRECT_READS.store(0, Ordering::Relaxed);
    // The reason a spawn failed (RLIMIT_NPROC, seccomp) is inherited.
    if THREAD.load(Ordering::Relaxed) != DISABLED {
        THREAD.store(NONE, Ordering::Relaxed);
    }
}

/// Test hooks (`crate::internals`).
#[cfg(feature = "test-hooks")]
pub(crate) mod hooks {
    use super::*;

    /// The clock thread's state: `none`, `ticking`, `parked`, `disabled`.
    pub fn state() -> &'static str {
        match THREAD.load(Ordering::SeqCst) {
            NONE => "none",
            TICKING => "ticking",
            PARKED => "parked",
            _ => "disabled",
        }
    }

    /// The cached time word as it is (0: none; bit 0: used).
    pub fn cached() -> u64 {
        NOW.load(Ordering::SeqCst)
    }

    /// How many times the clock thread has stored a fresh time.
    pub fn ticks() -> u32 {
        TICKS.load(Ordering::SeqCst)
    }

    /// Waits (no timeout) until the clock thread has ticked at least
    /// `ticks` times in all.
    pub fn wait_for_ticks(ticks: u32) {
        loop {
            let t = TICKS.load(Ordering::SeqCst);
            if t >= ticks {
                return;
            }
            sys::futex_wait_private(&TICKS, t);
        }
    }

    /// Makes the clock thread's next tick panic.
    pub fn panic_next_tick() {
        PANIC_NEXT_TICK.store(true, Ordering::SeqCst);
    }

    /// How many times the clock thread has parked.
    pub fn parks() -> u32 {
        PARKS.load(Ordering::SeqCst)
    }

    /// Waits (no timeout) until the clock thread has parked more than
    /// `parks` times; its cached time is then gone.
    pub fn wait_for_park(parks: u32) {
        loop {
            let p = PARKS.load(Ordering::SeqCst);
            if p > parks {
                return;
            }
            sys::futex_wait_private(&PARKS, p);
        }
    }
}
