//! The cached coarse clock behind `OwnerInfo::acquired_at` (`src/clock.rs`),
//! each case in a fresh child process (the roles of
//! `tests/common/roles_clock.rs`), since the clock and its thread are
//! process-wide. No timed assertion: the lower bound's slack is one tick
//! plus 5 s, and waiting for the thread to park waits on a flag.

use crate::common::Kid;

fn play(role: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut k = Kid::spawn(role, &dir.path().join("m"));
    k.expect("ok");
    k.wait_ok();
}

/// Recorded times stay within [before - (tick + 5 s), after] while the
/// clock thread starts and ticks; the thread is named and blocks every
/// signal.
#[test]
fn recorded_times_are_never_late_and_at_most_a_tick_early() {
    play("clock_ticks");
}

/// Once the idle thread parks, the next lock reads the clock itself.
#[test]
fn the_first_lock_after_the_clock_parks_records_a_fresh_time() {
    play("clock_after_park");
}

/// A fork child has no clock thread and no cached time: it records fresh
/// times and starts its own thread.
#[test]
fn a_fork_child_records_fresh_times_and_starts_its_own_clock() {
    let dir = tempfile::tempdir().unwrap();
    let mut k = Kid::spawn("clock_fork_child", &dir.path().join("m"));
    assert_eq!(k.expect("child"), "ok");
    k.expect("ok");
    k.wait_ok();
}

/// Where no thread can be created (RLIMIT_NPROC 0 for a non-root user),
/// locks still work and read the clock themselves.
#[test]
#[cfg_attr(not_root, ignore = "needs root: a child drops to uid 65534")]
fn locks_record_fresh_times_when_the_clock_thread_cannot_start() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut k = Kid::spawn_as(
        "clock_no_spawn",
        &dir.path().join("m"),
        &[],
        Some((65534, 65534)),
    );
    k.expect("ok");
    k.wait_ok();
}
