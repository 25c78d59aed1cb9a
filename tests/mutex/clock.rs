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

/// A clock thread that dies (a panic in its tick) leaves no stale cached
/// time: locks read the clock themselves.
#[test]
fn locks_record_fresh_times_after_the_clock_thread_dies() {
    play("clock_thread_dies");
}

/// ROBUST_MUTEX_CLOCK_THREAD=0: 1,000 locks and no clock thread.
#[test]
fn the_clock_thread_can_be_turned_off_by_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("ROBUST_MUTEX_CLOCK_THREAD", "0")];
    let mut k = Kid::spawn_env("clock_opt_out", &dir.path().join("m"), &env);
    k.expect("ok");
    k.wait_ok();
}

/// Two ticks after a clock read, a lock records a time not before it.
#[test]
fn the_cached_clock_moves_on_with_every_tick() {
    play("clock_not_frozen");
}
