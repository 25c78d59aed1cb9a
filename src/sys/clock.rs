//! Clocks and CLOCK_MONOTONIC deadlines, through `nix::time::clock_gettime`,
//! except [`coarse_unix_ns`], which runs on a lock acquisition whenever the
//! cached clock (`crate::clock`) has no time (see there).

use std::time::Duration;

use nix::time::{ClockId, clock_gettime};

/// Absolute CLOCK_MONOTONIC deadline `d` from now, saturating.
pub(crate) fn deadline_after(d: Duration) -> libc::timespec {
    let now = monotonic_now();
    let total = now
        .checked_add(d)
        .unwrap_or(Duration::from_secs(i64::MAX as u64 / 2));
    libc::timespec {
        tv_sec: total.as_secs() as libc::time_t,
        tv_nsec: total.subsec_nanos() as libc::c_long,
    }
}

/// A deadline that has already passed: `clocklock` then only tries once.
/// Negative, so that glibc answers ETIMEDOUT itself: with `{0, 0}` it asks
/// the kernel, whose FUTEX_WAIT on an expired absolute timeout still sleeps
/// until the next timer tick (about 20 µs per busy probe, measured).
pub(crate) const PAST_DEADLINE: libc::timespec = libc::timespec {
    tv_sec: -1,
    tv_nsec: 0,
};

/// `clock_gettime(id)` as a `Duration`. It cannot fail for the clocks used
/// here; if it ever did, the result is zero (checked in debug builds).
#[inline]
fn clock(id: ClockId) -> Duration {
    let r = clock_gettime(id);
    debug_assert!(r.is_ok(), "clock_gettime({id:?}): {r:?}");
    r.map_or(Duration::ZERO, |ts| {
        Duration::new(ts.tv_sec() as u64, ts.tv_nsec() as u32)
    })
}

/// CLOCK_MONOTONIC now.
pub(crate) fn monotonic_now() -> Duration {
    clock(ClockId::CLOCK_MONOTONIC)
}

/// Wall-clock time since the epoch, from the coarse vDSO clock (a few ns;
/// jiffy resolution is plenty for "held for 2.3 s").
///
/// Raw `libc::clock_gettime`, not nix's: this runs on acquisitions
/// without a cached time (`crate::clock`), and nix's wrapper is not inlinable and returns through a `Result` in
/// memory, which measured 7 more instructions per lock+unlock under
/// callgrind (docs/benchmarks.md). Every other clock read goes through nix.
#[inline]
pub(crate) fn coarse_unix_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime (vDSO) only
    // writes it, and cannot fail for this clock id (zero if it ever did).
    let r = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
    debug_assert_eq!(r, 0, "clock_gettime(CLOCK_REALTIME_COARSE)");
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// Whether `deadline` (CLOCK_MONOTONIC) has passed.
pub(crate) fn deadline_passed(deadline: &libc::timespec) -> bool {
    let now = monotonic_now();
    let d = Duration::new(deadline.tv_sec as u64, deadline.tv_nsec as u32);
    now >= d
}
